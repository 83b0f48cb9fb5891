"""Length grouping only changes how much padding a batch carries. The same pairs, in a tight grouped
batch or in a widely padded one, give the same rewards, the same contrastive draws and the same
losses and gradients, and each pair's reward matches that pair run alone."""

import pytest
import torch
import torch.nn.functional as F

from goalrm.data import collate_pairs, synthetic_preference_pairs, tokenize_pairs
from goalrm.data.sampler import micro_batch_indices, pair_lengths
from goalrm.losses import LossConfig, reward_model_loss
from goalrm.model import build_model
from goalrm.sampling import sample_states
from goalrm.tiny import tiny_tokenizer

from helpers import drawn_positions

TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    pairs, _ = tokenize_pairs(synthetic_preference_pairs(200, seed=1), tok, max_length=256)
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer=tok).eval()  # eval: no dropout, so runs are comparable
    lengths = pair_lengths(pairs)
    idx = micro_batch_indices(3, 0, 0, 1, len(pairs), 6, 1, 0, lengths)  # a grouped micro-batch
    return model, tok.pad_token_id, [pairs[i] for i in idx]


def padded_wider(batch: dict, extra: int, pad_id: int) -> dict:
    """The same rows as they sit in an ungrouped batch whose longest pair is `extra` tokens longer."""
    out = dict(batch)
    out["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    out["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    return out


def run(model, batch, lam, seed=0):
    model.zero_grad(set_to_none=True)
    out = model(batch["input_ids"], batch["attention_mask"], with_reps=True)
    gen = torch.Generator().manual_seed(seed)
    loss, parts = reward_model_loss(
        out.rewards, out.reps, batch["completion_start"], batch["completion_end"], LossConfig(contrastive_weight=lam), gen,
        batch["rejected_divergence"],
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, loss.detach(), parts, grads


def test_the_grouped_batch_is_tight(setup):
    _, pad_id, pairs = setup
    mask = collate_pairs(pairs, pad_id)["attention_mask"]
    assert 1 - mask.sum() / mask.numel() < 0.05


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_grouped_equals_padded_rewards_losses_and_gradients(setup, lam):
    model, pad_id, pairs = setup
    tight = collate_pairs(pairs, pad_id)
    wide = padded_wider(tight, 150, pad_id)
    out_t, loss_t, parts_t, grads_t = run(model, tight, lam)
    out_w, loss_w, parts_w, grads_w = run(model, wide, lam)
    width = tight["input_ids"].shape[1]
    torch.testing.assert_close(out_w.rewards, out_t.rewards, **TOL)
    torch.testing.assert_close(out_w.last_index, out_t.last_index)
    real = tight["attention_mask"].bool()
    torch.testing.assert_close(out_w.reps[:, :width][real], out_t.reps[real], **TOL)
    torch.testing.assert_close(loss_w, loss_t, **TOL)
    for k in parts_t:
        assert float(parts_w[k]) == pytest.approx(float(parts_t[k]), rel=1e-4, abs=1e-6)
    if lam:
        assert parts_t["contrastive_loss"] > 0
    assert grads_w.keys() == grads_t.keys()
    for k in grads_t:
        torch.testing.assert_close(grads_w[k], grads_t[k], atol=1e-5, rtol=1e-3)


def test_contrastive_draws_are_the_same_tokens(setup):
    model, pad_id, pairs = setup
    tight = collate_pairs(pairs, pad_id)
    wide = padded_wider(tight, 150, pad_id)
    cfg = LossConfig().sampling
    with torch.no_grad():
        h_t = model(tight["input_ids"], tight["attention_mask"], with_reps=True).reps
        h_w = model(wide["input_ids"], wide["attention_mask"], with_reps=True).reps
    s_t = sample_states(h_t, tight["completion_start"], tight["completion_end"], cfg, torch.Generator().manual_seed(5), tight["rejected_divergence"])
    s_w = sample_states(h_w, wide["completion_start"], wide["completion_end"], cfg, torch.Generator().manual_seed(5), wide["rejected_divergence"])
    b = len(pairs)
    start, end = tight["completion_start"], tight["completion_end"]
    pos_t = drawn_positions(h_t.shape[1], start, end, cfg, seed=5, divergence=tight["rejected_divergence"])
    pos_w = drawn_positions(h_w.shape[1], wide["completion_start"], wide["completion_end"], cfg, seed=5, divergence=wide["rejected_divergence"])
    for name in pos_t:
        assert torch.equal(pos_t[name], pos_w[name])
    # every draw is a completion token of its own pair, never padding or prompt
    for rows, idx in ((slice(0, b), pos_t["sources"]), (slice(b, 2 * b), pos_t["negatives"])):
        start, end = tight["completion_start"][rows], tight["completion_end"][rows]
        assert ((idx >= start[:, None]) & (idx < end[:, None])).all()
        assert tight["attention_mask"][rows].gather(1, idx).bool().all()
    torch.testing.assert_close(s_w.sources, s_t.sources, **TOL)
    torch.testing.assert_close(s_w.negatives, s_t.negatives, **TOL)


def test_each_reward_matches_the_pair_alone(setup):
    model, pad_id, pairs = setup
    with torch.no_grad():
        batch = collate_pairs(pairs, pad_id)
        together = model(batch["input_ids"], batch["attention_mask"]).rewards
        alone = []
        for p in pairs:
            one = collate_pairs([p], pad_id)
            alone.append(model(one["input_ids"], one["attention_mask"]).rewards)
    b = len(pairs)
    alone = torch.stack(alone)  # [b, 2]: chosen, rejected
    torch.testing.assert_close(together[:b], alone[:, 0], **TOL)
    torch.testing.assert_close(together[b:], alone[:, 1], **TOL)
