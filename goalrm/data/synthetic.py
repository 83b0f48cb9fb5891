"""Built-in synthetic preference data: multi-step arithmetic word problems.

Chosen is a correct step-by-step solution. Rejected is the same solution with
one step's result wrong and the error carried forward, so every later step and
the final answer agree with the wrong value: only checking the arithmetic of
that step tells them apart.
"""

import random
from dataclasses import dataclass

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
ITEMS = ["pens", "apples", "coins", "books", "cards", "shells", "stamps", "eggs"]


@dataclass(frozen=True)
class Task:
    steps: tuple[int, int]  # fewest and most steps
    max_total: int  # every running total stays in 0..max_total
    max_operand: int
    deltas: tuple[int, ...]  # how far the wrong step's result is off


TASKS = {
    # single-digit totals and operands up to 3 keep each check a small table that the tiny model learns in
    # a few hundred CPU steps
    "chains": Task(steps=(2, 3), max_total=9, max_operand=3, deltas=(-2, -1, 1, 2)),
    # longer chains of two-digit numbers; the wrong step is any of 4-7, so errors come early and late, and
    # an error of 10 changes the tens digit alone
    "long_chains": Task(steps=(4, 7), max_total=99, max_operand=9, deltas=(-10, -2, -1, 1, 2, 10)),
}


@dataclass(frozen=True)
class SyntheticPair:
    prompt: str
    chosen: str
    rejected: str
    first_error_char: int  # offset into `rejected` of the first character that differs


def _problem(rng: random.Random, task: Task):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(1, task.max_total)
    ops = []
    for _ in range(rng.randint(*task.steps)):
        # mostly additions; a subtraction once the total nears the top
        if total >= task.max_total - task.max_operand // 2 - 1:
            ops.append(("-", rng.randint(1, min(task.max_operand, total))))
        else:
            ops.append(("+", rng.randint(1, min(task.max_operand, task.max_total - total))))
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


def make_pair(rng: random.Random, task: Task = TASKS["chains"]) -> SyntheticPair:
    while True:
        prompt, start, ops = _problem(rng, task)
        errors = [
            (step, delta)
            for step in range(len(ops))
            for delta in task.deltas
            if all(0 <= v <= task.max_total for v in _values(start, ops, step, delta))
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


def synthetic_pairs(n: int, seed: int = 0, split: str = "train", task: str = "chains") -> list[SyntheticPair]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if task not in TASKS:
        raise ValueError(f"the synthetic task must be one of {', '.join(TASKS)}, got {task!r}")
    # the chains task keeps its original stream, so runs from before the other tasks reproduce
    rng = random.Random(f"goalrm-synthetic-{seed}-{split}" + ("" if task == "chains" else f"-{task}"))
    out = []
    while len(out) < n:
        pair = make_pair(rng, TASKS[task])
        if is_eval_prompt(pair.prompt) == (split == "eval"):
            out.append(pair)
    return out
