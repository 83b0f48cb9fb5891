import random

import torch

from goalrm.metrics import auroc, chosen_rejected_auroc, pairwise_accuracy
from goalrm.qvalues import final_token_reps, prefix_mean_q, q_values, span_mask


def _auroc_by_pairs(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pair_counting_with_ties():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 40)
        scores = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(n)]
        labels = [rng.random() < 0.5 for _ in range(n)]
        if all(labels) or not any(labels):
            continue
        got = auroc(torch.tensor(scores), torch.tensor(labels))
        assert abs(got - _auroc_by_pairs(scores, labels)) < 1e-9


def test_auroc_extremes_and_accuracy():
    assert chosen_rejected_auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert chosen_rejected_auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 1.0])) == 2 / 3


def test_q_values_are_cosines_to_goal():
    reps = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])
    q = q_values(reps, torch.tensor([1.0, 0.0]))
    assert torch.allclose(q, torch.tensor([[1.0, 0.0, -1.0]]))


def test_prefix_mean_q_and_masks():
    q = torch.tensor([[9.0, 1.0, 2.0, 3.0, 4.0, 9.0]])
    start, end = torch.tensor([1]), torch.tensor([5])
    assert prefix_mean_q(q, start, end, 0.25).item() == 1.0
    assert prefix_mean_q(q, start, end, 0.5).item() == 1.5
    assert prefix_mean_q(q, start, end, 1.0).item() == 2.5
    assert span_mask(start, end, 6).tolist() == [[False, True, True, True, True, False]]
    reps = torch.arange(12.0).view(2, 3, 2)
    assert final_token_reps(reps, torch.tensor([0, 2])).tolist() == [[0.0, 1.0], [10.0, 11.0]]
