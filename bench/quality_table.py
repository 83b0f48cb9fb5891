"""bench/quality.py's results as mean ± std over seeds: a table per (task, its size, cut), a row per setting,
and each setting's paired-by-seed differences against `bt` trained alike."""

import json
import statistics
from collections import defaultdict


def _ms(values) -> str:
    values = [v for v in values if v == v]  # NaN when a split had one class only
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def pairs_of(row) -> int:
    """The task's size; rows from before "pairs" was recorded have it as train + eval pairs."""
    return row["pairs"] if "pairs" in row else row["train_pairs"] + row["eval_pairs"]


def label(row) -> str:
    """A table row's name: the setting, and the learning rate, steps and (when not fp32) precision it trained with."""
    if row.get("lr") is None:
        return row["setting"]
    precision = "" if row.get("precision", "fp32") == "fp32" else f", {row['precision']}"
    return f"{row['setting']}, lr {row['lr']:g}, {row['steps']} steps{precision}"


def _at(row, *keys) -> float:
    """row[k1][k2]...; NaN (shown as "-") where a run has no such value: None (no detection to time),
    or a metric its setting does not make (the untrained `lm` has no loss, no reward head)."""
    for k in keys:
        row = row.get(k) if isinstance(row, dict) else None
    return float("nan") if row is None else row


def columns(task: str):
    """(header, getter) pairs for one task's table."""
    cols = [("seeds", None), ("pairwise acc", lambda r: r["pairwise_accuracy"]), ("AUROC (reward)", lambda r: r["auroc"])]
    if task == "gsm8k":
        cols += [(f"prefix AUROC Q {f}", lambda r, f=f: r["prefix_auroc_q"][f]) for f in ("0.25", "0.5", "0.75", "1.0")]
        cols += [(f"prefix AUROC reward {f}", lambda r, f=f: _at(r, "prefix_auroc_reward", f)) for f in ("0.25", "0.5", "0.75")]
        cols += [
            ("tokens saved (q=0.1)", lambda r: _at(r, "filtering", "0.1", "tokens_saved")),
            ("maj. acc before", lambda r: _at(r, "filtering", "0.1", "accuracy_before")),
            ("maj. acc after (q=0.1)", lambda r: _at(r, "filtering", "0.1", "accuracy_after")),
        ]
    if task == "gsm8k_perturb":
        cols += [(f"prefix AUROC Q {f}", lambda r, f=f: r["prefix_auroc_q"][f]) for f in ("0.25", "0.5", "0.75")]
        loc = ("auroc", "detect_at_1", "detect_at_4", "detect_at_16", "detection_delay", "tokens_saved_at_5pct")
        cols += [(f"localization {k}", lambda r, k=k: _at(r, "localization", k)) for k in loc]  # a measured 0.0 stays 0.0
        cols += [("BT loss (last 20 steps)", lambda r: _at(r, "final_loss", "bt_loss"))]
    return cols


# the measures whose paired differences are printed, where a task's table has them
PAIRED = ("pairwise acc", "AUROC (reward)", "prefix AUROC Q 0.5", "localization auroc", "localization tokens_saved_at_5pct")


def paired_lines(by: dict, task) -> list[str]:
    """Per setting: its measures minus those of `bt` at the same lr, steps and precision, seed by seed
    (the same split, initial weights and pair order: only the setting differs)."""
    lines = []
    for (t, name), runs in by.items():
        if t != task or runs[0]["setting"] == "bt" or runs[0].get("lr") is None:
            continue
        base = {r["seed"]: r for r in by.get((t, label({**runs[0], "setting": "bt"})), [])}
        mine = {r["seed"]: r for r in runs}
        if not (seeds := sorted(set(mine) & set(base))):
            continue
        diffs = [f"{h} " + ", ".join(f"{get(mine[s]) - get(base[s]):+.3f}" for s in seeds) for h, get in columns(t[0]) if h in PAIRED]
        lines.append(f"  {name} − bt, seeds {', '.join(map(str, seeds))}: " + "; ".join(diffs))
    return lines


def print_table(path) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = defaultdict(list)
    for r in rows:  # runs on a task of another size or cut, or at another learning rate or length, are another experiment
        by[((r["task"], pairs_of(r), r["cut"]), label(r))].append(r)
    for task in sorted({t for t, _ in by}):
        cols = columns(task[0])
        print(f"\n{task[0]} ({task[1]} pairs, --cut {task[2]})\n\n| setting | " + " | ".join(h for h, _ in cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for (t, setting), runs in by.items():
            if t == task:
                cells = [str(len(runs))] + [_ms([get(r) for r in runs]) for _, get in cols[1:]]
                print(f"| {setting} | " + " | ".join(cells) + " |")
        for line in paired_lines(by, task):
            print(line)
        for (t, setting), runs in by.items():  # held-out accuracy by step: the plateau rule reads it
            for r in runs if t == task else []:
                if r.get("curve"):
                    print(f"  {setting} seed {r['seed']}: " + " ".join(f"{s}:{a:.3f}" for s, a in r["curve"]))
