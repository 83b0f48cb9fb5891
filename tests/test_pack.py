"""Packed micro-batches: the layout, and packed versus padded giving the same rewards, states, losses and gradients."""

import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from goalrm import attention
from goalrm.data import TokenizedPair, collate_pairs
from goalrm.data.pack import Packed, first_fit_decreasing, pack, unpack
from goalrm.evaluate import evaluate_pairs
from goalrm.losses import LossConfig, reward_model_loss
from goalrm.model import HeadConfig, RewardModel
from goalrm.tiny import tiny_config

PAD = 0


def _pairs(n, seed=0, lo=6, hi=60):
    """Pairs of widely varying length (as in HH-RLHF), sharing a prompt of at least 3 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 259) for _ in range(rng.randrange(3, lo))]
        chosen = prompt + [rng.randrange(3, 259) for _ in range(rng.randrange(2, hi))]
        rejected = prompt + [rng.randrange(3, 259) for _ in range(rng.randrange(2, hi))]
        out.append(TokenizedPair(chosen, len(prompt), rejected, len(prompt), len(prompt) + 1))
    return out


def test_first_fit_decreasing_fills_rows_longest_first():
    assert first_fit_decreasing([5, 3, 2, 4, 1], 5) == [[0], [3, 4], [1, 2]]
    assert first_fit_decreasing([4, 4], 4) == [[0], [1]]  # nothing fits beside a full row


def test_layout_capacity_positions_and_no_extra_slots():
    batch = collate_pairs(_pairs(8), PAD)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    p = pack(ids, mask, PAD)
    lengths = mask.sum(1)
    assert p.input_ids.shape[1] == int(lengths.max())  # capacity: the longest sequence
    assert p.input_ids.numel() < ids.numel()  # these lengths vary enough for packing to save slots
    assert p.input_ids.shape[0] >= -(-int(lengths.sum()) // p.input_ids.shape[1])  # no row overfilled
    # every sequence is its ids, contiguous in one row, with positions 0..n-1
    flat_ids, flat_pos = p.input_ids.flatten(), p.position_ids.flatten()
    for i in range(ids.shape[0]):
        slots = p.index[i][mask[i].bool()]
        assert torch.equal(flat_ids[slots], ids[i][mask[i].bool()])
        assert torch.equal(flat_pos[slots], torch.arange(int(lengths[i])))
        assert torch.equal(slots, slots[0] + torch.arange(len(slots)))
        assert len(set((slots // p.input_ids.shape[1]).tolist())) == 1
    # no two sequences share a slot, and every row's free tail restarts at position 0
    real = p.index[mask.bool()]
    assert len(set(real.tolist())) == int(lengths.sum())
    tail = torch.ones(p.input_ids.numel(), dtype=torch.bool)
    tail[real] = False
    starts = tail & ~torch.roll(tail, 1)
    assert (flat_pos[starts] == 0).all()


def test_flat_layout_is_every_real_token_once_in_one_row():
    batch = collate_pairs(_pairs(8), PAD)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    p = pack(ids, mask, PAD, "flat")
    lengths = mask.sum(1)
    assert p.input_ids.shape == (1, int(lengths.sum()))  # no slot is padding
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens.tolist() == [0, *lengths.cumsum(0).tolist()]
    assert p.max_len == int(lengths.max())
    for i in range(ids.shape[0]):
        a, b = p.cu_seqlens[i : i + 2].tolist()
        assert torch.equal(p.index[i][mask[i].bool()], torch.arange(a, b))  # sequence i, in batch order
        assert torch.equal(p.input_ids[0, a:b], ids[i][mask[i].bool()])
        assert torch.equal(p.position_ids[0, a:b], torch.arange(b - a))


def test_never_more_slots_than_padded():
    for seed in range(20):
        batch = collate_pairs(_pairs(random.Random(seed).randrange(1, 9), seed), PAD)
        assert pack(batch["input_ids"], batch["attention_mask"], PAD).input_ids.numel() <= batch["input_ids"].numel()


def test_unpack_gathers_and_zeroes_padding():
    batch = collate_pairs(_pairs(3), PAD)
    p = pack(batch["input_ids"], batch["attention_mask"], PAD)
    h = torch.randn(*p.input_ids.shape, 5)
    out = unpack(h, p)
    assert out.shape == (*batch["input_ids"].shape, 5)
    assert (out[~p.mask] == 0).all()
    i, t = torch.nonzero(p.mask)[7]
    assert torch.equal(out[i, t], h.reshape(-1, 5)[p.index[i, t]])


def _model(impl, projection_dim):
    attention.register()
    torch.manual_seed(0)
    seq_cls = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=1), attn_implementation=impl)
    model = RewardModel(seq_cls, HeadConfig(projection_dim=projection_dim))
    with torch.no_grad():
        model.head.weight.normal_()  # non-trivial rewards
    return model


def _step(model, batch, packed, cfg):
    model.zero_grad()
    out = model(batch["input_ids"], batch["attention_mask"], with_reps=True, packed=packed)
    gen = torch.Generator().manual_seed(3)
    loss, parts = reward_model_loss(
        out.rewards, out.reps, batch["completion_start"], batch["completion_end"], cfg, gen, batch["rejected_divergence"]
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, parts, grads


# every attention implementation that trains on the CPU, in each layout it can take; the padded
# reference runs the same model (its padding mask, no packing)
CPU_LAYOUTS = [("sdpa", "rows", 0), ("eager", "rows", 0), ("sdpa", "rows", 16), ("sdpa_varlen", "flat", 0),
               ("sdpa_varlen", "flat", 16), ("sdpa_varlen", "rows", 0)]


@pytest.mark.parametrize("impl,layout,projection_dim", CPU_LAYOUTS)
@pytest.mark.parametrize("form", ["paper", "infonce"])
def test_packed_equals_padded(one_torch_thread, impl, layout, projection_dim, form):
    model = _model(impl, projection_dim)
    batch = collate_pairs(_pairs(6), PAD)
    p = pack(batch["input_ids"], batch["attention_mask"], PAD, layout)
    assert p.input_ids.shape[0] < batch["input_ids"].shape[0]  # some rows do hold several sequences
    cfg = LossConfig(contrastive_weight=0.5, form=form)
    ref, ref_parts, ref_grads = _step(model, batch, None, cfg)
    out, parts, grads = _step(model, batch, p, cfg)

    assert torch.allclose(out.rewards, ref.rewards, atol=1e-5)
    real = batch["attention_mask"].bool()
    assert torch.allclose(out.hidden[real], ref.hidden[real], atol=1e-5)
    assert torch.allclose(out.reps[real], ref.reps[real], atol=1e-5)
    assert torch.equal(out.last_index, ref.last_index)
    assert ref_parts["contrastive_loss"] > 0
    for k in ("loss", "bt_loss", "contrastive_loss"):
        assert float(parts[k]) == pytest.approx(float(ref_parts[k]), abs=1e-5), k
    assert grads.keys() == ref_grads.keys()
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("impl,layout", [("sdpa", "rows"), ("sdpa_varlen", "rows"), ("sdpa_varlen", "flat")])
def test_positions_without_restarts_would_leak_across_sequences(one_torch_thread, impl, layout):
    """The control for the test above: one position run per row (and, flat, one boundary pair for the
    whole row) merges its sequences, and rewards change."""
    model = _model(impl, 0).eval()
    batch = collate_pairs(_pairs(6), PAD)
    p = pack(batch["input_ids"], batch["attention_mask"], PAD, layout)
    width = p.input_ids.shape[1]
    one = None if p.cu_seqlens is None else torch.tensor([0, width], dtype=torch.int32)
    merged = Packed(p.input_ids, torch.arange(width).expand_as(p.input_ids), p.index, p.mask, one, width)
    with torch.no_grad():
        ref = model(batch["input_ids"], batch["attention_mask"]).rewards
        assert torch.allclose(model(batch["input_ids"], batch["attention_mask"], packed=p).rewards, ref, atol=1e-5)
        leaked = model(batch["input_ids"], batch["attention_mask"], packed=merged).rewards
    assert not torch.allclose(leaked, ref, atol=1e-3)


@pytest.mark.parametrize("impl,layout", [("sdpa", "rows"), ("sdpa_varlen", "flat")])
def test_eval_scores_packed_equal_padded(one_torch_thread, impl, layout):
    model = _model(impl, 0).eval()
    pairs, goal = _pairs(10, seed=1), torch.randn(128)
    ref = evaluate_pairs(model, pairs, PAD, 4, goal)
    got = evaluate_pairs(model, pairs, PAD, 4, goal, packing=layout)
    assert len(ref.q_rejected) == 10 and all(e is not None for e in ref.first_error)
    assert got.first_error == ref.first_error
    for k, v in vars(ref).items():
        if k == "first_error":
            continue
        if isinstance(v, dict):
            lists = zip(v.values(), getattr(got, k).values())
        elif v and isinstance(v[0], list):  # per-token Q of each completion
            lists = zip(v, getattr(got, k), strict=True)
        else:
            lists = [(v, getattr(got, k))]
        for a, b in lists:
            assert a == pytest.approx(b, abs=1e-5), k


def test_packing_is_refused_for_backbones_that_ignore_position_ids_boundaries(tmp_path):
    from transformers import MistralConfig

    from goalrm.data.pack import check_packing_support

    check_packing_support("tiny")  # llama: supported
    MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"data.packing: .* is a 'mistral' model.*Set data.packing: false"):
        check_packing_support(str(tmp_path))


def test_sdpa_varlen_on_a_padded_batch_is_sdpa(one_torch_thread):
    batch = collate_pairs(_pairs(6), PAD)
    with torch.no_grad():
        ours = _model("sdpa_varlen", 0).eval()(batch["input_ids"], batch["attention_mask"])
        theirs = _model("sdpa", 0).eval()(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours.rewards, theirs.rewards, atol=1e-6)
    assert torch.allclose(ours.hidden[real], theirs.hidden[real], atol=1e-6)


@pytest.mark.slow  # torch compiles FlexAttention on first use (about 10 s per shape on 2 cores)
def test_flex_attention_packed_forward_equals_padded(one_torch_thread):
    """The CPU runs FlexAttention forward only (scoring); its backward is refused (`attention.check`)."""
    batch = collate_pairs(_pairs(6), PAD)
    p = pack(batch["input_ids"], batch["attention_mask"], PAD, attention.packing_layout("flex_attention"))
    assert p.cu_seqlens is not None  # one flat row, the block mask built from its position ids
    with torch.no_grad():
        got = _model("flex_attention", 16).eval()(batch["input_ids"], batch["attention_mask"], with_reps=True, packed=p)
        ref = _model("sdpa", 16).eval()(batch["input_ids"], batch["attention_mask"], with_reps=True)
    real = batch["attention_mask"].bool()
    assert torch.allclose(got.rewards, ref.rewards, atol=1e-5)
    assert torch.allclose(got.reps[real], ref.reps[real], atol=1e-5)


def test_implementations_are_resolved_and_checked_for_the_device():
    assert attention.resolve("auto", "cpu", packing=True) == "sdpa_varlen"
    assert attention.resolve("auto", "cpu", packing=False) == "sdpa"
    assert attention.resolve("auto", "cuda", packing=False) == "sdpa"
    assert attention.resolve("auto", "cuda", packing=True, precision="fp32") == "flex_attention"  # FlashAttention-2: bf16 only
    assert [attention.packing_layout(i) for i in ("sdpa", "eager", "sdpa_varlen", "flex_attention", "flash_attention_2")] == [
        "rows", "rows", "flat", "flat", "flat"]
    with pytest.raises(ValueError, match="flex_attention has no backward pass on the CPU"):
        attention.resolve("flex_attention", "cpu", packing=True)
    attention.check("flex_attention", "cpu", training=False)  # scoring may
    with pytest.raises(ValueError, match="flash_attention_2 needs a CUDA GPU"):
        attention.check("flash_attention_2", "cpu")
    with pytest.raises(ValueError, match="must be one of"):
        attention.check("flash", "cpu")
