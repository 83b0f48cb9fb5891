"""The job's summary from its blocks' done markers, and the majority-vote report. No Ray."""

import json
import os

import pyarrow.dataset as pads

from goalrm.config import ConfigError
from goalrm.localization import DETECT_WITHIN, DetectionTally, false_alarm_threshold
from goalrm.score.block import STAGES
from goalrm.score.io import DONE, SCORED, Block, output_paths
from goalrm.score.majority import majority_report

COUNTS = ("input_rows", "rows", "kept", "completion_tokens", "tokens_saved", "model_tokens", "truncated", "bad_rows")


def read_markers(out_dir: str, blocks: list[Block]) -> list[dict]:
    markers = []
    for b in blocks:
        path = output_paths(out_dir, b)[DONE]
        if os.path.exists(path):
            with open(path) as f:
                markers.append(json.load(f))
    return markers


def summarize(markers: list[dict], blocks_total: int, run_markers: list[dict], run_seconds: float) -> dict:
    """Counts over every finished block; throughput over the blocks this run scored."""
    s = {k: sum(m[k] for m in markers) for k in COUNTS}
    s["blocks"], s["blocks_done"], s["blocks_this_run"] = blocks_total, len(markers), len(run_markers)
    s["tokens_saved_fraction"] = s["tokens_saved"] / s["completion_tokens"] if s["completion_tokens"] else 0.0
    reasons = {}
    for m in markers:
        for r, n in m["bad_rows_by_reason"].items():
            reasons[r] = reasons.get(r, 0) + n
    s["bad_rows_by_reason"] = reasons
    run_tokens = sum(m["model_tokens"] for m in run_markers)
    s["seconds"] = run_seconds
    s["tokens_per_s"] = run_tokens / run_seconds if run_seconds > 0 and run_tokens else 0.0
    s["rows_per_s"] = sum(m["rows"] for m in run_markers) / run_seconds if run_seconds > 0 else 0.0
    # each stage's time summed over this run's blocks: they overlap, and the largest bounds the throughput
    s["stage_seconds"] = {k: sum(m.get("stage_seconds", {}).get(k, 0.0) for m in run_markers) for k in STAGES}
    return s


def majority_from_output(out_dir: str, group_col: str, answer_col: str, label_col: str | None) -> dict:
    folder = os.path.join(out_dir, SCORED)
    if not os.path.isdir(folder) or not os.listdir(folder):
        return majority_report([], [], [], [] if label_col else None)
    dataset = pads.dataset(folder, format="parquet")
    cols = [c for c in (group_col, answer_col, label_col) if c]
    missing = [c for c in cols if c not in dataset.schema.names]
    if missing:
        raise ConfigError(f"column(s) {missing} not in the scored output (columns: {dataset.schema.names})")
    t = dataset.to_table(columns=cols + ["keep"])
    labels = t[label_col].to_pylist() if label_col else None
    return majority_report(t[group_col].to_pylist(), t[answer_col].to_pylist(), t["keep"].to_pylist(), labels)


def localization_from_output(out_dir: str) -> dict | None:
    """Detection metrics (goalrm/localization.py) over the scored rows, when rejected rows carry their first
    wrong token: the threshold from the chosen rows' minima, then the rejected rows file by file, so the
    whole output never sits in memory. The chosen-against-rejected token AUROC needs pairs; eval has it."""
    folder = os.path.join(out_dir, SCORED)
    if not os.path.isdir(folder) or not os.listdir(folder):
        return None
    dataset = pads.dataset(folder, format="parquet")
    if "role" not in dataset.schema.names:
        return None
    is_rejected = pads.field("role") == "rejected"
    if not dataset.count_rows(filter=is_rejected & pads.field("first_error").is_valid()):
        return None
    chosen_min = dataset.to_table(columns=["min_q"], filter=pads.field("role") == "chosen")["min_q"].to_numpy()
    if not len(chosen_min):
        return None
    tally = DetectionTally(false_alarm_threshold(chosen_min))
    for batch in dataset.to_batches(columns=["q_values", "first_error"], filter=is_rejected):
        for q, e in zip(batch["q_values"].to_pylist(), batch["first_error"].to_pylist()):
            tally.add(q, e)
    return tally.metrics()


def format_summary(s: dict) -> str:
    rows = [
        ("rows scored", f"{s['rows']} (from {s['input_rows']} input rows)"),
        ("rows kept", f"{s['kept']}"),
        ("tokens saved", f"{s['tokens_saved']} of {s['completion_tokens']} completion tokens ({s['tokens_saved_fraction']:.1%})"),
        ("bad rows", f"{s['bad_rows']}" + (f"  {s['bad_rows_by_reason']}" if s["bad_rows"] else "")),
        ("blocks", f"{s['blocks_done']}/{s['blocks']} done, {s['blocks_this_run']} this run"),
        ("throughput", f"{s['tokens_per_s']:.0f} tokens/s, {s['rows_per_s']:.1f} rows/s over {s['seconds']:.1f} s"),
    ]
    stages = s.get("stage_seconds")
    if stages and any(stages.values()):
        slowest = max(stages, key=stages.get)
        rows.append(("stage time", f"read+tokenize {stages['prepare']:.1f} s, forward {stages['forward']:.1f} s, "
                                   f"write {stages['write']:.1f} s, summed over blocks ({slowest} is the bottleneck)"))
    m = s.get("majority")
    if m:
        line = f"{m['groups']} groups, {m['groups_all_filtered']} fully filtered (all rows used), {m['majority_changed']} changed"
        if "accuracy_before" in m and m["groups"]:
            line += f"; accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}"
        rows.append(("majority vote", line))
    loc = s.get("localization")
    if loc:
        line = f"threshold {loc['false_alarm_threshold']:+.3f} cuts 5% of chosen; {loc['tokens_saved_at_5pct']:.1%} of rejected tokens saved"
        if loc["n_with_first_error"]:
            line += "; detected within " + ", ".join(f"{k}: {loc[f'detect_at_{k}']:.1%}" for k in DETECT_WITHIN)
            line += f" tokens of the first error (early {loc['early_alarm']:.1%})"
        rows.append(("error localization", line))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
