"""Scaling efficiency of `goalrm train` on Ray Train: 1 against 2 CPU workers on the same global batch.

Runs alternate (1, 2, 1, 2, ...) in one Ray session, each a short training run of the demo config
(tiny preset, synthetic pairs, ZeRO-2). Throughput is the mean pairs/s of a run's reports after the
first (warm-up) one; efficiency = pairs/s with 2 workers / (2 x pairs/s with 1 worker).

    .venv/bin/python bench/scaling.py [--global-batch 32] [--steps 40] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import tempfile

from goalrm.config import load_config
from goalrm.train.trainer import init_ray, train


def run(workers: int, args, out_dir: str) -> float:
    cfg = load_config(None, {
        "data": {"synthetic_train_size": 4000, "synthetic_eval_size": 64, "goal_state_pairs": 64},
        "train": {
            "num_workers": workers, "micro_batch_size": args.global_batch // workers, "max_steps": args.steps,
            "warmup_steps": 0, "log_every": args.steps // 4, "eval_every": args.steps,
        },
    })
    train(cfg, out_dir)
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        reports = [json.loads(line) for line in f]
    return statistics.mean(r["pairs_per_s"] for r in reports[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    init_ray(num_cpus=2)
    rates = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for workers in (1, 2):
                rates[workers].append(run(workers, args, os.path.join(tmp, f"r{r}-w{workers}")))
                print(f"round {r}: {workers} worker(s) {rates[workers][-1]:.1f} pairs/s", flush=True)
    one, two = statistics.mean(rates[1]), statistics.mean(rates[2])
    print(
        f"global batch {args.global_batch}, {args.steps} steps: 1 worker {one:.1f} pairs/s, 2 workers {two:.1f} pairs/s, "
        f"speed-up x{two / one:.2f}, scaling efficiency {two / (2 * one):.0%}"
    )


if __name__ == "__main__":
    main()
