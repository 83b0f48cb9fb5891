"""Short Ray Train runs (2 CPU workers) for the memory options: ZeRO-3 on a real HF folder (the
tiny preset's ZeRO-3 run is in test_train_e2e.py), CPU offload of the optimizer and of the parameters,
LoRA, gradient checkpointing, a user DeepSpeed JSON, and packed micro-batches (data.packing).

Each run checks that it trained and that its export reproduces, in plain transformers, the rewards
the live (sharded) model computed at export time (`reward_mean`/`reward_std` in goalrm.json).
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from goalrm.config import load_config
from goalrm.data.batch import collate_pairs
from goalrm.data.load import load_tokenized
from goalrm.lora import ADAPTER_DIR
from goalrm.model import load_tokenizer

pytestmark = pytest.mark.slow
STEPS = 10
LORA = {"rank": 4, "target_modules": ["q_proj", "v_proj"], "save_adapter": True}


def _config(tmp_path, model, train, lora=None, ckpt=False, **data):
    data = {"synthetic_train_size": 256, "synthetic_eval_size": 32, "goal_state_pairs": 32, "max_length": 96, **data}
    base = {"max_steps": STEPS, "eval_every": STEPS, "log_every": 5, "micro_batch_size": 4, "lr": 1e-3, "warmup_steps": 0}
    overrides = {"model": {"name_or_path": model, "lora": lora, "gradient_checkpointing": ckpt}, "data": data, "train": {**base, **train}}
    return load_config(None, overrides)


def _plain_reward_stats(model_dir, cfg):
    """Mean/std of the export's rewards, in plain transformers, over the pairs the export's stats came from."""
    plain = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = load_tokenizer(model_dir)
    pairs, _, _ = load_tokenized("synthetic", "train", cfg.data, tok)
    batch = collate_pairs(pairs[: cfg.data.goal_state_pairs], tok.pad_token_id)
    with torch.no_grad():
        r = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].double()
    return float(r.mean()), float(r.std(unbiased=False))


def _weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


# "-packed": data.packing through Ray, ZeRO-3 and checkpointing. Synthetic pairs are too even in length
# to share a row, so rows hold one sequence and a free tail; tests/test_train_combo.py packs for real (and
# covers ZeRO-2 with optimizer offload).
@pytest.mark.parametrize("case", ["hf-zero3-offload-checkpointing-packed", "hf-zero3-lora-offload-json"])
def test_short_run_trains_and_exports(ray_session, tmp_path, hf_model_dir, case):
    from goalrm.train.trainer import train

    if case == "hf-zero3-offload-checkpointing-packed":
        zero3 = {"zero_stage": 3, "offload_optimizer": True, "offload_params": True}
        cfg = _config(tmp_path, hf_model_dir, zero3, ckpt=True, packing=True, group_by_length=False)
    else:
        ds_json = tmp_path / "ds.json"
        ds_json.write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}, "train_batch_size": "auto"}))
        cfg = _config(tmp_path, hf_model_dir, {"zero_stage": 3, "offload_optimizer": True, "deepspeed_config": str(ds_json)}, lora=LORA, ckpt=True)

    result = train(cfg, str(tmp_path / "run"))

    lines = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert [l["step"] for l in lines] == [5, 10]
    assert all(torch.isfinite(torch.tensor(l["loss"])) for l in lines)
    assert lines[-1]["eval_n_pairs"] == 32  # the held-out eval ran over every pair (learning: test_train_e2e.py)

    # the export equals the live model: same rewards in plain transformers as the workers measured
    meta = json.load(open(os.path.join(result.model_dir, "goalrm.json")))
    mean, std = _plain_reward_stats(result.model_dir, cfg)
    assert abs(mean - meta["reward_mean"]) < 1e-4 and abs(std - meta["reward_std"]) < 1e-4
    assert std > 1e-4  # a constant reward would make the comparison empty

    exported = _weights(result.model_dir)
    assert not any("lora" in k for k in exported)
    if case.startswith("hf-"):
        base = _weights(hf_model_dir)
        q, down = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"
        assert not torch.equal(exported[q], base[q])  # trained, or (LoRA) the adapter merged in
        if "lora" in case:
            assert torch.equal(exported[down], base[down])  # frozen trunk, not a LoRA target
            assert torch.equal(exported["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
            assert os.path.exists(os.path.join(result.model_dir, ADAPTER_DIR, "adapter_model.safetensors"))
        else:
            assert not torch.equal(exported[down], base[down])
