import math

import pytest
import torch
import torch.nn.functional as F

import goalrm.losses as losses
from goalrm.losses import (
    LossConfig,
    bradley_terry,
    infonce_contrastive_loss,
    paper_contrastive_loss,
    reward_model_loss,
)
from goalrm.sampling import SamplingConfig, sample_states

from helpers import drawn_positions


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# -- hand-computed values --------------------------------------------------------------------------


def test_bradley_terry_by_hand():
    rc, rr = t([1.0, 0.0]), t([0.0, 0.0])
    assert bradley_terry(rc, rr).item() == pytest.approx((-math.log(sig(1)) - math.log(0.5)) / 2)
    expected = (-math.log(sig(0.5)) - math.log(sig(-0.5))) / 2
    assert bradley_terry(rc, rr, margin=0.5).item() == pytest.approx(expected)


def test_paper_loss_by_hand():
    # row 0: cosines 1 and 0 against the positive goals, -1 against the negative goal
    # row 1: cosines 1 and -1 (mean σ = 1/2), 0 against the negative goal (1 - σ(0) = 1/2)
    src = t([[[2, 0]], [[0, 1]]])
    positives = t([[[3, 0], [0, 5]], [[0, 1], [0, -1]]])
    neg_sources = t([[[1, 1]], [[1, 0]]])
    negatives = t([[[-2, -2]], [[0, 4]]])
    row0 = -math.log((sig(1) + 0.5) / 2) - math.log(1 - sig(-1))
    row1 = 2 * math.log(2)
    assert paper_contrastive_loss(src, positives, neg_sources, negatives).item() == pytest.approx((row0 + row1) / 2)


def test_infonce_by_hand():
    tau = 0.5
    src = t([[[1, 0]], [[0, 1]]])
    positives = t([[[1, 0]], [[1, 1]]])  # cosines 1 and 1/√2
    negatives = t([[[-1, 0]], [[0, 1]]])  # every row sees both as negatives
    # row 0: pos 1, negs -1 and 0; row 1: pos 1/√2, negs 0 and 1
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(-1 / tau) + 1))
    p1 = (1 / math.sqrt(2)) / tau
    row1 = -math.log(math.exp(p1) / (math.exp(p1) + 1 + math.exp(1 / tau)))
    assert infonce_contrastive_loss(src, positives, negatives, tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


# -- loop references on random inputs ----------------------------------------------------------------


def paper_reference(src, positives, neg_sources, negatives) -> float:
    total = 0.0
    for b in range(src.shape[0]):
        pos = [sig(cos(s, g)) for s in src[b] for g in positives[b]]
        neg = [sig(cos(s, g)) for s in neg_sources[b] for g in negatives[b]]
        total += -math.log(sum(pos) / len(pos)) - math.log(1 - sum(neg) / len(neg))
    return total / src.shape[0]


def infonce_reference(src, positives, negatives, tau) -> float:
    negs = negatives.reshape(-1, negatives.shape[-1])
    terms = []
    for b in range(src.shape[0]):
        for s in src[b]:
            neg_logits = [cos(s, n) / tau for n in negs]
            for g in positives[b]:
                pos = cos(s, g) / tau
                terms.append(-pos + math.log(math.exp(pos) + sum(math.exp(x) for x in neg_logits)))
    return sum(terms) / len(terms)


SHAPES = [(1, 1, 1, 1, 1), (2, 3, 3, 2, 2), (3, 4, 1, 5, 1), (4, 2, 5, 3, 4)]  # B, S, G, U, U'


@pytest.mark.parametrize("b,s,g,u,un", SHAPES)
def test_paper_loss_matches_loop(b, s, g, u, un):
    gen = torch.Generator().manual_seed(b * 100 + s * 10 + g)
    args = [torch.randn(b, n, 8, generator=gen) for n in (s, g, u, un)]
    assert paper_contrastive_loss(*args).item() == pytest.approx(paper_reference(*args), rel=1e-5)


@pytest.mark.parametrize("b,s,g,u,un", SHAPES)
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_infonce_matches_loop(b, s, g, u, un, tau):
    gen = torch.Generator().manual_seed(b * 100 + s * 10 + g)
    src, positives, negatives = (torch.randn(b, n, 8, generator=gen) for n in (s, g, un))
    expected = infonce_reference(src, positives, negatives, tau)
    assert infonce_contrastive_loss(src, positives, negatives, tau).item() == pytest.approx(expected, rel=1e-5)


def test_zero_vectors_stay_finite():
    src = torch.zeros(2, 3, 4, requires_grad=True)
    goal = torch.randn(2, 3, 4)
    loss = paper_contrastive_loss(src, goal, src, goal) + infonce_contrastive_loss(src, goal, goal)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(src.grad).all()


# -- the combined loss -------------------------------------------------------------------------------


def make_batch(b=3, t=14, h=6, seed=0):
    """Rows with a prompt before the completion and padding after it."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * b, t, h, generator=gen, requires_grad=True)
    rewards = torch.randn(2 * b, generator=gen, requires_grad=True)
    start = torch.randint(1, 5, (2 * b,), generator=gen)
    end = start + torch.randint(1, t - 5, (2 * b,), generator=gen)
    return rewards, hidden, start, end


def loss_of(rewards, hidden, start, end, cfg, generator=None):
    """reward_model_loss on random states: the rejected completions share no prefix with the chosen."""
    return reward_model_loss(rewards, hidden, start, end, cfg, generator, start[len(start) // 2 :])


def test_config_validation():
    for bad in ({"form": "triplet"}, {"contrastive_weight": -0.1}, {"temperature": 0.0}):
        with pytest.raises(ValueError, match="loss"):
            LossConfig(**bad)
    with pytest.raises(ValueError, match="loss.sampling"):
        SamplingConfig(sim_samples=0)


def test_lambda_zero_is_pure_bradley_terry(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("sample_states called with contrastive_weight=0")

    monkeypatch.setattr(losses, "sample_states", fail)
    rewards, hidden, start, end = make_batch()
    total, parts = loss_of(rewards, hidden, start, end, LossConfig(contrastive_weight=0.0, margin=0.2))
    assert total.item() == pytest.approx(bradley_terry(rewards[:3], rewards[3:], 0.2).item())
    values = {k: float(v) for k, v in parts.items()}
    assert values == {"loss": pytest.approx(total.item()), "bt_loss": pytest.approx(total.item()), "contrastive_loss": 0.0}
    g_rewards, g_hidden = torch.autograd.grad(total, [rewards, hidden], allow_unused=True)
    assert g_hidden is None and g_rewards.abs().sum() > 0


@pytest.mark.parametrize("form", ["paper", "infonce"])
@pytest.mark.parametrize("goal", ["single", "mean"])
def test_total_is_bt_plus_weighted_contrastive(form, goal):
    rewards, hidden, start, end = make_batch()
    cfg = LossConfig(contrastive_weight=0.3, form=form, temperature=0.2, sampling=SamplingConfig(goal=goal, strategy="late"))
    total, parts = loss_of(rewards, hidden, start, end, cfg, torch.Generator().manual_seed(5))
    # detached fp32 tensors on the step's device: the loop reads them only at a report, not every step
    assert all(v.dtype == torch.float32 and v.device == hidden.device and not v.requires_grad and v.dim() == 0 for v in parts.values())
    parts = {k: float(v) for k, v in parts.items()}
    assert parts["loss"] == pytest.approx(parts["bt_loss"] + 0.3 * parts["contrastive_loss"])
    # the contrastive part is the chosen form on the states the same seed draws
    s = sample_states(hidden, start, end, cfg.sampling, torch.Generator().manual_seed(5), start[3:])
    if form == "paper":
        expected = paper_contrastive_loss(s.sources, s.positives, s.neg_sources, s.negatives)
    else:
        expected = infonce_contrastive_loss(s.sources, s.positives, s.negatives, 0.2)
    assert parts["contrastive_loss"] == pytest.approx(expected.item())


@pytest.mark.parametrize("form", ["paper", "infonce"])
def test_contrastive_gradient_reaches_only_sampled_completion_tokens(form):
    rewards, hidden, start, end = make_batch(b=4, t=16)
    cfg = LossConfig(contrastive_weight=1.0, form=form)
    total, _ = loss_of(rewards, hidden, start, end, cfg, torch.Generator().manual_seed(7))
    total.backward()
    touched = hidden.grad.abs().sum(-1) > 0  # [2B, T]

    pos = drawn_positions(16, start, end, cfg.sampling, seed=7)  # the same draw, read off as positions
    sampled = torch.zeros_like(touched)
    for r in range(4):
        sampled[r, pos["sources"][r]] = True
        sampled[r, pos["positives"][r]] = True
        if form == "paper":  # infonce has no negative-term sources
            sampled[r, pos["neg_sources"][r]] = True
        sampled[4 + r, pos["negatives"][r]] = True
    assert not (touched & ~sampled).any()
    positions = torch.arange(16)[None]
    completion = (positions >= start[:, None]) & (positions < end[:, None])
    assert not (touched & ~completion).any()  # never prompt or pad
    assert touched[:4].any() and touched[4:].any()  # chosen and rejected rows both get gradient


def test_contrastive_term_leaves_reward_gradient_alone():
    rewards, hidden, start, end = make_batch()
    grads = []
    for lam in (0.0, 0.5):
        total, _ = loss_of(rewards, hidden, start, end, LossConfig(contrastive_weight=lam))
        grads.append(torch.autograd.grad(total, rewards)[0])
    assert torch.equal(grads[0], grads[1])


def test_bf16_hidden_gives_fp32_loss():
    rewards, hidden, start, end = make_batch()
    total, _ = loss_of(rewards, hidden.detach().bfloat16(), start, end, LossConfig())
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_per_source_pairing_takes_each_source_with_its_own_goal():
    """Hand-computed: cosines 1 and 0 on the matched pairs, -1 and 0 across them."""
    src = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    goal = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # cos(s0,g0)=1, cos(s1,g1)=0.707, cos(s0,g1)=0.707, cos(s1,g0)=0
    neg_src, neg_goal = src, torch.tensor([[[-1.0, 0.0], [0.0, -1.0]]])  # matched cos -1, -1; crossed 0, 0
    sig = torch.sigmoid
    c = 2**-0.5
    matched = -(torch.log((sig(torch.tensor(1.0)) + sig(torch.tensor(c))) / 2) + torch.log(sig(torch.tensor(1.0))))
    every = -(torch.log((sig(torch.tensor(1.0)) + 2 * sig(torch.tensor(c)) + sig(torch.tensor(0.0))) / 4)
              + torch.log((2 * sig(torch.tensor(1.0)) + 2 * sig(torch.tensor(0.0))) / 4))
    assert paper_contrastive_loss(src, goal, neg_src, neg_goal, matched=True).item() == pytest.approx(matched.item(), abs=1e-6)
    assert paper_contrastive_loss(src, goal, neg_src, neg_goal).item() == pytest.approx(every.item(), abs=1e-6)
    # a single mean goal is every source's own goal: both readings agree
    mean_goal = goal.mean(1, keepdim=True)
    assert paper_contrastive_loss(src, mean_goal, neg_src, neg_goal[:, :1], matched=True).item() == pytest.approx(
        paper_contrastive_loss(src, mean_goal, neg_src, neg_goal[:, :1]).item()
    )


def test_pairing_switch_reaches_the_loss():
    rewards, hidden, start, end = make_batch()
    values = {}
    for pairing in ("after_last", "all", "per_source"):
        cfg = LossConfig(contrastive_weight=1.0, sampling=SamplingConfig(pairing=pairing, sim_samples=6))
        _, parts = loss_of(rewards, hidden, start, end, cfg, torch.Generator().manual_seed(3))
        values[pairing] = float(parts["contrastive_loss"])
    assert values["all"] != pytest.approx(values["per_source"], abs=1e-4)
    assert values["after_last"] != pytest.approx(values["all"], abs=1e-4)
