"""The filtering rule, no Ray: a completion is dropped at its first Q-value under the threshold."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowFilter:
    min_q: float
    first_below: int | None  # index of the first completion token with Q < threshold
    keep: bool


def filter_row(q: np.ndarray, threshold: float) -> RowFilter:
    below = np.flatnonzero(q < threshold)
    first = int(below[0]) if below.size else None
    return RowFilter(min_q=float(q.min()), first_below=first, keep=first is None)


def tokens_saved(n_tokens: int, first_below: int | None) -> int:
    """Tokens a generator stopped at `first_below` would not have produced: those after it."""
    return 0 if first_below is None else n_tokens - first_below - 1
