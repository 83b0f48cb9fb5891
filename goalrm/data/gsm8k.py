"""GSM8K pieces shared by the converters: the prompt, final answers, question ids, the split by question."""

import hashlib
import os
import re
from fractions import Fraction

from goalrm.atomic import write_jsonl

PROMPT = "Question: {question}\nAnswer:\n"
# the last line `A: 18` (model solutions, ground_truth) or `#### 18` (reference solutions)
_FINAL_LINE = re.compile(r"^\s*(?:A:|####)(.*)$", re.MULTILINE)
_NUMBER = re.compile(r"^-?(?:\d+/\d+|\d+(?:\.\d+)?|\.\d+)$")


def prompt_for(question: str) -> str:
    return PROMPT.format(question=question.strip())


def question_id(question: str) -> str:
    """Stable across files and seeds, so scoring rows and pairs of one question join up."""
    return hashlib.sha256(question.strip().encode()).hexdigest()[:12]


def is_eval_question(question: str, seed: int, eval_fraction: float) -> bool:
    """Deterministic split by question: a hash of (seed, question) mapped to [0, 1)."""
    digest = hashlib.sha256(f"{seed}\0{question.strip()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def normalize_answer(text: str) -> str | None:
    """'1,000' -> '1000', '$5.50.' -> '5.5', '3/4' -> '0.75'; None when it is not a number."""
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    if not _NUMBER.match(s):
        return None
    value = Fraction(s)
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), ".10g")


def final_answer(solution: str) -> str | None:
    """The normalised number on the last `A:` / `####` line; None when there is none."""
    matches = _FINAL_LINE.findall(solution)
    return normalize_answer(matches[-1]) if matches else None


def write_splits(out_dir: str, name: str, rows_by_split: dict[str, list]) -> dict[str, int]:
    """`OUT_DIR/{split}_{name}.jsonl` per split; returns the row counts."""
    os.makedirs(out_dir, exist_ok=True)
    return {split: write_jsonl(os.path.join(out_dir, f"{split}_{name}.jsonl"), rows) for split, rows in rows_by_split.items()}
