"""Tokens/s of `goalrm score` against a naive single-process loop and against goalrm's previous
pipeline, side by side, alternating in rounds.

- naive: what one writes first: load the model, read the file, tokenize, padded batches of 16 in
  input order under torch.no_grad, rewards and Q-values per row.
- previous: goalrm score before 2026-12-04, rebuilt from today's stages: one Ray Data actor per scorer
  that reads, tokenizes, scores and writes each whole block in turn, in length-sorted padded batches of
  16 with transformers' SDPA, blocks of 10,000 rows.
- goalrm score: today's pipeline with its defaults: read/tokenize tasks ahead of the scorers, the
  forward in token-budget packed batches (auto attention: sdpa_varlen on the CPU), write tasks behind.
Both goalrm variants run end to end (actor start-up, model load, reading, writing Parquet included;
Ray's own start is not). All count the same real (unpadded) tokens, and their rewards must agree.

    python bench/score_throughput.py [--models tiny smollm2-shape] [--tokenizer smollm2] [--n 2000] [--rounds 3]

The tokenizer is SmolLM2's subword one (`--tokenizer smollm2`, about 4 characters a token), or the
tiny byte-level one (one token per byte), built in code.
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

from goalrm.backbones import SMOLLM2
from goalrm.config import ScoreConfig
from goalrm.data.tokenize import tokenize_completion
from goalrm.export import load_reward_model, save_reward_model
from goalrm.model import RewardModel, load_tokenizer
from goalrm.qvalues import q_values
from goalrm.tiny import tiny_config, tiny_tokenizer

from shapes import SHAPES  # bench/, on the path when a bench script runs

VARIANTS = ("naive", "previous", "goalrm score")
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


def build(shape: str, tokenizer: str, out_dir: str) -> None:
    """A random model of SHAPE (bench/shapes.py) with TOKENIZER's vocabulary and special tokens, exported."""
    torch.manual_seed(0)
    tok = load_tokenizer(SMOLLM2) if tokenizer == "smollm2" else tiny_tokenizer()
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = tiny_config(num_labels=1, max_position_embeddings=4096, **{**SHAPES[shape], "vocab_size": len(tok), **special})
    model = RewardModel(AutoModelForSequenceClassification.from_config(config))
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


def _rewards(out: str) -> list[float]:
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(out, "scored"), columns=["id", "reward"]).sort_by("id")["reward"].to_pylist()


def ray_score(model_dir: str, data: str, out: str, num_scorers: int, dtype: str) -> tuple[int, list[float], dict]:
    from goalrm.score.run import score

    s = score(ScoreConfig(model=model_dir, input=data, output=out, num_scorers=num_scorers, dtype=dtype), print_summary=False)
    return s["model_tokens"], _rewards(out), s["stage_seconds"]


class WholeBlockScorer:
    """The previous pipeline's actor: every stage of a block in turn, padded batches of 16 with SDPA."""

    def __init__(self, cfg: ScoreConfig, out_dir: str, threads: int):
        from goalrm.score.io import filesystem
        from goalrm.score.scorer import load_scorer

        torch.set_num_threads(threads)
        self.cfg, self.out_dir, self.fs = cfg, out_dir, filesystem(cfg.input)[0]
        self.model, self.tok, self.goal, _ = load_scorer(cfg.model, dtype=cfg.dtype, attn="sdpa")

    def __call__(self, batch: dict) -> dict:
        from goalrm.score.block import score_block
        from goalrm.score.io import Block

        markers = []
        for i in range(len(batch["path"])):
            block = Block(str(batch["path"][i]), *(int(batch[k][i]) for k in ("file_index", "start", "stop", "offset")))
            markers.append(json.dumps(score_block(self.fs, block, self.model, self.tok, self.goal, self.cfg, self.out_dir)))
        return {"marker": markers}


def previous_score(model_dir: str, data: str, out: str, num_scorers: int, dtype: str) -> tuple[int, list[float]]:
    import ray
    from ray.data import ActorPoolStrategy

    from goalrm.score.io import input_files, plan_blocks
    from goalrm.score.run import scorer_cpus

    # batches of at most 16 sequences, padded (the token budget never binds), 10,000-row blocks
    cfg = ScoreConfig(model=model_dir, input=data, output=out, num_scorers=num_scorers, dtype=dtype, batch_size=16,
                      max_tokens=10**9, block_rows=10_000, attn_implementation="sdpa")
    fs, files = input_files(data)
    blocks = plan_blocks(fs, files, cfg.block_rows)
    threads, cpus = scorer_cpus(cfg, [n["Resources"] for n in ray.nodes() if n["Alive"]])
    ds = ray.data.from_items([b.as_dict() for b in blocks], override_num_blocks=len(blocks)).map_batches(
        WholeBlockScorer, fn_constructor_kwargs={"cfg": cfg, "out_dir": out, "threads": threads}, batch_size=1,
        compute=ActorPoolStrategy(size=min(num_scorers, len(blocks))), num_cpus=cpus,
    )
    ds.context.enable_progress_bars = False
    markers = [json.loads(r["marker"]) for r in ds.iter_rows()]
    return sum(m["model_tokens"] for m in markers), _rewards(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SHAPES)[:2], choices=list(SHAPES))
    p.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "tiny"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--median-chars", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--num-scorers", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="for both goalrm variants; the naive loop is float32")
    args = p.parse_args()

    from goalrm.train.trainer import init_ray

    init_ray(num_cpus=os.cpu_count())
    tmp = tempfile.mkdtemp(prefix="goalrm-score-bench-")
    data = os.path.join(tmp, "samples.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in samples(args.n, median_chars=args.median_chars))
    run = {
        "naive": lambda m, out: (*naive(m, data), {}),
        "previous": lambda m, out: (*previous_score(m, data, out, args.num_scorers, args.dtype), {}),
        "goalrm score": lambda m, out: ray_score(m, data, out, args.num_scorers, args.dtype),
    }
    for shape in args.models:
        model_dir = os.path.join(tmp, shape)
        build(shape, args.tokenizer, model_dir)
        rates = {v: [] for v in args.variants}
        for r in range(args.rounds):
            order = args.variants if r % 2 == 0 else args.variants[::-1]  # alternating, so drift hits all alike
            rewards, line = {}, []
            for v in order:
                t0 = time.perf_counter()
                tokens, rewards[v], stages = run[v](model_dir, os.path.join(tmp, f"out-{shape}-{r}-{v.replace(' ', '-')}"))
                seconds = time.perf_counter() - t0
                rates[v].append(tokens / seconds)
                stage = f" [{', '.join(f'{k} {t:.1f} s' for k, t in stages.items())}]" if stages else ""
                line.append(f"{v} {tokens / seconds:8.0f} tok/s ({seconds:6.1f} s){stage}")
            diff = max(abs(a - b) for vals in zip(*rewards.values()) for a in vals for b in vals)
            print(f"{shape} round {r + 1}: " + "; ".join(line) + f"; {tokens} tokens, max |reward diff| {diff:.1e}", flush=True)
        med = {v: statistics.median(x) for v, x in rates.items()}
        vs = [f"{v} {med[v]:.0f} tok/s" for v in args.variants]
        ratios = [f"x{med['goalrm score'] / med[b]:.2f} vs {b}" for b in ("naive", "previous") if b in med and "goalrm score" in med]
        print(f"{shape}, {args.n} rows, medians of {args.rounds} rounds: " + ", ".join(vs) + "; goalrm score " + ", ".join(ratios), flush=True)


if __name__ == "__main__":
    main()
