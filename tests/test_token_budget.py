"""Micro-batches sized by tokens: within the budget, as few as fit, the same cut for the same pairs, and a
step that trains exactly as one forward over its pairs would."""

import random
import socket

import pytest
import torch

from goalrm.data import TokenizedPair
from goalrm.data.token_budget import by_length, sequence_batches, slots, split


def _pairs(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 259) for _ in range(rng.randrange(2, 8))]
        chosen = prompt + [rng.randrange(3, 259) for _ in range(rng.randrange(2, 90))]
        rejected = prompt + [rng.randrange(3, 259) for _ in range(rng.randrange(2, 90))]
        out.append(TokenizedPair(chosen, len(prompt), rejected, len(prompt), None))
    return out


def test_slots_count_what_the_forward_pays_for():
    a = TokenizedPair([1] * 10, 2, [1] * 4, 2, None)
    b = TokenizedPair([1] * 3, 1, [1] * 7, 1, None)
    assert slots([a, b], packed=True) == 24
    assert slots([a, b], packed=False) == 2 * 2 * 10  # four rows of the longest


@pytest.mark.parametrize("packed", [False, True])
def test_cuts_stay_within_the_budget_and_are_as_few_as_fit(packed):
    pairs = by_length(_pairs(64))
    budget = 600
    micro = split(pairs, budget, packed)
    assert [p for m in micro for p in m] == pairs  # every pair once, in length order
    assert all(slots(m, packed) <= budget for m in micro)
    # next-fit in length order: no micro-batch could have taken the next one's first pair
    assert all(slots(a + b[:1], packed) > budget for a, b in zip(micro, micro[1:]))
    assert len(micro) < len(pairs) // 2  # short pairs do share forwards
    assert split(pairs, budget, packed) == micro  # the same pairs, the same cut


def test_more_parts_halve_the_biggest_and_keep_the_budget():
    pairs = by_length(_pairs(20, seed=1))
    fewest = split(pairs, 800, packed=True)
    more = split(pairs, 800, packed=True, parts=len(fewest) + 3)
    assert len(more) == len(fewest) + 3 and all(m for m in more)
    assert [p for m in more for p in m] == pairs and all(slots(m, True) <= 800 for m in more)
    with pytest.raises(ValueError, match="cannot cut 20 pairs into 21"):
        split(pairs, 800, packed=True, parts=21)


def test_sequence_batches_sorted_and_within_the_budget():
    lengths = [30, 4, 18, 5, 29, 3, 17, 100]
    groups = sequence_batches(lengths, 64, packed=False)
    assert [lengths[i] for g in groups for i in g] == sorted(lengths)  # every sequence once, in length order
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 64  # padded slots
    assert groups == [[5, 1, 3], [6, 2], [4, 0], [7]]  # 100 goes alone
    packed = sequence_batches(lengths, 64, packed=True)
    assert packed == [[5, 1, 3, 6, 2], [4, 0], [7]] and all(len(g) == 1 or sum(lengths[i] for i in g) <= 64 for g in packed)
    assert sequence_batches(lengths, 1000, packed=True, max_seqs=3) == [[5, 1, 3], [6, 2, 4], [0, 7]]


def test_a_pair_over_the_budget_is_named():
    long = TokenizedPair([1] * 100, 2, [1] * 90, 2, None)
    with pytest.raises(ValueError, match="a pair of 100 \\+ 90 tokens needs 200 slots, over data.max_tokens_per_micro_batch 150"):
        split([long], 150, packed=False)


def test_a_budget_step_updates_the_weights_as_one_forward_over_its_pairs(one_torch_thread, monkeypatch):
    """DeepSpeed (ZeRO-2, one process), as the loop drives it: micro-batches of different sizes, each loss
    weighted by its share of the step's pairs, the boundary on the last: the same update as one forward
    over all of them (Bradley-Terry alone, whose loss is a mean over pairs). SGD, whose update is the
    gradient itself: AdamW would blow float noise in near-zero gradients up to the learning rate."""
    import torch.distributed as dist

    from goalrm.config import TrainConfig
    from goalrm.data.model_batch import collate_step
    from goalrm.losses import LossConfig, reward_model_loss
    from goalrm.model import build_model, load_tokenizer
    from goalrm.train.deepspeed_config import deepspeed_config
    from goalrm.train.deepspeed_init import init_distributed

    monkeypatch.setenv("LOCAL_RANK", "0")  # Ray Train sets it in a worker; DeepSpeed asks for it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        deepspeed = init_distributed(use_gpu=False)
        tok = load_tokenizer("tiny")
        pairs = by_length(_pairs(12, seed=2))
        loss_cfg = LossConfig(contrastive_weight=0.0)

        def train_step(micro):
            torch.manual_seed(0)
            model = build_model("tiny", tokenizer=tok)
            config = deepspeed_config(TrainConfig(num_workers=1, micro_batch_size=12), 1)
            del config["optimizer"]
            config["zero_allow_untested_optimizer"] = True
            engine, *_ = deepspeed.initialize(
                model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), dist_init_required=None, config=config
            )
            sb = collate_step(micro, tok.pad_token_id)
            for i, (mb, w) in enumerate(zip(sb.micro, sb.weights())):
                b = mb.padded
                out = engine(b["input_ids"], b["attention_mask"])
                loss, _ = reward_model_loss(out.rewards, None, b["completion_start"], b["completion_end"], loss_cfg)
                engine.set_gradient_accumulation_boundary(i == len(sb.micro) - 1)
                engine.backward(loss * w, scale_wrt_gas=False)
                engine.step()
            return {n: p.detach().clone() for n, p in engine.module.named_parameters()}

        cut = split(pairs, 500, packed=False)
        assert len(cut) >= 3 and len({len(m) for m in cut}) > 1  # uneven micro-batches
        whole, budget = train_step([pairs]), train_step(cut)
        moved = max(float((whole[n] - p).abs().max()) for n, p in train_step([pairs[:1]]).items())
        assert moved > 1e-3  # an update on other pairs lands elsewhere: the comparison below can fail
        for n, p in budget.items():
            assert torch.allclose(p, whole[n], atol=1e-6), n
    finally:
        dist.destroy_process_group()
