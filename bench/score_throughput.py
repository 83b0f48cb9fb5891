"""Tokens/s of `goalrm score` against a naive single-process loop, side by side, alternating.

The naive loop is what one writes first: load the HF model, read the file, tokenize, padded
batches of 16 in input order under torch.no_grad, rewards and Q-values per row. `goalrm score`
runs the same model on the same file end to end (Ray Data actor start-up, model load, reading,
writing Parquet included; Ray's own start is not). Both count the same real (unpadded) tokens.

    python bench/score_throughput.py [--models tiny smollm2-shape] [--n 2000] [--rounds 2]

Both models use the tiny byte-level tokenizer (one token per byte), built in code.
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification

from goalrm.config import ScoreConfig
from goalrm.data.tokenize import tokenize_completion
from goalrm.export import load_reward_model, save_reward_model
from goalrm.model import RewardModel
from goalrm.qvalues import q_values
from goalrm.tiny import tiny_config, tiny_tokenizer

SHAPES = {
    "tiny": {},
    # SmolLM2-135M's sizes, randomly initialised
    "smollm2-shape": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
    ),
}
WORDS = "the of and to a in is that for it as was with be by on not he this are or his from at which".split()


def samples(n: int, seed: int = 0, median_chars: int = 300, prompt_chars: tuple[int, int] = (40, 400)) -> list[dict]:
    """Prompts of 40-400 characters (`prompt_chars`), completions log-normal around `median_chars`
    (a long tail, as sampled generations have), cut at 2000."""
    rng = random.Random(seed)

    def text(chars):
        out = []
        while sum(len(w) + 1 for w in out) < chars:
            out.append(rng.choice(WORDS) if rng.random() > 0.1 else str(rng.randint(0, 999)))
        return " ".join(out)

    rows = []
    for i in range(n):
        completion_chars = min(2000, max(10, int(rng.lognormvariate(0, 0.8) * median_chars)))
        rows.append({"id": i, "prompt": f"Question {i}: " + text(rng.randint(*prompt_chars)) + "\nAnswer:", "completion": " " + text(completion_chars)})
    return rows


def build(shape: str, out_dir: str) -> None:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    seq_cls = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=1, max_position_embeddings=4096, **SHAPES[shape]))
    model = RewardModel(seq_cls)
    save_reward_model(model, tok, out_dir, goal_state=torch.randn(model.config.hidden_size))


def naive(model_dir: str, data: str, batch_size: int = 16, max_length: int = 1024) -> tuple[int, list[float]]:
    """The baseline: batches of 16 in input order, right-padded to each batch's longest row."""
    model, tok, goal, _ = load_reward_model(model_dir)
    with open(data) as f:
        rows = [json.loads(line) for line in f]
    seqs = [tokenize_completion(r["prompt"], r["completion"], tok, max_length)[:2] for r in rows]
    tokens, rewards = 0, []
    with torch.no_grad():
        for b in range(0, len(seqs), batch_size):
            chunk = seqs[b : b + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, (s, _) in enumerate(chunk):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            out = model(ids, mask, with_reps=True)
            q = q_values(out.reps, goal)
            _ = [q[i, start : len(s)].tolist() for i, (s, start) in enumerate(chunk)]
            rewards += out.rewards.tolist()
            tokens += int(mask.sum())
    return tokens, rewards


def ray_score(model_dir: str, data: str, out: str, num_scorers: int, dtype: str) -> tuple[int, list[float]]:
    import pyarrow.parquet as pq

    from goalrm.score.run import score

    s = score(ScoreConfig(model=model_dir, input=data, output=out, num_scorers=num_scorers, dtype=dtype), print_summary=False)
    t = pq.read_table(os.path.join(out, "scored"), columns=["id", "reward"]).sort_by("id")
    return s["model_tokens"], t["reward"].to_pylist()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--median-chars", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--num-scorers", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="for goalrm score; the naive loop is float32")
    args = p.parse_args()

    from goalrm.train.trainer import init_ray

    init_ray(num_cpus=os.cpu_count())
    tmp = tempfile.mkdtemp(prefix="goalrm-score-bench-")
    data = os.path.join(tmp, "samples.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in samples(args.n, median_chars=args.median_chars))
    for shape in args.models:
        model_dir = os.path.join(tmp, shape)
        build(shape, model_dir)
        ratios = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            n_tok, r_naive = naive(model_dir, data)
            t_naive = time.perf_counter() - t0
            t0 = time.perf_counter()
            s_tok, r_score = ray_score(model_dir, data, os.path.join(tmp, f"out-{shape}-{r}"), args.num_scorers, args.dtype)
            t_score = time.perf_counter() - t0
            assert s_tok == n_tok, (s_tok, n_tok)
            diff = max(abs(a - b) for a, b in zip(r_naive, r_score))
            ratios.append((n_tok / t_score) / (n_tok / t_naive))
            print(
                f"{shape:14s} round {r + 1}: naive {n_tok / t_naive:9.0f} tok/s ({t_naive:6.1f} s)   "
                f"goalrm score {n_tok / t_score:9.0f} tok/s ({t_score:6.1f} s)   ratio {ratios[-1]:.2f}   "
                f"max |reward diff| {diff:.1e}",
                flush=True,
            )
        print(f"{shape:14s} {n_tok} tokens, {args.n} rows: median ratio {statistics.median(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
