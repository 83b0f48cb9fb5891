"""`goalrm steer`: read prompts, decode in each mode, write JSONL, summarise final Q-values. No Ray."""

import json
import os
import statistics
from dataclasses import asdict
from functools import partial

from goalrm.config import ConfigError
from goalrm.data.errors import BadRowError
from goalrm.data.formats import records
from goalrm.atomic import write_text
from goalrm.export import load_goal, load_reward_model, representation_dim
from goalrm.steer import MODES, decode_all, final_q, load_policy


def read_prompts(path: str) -> list[str]:
    """JSONL (.jsonl, .jsonl.gz) or Parquet rows with a "prompt" string; any other file: one prompt per line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.endswith((".jsonl", ".jsonl.gz", ".parquet")):
        prompts = []
        for line, row in records(path):
            if isinstance(row, BadRowError):
                raise row
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise BadRowError(path, line, "prompt", "expected an object with a non-empty string 'prompt'")
            prompts.append(row["prompt"])
    else:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise BadRowError(path, 1, "prompt", "no prompts in the file")
    return prompts


def parse_modes(spec: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in spec.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--modes: expected a comma-separated subset of {','.join(MODES)}, got {spec!r}")
    return modes


def run_steer(
    policy_name: str, rm_dir: str, prompts_path: str, settings, modes=MODES, goal_path=None, output=None,
    trust_remote_code=False, device="cpu",
):
    """Decodes every prompt in every mode; writes JSONL to `output` atomically; returns the rows."""
    prompts = read_prompts(prompts_path)
    rm, rm_tokenizer, model_goal, _ = load_reward_model(rm_dir, trust_remote_code, device=device)
    goal = load_goal(goal_path, model_goal, representation_dim(rm)).to(device)
    policy, tokenizer = load_policy(policy_name, trust_remote_code, device=device)
    q_of = partial(final_q, rm, rm_tokenizer, goal)
    rows = [asdict(d) for d in decode_all(policy, tokenizer, q_of, prompts, modes, settings)]
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        write_text(output, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'mode':<8}  {'prompts':>7}  {'mean final Q':>12}  {'mean tokens':>11}"]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        q = statistics.fmean(r["final_q"] for r in mine)
        n = statistics.fmean(r["new_tokens"] for r in mine)
        lines.append(f"{mode:<8}  {len(mine):>7}  {q:>+12.4f}  {n:>11.1f}")
    return "\n".join(lines)
