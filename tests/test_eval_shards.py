"""Evaluation on a worker's shard: every rank runs the same forwards (ZeRO-3 gathers parameters in each),
and the padded pairs' results are dropped."""

import pytest
import torch

from goalrm.config import DataConfig
from goalrm.data.batch import collate_pairs
from goalrm.data.load import load_tokenized
from goalrm.data.sampler import even_shard
from goalrm.evaluate import goal_and_reward_stats, goal_and_reward_summary, evaluate_pairs, summarize
from goalrm.model import build_model, load_tokenizer
from goalrm.qvalues import q_values


@pytest.mark.parametrize("n", [0, 1, 5, 32, 33])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_even_shard_pads_to_one_length_and_keeps_every_item_once(n, world):
    items = list(range(n))
    shards = [even_shard(items, r, world) for r in range(world)]
    assert len({len(s) for s, _ in shards}) == 1  # the same number of forwards on every rank
    real = [x for s, k in shards for x in s[:k]]
    assert sorted(real) == items


@pytest.fixture(scope="module")
def scored_setup():
    torch.manual_seed(0)
    tok = load_tokenizer("tiny")
    model = build_model("tiny", tokenizer=tok).eval()
    pairs, _, _ = load_tokenized("synthetic", "eval", DataConfig(synthetic_eval_size=21, max_length=128), tok)
    return model, tok, pairs, torch.randn(128)


def test_padded_shard_scores_equal_the_real_pairs(scored_setup):
    model, tok, pairs, goal = scored_setup
    real = evaluate_pairs(model, pairs[:7], tok.pad_token_id, 4, goal)
    padded = evaluate_pairs(model, pairs[:7] + pairs[:1] * 5, tok.pad_token_id, 4, goal, n_real=7)
    assert len(real.r_chosen) == len(real.q_rejected) == 7 and all(e is not None for e in real.first_error)
    assert padded.first_error == real.first_error
    for name in ("r_chosen", "r_rejected"):
        assert getattr(padded, name) == pytest.approx(getattr(real, name), abs=1e-6), name
    for name in ("q_chosen", "q_rejected"):
        for a, b in zip(getattr(padded, name), getattr(real, name), strict=True):
            assert a == pytest.approx(b, abs=1e-6)
    for f in real.prefix_q_chosen:
        assert padded.prefix_q_chosen[f] == pytest.approx(real.prefix_q_chosen[f], abs=1e-6)
        assert padded.prefix_q_rejected[f] == pytest.approx(real.prefix_q_rejected[f], abs=1e-6)
    # and the stats the export averages
    sums_real = goal_and_reward_stats(model, pairs[:7], tok.pad_token_id, 4)
    sums_padded = goal_and_reward_stats(model, pairs[:7] + pairs[:1] * 5, tok.pad_token_id, 4, n_real=7)
    for a, b in zip(goal_and_reward_summary(*sums_real), goal_and_reward_summary(*sums_padded)):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-6)


def test_token_q_values_and_error_means_match_a_row_by_row_count(scored_setup):
    """The batched per-token Q and before/after-first-error means, against each pair scored alone."""
    model, tok, pairs, goal = scored_setup
    got = evaluate_pairs(model, pairs, tok.pad_token_id, 8, goal)
    want = ([], [], [])
    for i, p in enumerate(pairs):
        b = collate_pairs([p], tok.pad_token_id)
        with torch.no_grad():
            q = q_values(model(b["input_ids"], b["attention_mask"], with_reps=True).reps, goal)
        assert got.q_chosen[i] == pytest.approx(q[0, p.chosen_start : len(p.chosen_ids)].tolist(), abs=1e-5)
        assert got.q_rejected[i] == pytest.approx(q[1, p.rejected_start : len(p.rejected_ids)].tolist(), abs=1e-5)
        e = p.rejected_first_error
        assert got.first_error[i] == e - p.rejected_start
        want[0].append(float(q[1, p.rejected_start : e].mean()))
        want[1].append(float(q[1, e : len(p.rejected_ids)].mean()))
        want[2].append(float(q[0, e : len(p.chosen_ids)].mean()))
    m = summarize(got)
    assert m["q_before_error"] == pytest.approx(sum(want[0]) / len(pairs), abs=1e-5)
    assert m["q_after_error"] == pytest.approx(sum(want[1]) / len(pairs), abs=1e-5)
    assert m["q_after_error_chosen"] == pytest.approx(sum(want[2]) / len(pairs), abs=1e-5)
    assert m["localization"]["n_with_first_error"] == len(pairs)
