import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goalrm.sampling import SamplingConfig, sample_states

from helpers import drawn_positions, position_hidden


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
        {"pairing": "diagonal"},
        {"negatives": "late"},
        {"source_fraction": 0.0},
        {"goal_fraction": 1.2},
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
    s = sample_states(hidden, start, end, SamplingConfig(sim_samples=4, unsim_samples=6, goal=goal), None, start[b:])
    g_pos, g_neg = (1, 1) if goal == "mean" else (4, 6)
    assert s.sources.shape == (b, 4, h) and s.positives.shape == (b, g_pos, h)
    assert s.neg_sources.shape == (b, 6, h) and s.negatives.shape == (b, g_neg, h)


def window_lo(start: int, end: int, fraction: float) -> int:
    return end - max(1, math.ceil(fraction * (end - start)))


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    t = draw(st.integers(2, 24))
    spans = []
    for _ in range(2 * b):
        start = draw(st.integers(0, t - 1))
        spans.append((start, draw(st.integers(start + 1, t))))
    fraction = st.one_of(st.none(), st.floats(0.01, 1.0))
    cfg = SamplingConfig(
        strategy=draw(st.sampled_from(["random", "late"])),
        late_fraction=draw(st.floats(0.01, 1.0)),
        source_fraction=draw(fraction),
        goal_fraction=draw(fraction),
        sim_samples=draw(st.integers(1, 6)),
        unsim_samples=draw(st.integers(1, 6)),
        negatives=draw(st.sampled_from(["any", "divergent"])),
        pairing=draw(st.sampled_from(["after_last", "all", "per_source"])),
    )
    divergence = [draw(st.integers(spans[b + r][0], spans[b + r][1])) for r in range(b)]
    return b, t, spans, cfg, draw(st.integers(0, 2**31)), divergence


@settings(max_examples=300, deadline=None)
@given(batches())
def test_indices_stay_in_their_windows(case):
    b, t, spans, cfg, seed, divergence = case
    start = torch.tensor([s for s, _ in spans])
    end = torch.tensor([e for _, e in spans])
    pos = drawn_positions(t, start, end, cfg, seed, torch.tensor(divergence))
    for r in range(b):
        (c_start, c_end), (r_start, r_end) = spans[r], spans[b + r]
        s_lo, g_lo = window_lo(c_start, c_end, cfg.window("source")), window_lo(c_start, c_end, cfg.window("goal"))
        n_lo = window_lo(r_start, r_end, cfg.window("goal"))
        if cfg.negatives == "divergent" and divergence[r] < r_end:
            n_lo = max(n_lo, divergence[r])
        src, goal = pos["sources"][r].tolist(), pos["positives"][r].tolist()
        # sources: the chosen completion's source window, never prompt or pad
        assert all(s_lo <= i < c_end for i in src + pos["neg_sources"][r].tolist())
        for i, g in zip(src, goal):
            assert g_lo <= g < c_end  # in the goal window
            if cfg.pairing == "after_last":  # at or after every source of the row
                assert g >= max(src)
            else:  # strictly after its own source unless nothing is
                assert g > i or i == c_end - 1
        # negative goals: the rejected completion's goal window, from its divergence when asked
        assert all(n_lo <= g < r_end for g in pos["negatives"][r].tolist())


@pytest.mark.parametrize("strategy,fraction", [("random", 1.0), ("late", 0.5), ("late", 0.01), ("late", 1.0)])
def test_many_draws_cover_exactly_the_window(strategy, fraction):
    # 2000 draws per set: every window position is hit, and nothing outside it (off-by-one check)
    spans = [(3, 8), (0, 1), (2, 12), (5, 6)]  # chosen rows, then rejected rows
    cfg = SamplingConfig(strategy=strategy, late_fraction=fraction, sim_samples=2000, unsim_samples=2000, pairing="all")
    start, end = torch.tensor([a for a, _ in spans]), torch.tensor([e for _, e in spans])
    pos = drawn_positions(12, start, end, cfg, seed=0)
    for r in range(2):
        c_lo, c_hi = late_lo(*spans[r], cfg), spans[r][1]
        n_lo, n_hi = late_lo(*spans[2 + r], cfg), spans[2 + r][1]
        # sources leave the last token to the goals, unless the window is that token alone
        assert set(pos["sources"][r].tolist()) == set(range(c_lo, max(c_lo + 1, c_hi - 1)))
        assert set(pos["neg_sources"][r].tolist()) == set(range(c_lo, c_hi))
        assert set(pos["negatives"][r].tolist()) == set(range(n_lo, n_hi))
        assert set(pos["positives"][r].tolist()) == set(range(min(c_lo + 1, c_hi - 1), c_hi))


def test_after_last_puts_every_goal_after_the_latest_source():
    """goalrm's original reading, the default: with many sources the latest is the last token, and so
    is every goal; sources range over the whole window, the last token included."""
    start, end = torch.tensor([3, 0]), torch.tensor([12, 12])
    pos = drawn_positions(12, start, end, SamplingConfig(sim_samples=2000), seed=4)
    assert set(pos["sources"][0].tolist()) == set(range(3, 12)) and set(pos["positives"][0].tolist()) == {11}
    few = drawn_positions(40, torch.tensor([0, 0]), torch.tensor([40, 40]), SamplingConfig(sim_samples=2), seed=5)
    assert (few["positives"] >= few["sources"].amax(1, keepdim=True)).all()


def test_each_goal_is_tied_to_its_own_source():
    """With pairing all, goals follow their own source, not the latest of all sources: early sources get
    early goals too."""
    start, end = torch.tensor([0, 0]), torch.tensor([40, 40])
    pos = drawn_positions(40, start, end, SamplingConfig(sim_samples=4000, pairing="all"), seed=1)
    src, goal = pos["sources"][0], pos["positives"][0]
    assert (goal > src).all()
    assert goal[src < 5].min() <= 5  # the old rule drew every goal after max(sources) = 38
    assert goal.float().mean() < 35


def test_divergent_negatives_skip_the_shared_prefix_and_fall_back_without_one():
    # rejected completions: a shared prefix up to 7 | no shared prefix (divergence at its start) | a prefix of the chosen
    start, end = torch.tensor([2, 2, 2, 2, 2, 2]), torch.tensor([12, 12, 12, 12, 12, 9])
    cfg = SamplingConfig(unsim_samples=3000, negatives="divergent")
    pos = drawn_positions(12, start, end, cfg, seed=2, divergence=torch.tensor([7, 2, 9]))
    assert set(pos["negatives"][0].tolist()) == set(range(7, 12))
    assert set(pos["negatives"][1].tolist()) == set(range(2, 12))
    assert set(pos["negatives"][2].tolist()) == set(range(2, 9))  # nothing differs: the whole completion
    with pytest.raises(ValueError, match="rejected_divergence"):
        sample_states(torch.zeros(6, 12, 2), start, end, cfg)


def test_source_and_goal_windows_are_separate_knobs():
    start, end = torch.tensor([0, 0]), torch.tensor([20, 20])
    cfg = SamplingConfig(strategy="random", goal_fraction=0.25, sim_samples=3000, unsim_samples=3000, pairing="all")
    pos = drawn_positions(20, start, end, cfg, seed=3)
    assert set(pos["sources"][0].tolist()) == set(range(0, 19))  # sources range over the whole completion
    assert set(pos["positives"][0].tolist()) == set(range(15, 20))  # goals in the last quarter
    assert set(pos["negatives"][0].tolist()) == set(range(15, 20))


def test_divergence_from_token_ids():
    from goalrm.sampling import divergence

    assert divergence([9, 1, 2, 3, 4], 1, [9, 1, 2, 7, 4], 1) == 3
    assert divergence([9, 1, 2], 1, [8, 8, 5, 6], 2) == 2  # offsets from each start; no shared prefix
    assert divergence([9, 1, 2, 3], 1, [9, 1, 2], 1) == 3  # a prefix: the rejected end


def test_late_window_sizes():
    # length n -> last ceil(p * n) tokens
    start, end = torch.tensor([0, 0, 0, 0]), torch.tensor([1, 3, 10, 7])
    cfg = SamplingConfig(strategy="late", late_fraction=0.3, sim_samples=500, unsim_samples=500)
    pos = drawn_positions(10, start, end, cfg, seed=1)
    assert set(pos["sources"][0].tolist()) == {0}  # n=1: ceil(0.3) = 1
    assert set(pos["sources"][1].tolist()) == {2}  # n=3: ceil(0.9) = 1
    assert set(pos["negatives"][0].tolist()) == {7, 8, 9}  # n=10: 3
    assert set(pos["negatives"][1].tolist()) == {4, 5, 6}  # n=7: ceil(2.1) = 3


def test_seeded_generator_reproduces():
    hidden = torch.randn(6, 16, 4)
    start, end = torch.tensor([1, 2, 3, 0, 4, 5]), torch.tensor([16, 9, 12, 8, 15, 6])
    cfg = SamplingConfig(strategy="late", late_fraction=0.7)
    a = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(123), start[3:])
    b = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(123), start[3:])
    c = sample_states(hidden, start, end, cfg, torch.Generator().manual_seed(124), start[3:])
    names = ("sources", "positives", "neg_sources", "negatives")
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in names)
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
    draws = [sample_states(hidden, start, end, SamplingConfig(), sampling_generator(3, r, "cpu"), start[3:]).sources for r in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
