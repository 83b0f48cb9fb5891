import copy

import pytest
import torch

from goalrm.frozen_trunk import merge_top, top_only, trunk_states
from goalrm.model import HeadConfig, build_model


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("cut", [0, 1])
def test_top_layers_on_trunk_states_equal_the_full_model(batch, cut):
    torch.manual_seed(0)
    full = build_model("tiny", HeadConfig(projection_dim=8)).eval()
    ids, mask = batch
    want = full(ids, mask, with_reps=True)
    states = trunk_states(full, ids, mask, cut)
    assert len(full.backbone.layers) == 2  # the trunk pass leaves the model whole
    top = top_only(copy.deepcopy(full), cut)
    got = top(None, mask, with_reps=True, inputs_embeds=states)
    torch.testing.assert_close(got.rewards, want.rewards, atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(got.reps[real], want.reps[real], atol=1e-5, rtol=1e-5)


def test_top_only_trains_only_the_kept_layers_and_heads():
    model = top_only(build_model("tiny"), 1)
    trainable = {n.split(".")[1] if n.startswith("backbone.") else n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layers", "norm", "head"}
    assert len(model.backbone.layers) == 1


def test_cut_out_of_range_is_a_clear_error(batch):
    model = build_model("tiny")
    with pytest.raises(ValueError, match=r"cut must be in \[0, 1\]"):
        trunk_states(model, *batch, 2)


def test_merge_top_gives_a_whole_model_with_the_trained_top(batch):
    torch.manual_seed(0)
    full = build_model("tiny", HeadConfig(projection_dim=8)).eval()
    ids, mask = batch
    states = trunk_states(full, ids, mask, 1)
    top = top_only(copy.deepcopy(full), 1)
    with torch.no_grad():
        for p in top.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # as if trained
    merged = merge_top(copy.deepcopy(full), top, 1)
    want = top(None, mask, with_reps=True, inputs_embeds=states)
    got = merged(ids, mask, with_reps=True)
    torch.testing.assert_close(got.rewards, want.rewards, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full(ids, mask).rewards, got.rewards)
