"""bench/random_backbone.py: a random Llama of a bench shape as a local folder goalrm trains from."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from random_backbone import write_backbone  # noqa: E402
from shapes import SHAPES  # noqa: E402

from goalrm.model import HeadConfig, build_model, load_tokenizer  # noqa: E402
from goalrm.tiny import tiny_tokenizer  # noqa: E402


def test_a_random_backbone_folder_loads_as_its_shape_with_the_tiny_tokenizer(tmp_path):
    folder = write_backbone("tiny-4x256", str(tmp_path / "b"), seed=3)
    tok = load_tokenizer(folder)
    text = "Ann has 12 pens, buys 9. How many?\n12+9=21"
    assert tok(text).input_ids == tiny_tokenizer()(text).input_ids
    model = build_model(folder, HeadConfig(), tok)
    shape = SHAPES["tiny-4x256"]
    assert model.backbone.config.num_hidden_layers == shape["num_hidden_layers"]
    assert model.backbone.config.hidden_size == shape["hidden_size"]
    again = build_model(write_backbone("tiny-4x256", str(tmp_path / "c"), seed=3), HeadConfig(), tok)
    other = build_model(write_backbone("tiny-4x256", str(tmp_path / "d"), seed=4), HeadConfig(), tok)
    w = lambda m: m.backbone.layers[0].mlp.up_proj.weight  # noqa: E731
    assert torch.equal(w(model), w(again)) and not torch.equal(w(model), w(other))  # the seed is the backbone's
