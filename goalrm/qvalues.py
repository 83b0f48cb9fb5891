"""Token-level Q-values: Q(t) = cos(h_t, g) toward a goal state g."""

import torch
import torch.nn.functional as F


def q_values(reps: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """reps [N, T, H], goal [H] or [N, H] -> [N, T]."""
    goal = goal if goal.dim() == 2 else goal.unsqueeze(0)
    return F.cosine_similarity(reps.float(), goal.float().unsqueeze(1).to(reps.device), dim=-1)


def final_token_reps(reps: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """Each row's representation at its last real token: [N, H]."""
    return reps[torch.arange(reps.shape[0], device=reps.device), last_index]


def span_mask(start: torch.Tensor, end: torch.Tensor, length: int) -> torch.Tensor:
    """[N, length] bool, True on positions start..end-1."""
    pos = torch.arange(length, device=start.device).unsqueeze(0)
    return (pos >= start.unsqueeze(1)) & (pos < end.unsqueeze(1))


def prefix_mean_q(q: torch.Tensor, start: torch.Tensor, end: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean Q-value over the leading `fraction` of each completion (at least one token): [N]."""
    n = end - start
    cut = start + torch.clamp(torch.ceil(n.float() * fraction).long(), min=1)
    mask = span_mask(start, torch.minimum(cut, end), q.shape[1]).float()
    return (q * mask).sum(1) / mask.sum(1)
