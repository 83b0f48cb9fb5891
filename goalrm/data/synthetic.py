"""Built-in synthetic preference data: multi-step arithmetic word problems.

Chosen is a correct step-by-step solution. Rejected is the same solution with
one step's result wrong and the error carried forward, so every later step and
the final answer agree with the wrong value: only checking the arithmetic of
that step tells them apart.
"""

import random
from dataclasses import dataclass

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
MAX_OPERAND = 3
ITEMS = ["pens", "apples", "coins", "books", "cards", "shells", "stamps", "eggs"]


@dataclass(frozen=True)
class SyntheticPair:
    prompt: str
    chosen: str
    rejected: str
    first_error_char: int  # offset into `rejected` of the first character that differs


def _problem(rng: random.Random):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(1, 9)
    ops = []
    for _ in range(rng.randint(2, 3)):
        # single-digit totals and operands up to 3 keep each check a small table that the
        # tiny model learns in a few hundred CPU steps; mostly additions, a subtraction from 7 up
        if total >= 7:
            ops.append(("-", rng.randint(1, min(MAX_OPERAND, total))))
        else:
            ops.append(("+", rng.randint(1, min(MAX_OPERAND, 9 - total))))
        total = total + ops[-1][1] if ops[-1][0] == "+" else total - ops[-1][1]
    words = [("buys" if op == "+" else "gives") + f" {n}" for op, n in ops]
    start = total - sum(n if op == "+" else -n for op, n in ops)
    prompt = f"{name} has {start} {item}, " + ", ".join(words) + ". How many?\n"
    return prompt, start, ops


def _solution(start, ops, wrong_step=None, delta=0):
    lines, value = [], start
    for i, (op, n) in enumerate(ops):
        result = value + n if op == "+" else value - n
        if i == wrong_step:
            result += delta
        lines.append(f"{value}{op}{n}={result}")
        value = result
    return "\n".join(lines) + f"\nAnswer: {value}"


def _values(start, ops, wrong_step, delta):
    value, out = start, []
    for i, (op, n) in enumerate(ops):
        value = (value + n if op == "+" else value - n) + (delta if i == wrong_step else 0)
        out.append(value)
    return out


def make_pair(rng: random.Random) -> SyntheticPair:
    while True:
        prompt, start, ops = _problem(rng)
        errors = [
            (step, delta)
            for step in range(len(ops))
            for delta in (-2, -1, 1, 2)
            if all(0 <= v <= 9 for v in _values(start, ops, step, delta))
        ]
        if errors:
            break
    step, delta = rng.choice(errors)
    chosen, rejected = _solution(start, ops), _solution(start, ops, step, delta)
    first = next(i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b)
    return SyntheticPair(prompt, chosen, rejected, first)


def is_eval_prompt(prompt: str) -> bool:
    """Deterministic 1-in-8 split on the problem text, so no eval problem is trained on."""
    import zlib

    return zlib.crc32(prompt.encode()) % 8 == 0


def synthetic_pairs(n: int, seed: int = 0, split: str = "train") -> list[SyntheticPair]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = random.Random(f"goalrm-synthetic-{seed}-{split}")
    out = []
    while len(out) < n:
        pair = make_pair(rng)
        if is_eval_prompt(pair.prompt) == (split == "eval"):
            out.append(pair)
    return out
