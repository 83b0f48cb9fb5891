"""Error localization from token Q-values: how soon, and how cleanly, Q falls once a completion goes wrong.

All on completion-relative token positions, for completions whose first wrong token is known
(`rejected_first_error`). The filtering rule is goalrm score's: a completion is cut at its first
Q-value below the threshold, and the threshold is set so that at most 5% of the chosen completions
are cut (false alarms).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from goalrm.metrics import chosen_rejected_auroc
from goalrm.score.filtering import filter_row, tokens_saved

FALSE_ALARM_RATE = 0.05
DETECT_WITHIN = (1, 4, 16)


def false_alarm_threshold(chosen_min_q, rate: float = FALSE_ALARM_RATE) -> float:
    """The threshold at which at most `rate` of the chosen completions are cut: the chosen minima's
    value at rank floor(rate * n), counting from the lowest (fewer than that many lie strictly below it)."""
    ranked = np.sort(np.asarray(chosen_min_q, dtype=np.float64))
    return float(ranked[int(np.floor(rate * len(ranked)))])


def cut_at(q, threshold: float) -> int | None:
    """Where the filter cuts a completion: its first token with Q below the threshold, or None."""
    return filter_row(np.asarray(q, dtype=np.float64), threshold).first_below


def detection_curve(cut: list, first_error: list, max_k: int) -> list[float]:
    """For k = 1..max_k, the share of completions cut at most k-1 tokens after their first error."""
    return [float(np.mean([c is not None and c < e + k for c, e in zip(cut, first_error)])) for k in range(1, max_k + 1)]


@dataclass
class DetectionTally:
    """Sums over rejected completions at one threshold; tallies of several files or workers add up."""

    threshold: float
    tokens: int = 0
    saved: int = 0
    with_error: int = 0
    early: int = 0
    detected: dict = field(default_factory=lambda: dict.fromkeys(DETECT_WITHIN, 0))
    delays: list = field(default_factory=list)

    def add(self, q, first_error: int | None) -> None:
        cut = cut_at(q, self.threshold)
        self.tokens += len(q)
        self.saved += tokens_saved(len(q), cut)
        if first_error is None or not 0 <= first_error < len(q):
            return
        self.with_error += 1
        self.early += cut is not None and cut < first_error
        for k in DETECT_WITHIN:
            self.detected[k] += cut is not None and cut < first_error + k
        if cut is not None and cut >= first_error:
            self.delays.append(cut - first_error)

    def metrics(self) -> dict:
        """- tokens_saved_at_5pct: share of all rejected tokens after the cut
        - detect_at_K: share of rejected completions cut at most K-1 tokens after the first error (a cut
          before the error counts: the completion is stopped; early_alarm says how often)
        - detection_delay: mean tokens from the first error to the cut, over those cut at or after it"""
        out = {"false_alarm_threshold": self.threshold, "tokens_saved_at_5pct": self.saved / max(1, self.tokens),
               "n_with_first_error": self.with_error}
        if self.with_error:
            out |= {f"detect_at_{k}": self.detected[k] / self.with_error for k in DETECT_WITHIN}
            out["early_alarm"] = self.early / self.with_error
            out["detection_delay"] = float(np.mean(self.delays)) if self.delays else None
        return out


def localization(chosen_q: list, rejected_q: list, first_error: list, rate: float = FALSE_ALARM_RATE) -> dict:
    """chosen_q, rejected_q: per pair, the Q-values over each completion's tokens; first_error: per pair,
    the offset of the rejected completion's first wrong token, or None. `DetectionTally.metrics`, plus
    auroc: the rejected tokens at and after the first error against the chosen tokens at the
    same offsets (AUROC of Q, chosen high)."""
    tally = DetectionTally(false_alarm_threshold([min(q) for q in chosen_q if len(q)], rate))
    for q, e in zip(rejected_q, first_error):
        tally.add(q, e)
    out = tally.metrics()
    known = [(e, c, r) for e, c, r in zip(first_error, chosen_q, rejected_q) if e is not None and 0 <= e < len(r)]
    good, bad = [v for e, c, _ in known for v in c[e:]], [v for e, _, r in known for v in r[e:]]
    if good and bad:
        out["auroc"] = chosen_rejected_auroc(torch.tensor(good), torch.tensor(bad))
    return out
