"""Majority voting before and after filtering (the paper's filtering experiment), no Ray."""

from collections import Counter, defaultdict


def majority_answer(answers: list):
    """Most common answer; ties go to the smallest str(answer), so row order does not matter."""
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], str(a)))


def majority_report(groups: list, answers: list, keep: list, labels: list | None = None) -> dict:
    """Per group, the majority answer over all rows and over the kept rows (all rows when none is
    kept, as the paper does). With labels (truthy = correct), the accuracy of each."""
    rows = defaultdict(list)
    for i, g in enumerate(groups):
        rows[g].append(i)
    correct_before = correct_after = changed = fallback = 0
    for idx in rows.values():
        kept = [i for i in idx if keep[i]]
        fallback += not kept
        before = majority_answer([answers[i] for i in idx])
        after = majority_answer([answers[i] for i in (kept or idx)])
        changed += before != after
        if labels is not None:
            correct_before += _is_correct(before, idx, answers, labels)
            correct_after += _is_correct(after, idx, answers, labels)
    n = len(rows)
    report = {"groups": n, "groups_all_filtered": fallback, "majority_changed": changed}
    if labels is not None:
        report["accuracy_before"] = correct_before / n if n else None
        report["accuracy_after"] = correct_after / n if n else None
    return report


def _is_correct(answer, idx, answers, labels) -> bool:
    """An answer's label is that of the first row giving it."""
    return bool(next(labels[i] for i in idx if answers[i] == answer))
