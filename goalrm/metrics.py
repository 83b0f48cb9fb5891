"""Evaluation metrics on plain tensors."""

import torch


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). labels are 0/1."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    avg = first.double() + (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    return float((r_chosen > r_rejected).double().mean())


def chosen_rejected_auroc(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """AUROC of a score with chosen labelled 1 and rejected 0."""
    scores = torch.cat([chosen, rejected])
    labels = torch.cat([torch.ones_like(chosen), torch.zeros_like(rejected)])
    return auroc(scores, labels)
