"""Reward-model losses: Bradley-Terry on the scalar rewards plus the goal-conditioned contrastive
term of Nath et al. 2024 (arXiv 2407.13887) on token representations from the same forward pass."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from goalrm.sampling import SamplingConfig, sample_states

FORMS = ("paper", "infonce")
COS_EPS = 1e-8  # keeps a zero vector's cosine at 0 instead of NaN


def bradley_terry(r_chosen: Tensor, r_rejected: Tensor, margin: float | None = None) -> Tensor:
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def _unit(x: Tensor) -> Tensor:
    # fp32 so bf16 representations give stable cosines
    return F.normalize(x.float(), dim=-1, eps=COS_EPS)


def _cos(sources: Tensor, goal: Tensor, matched: bool) -> Tensor:
    """Cosines of sources [B, S, H] with goals [B, G, H]: every source x goal [B, S, G], or, `matched`,
    source k with goal k [B, S, 1] (a single mean goal is every source's own)."""
    if matched and goal.shape[1] == sources.shape[1]:
        return (_unit(sources) * _unit(goal)).sum(-1, keepdim=True)
    return _unit(sources) @ _unit(goal).mT


def paper_contrastive_loss(sources: Tensor, positives: Tensor, neg_sources: Tensor, negatives: Tensor, matched: bool = False) -> Tensor:
    """-log mean σ(cos(sources, positives)) - log(1 - mean σ(cos(neg_sources, negatives))), batch-averaged.

    The means run over every source x goal pair of a row, or, `matched`, over each source with its own goal.
    """
    pos = torch.sigmoid(_cos(sources, positives, matched)).mean((1, 2))
    # 1 - mean σ(c) == mean σ(-c): the same value without the cancellation of 1 - x
    neg = torch.sigmoid(-_cos(neg_sources, negatives, matched)).mean((1, 2))
    return -(pos.log() + neg.log()).mean()


def infonce_contrastive_loss(sources: Tensor, positives: Tensor, negatives: Tensor, temperature: float = 0.1, matched: bool = False) -> Tensor:
    """InfoNCE per (row, source, positive goal) against every rejected-token goal in the batch."""
    s = _unit(sources)
    pos = _cos(sources, positives, matched) / temperature  # [B, S, G] or [B, S, 1]
    neg = s @ _unit(negatives).flatten(0, 1).T / temperature  # [B, S, B*U']: all rows' rejected tokens
    # -log softmax([pos, negs])[0] = log(1 + Σ e^(neg - pos)) = softplus(logsumexp(neg) - pos),
    # exact even when the loss is tiny; the negatives are shared by every goal
    return F.softplus(neg.logsumexp(-1, keepdim=True) - pos).mean()


@dataclass(frozen=True)
class LossConfig:
    contrastive_weight: float = 0.5  # λ; 0 is pure Bradley-Terry and skips the contrastive term entirely
    form: str = "paper"  # "paper" | "infonce"
    temperature: float = 0.1  # infonce only
    margin: float | None = None  # subtracted from r_chosen - r_rejected in the Bradley-Terry term
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # which token states the contrastive term compares

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"loss.form must be one of {FORMS}, got {self.form!r}")
        if not self.contrastive_weight >= 0:
            raise ValueError(f"loss.contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if not self.temperature > 0:
            raise ValueError(f"loss.temperature must be > 0, got {self.temperature}")


def reward_model_loss(
    rewards: Tensor,
    hidden: Tensor,
    completion_start: Tensor,
    completion_end: Tensor,
    cfg: LossConfig,
    generator: torch.Generator | None = None,
    rejected_divergence: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss BT + λ·contrastive for rewards [2B] and hidden [2B, T, H] (B chosen rows, then B rejected).
    `rejected_divergence` is the batch's (collate_pairs), for `loss.sampling.negatives: divergent`."""
    b = rewards.shape[0] // 2
    bt = bradley_terry(rewards[:b], rewards[b:], cfg.margin)
    contrastive = torch.zeros((), dtype=torch.float32, device=bt.device)
    if cfg.contrastive_weight > 0:  # λ = 0 must not pay for sampling or similarities
        s = sample_states(hidden, completion_start, completion_end, cfg.sampling, generator, rejected_divergence)
        matched = cfg.sampling.pairing == "per_source"
        if cfg.form == "paper":
            contrastive = paper_contrastive_loss(s.sources, s.positives, s.neg_sources, s.negatives, matched)
        else:
            contrastive = infonce_contrastive_loss(s.sources, s.positives, s.negatives, cfg.temperature, matched)
    total = bt + cfg.contrastive_weight * contrastive
    # detached fp32 tensors on the step's device: reading them (a host sync) is the caller's choice
    parts = {"loss": total.detach().float(), "bt_loss": bt.detach().float(), "contrastive_loss": contrastive.detach().float()}
    return total, parts
