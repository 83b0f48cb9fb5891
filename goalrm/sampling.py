"""Which token states the contrastive term compares (Nath et al. 2024, arXiv 2407.13887).

One forward pass gives hidden states for B chosen rows then B rejected rows. For each pair we draw
source states from the chosen completion, positive goals later in that same completion, and negative
goals from the rejected completion. It is all index arithmetic on small
[B, n] tensors, with no loop over the batch, so it costs next to nothing beside the forward pass.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

STRATEGIES = ("random", "late")
GOALS = ("single", "mean")
PAIRINGS = ("after_last", "all", "per_source")
NEGATIVES = ("any", "divergent")


@dataclass(frozen=True)
class SamplingConfig:
    strategy: str = "random"  # "random": anywhere in the completion | "late": its last `late_fraction`
    late_fraction: float = 0.5  # p in (0, 1]; the late window is the last ceil(p * n) tokens
    source_fraction: float | None = None  # sources' own window (last fraction); None: as strategy says
    goal_fraction: float | None = None  # goals' (positive and negative) own window; None: as strategy says
    sim_samples: int = 4  # sources for the positive term, and as many positive goals
    unsim_samples: int = 4  # sources and negative goals for the negative term
    goal: str = "single"  # "single": each goal is one token | "mean": one goal, the mean of the drawn tokens
    # how positive goals follow sources; σ(cos) is averaged over every source x goal of a row except with
    # per_source. "after_last": every goal at or after the row's latest source (goals late; measured best,
    # bench/RESULTS.md) | "all": each source with its own strictly later goal, as the official code
    # | "per_source": as "all", each source compared with its own goal only
    pairing: str = "after_last"
    # "divergent": negative goals from where the rejected completion's tokens first differ from the chosen's
    # (tokens of a shared prefix are copies of positives; measured best, bench/RESULTS.md) | "any":
    # anywhere in the rejected completion
    negatives: str = "divergent"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"loss.sampling.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("late_fraction", "source_fraction", "goal_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"loss.sampling.{name} must be in (0, 1], got {value}")
        if self.sim_samples < 1 or self.unsim_samples < 1:
            raise ValueError("loss.sampling.sim_samples and loss.sampling.unsim_samples must be >= 1")
        if self.goal not in GOALS:
            raise ValueError(f"loss.sampling.goal must be one of {GOALS}, got {self.goal!r}")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"loss.sampling.pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"loss.sampling.negatives must be one of {NEGATIVES}, got {self.negatives!r}")

    def window(self, which: str) -> float:
        """The last fraction of a completion that sources ("source") or goals ("goal") are drawn from."""
        own = self.source_fraction if which == "source" else self.goal_fraction
        if own is not None:
            return own
        return self.late_fraction if self.strategy == "late" else 1.0


@dataclass
class ContrastiveSample:
    sources: Tensor  # [B, S, H] chosen completion tokens
    positives: Tensor  # [B, S, H], or [B, 1, H] for mean goals: later tokens of the same completion (see pairing)
    neg_sources: Tensor  # [B, U, H] chosen completion tokens
    negatives: Tensor  # [B, U, H], or [B, 1, H] for mean goals: rejected completion tokens


def window_start(start: Tensor, end: Tensor, fraction: float) -> Tensor:
    """First position of the last ceil(fraction * n) tokens of each span."""
    # ceil of a positive number is >= 1, and fraction <= 1 keeps it <= n: the window is never empty
    width = torch.ceil((end - start).double() * fraction).long()
    return end - width


def divergence(chosen_ids: list[int], chosen_start: int, rejected_ids: list[int], rejected_start: int) -> int:
    """First position of the rejected completion whose token differs from the chosen's at the same
    offset; the rejected end when one completion is a prefix of the other."""
    c, r = chosen_ids[chosen_start:], rejected_ids[rejected_start:]
    k = next((i for i, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))
    return rejected_start + k


def sampling_generator(seed: int, rank: int, device: torch.device | str) -> torch.Generator:
    """The contrastive draws' generator for one rank, on the step's device: each device keeps its own
    reproducible stream (its state is checkpointed with the run)."""
    return torch.Generator(device=device).manual_seed(seed * 7919 + rank)


def _draw(u: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Map uniforms u [B, n] in [0, 1) to integers in [lo, hi) of their row (lo, hi: [B] or [B, n])."""
    lo, hi = (x if x.dim() == 2 else x[:, None] for x in (lo, hi))
    idx = lo + (u * (hi - lo)).floor().long()
    return torch.minimum(idx, hi - 1)  # fp32 rounding can carry u * n up to n


def _gather(h: Tensor, idx: Tensor) -> Tensor:
    """h [B, T, H], idx [B, n] -> [B, n, H]."""
    return torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))


def sample_states(
    hidden: Tensor,
    completion_start: Tensor,
    completion_end: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    rejected_divergence: Tensor | None = None,
) -> ContrastiveSample:
    """Draw the contrastive term's states from hidden [2B, T, H] (B chosen rows, then B rejected).

    `rejected_divergence` [B] (`divergence`, in the rejected rows' positions) is needed for
    `negatives: divergent`; a pair whose completions share no prefix falls back to the whole completion."""
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
    start, end = completion_start, completion_end
    src_lo, goal_lo = window_start(start, end, cfg.window("source")), window_start(start, end, cfg.window("goal"))
    c_end, r_end = end[:b], end[b:]
    neg_lo = goal_lo[b:]
    if cfg.negatives == "divergent":
        if rejected_divergence is None:
            raise ValueError("loss.sampling.negatives: divergent needs the batch's rejected_divergence")
        div = rejected_divergence.to(neg_lo.device)
        neg_lo = torch.where(div < r_end, torch.maximum(neg_lo, div), neg_lo)
    chosen, rejected = hidden[:b], hidden[b:]

    # one draw for all four index sets
    rand = torch.rand(b, 2 * s + 2 * u, generator=generator, device=hidden.device)
    u_src, u_goal, u_src_neg, u_goal_neg = rand.split([s, s, u, u], dim=1)
    if cfg.pairing == "after_last":
        src_idx = _draw(u_src, src_lo[:b], c_end)
        goal_first = torch.maximum(goal_lo[:b], src_idx.amax(1))[:, None].expand_as(src_idx)
    else:
        # a source leaves room for a strictly later goal (a goal on its own source is a trivial cos = 1)
        # unless its window is a single token
        src_idx = _draw(u_src, src_lo[:b], torch.maximum(src_lo[:b] + 1, c_end - 1))
        goal_first = torch.maximum(goal_lo[:b, None], torch.minimum(src_idx + 1, c_end[:, None] - 1))
    pos_idx = _draw(u_goal, goal_first, c_end[:, None].expand_as(goal_first))
    neg_src_idx = _draw(u_src_neg, src_lo[:b], c_end)
    neg_idx = _draw(u_goal_neg, neg_lo, r_end)

    positives, negatives = _gather(chosen, pos_idx), _gather(rejected, neg_idx)
    if cfg.goal == "mean":
        positives, negatives = positives.mean(1, keepdim=True), negatives.mean(1, keepdim=True)
    return ContrastiveSample(sources=_gather(chosen, src_idx), positives=positives, neg_sources=_gather(chosen, neg_src_idx), negatives=negatives)
