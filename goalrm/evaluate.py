"""Score preference pairs with a reward model and summarise: accuracy, AUROC, Q-values."""

from dataclasses import dataclass, field

import torch

from goalrm.data.batch import collate_pairs
from goalrm.data.pack import collate_for_model
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
    q_before_error: list = field(default_factory=list)  # rejected rows with a known first wrong token
    q_after_error: list = field(default_factory=list)
    q_after_error_chosen: list = field(default_factory=list)  # the chosen solution over the same positions

    def extend(self, other: "PairScores") -> "PairScores":
        self.r_chosen += other.r_chosen
        self.r_rejected += other.r_rejected
        for f in PREFIX_FRACTIONS:
            self.prefix_q_chosen[f] += other.prefix_q_chosen[f]
            self.prefix_q_rejected[f] += other.prefix_q_rejected[f]
        self.q_before_error += other.q_before_error
        self.q_after_error += other.q_after_error
        self.q_after_error_chosen += other.q_after_error_chosen
        return self


def _forward(model, pairs, pad_id: int, batch_size: int, goal: torch.Tensor | None, device, packing: bool = False):
    """Per batch: (pairs in it, collated batch, RewardOutput, Q-values [2n, T] or None); chosen rows first."""
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        batch, packed = collate_for_model(chunk, pad_id, device, packing)
        res = model(batch["input_ids"], batch["attention_mask"], with_reps=goal is not None, packed=packed)
        yield len(chunk), batch, res, None if goal is None else q_values(res.reps, goal.to(device))


@torch.no_grad()
def score_pairs(
    model, pairs, pad_id: int, batch_size: int, goal: torch.Tensor | None, device="cpu", packing: bool = False
) -> PairScores:
    """`model(input_ids, attention_mask, with_reps=True)` returns a RewardOutput (a RewardModel or a DeepSpeed engine)."""
    out = PairScores()
    for n, batch, res, q in _forward(model, pairs, pad_id, batch_size, goal, device, packing):
        out.r_chosen += res.rewards[:n].float().cpu().tolist()
        out.r_rejected += res.rewards[n:].float().cpu().tolist()
        if q is None:
            continue
        start, end = batch["completion_start"], batch["completion_end"]
        for f in PREFIX_FRACTIONS:
            pq = prefix_mean_q(q, start, end, f).cpu()
            out.prefix_q_chosen[f] += pq[:n].tolist()
            out.prefix_q_rejected[f] += pq[n:].tolist()
        err = batch["first_error"]
        q_rej, s_rej, e_rej = q[n:], start[n:], end[n:]
        for j in torch.nonzero(err >= 0).flatten().tolist():
            # right padding and a shared prompt put chosen and rejected tokens at the same positions
            before = q_rej[j, s_rej[j] : err[j]]
            after = q_rej[j, err[j] : e_rej[j]]
            after_chosen = q[j, err[j] : end[j]]
            if len(before) and len(after) and len(after_chosen):
                out.q_before_error.append(float(before.mean()))
                out.q_after_error.append(float(after.mean()))
                out.q_after_error_chosen.append(float(after_chosen.mean()))
    return out


@torch.no_grad()
def token_q_values(model, pairs, pad_id: int, goal: torch.Tensor, batch_size: int = 32, device="cpu") -> list[tuple[list, list]]:
    """Each pair's Q-value at every token of its chosen and rejected sequence (prompt included)."""
    out = []
    for n, batch, _, q in _forward(model, pairs, pad_id, batch_size, goal, device):
        lengths = batch["attention_mask"].sum(1).tolist()  # right padding: real tokens come first
        rows = [q[j, : lengths[j]].cpu().tolist() for j in range(2 * n)]
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
    if scores.q_before_error:
        metrics["q_before_error"] = float(torch.tensor(scores.q_before_error).mean())
        metrics["q_after_error"] = float(torch.tensor(scores.q_after_error).mean())
        metrics["q_after_error_chosen"] = float(torch.tensor(scores.q_after_error_chosen).mean())
    return metrics


@torch.no_grad()
def goal_and_reward_stats(model, pairs, pad_id: int, batch_size: int, device="cpu"):
    """Sums for the goal state (mean final-token representation of preferred completions) and
    for the reward mean/std; sums so that workers can all-reduce them."""
    rep_sum, count, r_sum, r_sqsum = None, 0, 0.0, 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        n = len(chunk)
        batch = {k: v.to(device) for k, v in collate_pairs(chunk, pad_id).items()}
        res = model(batch["input_ids"], batch["attention_mask"], with_reps=True)
        final = final_token_reps(res.reps[:n], res.last_index[:n]).float().sum(0)
        rep_sum = final if rep_sum is None else rep_sum + final
        count += n
        r = res.rewards.double()
        r_sum += float(r.sum())
        r_sqsum += float((r * r).sum())
    return rep_sum, count, r_sum, r_sqsum


def goal_and_reward_summary(rep_sum: torch.Tensor, count: float, r_sum: float, r_sqsum: float):
    """(goal state, reward mean, reward std) from the (all-reduced) sums of `goal_and_reward_stats`."""
    n_rewards = 2 * count  # chosen and rejected
    mean = r_sum / n_rewards
    return rep_sum.float() / count, mean, max(r_sqsum / n_rewards - mean**2, 0.0) ** 0.5

