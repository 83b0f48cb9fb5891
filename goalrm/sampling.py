"""Which token states the contrastive term compares (Nath et al. 2024, arXiv 2407.13887).

One forward pass gives hidden states for B chosen rows then B rejected rows. For each pair we draw
source states from the chosen completion, positive goals later in that same completion, and negative
goals from the rejected completion. It is all index arithmetic on small [B, n] tensors, with no
loop over the batch, so it costs next to nothing beside the forward pass.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

STRATEGIES = ("random", "late")
GOALS = ("single", "mean")


@dataclass(frozen=True)
class SamplingConfig:
    strategy: str = "random"  # "random": anywhere in the completion | "late": its last `late_fraction`
    late_fraction: float = 0.5  # p in (0, 1]; the late window is the last ceil(p * n) tokens
    sim_samples: int = 4  # sources for the positive term, and positive goals when goal="single"
    unsim_samples: int = 4  # sources and negative goals for the negative term
    goal: str = "single"  # "single": each goal is one token | "mean": one goal, the mean of the drawn tokens

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"loss.sampling.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0 < self.late_fraction <= 1:
            raise ValueError(f"loss.sampling.late_fraction must be in (0, 1], got {self.late_fraction}")
        if self.sim_samples < 1 or self.unsim_samples < 1:
            raise ValueError("loss.sampling.sim_samples and loss.sampling.unsim_samples must be >= 1")
        if self.goal not in GOALS:
            raise ValueError(f"loss.sampling.goal must be one of {GOALS}, got {self.goal!r}")


@dataclass
class ContrastiveSample:
    src: Tensor  # [B, S, H] chosen completion tokens
    goal_pos: Tensor  # [B, S, H], or [B, 1, H] for mean goals: later tokens of the same chosen completion
    src_neg: Tensor  # [B, U, H] chosen completion tokens
    goal_neg: Tensor  # [B, U, H], or [B, 1, H] for mean goals: rejected completion tokens
    src_idx: Tensor  # [B, S] positions in the chosen rows
    goal_pos_idx: Tensor  # [B, S] positions in the chosen rows (before any mean)
    src_neg_idx: Tensor  # [B, U] positions in the chosen rows
    goal_neg_idx: Tensor  # [B, U] positions in the rejected rows (before any mean)


def window_start(start: Tensor, end: Tensor, cfg: SamplingConfig) -> Tensor:
    """First position a draw may take: the completion start, or the start of its late window."""
    if cfg.strategy == "random":
        return start
    # ceil of a positive number is >= 1, and p <= 1 keeps it <= n: the window is never empty
    width = torch.ceil((end - start).double() * cfg.late_fraction).long()
    return end - width


def _draw(u: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Map uniforms u [B, n] in [0, 1) to integers in [lo, hi) of their row."""
    idx = lo[:, None] + (u * (hi - lo)[:, None]).floor().long()
    return torch.minimum(idx, hi[:, None] - 1)  # fp32 rounding can carry u * n up to n


def _gather(h: Tensor, idx: Tensor) -> Tensor:
    """h [B, T, H], idx [B, n] -> [B, n, H]."""
    return torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))


def sampling_generator(seed: int, rank: int, device: torch.device | str) -> torch.Generator:
    """The contrastive draws' generator for one rank, on the step's device: each device keeps its own
    reproducible stream (its state is checkpointed with the run)."""
    return torch.Generator(device=device).manual_seed(seed * 7919 + rank)


def sample_states(
    hidden: Tensor,
    completion_start: Tensor,
    completion_end: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
) -> ContrastiveSample:
    """Draw the contrastive term's states from hidden [2B, T, H] (B chosen rows, then B rejected)."""
    rows = hidden.shape[0]
    if rows % 2 or completion_start.shape != (rows,) or completion_end.shape != (rows,):
        raise ValueError(
            f"expected hidden [2B, T, H] with completion_start/end [2B], got {tuple(hidden.shape)}, "
            f"{tuple(completion_start.shape)}, {tuple(completion_end.shape)}"
        )
    if generator is not None and generator.device.type != hidden.device.type:
        # CUDA refuses a CPU generator mid-step; meta tensors accept one silently, so check here
        raise ValueError(
            f"the sampling generator is on {generator.device} but the hidden states are on {hidden.device}: "
            "make it with torch.Generator(device=hidden.device)"
        )
    b, s, u = rows // 2, cfg.sim_samples, cfg.unsim_samples
    lo, hi = window_start(completion_start, completion_end, cfg), completion_end
    chosen, rejected = hidden[:b], hidden[b:]

    # one draw for all four index sets
    rand = torch.rand(b, 2 * s + 2 * u, generator=generator, device=hidden.device)
    u_src, u_goal, u_src_neg, u_goal_neg = rand.split([s, s, u, u], dim=1)
    src_idx = _draw(u_src, lo[:b], hi[:b])
    # at or after every source of the row, so no pair of the all-pairs loss has its goal in the past
    goal_pos_idx = _draw(u_goal, src_idx.amax(1), hi[:b])
    src_neg_idx = _draw(u_src_neg, lo[:b], hi[:b])
    goal_neg_idx = _draw(u_goal_neg, lo[b:], hi[b:])

    goal_pos, goal_neg = _gather(chosen, goal_pos_idx), _gather(rejected, goal_neg_idx)
    if cfg.goal == "mean":
        goal_pos, goal_neg = goal_pos.mean(1, keepdim=True), goal_neg.mean(1, keepdim=True)
    return ContrastiveSample(
        src=_gather(chosen, src_idx),
        goal_pos=goal_pos,
        src_neg=_gather(chosen, src_neg_idx),
        goal_neg=goal_neg,
        src_idx=src_idx,
        goal_pos_idx=goal_pos_idx,
        src_neg_idx=src_neg_idx,
        goal_neg_idx=goal_neg_idx,
    )
