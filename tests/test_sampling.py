import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goalrm.sampling import SamplingConfig, sample_states


def position_hidden(rows: int, t: int, h: int = 2) -> torch.Tensor:
    """hidden[r, t] = [r, t, ...]: a gathered state names the row and position it came from."""
    r = torch.arange(rows, dtype=torch.float64)[:, None].expand(rows, t)
    p = torch.arange(t, dtype=torch.float64)[None].expand(rows, t)
    return torch.stack([r, p] + [p * 0] * (h - 2), -1)


def late_lo(start: int, end: int, cfg: SamplingConfig) -> int:
    if cfg.strategy == "random":
        return start
    return end - max(1, math.ceil(cfg.late_fraction * (end - start)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "early"},
        {"late_fraction": 0.0},
        {"late_fraction": 1.5},
        {"sim_samples": 0},
        {"unsim_samples": 0},
        {"goal": "median"},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="loss.sampling"):
        SamplingConfig(**kwargs)


def test_rejects_odd_batch():
    with pytest.raises(ValueError, match="2B"):
        sample_states(torch.zeros(3, 5, 2), torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long), SamplingConfig())


@pytest.mark.parametrize("goal", ["single", "mean"])
def test_shapes(goal):
    b, t, h = 3, 10, 5
    hidden = torch.randn(2 * b, t, h)
    start, end = torch.full((2 * b,), 2), torch.full((2 * b,), 9)
    s = sample_states(hidden, start, end, SamplingConfig(sim_samples=4, unsim_samples=6, goal=goal))
    g_pos, g_neg = (1, 1) if goal == "mean" else (4, 6)
    assert s.src.shape == (b, 4, h) and s.goal_pos.shape == (b, g_pos, h)
    assert s.src_neg.shape == (b, 6, h) and s.goal_neg.shape == (b, g_neg, h)
    assert s.src_idx.shape == s.goal_pos_idx.shape == (b, 4)
    assert s.src_neg_idx.shape == s.goal_neg_idx.shape == (b, 6)
    assert s.src_idx.dtype == torch.long


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    t = draw(st.integers(2, 24))
    spans = []
    for _ in range(2 * b):
        start = draw(st.integers(0, t - 1))
        spans.append((start, draw(st.integers(start + 1, t))))
    cfg = SamplingConfig(
        strategy=draw(st.sampled_from(["random", "late"])),
        late_fraction=draw(st.floats(0.01, 1.0)),
        sim_samples=draw(st.integers(1, 6)),
        unsim_samples=draw(st.integers(1, 6)),
        goal=draw(st.sampled_from(["single", "mean"])),
    )
    return b, t, spans, cfg, draw(st.integers(0, 2**31))


@settings(max_examples=300, deadline=None)
@given(batches())
def test_indices_stay_in_their_spans(case):
    b, t, spans, cfg, seed = case
    start = torch.tensor([s for s, _ in spans])
    end = torch.tensor([e for _, e in spans])
    hidden = position_hidden(2 * b, t)
    s = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(seed))
    for r in range(b):
        c_lo, c_hi = late_lo(*spans[r], cfg), spans[r][1]
        n_lo, n_hi = late_lo(*spans[b + r], cfg), spans[b + r][1]
        src, src_neg = s.src_idx[r].tolist(), s.src_neg_idx[r].tolist()
        goal_pos, goal_neg = s.goal_pos_idx[r].tolist(), s.goal_neg_idx[r].tolist()
        # sources: chosen completion (late window), never prompt or pad
        assert all(c_lo <= i < c_hi for i in src + src_neg)
        # positive goals: no earlier than any source, still inside the chosen completion
        assert all(max(src) <= g < c_hi for g in goal_pos)
        # negative goals: rejected completion (late window)
        assert all(n_lo <= g < n_hi for g in goal_neg)
    # the states are the ones the indices name (chosen rows 0..B-1, rejected rows B..2B-1)
    rows = torch.arange(b)[:, None]
    assert torch.equal(s.src, hidden[rows, s.src_idx])
    assert torch.equal(s.src_neg, hidden[rows, s.src_neg_idx])
    goal_pos, goal_neg = hidden[rows, s.goal_pos_idx], hidden[b + rows, s.goal_neg_idx]
    if cfg.goal == "mean":
        goal_pos, goal_neg = goal_pos.mean(1, keepdim=True), goal_neg.mean(1, keepdim=True)
    assert torch.allclose(s.goal_pos, goal_pos) and torch.allclose(s.goal_neg, goal_neg)


@pytest.mark.parametrize("strategy,fraction", [("random", 1.0), ("late", 0.5), ("late", 0.01), ("late", 1.0)])
def test_many_draws_cover_exactly_the_window(strategy, fraction):
    # 2000 draws per set: every window position is hit, and nothing outside it (off-by-one check)
    spans = [(3, 8), (0, 1), (2, 12), (5, 6)]  # chosen rows, then rejected rows
    cfg = SamplingConfig(strategy=strategy, late_fraction=fraction, sim_samples=2000, unsim_samples=2000)
    start, end = torch.tensor([a for a, _ in spans]), torch.tensor([e for _, e in spans])
    s = sample_states(position_hidden(4, 12), start, end, cfg, torch.Generator().manual_seed(0))
    for r in range(2):
        c_lo, c_hi = late_lo(*spans[r], cfg), spans[r][1]
        n_lo, n_hi = late_lo(*spans[2 + r], cfg), spans[2 + r][1]
        assert set(s.src_idx[r].tolist()) == set(range(c_lo, c_hi))
        assert set(s.src_neg_idx[r].tolist()) == set(range(c_lo, c_hi))
        assert set(s.goal_neg_idx[r].tolist()) == set(range(n_lo, n_hi))
        # with this many sources the max is the last token, so every positive goal is the last token
        assert set(s.goal_pos_idx[r].tolist()) == {c_hi - 1}


def test_late_window_sizes():
    # length n -> last ceil(p * n) tokens
    start, end = torch.tensor([0, 0, 0, 0]), torch.tensor([1, 3, 10, 7])
    cfg = SamplingConfig(strategy="late", late_fraction=0.3, sim_samples=500, unsim_samples=500)
    s = sample_states(position_hidden(4, 10), start, end, cfg, torch.Generator().manual_seed(1))
    assert set(s.src_idx[0].tolist()) == {0}  # n=1: ceil(0.3) = 1
    assert set(s.src_idx[1].tolist()) == {2}  # n=3: ceil(0.9) = 1
    assert set(s.goal_neg_idx[0].tolist()) == {7, 8, 9}  # n=10: 3
    assert set(s.goal_neg_idx[1].tolist()) == {4, 5, 6}  # n=7: ceil(2.1) = 3


def test_seeded_generator_reproduces():
    hidden = torch.randn(6, 16, 4)
    start, end = torch.tensor([1, 2, 3, 0, 4, 5]), torch.tensor([16, 9, 12, 8, 15, 6])
    cfg = SamplingConfig(strategy="late", late_fraction=0.7)
    a = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(123))
    b = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(123))
    c = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(124))
    names = ("src_idx", "goal_pos_idx", "src_neg_idx", "goal_neg_idx")
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in names)
    assert torch.equal(a.src, b.src) and torch.equal(a.goal_neg, b.goal_neg)
    assert not all(torch.equal(getattr(a, k), getattr(c, k)) for k in names)


def test_generator_on_another_device_is_refused():
    """CUDA rejects a CPU generator at the first contrastive step; meta accepts one silently, so the check
    is what a CPU test can see: hidden states on `meta` with the CPU generator the loop used to make."""
    hidden = torch.zeros(4, 8, 2, device="meta")
    start, end = torch.zeros(4, dtype=torch.long, device="meta"), torch.full((4,), 8, device="meta")
    with pytest.raises(ValueError, match=r"generator is on cpu but the hidden states are on meta"):
        sample_states(hidden, start, end, SamplingConfig(), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="generator is on cpu"):  # through the loss the training loop calls
        from goalrm.losses import LossConfig, reward_model_loss

        reward_model_loss(torch.zeros(4, device="meta"), hidden, start, end, LossConfig(), torch.Generator())


def test_sampling_generator_lives_on_the_step_device_and_differs_per_rank():
    from goalrm.sampling import sampling_generator

    g = sampling_generator(3, 1, torch.device("cpu"))
    assert g.device == torch.device("cpu")
    hidden = torch.randn(6, 16, 4)
    start, end = torch.zeros(6, dtype=torch.long), torch.full((6,), 16)
    draws = [sample_states(hidden, start, end, SamplingConfig(), sampling_generator(3, r, "cpu")).src_idx for r in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
