"""`goalrm data gsm8k-perturb`: reference solutions to pairs, the rejected one with one calculation wrong.

GSM8K solutions annotate each calculation as `16 - 3 - 4 = <<16-3-4=9>>9`. One annotated result is
changed, then the error is carried forward: every later number equal to a changed value is replaced
and every later annotation that uses one is recomputed, down to the final `#### N`. A solution is
skipped (and counted) when that cannot be done without guessing: the changed value also occurs as
a given quantity, an annotation's arithmetic does not check out, a recomputed result stops being a
whole number (or an amount with as many decimals as before), or the final answer would not change.
"""

import ast
import functools
import operator
import os
import random
import re
from collections import Counter
from fractions import Fraction

from goalrm.data.errors import BadRowError, BadRows, check_on_bad_row, handle
from goalrm.data.formats import records
from goalrm.atomic import write_json
from goalrm.data.gsm8k import final_answer, is_eval_question, prompt_for, question_id, write_splits

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>=]*)>>")
# a number in prose: `1,000`, `2.5`, not the `2` of `2x` or `3rd`
PROSE_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|,\d)")
EXPR_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
DELTAS = (-10, -2, -1, 1, 2, 10)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@functools.lru_cache(maxsize=65536)  # Fraction() is the slow part and the same strings recur
def _number(text: str) -> Fraction | None:
    s = text.strip().replace(",", "")
    return Fraction(s) if re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\.\d+)", s) else None


@functools.lru_cache(maxsize=65536)
def evaluate(expr: str) -> Fraction | None:
    """Exact value of a calculator annotation's arithmetic (+ - * / and parentheses); None if it is anything else."""
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(node)

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _format(value: Fraction, like: str) -> str | None:
    """`value` written as `like` is (commas, decimals); None if it cannot be without looking wrong."""
    if value < 0 <= (_number(like) or 0):
        return None
    decimals = len(like.partition(".")[2])
    if (value * 10**decimals).denominator != 1:
        return None
    text = f"{value.numerator // value.denominator}" if decimals == 0 else f"{float(value):.{decimals}f}"
    if "," in like:
        whole, dot, frac = text.partition(".")
        text = f"{int(whole):,}" + dot + frac
    return text


class _Unclean(Exception):
    pass


def _map_numbers(text: str, pattern: re.Pattern, changed: dict) -> str:
    def sub(m):
        value = _number(m.group(0))
        if value not in changed:
            return m.group(0)
        new = _format(changed[value], m.group(0))
        if new is None:  # e.g. `2.5` written where the changed value is 2.75
            raise _Unclean
        return new

    return pattern.sub(sub, text)


def _values(text: str) -> set[Fraction]:
    return {_number(m.group(0)) for m in PROSE_NUMBER.finditer(text)} | {_number(m.group(0)) for m in EXPR_NUMBER.finditer(text)}


@functools.lru_cache(maxsize=16)
def _parse(question: str, solution: str):
    """Annotations, and the numbers seen before each; shared by all the (step, delta) tries of a solution."""
    anns = list(ANNOTATION.finditer(solution))
    return anns, [_values(question + "\n" + solution[: m.start()]) for m in anns]


def perturb(question: str, solution: str, step: int, new_value: Fraction) -> tuple[str, int] | None:
    """The solution with annotation `step`'s result set to `new_value`, carried forward, and the offset
    of the first wrong character (the changed result); None when that is not clean."""
    try:
        return _perturb(question, solution, step, new_value)
    except _Unclean:
        return None


def _perturb(question, solution, step, new_value):
    anns, seen_before = _parse(question, solution)
    changed: dict[Fraction, Fraction] = {}
    out, pos, first_error = [], 0, None
    for j, m in enumerate(anns[step:], start=step):
        expr, result = m.group(1), m.group(2)
        old = _number(result)
        new_expr = expr if j == step else _map_numbers(expr, EXPR_NUMBER, changed)
        if new_expr == expr and j != step:
            if old in changed:  # a value derived some other way than from the changed one: ambiguous
                raise _Unclean
            continue
        if old is None or evaluate(expr) != old or not solution.startswith(result, m.end()):
            raise _Unclean
        if old in seen_before[j] or old in changed:
            raise _Unclean  # later mentions of `old` could be a given quantity, not this result
        new = new_value if j == step else evaluate(new_expr)
        text = None if new is None else _format(new, result)
        if text is None:
            raise _Unclean
        prose = solution[pos : m.start()] if j == step else _map_numbers(solution[pos : m.start()], PROSE_NUMBER, changed)
        out.append(prose + f"<<{new_expr}=")
        if j == step:
            first_error = sum(map(len, out))
        out.append(f"{text}>>{text}")
        pos = m.end() + len(result)
        if new != old:
            changed[old] = new
    return "".join(out) + _map_numbers(solution[pos:], PROSE_NUMBER, changed), first_error


def perturbed_pair(question: str, solution: str, rng: random.Random) -> tuple[dict | None, str]:
    """A pair row, or None and the reason it was skipped. Uniform over the clean (step, delta): the first
    clean one in a random order."""
    anns, _ = _parse(question, solution)
    if not anns:
        return None, "no calculator annotations"
    answer = final_answer(solution)
    if answer is None:
        return None, "no final answer"
    options = [(step, delta) for step in range(len(anns)) for delta in DELTAS]
    rng.shuffle(options)
    for step, delta in options:
        old = _number(anns[step].group(2))
        if old is None or old.denominator != 1 or old + delta < 0:
            continue
        done = perturb(question, solution, step, old + delta)
        if done is not None and final_answer(done[0]) not in (None, answer):
            break
    else:
        return None, "no clean perturbation"
    rejected, first_error = done
    row = {
        "prompt": prompt_for(question),
        "chosen": solution,
        "rejected": rejected,
        "rejected_first_error": first_error,
        "question_id": question_id(question),
        "perturbed_step": step,
        "delta": delta,
    }
    return row, ""


def convert_perturbed(
    path: str, out_dir: str, seed: int = 0, eval_fraction: float = 0.05, on_bad_row: str = "error"
) -> dict:
    """Writes OUT_DIR/{train,eval}_pairs.jsonl and summary.json; returns the summary."""
    check_on_bad_row(on_bad_row)
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    bad_rows, skipped = BadRows(), Counter()
    pairs = {"train": [], "eval": []}
    for line, row in records(path):
        try:
            question, solution = _fields(row, path, line)
        except BadRowError as err:
            handle(err, on_bad_row, bad_rows)
            continue
        # seeded per question, so a row's pair does not depend on the rows before it
        pair, reason = perturbed_pair(question, solution, random.Random(f"{seed}:{question_id(question)}"))
        if pair is None:
            skipped[reason] += 1
            continue
        pairs["eval" if is_eval_question(question, seed, eval_fraction) else "train"].append(pair)
    summary = {
        "source": path,
        "seed": seed,
        "eval_fraction": eval_fraction,
        "bad_rows_skipped": bad_rows.count,
        "solutions_skipped": dict(skipped),
        "pairs": write_splits(out_dir, "pairs", pairs),
    }
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _fields(row, path, line) -> tuple[str, str]:
    if isinstance(row, BadRowError):
        raise row
    if not isinstance(row, dict):
        raise BadRowError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
    for key in ("question", "answer"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise BadRowError(path, line, key, "missing" if value is None else "must be a non-empty string")
    return row["question"], row["answer"]
