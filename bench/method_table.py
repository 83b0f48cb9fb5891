"""The method study's tables from a `goalrm tune` folder (tune_spaces/lambda_seeds.yaml): each λ's final
held-out metrics as mean ± std over seeds, the paired-by-seed differences against λ = 0, whether the
baseline reached a plateau, and the steps each trial took to reach a held-out accuracy.

    python bench/method_table.py runs/method-chains
"""

import argparse
import glob
import json
import os
from collections import defaultdict

import yaml

from quality_table import _ms  # bench/, on the path as this script's folder

METRICS = [
    ("pair accuracy", "eval_accuracy"),
    ("reward AUROC", "eval_auroc"),
    ("prefix AUROC of Q at 25%", "eval_prefix_auroc_0.25"),
    ("prefix AUROC of Q at 50%", "eval_prefix_auroc_0.5"),
    ("prefix AUROC of Q at 75%", "eval_prefix_auroc_0.75"),
    ("localization AUROC", "eval_localization_auroc"),
    ("detect@1", "eval_localization_detect_at_1"),
    ("detect@4", "eval_localization_detect_at_4"),
    ("detect@16", "eval_localization_detect_at_16"),
    ("mean detection delay (tokens)", "eval_localization_detection_delay"),
    ("tokens saved at 5% false alarms", "eval_localization_tokens_saved_at_5pct"),
]
PLATEAU = 0.01  # the baseline's accuracy may move less than this over the last 20% of steps
SPEED_BARS = (0.8, 0.9, 0.95)


def trials(sweep_dir: str) -> list[dict]:
    """One dict per finished trial: λ, seed, max_steps and its evals in step order."""
    out = []
    for cfg_path in sorted(glob.glob(os.path.join(sweep_dir, "tune", "*", "config.yaml"))):
        cfg = yaml.safe_load(open(cfg_path))
        metrics = os.path.join(os.path.dirname(cfg_path), "metrics.jsonl")
        evals = [r for r in map(json.loads, open(metrics)) if "eval_accuracy" in r] if os.path.exists(metrics) else []
        steps = cfg["train"]["max_steps"]
        if evals and evals[-1]["step"] == steps:
            out.append({"lam": cfg["loss"]["contrastive_weight"], "seed": cfg["train"]["seed"], "steps": steps, "evals": evals})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir")
    args = p.parse_args(argv)
    runs = trials(args.sweep_dir)
    by_lam = defaultdict(dict)
    for r in runs:
        by_lam[r["lam"]][r["seed"]] = r
    lams = sorted(by_lam)
    final = {lam: {s: r["evals"][-1] for s, r in by_lam[lam].items()} for lam in lams}
    base = final.get(0.0, {})

    print("| measure | " + " | ".join(f"λ = {lam:g} ({len(final[lam])} seeds)" for lam in lams)
          + "".join(f" | λ = {lam:g} − λ = 0, by seed" for lam in lams if lam) + " |")
    print("|---" * (1 + len(lams) + sum(1 for lam in lams if lam)) + "|")
    for name, key in METRICS:
        cells = [_ms([e.get(key, float("nan")) for e in final[lam].values()]) for lam in lams]
        for lam in lams:
            if lam:
                seeds = sorted(set(final[lam]) & set(base))
                cells.append(", ".join(f"{final[lam][s][key] - base[s][key]:+.3f}" for s in seeds))
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nBaseline plateau (held-out accuracy over the last 20% of steps):")
    for seed, r in sorted(by_lam.get(0.0, {}).items()):
        tail = [e for e in r["evals"] if e["step"] >= 0.8 * r["steps"]]
        move = max(e["eval_accuracy"] for e in tail) - min(e["eval_accuracy"] for e in tail)
        accs = " -> ".join(f"{e['eval_accuracy']:.3f}" for e in tail)
        print(f"  seed {seed}: accuracy {accs} "
              f"(steps {tail[0]['step']}-{tail[-1]['step']}): {'plateau' if move < PLATEAU else 'still moving'} ({move:.3f})")

    print("\nSteps to reach a held-out accuracy (first eval at or above it; '-' = not reached):")
    print("| λ | seed | " + " | ".join(f"acc ≥ {b}" for b in SPEED_BARS) + " | prefix AUROC at 50%, by eval |")
    print("|---" * (3 + len(SPEED_BARS)) + "|")
    for lam in lams:
        for seed, r in sorted(by_lam[lam].items()):
            reach = [next((str(e["step"]) for e in r["evals"] if e["eval_accuracy"] >= b), "-") for b in SPEED_BARS]
            curve = " ".join(f"{e['eval_prefix_auroc_0.5']:.2f}" for e in r["evals"])
            print(f"| {lam:g} | {seed} | " + " | ".join(reach) + f" | {curve} |")


if __name__ == "__main__":
    main()
