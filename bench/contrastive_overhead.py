"""Time per optimizer step with λ = 0 against λ = 0.5, same data and seed, side by side.

The contrastive term reuses the forward pass's hidden states, so the target ratio is <= 1.05.

    .venv/bin/python bench/contrastive_overhead.py [--steps 20] [--models tiny smollm2-shape]
"""

import argparse
import statistics
import time

import torch

from goalrm.data.batch import collate_pairs
from goalrm.data.formats import synthetic_preference_pairs
from goalrm.data.tokenize import tokenize_pairs
from goalrm.losses import LossConfig, reward_model_loss
from goalrm.sampling import sampling_generator
from goalrm.model import RewardModel
from goalrm.tiny import tiny_config, tiny_tokenizer
from transformers import AutoModelForSequenceClassification

from shapes import SHAPES  # bench/, on the path when a bench script runs


def step_time(model, opt, batches, lam):
    cfg = LossConfig(contrastive_weight=lam)
    gen = sampling_generator(0, 0, next(model.parameters()).device)
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        out = model(batch["input_ids"], batch["attention_mask"], with_reps=True)
        loss, _ = reward_model_loss(
            out.rewards, out.reps, batch["completion_start"], batch["completion_end"], cfg, gen, batch["rejected_divergence"]
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="pairs per step")
    p.add_argument("--models", nargs="+", default=list(SHAPES))
    args = p.parse_args()
    tok = tiny_tokenizer()
    pairs, _ = tokenize_pairs(synthetic_preference_pairs(args.batch * args.steps, seed=0), tok, max_length=128)
    batches = [collate_pairs(pairs[i : i + args.batch], tok.pad_token_id) for i in range(0, len(pairs), args.batch)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps of {args.batch} pairs")
    for name in args.models:
        torch.manual_seed(0)
        config = tiny_config(num_labels=1, **SHAPES[name])
        model = RewardModel(AutoModelForSequenceClassification.from_config(config))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        step_time(model, opt, batches[:2], 0.5)  # warm-up
        med = {}
        # alternate the two settings in rounds, so drift on a noisy machine hits both alike
        rounds = {0.0: [], 0.5: []}
        for r in range(0, len(batches), 5):
            for lam in (0.0, 0.5):
                rounds[lam] += step_time(model, opt, batches[r : r + 5], lam)
        for lam, ts in rounds.items():
            med[lam] = statistics.median(ts)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"{name:>14} ({n_params:.1f}M params): λ=0 {med[0.0] * 1e3:.1f} ms/step, "
            f"λ=0.5 {med[0.5] * 1e3:.1f} ms/step, ratio {med[0.5] / med[0.0]:.3f}"
        )


if __name__ == "__main__":
    main()
