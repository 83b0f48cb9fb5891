"""Profile goalrm's training step (the DeepSpeed engine path of bench/vs_trl.py) with torch.profiler.

Prints the top operators by self CPU time over `--steps` steps after `--warmup` steps.

    .venv/bin/python bench/profile_step.py --model tiny --batch 16 [--lam 0.5] [--no-group]
"""

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from goalrm.data.sampler import epoch_permutation, pair_lengths
from goalrm.env import setup_environment
from goalrm.losses import LossConfig
from goalrm.sampling import sampling_generator
from shapes import SHAPES
from vs_trl import SEED, goalrm_engine, goalrm_step, init_process_group, load_pairs, model_config


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=list(SHAPES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--no-group", action="store_true", help="random batches instead of length-grouped ones")
    p.add_argument("--packing", action="store_true", help="pack each micro-batch's rows (data.packing)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    setup_environment()
    init_process_group()
    tok, _, pairs, source = load_pairs(args.max_length)
    pool = [pairs[i] for i in epoch_permutation(len(pairs), 0, SEED)[: 64 * args.batch].tolist()]
    lengths = None if args.no_group else pair_lengths(pool)
    engine = goalrm_engine(model_config(tok, args.model), args.batch, 10**6, 2)
    cfg, gen = LossConfig(contrastive_weight=args.lam), sampling_generator(SEED, 0, engine.device)

    def step(i):
        with record_function("goalrm_step"):
            return goalrm_step(engine, pool, lengths, i, args.batch, cfg, gen, tok.pad_token_id, args.packing)

    for i in range(args.warmup):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        counts = [step(args.warmup + i) for i in range(args.steps)]
    tokens, slots = sum(c[1] for c in counts), sum(c[2] for c in counts)
    print(f"{source}; {args.model}, {args.batch} pairs/step, λ={args.lam}, padding {1 - tokens / slots:.1%}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
