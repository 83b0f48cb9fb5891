"""The step-indexed sampler: deterministic, disjoint across workers, every pair once per epoch, and
length grouping that keeps padding small on realistic lengths."""

import pytest
import torch

from goalrm.data import synthetic_preference_pairs, tokenize_pairs
from goalrm.data.sampler import length_grouped, micro_batch_indices, pair_lengths
from goalrm.tiny import tiny_tokenizer


def hh_like_pairs(n: int, seed: int = 0, max_length: int = 512) -> list[tuple[int, int]]:
    """(chosen, rejected) token lengths shaped like HH-RLHF under max_length: a long shared dialogue of
    very varied length, two different replies, and a pile-up at max_length from truncation."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.exp(torch.randn(n, generator=g) * 0.8 + 5.5)
    replies = torch.exp(torch.randn(n, 2, generator=g) * 0.7 + 4.0)
    rows = (prompt[:, None] + replies).clamp(8, max_length).long()
    return [tuple(r) for r in rows.tolist()]


def stream(n, micro, accum, world, steps, seed=0, lengths=None):
    """Indices per (step, micro, rank), the way the training loop asks for them."""
    return {
        (s, m, r): micro_batch_indices(s, m, r, world, n, micro, accum, seed, lengths)
        for s in range(steps)
        for m in range(accum)
        for r in range(world)
    }


def padding_frac(rows_per_batch) -> float:
    real = sum(sum(rows) for rows in rows_per_batch)
    slots = sum(len(rows) * max(rows) for rows in rows_per_batch)
    return 1 - real / slots


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("n,micro,accum,world", [(100, 4, 1, 1), (101, 3, 2, 2), (37, 5, 1, 2)])
def test_each_epoch_covers_every_pair_once_and_workers_are_disjoint(grouped, n, micro, accum, world):
    lengths = [len_ for len_, _ in hh_like_pairs(n)] if grouped else None
    per_step = micro * accum * world
    steps = 3 * n // per_step + 2
    got = stream(n, micro, accum, world, steps, lengths=lengths)
    flat = [i for s in range(steps) for m in range(accum) for r in range(world) for i in got[s, m, r]]
    for e in range(len(flat) // n):  # the stream is epoch after epoch, each a permutation
        assert sorted(flat[e * n : (e + 1) * n]) == list(range(n))
    for s in range(steps):  # within a step inside one epoch, micro-batches and ranks never share a pair
        if (s * per_step) // n == ((s + 1) * per_step - 1) // n:
            seen = [i for m in range(accum) for r in range(world) for i in got[s, m, r]]
            assert len(set(seen)) == len(seen)


@pytest.mark.parametrize("grouped", [False, True])
def test_pure_function_of_step_and_seed(grouped):
    lengths = tuple(c for c, _ in hh_like_pairs(300)) if grouped else None
    first = stream(300, 4, 2, 2, 40, seed=3, lengths=lengths)
    # a restarted run asks for step k alone, possibly in another order: same answer
    assert micro_batch_indices(37, 1, 1, 2, 300, 4, 2, 3, lengths) == first[37, 1, 1]
    assert stream(300, 4, 2, 2, 40, seed=3, lengths=lengths) == first
    assert stream(300, 4, 2, 2, 40, seed=4, lengths=lengths) != first


def test_grouping_cuts_padding_below_ten_percent_on_hh_like_lengths():
    pairs = hh_like_pairs(2000)
    lengths = [max(p) for p in pairs]
    for micro, accum, world in ((8, 1, 1), (4, 2, 2)):
        steps = 3 * len(pairs) // (micro * accum * world)

        def rows(lens):
            return [
                [pairs[i][0] for i in idx] + [pairs[i][1] for i in idx]
                for idx in stream(len(pairs), micro, accum, world, steps, lengths=lens).values()
            ]

        random_pad, grouped_pad = padding_frac(rows(None)), padding_frac(rows(lengths))
        assert random_pad > 0.2  # the distribution is realistic: random batches waste a lot
        assert grouped_pad < 0.10


def test_grouping_on_the_synthetic_set():
    tok = tiny_tokenizer()
    pairs, _ = tokenize_pairs(synthetic_preference_pairs(500), tok, max_length=256)
    lengths = pair_lengths(pairs)
    got = stream(len(pairs), 8, 1, 1, 150, lengths=lengths)
    rows = [[len(pairs[i].chosen_ids) for i in idx] + [len(pairs[i].rejected_ids) for i in idx] for idx in got.values()]
    assert padding_frac(rows) < 0.02


def test_batch_order_stays_random():
    """Sorting happens inside windows only, and the batches are shuffled: long and short batches interleave."""
    lengths = torch.arange(1000)  # length == index, so the order's trend is visible
    order = length_grouped(torch.randperm(1000), lengths, 10, torch.Generator().manual_seed(0), window_batches=5)
    batch_means = lengths[order].view(100, 10).float().mean(1)
    assert (batch_means.diff() < 0).sum() > 30  # a sorted order would have none
    spread = torch.stack([lengths[b].max() - lengths[b].min() for b in order.view(100, 10)]).float().mean()
    assert spread < 300  # random batches of 10 out of 0..999 spread over about 820


def test_lead_keeps_batches_aligned_to_step_boundaries():
    lengths = torch.tensor([1] * 11 + [100] * 28)  # 3 short ones lead, then 2 short and 7 long batches
    order = length_grouped(torch.randperm(39), lengths, 4, torch.Generator().manual_seed(0), lead=3, window_batches=10)
    assert sorted(order.tolist()) == list(range(39))
    assert lengths[order[:3]].tolist() == [1, 1, 1]
    batches = [lengths[order[i : i + 4]].tolist() for i in range(3, 39, 4)]
    assert sorted(batches) == [[1] * 4] * 2 + [[100] * 4] * 7


def test_lengths_must_match_the_pairs():
    with pytest.raises(ValueError, match="lengths has 3 entries for 4 pairs"):
        micro_batch_indices(0, 0, 0, 1, 4, 2, 1, 0, [1, 2, 3])
