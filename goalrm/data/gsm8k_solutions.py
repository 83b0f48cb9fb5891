"""`goalrm data gsm8k-solutions`: GSM8K model solutions labelled `is_correct` to preference pairs and scoring rows.

A row holds `question`, an optional reference `ground_truth`, and any number of model keys, each
`{"solution", "is_correct"}` (the layout of openai/grade-school-math's example_model_solutions).
Pairs: every correct x incorrect model solution of a question. Reference-as-chosen pairs are a
separate, separately named output: a reward model trained on them learns the reference's style
rather than correctness (../shared/data/README.md measured it).
"""

import os
from dataclasses import dataclass

from goalrm.data.errors import BadRowError, BadRows, check_on_bad_row, handle
from goalrm.data.formats import records
from goalrm.atomic import write_json
from goalrm.data.gsm8k import final_answer, is_eval_question, prompt_for, question_id, write_splits

REFERENCE = "ground_truth"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Solution:
    model: str
    text: str
    is_correct: bool


@dataclass(frozen=True)
class Question:
    question: str
    reference: str | None
    solutions: tuple[Solution, ...]


def read_questions(
    path: str, on_bad_row: str = "error", bad_rows: BadRows | None = None, require_reference: bool = False
) -> list[Question]:
    check_on_bad_row(on_bad_row)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    out = []
    for line, row in records(path):
        try:
            if isinstance(row, BadRowError):
                raise row
            out.append(_question(row, lambda field, reason: BadRowError(path, line, field, reason), require_reference))
        except BadRowError as err:
            handle(err, on_bad_row, bad_rows)
    return out


def _question(row, bad, require_reference: bool) -> Question:
    if not isinstance(row, dict):
        raise bad(None, f"expected a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("question", "missing" if question is None else "must be a non-empty string")
    reference = row.get(REFERENCE)
    if reference is None and require_reference:
        raise bad(REFERENCE, "missing (reference-chosen pairs need it)")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise bad(REFERENCE, "must be a non-empty string")
    solutions = []
    for key, value in row.items():
        if key in ("question", REFERENCE) or not isinstance(value, dict):
            continue
        text, label = value.get("solution"), value.get("is_correct")
        if not isinstance(text, str) or not text.strip():
            raise bad(f"{key}.solution", "missing" if text is None else "must be a non-empty string")
        if not isinstance(label, bool):
            raise bad(f"{key}.is_correct", "missing" if label is None else f"must be true or false, got {label!r}")
        solutions.append(Solution(key, text, label))
    if not solutions:
        raise bad(None, "no model solutions: expected keys holding {'solution', 'is_correct'}")
    return Question(question, reference, tuple(solutions))


def model_pairs(q: Question) -> list[dict]:
    """Every correct x incorrect model solution; identical texts (no preference to learn) are left out."""
    correct = [s for s in q.solutions if s.is_correct]
    wrong = [s for s in q.solutions if not s.is_correct]
    return [_pair(q, c.text, c.model, r) for c in correct for r in wrong if c.text != r.text]


def reference_pairs(q: Question) -> list[dict]:
    """The reference chosen over every incorrect model solution."""
    return [_pair(q, q.reference, REFERENCE, r) for r in q.solutions if not r.is_correct and r.text != q.reference]


def _pair(q: Question, chosen: str, chosen_model: str, rejected: Solution) -> dict:
    return {
        "prompt": prompt_for(q.question),
        "chosen": chosen,
        "rejected": rejected.text,
        "question_id": question_id(q.question),
        "chosen_model": chosen_model,
        "rejected_model": rejected.model,
    }


def scoring_rows(q: Question) -> list[dict]:
    """Every model solution with its final answer and label, for AUROC and majority voting."""
    ref_answer = final_answer(q.reference) if q.reference else None
    return [
        {
            "question_id": question_id(q.question),
            "prompt": prompt_for(q.question),
            "completion": s.text,
            "model": s.model,
            "answer": final_answer(s.text),
            "reference_answer": ref_answer,
            "is_correct": s.is_correct,
        }
        for s in q.solutions
    ]


def convert_solutions(
    path: str,
    out_dir: str,
    seed: int = 0,
    eval_fraction: float = 0.2,
    reference_chosen: bool = False,
    on_bad_row: str = "error",
) -> dict:
    """Writes OUT_DIR/{train,eval}_pairs.jsonl, {train,eval}_scoring.jsonl (and with `reference_chosen`
    {train,eval}_pairs_reference.jsonl) and summary.json; returns the summary."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    bad_rows = BadRows()
    questions = read_questions(path, on_bad_row, bad_rows, require_reference=reference_chosen)
    by_split = {s: [q for q in questions if is_eval_question(q.question, seed, eval_fraction) == (s == "eval")] for s in SPLITS}
    summary = {
        "source": path,
        "seed": seed,
        "eval_fraction": eval_fraction,
        "bad_rows_skipped": bad_rows.count,
        "questions": {s: len(qs) for s, qs in by_split.items()},
        "pairs": write_splits(out_dir, "pairs", {s: [p for q in qs for p in model_pairs(q)] for s, qs in by_split.items()}),
        "scoring_rows": write_splits(out_dir, "scoring", {s: [r for q in qs for r in scoring_rows(q)] for s, qs in by_split.items()}),
    }
    if reference_chosen:
        rows = {s: [p for q in qs for p in reference_pairs(q)] for s, qs in by_split.items()}
        summary["pairs_reference"] = write_splits(out_dir, "pairs_reference", rows)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
