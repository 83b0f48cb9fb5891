"""Where streaming through Ray Data starts to beat loading in memory: time until the first micro-batch.

The in-memory loader reads and tokenizes everything before step 1 (every worker does, in parallel);
the Ray Data loader pays a fixed start-up, then streams while training runs. For each size, both run
side by side, alternating, on the driver, and the ratio memory / ray_data is printed.

    python bench/loader_crossover.py --rows 2000 8000 32000 --repeats 2
"""

import argparse
import json
import os
import tempfile
import time

from goalrm.config import load_config
from goalrm.data.load import load_tokenized
from goalrm.data.stream import COUNTS, tokenized_pairs
from goalrm.data.synthetic import synthetic_pairs
from goalrm.model import load_tokenizer
from goalrm.train.data_source import train_dataset
from goalrm.train.trainer import init_ray


def _write(path, n):
    with open(path, "w") as f:
        for p in synthetic_pairs(n, seed=1):
            f.write(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n")


def _memory(cfg, tokenizer):
    t = time.perf_counter()
    load_tokenized(cfg.data.train, "train", cfg.data, tokenizer)
    return time.perf_counter() - t


def _ray_data(cfg):
    t = time.perf_counter()
    for batch in train_dataset(cfg).iter_batches(batch_size=None, batch_format="pyarrow"):
        if next(tokenized_pairs(batch, dict.fromkeys(COUNTS, 0)), None) is not None:
            return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    init_ray(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = os.path.join(tmp, f"{n}.jsonl")
            _write(path, n)
            cfg = load_config(None, {"data": {"train": path, "loader": "ray_data"}})
            tokenizer = load_tokenizer(cfg.model.name_or_path)
            _ray_data(cfg)  # warm Ray Data's worker processes, as a run's first epoch would
            mem, ray = [], []
            for _ in range(args.repeats):
                mem.append(_memory(cfg, tokenizer))
                ray.append(_ray_data(cfg))
            m, r = min(mem), min(ray)
            print(f"rows {n:>7}  {os.path.getsize(path) / 2**20:7.2f} MiB  memory {m:6.2f} s  ray_data first batch {r:6.2f} s  "
                  f"memory/ray_data {m / r:5.2f}", flush=True)


if __name__ == "__main__":
    main()
