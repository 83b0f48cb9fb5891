"""Score preference pairs with a reward model and summarise: accuracy, AUROC, Q-values."""

from dataclasses import dataclass, field

import numpy as np
import torch

from goalrm.data.batch import collate_pairs
from goalrm.data.model_batch import collate_for_model
from goalrm.localization import localization
from goalrm.metrics import chosen_rejected_auroc, pairwise_accuracy
from goalrm.qvalues import final_token_reps, prefix_mean_q, q_values

PREFIX_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass
class PairScores:
    """Per-pair scores; lists so that shards from several workers concatenate."""

    r_chosen: list = field(default_factory=list)
    r_rejected: list = field(default_factory=list)
    prefix_q_chosen: dict = field(default_factory=lambda: {f: [] for f in PREFIX_FRACTIONS})
    prefix_q_rejected: dict = field(default_factory=lambda: {f: [] for f in PREFIX_FRACTIONS})
    q_chosen: list = field(default_factory=list)  # per pair, Q at each chosen completion token
    q_rejected: list = field(default_factory=list)
    first_error: list = field(default_factory=list)  # per pair, the rejected completion's first wrong token, or None

    def extend(self, other: "PairScores") -> "PairScores":
        self.r_chosen += other.r_chosen
        self.r_rejected += other.r_rejected
        for f in PREFIX_FRACTIONS:
            self.prefix_q_chosen[f] += other.prefix_q_chosen[f]
            self.prefix_q_rejected[f] += other.prefix_q_rejected[f]
        self.q_chosen += other.q_chosen
        self.q_rejected += other.q_rejected
        self.first_error += other.first_error
        return self


def _forward(model, pairs, pad_id: int, batch_size: int, goal: torch.Tensor | None, device, packing: str | None = None):
    """Per batch: (pairs in it, padded batch on `device`, RewardOutput, Q-values [2n, T] or None); chosen rows first."""
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        mb = collate_for_model(chunk, pad_id, packing).to(device)
        batch = mb.padded
        res = model(batch["input_ids"], batch["attention_mask"], with_reps=goal is not None, packed=mb.packed)
        yield len(chunk), batch, res, None if goal is None else q_values(res.reps, goal.to(device))


@torch.no_grad()
def evaluate_pairs(
    model, pairs, pad_id: int, batch_size: int, goal: torch.Tensor | None, device="cpu", packing: str | None = None,
    n_real: int | None = None,
) -> PairScores:
    """`model(input_ids, attention_mask, with_reps=True)` returns a RewardOutput (a RewardModel or a DeepSpeed engine).
    `packing`: a layout ("flat", "rows") that the model's attention takes, or None for padded batches.

    Only the first `n_real` pairs count (default: all): the rest pad a rank's shard so that every rank
    runs the same forwards (`goalrm.data.sampler.even_shard`). One host copy per batch, none per row."""
    out = PairScores()
    n_real = len(pairs) if n_real is None else n_real
    done = 0
    for n, batch, res, q in _forward(model, pairs, pad_id, batch_size, goal, device, packing):
        keep = max(0, min(n, n_real - done))
        done += n
        rows = torch.cat([torch.arange(keep), n + torch.arange(keep)]).to(res.rewards.device)
        found = {"rewards": res.rewards[rows].float()}
        if q is not None:
            found["q"], start, end = q[rows], batch["completion_start"][rows], batch["completion_end"][rows]
            for f in PREFIX_FRACTIONS:
                found[f] = prefix_mean_q(found["q"], start, end, f)
            found["spans"], found["error"] = torch.stack([start, end], 1), batch["first_error"][:keep]
        found = {k: v.cpu() for k, v in found.items()}  # the batch's one host sync
        r = found["rewards"].tolist()
        out.r_chosen += r[:keep]
        out.r_rejected += r[keep:]
        if q is None:
            continue
        for f in PREFIX_FRACTIONS:
            pq = found[f].tolist()
            out.prefix_q_chosen[f] += pq[:keep]
            out.prefix_q_rejected[f] += pq[keep:]
        spans, tokens = found["spans"].tolist(), [found["q"][j, a:e].tolist() for j, (a, e) in enumerate(found["spans"].tolist())]
        out.q_chosen += tokens[:keep]
        out.q_rejected += tokens[keep:]
        # offsets into the rejected completion; -1 (unknown) becomes None
        out.first_error += [e - spans[keep + j][0] if e >= 0 else None for j, e in enumerate(found["error"].tolist())]
    return out


@torch.no_grad()
def token_q_values(model, pairs, pad_id: int, goal: torch.Tensor, batch_size: int = 32, device="cpu") -> list[tuple[list, list]]:
    """Each pair's Q-value at every token of its chosen and rejected sequence (prompt included)."""
    out = []
    for n, batch, _, q in _forward(model, pairs, pad_id, batch_size, goal, device):
        lengths = batch["attention_mask"].sum(1).tolist()  # right padding: real tokens come first
        q = q.cpu()
        rows = [q[j, : lengths[j]].tolist() for j in range(2 * n)]
        out += list(zip(rows[:n], rows[n:]))
    return out


def summarize(scores: PairScores) -> dict:
    rc, rr = torch.tensor(scores.r_chosen), torch.tensor(scores.r_rejected)
    metrics = {
        "n_pairs": len(rc),
        "accuracy": pairwise_accuracy(rc, rr),
        "auroc": chosen_rejected_auroc(rc, rr),
        "reward_margin": float((rc - rr).mean()),
    }
    if scores.prefix_q_chosen[1.0]:
        metrics["prefix_auroc"] = {
            str(f): chosen_rejected_auroc(torch.tensor(scores.prefix_q_chosen[f]), torch.tensor(scores.prefix_q_rejected[f]))
            for f in PREFIX_FRACTIONS
        }
        metrics["q_gap"] = float(
            torch.tensor(scores.prefix_q_chosen[1.0]).mean() - torch.tensor(scores.prefix_q_rejected[1.0]).mean()
        )
    known = [(e, c, r) for e, c, r in zip(scores.first_error, scores.q_chosen, scores.q_rejected) if e is not None and 0 < e < len(r) and e < len(c)]
    if known:  # mean Q of the rejected before and after its first wrong token, and of the chosen after that offset
        metrics["q_before_error"] = float(np.mean([np.mean(r[:e]) for e, _, r in known]))
        metrics["q_after_error"] = float(np.mean([np.mean(r[e:]) for e, _, r in known]))
        metrics["q_after_error_chosen"] = float(np.mean([np.mean(c[e:]) for e, c, _ in known]))
    if scores.q_chosen:
        metrics["localization"] = localization(scores.q_chosen, scores.q_rejected, scores.first_error)
    return metrics


@torch.no_grad()
def goal_and_reward_stats(model, pairs, pad_id: int, batch_size: int, device="cpu", n_real: int | None = None):
    """Sums for the goal state (mean final-token representation of preferred completions) and for the
    reward mean/std, as float64 tensors on `device`: (rep_sum [D], count, r_sum, r_sqsum), so that workers
    can all-reduce them. Only the first `n_real` pairs count (see `evaluate_pairs`)."""
    n_real = len(pairs) if n_real is None else n_real
    rep_sum, stats = None, torch.zeros(3, dtype=torch.float64, device=device)
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        n, keep = len(chunk), max(0, min(len(chunk), n_real - i))
        batch = {k: v.to(device) for k, v in collate_pairs(chunk, pad_id).items()}
        res = model(batch["input_ids"], batch["attention_mask"], with_reps=True)
        final = final_token_reps(res.reps[:keep], res.last_index[:keep]).double().sum(0)
        rep_sum = final if rep_sum is None else rep_sum + final
        r = torch.cat([res.rewards[:keep], res.rewards[n : n + keep]]).double()
        stats += torch.stack([torch.tensor(float(keep), dtype=torch.float64, device=device), r.sum(), (r * r).sum()])
    return rep_sum, *stats.unbind()


def goal_and_reward_summary(rep_sum: torch.Tensor, count, r_sum, r_sqsum):
    """(goal state, reward mean, reward std) from the (all-reduced) sums of `goal_and_reward_stats`."""
    count, r_sum, r_sqsum = float(count), float(r_sum), float(r_sqsum)
    n_rewards = 2 * count  # chosen and rejected
    mean = r_sum / n_rewards
    return (rep_sum / count).float(), mean, max(r_sqsum / n_rewards - mean**2, 0.0) ** 0.5
