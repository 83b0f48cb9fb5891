"""LoRA and gradient checkpointing on the reward model, without Ray."""

import os

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from goalrm.config import load_config
from goalrm.data.batch import collate_pairs
from goalrm.data.load import load_tokenized
from goalrm.lora import ADAPTER_DIR, ADAPTER_HEADS_FILE, LoraSettings
from goalrm.losses import reward_model_loss
from goalrm.export import save_reward_model
from goalrm.model import HeadConfig, build_model, load_tokenizer

LORA = LoraSettings(rank=4, alpha=8.0, target_modules=("q_proj", "v_proj", "down_proj"))
TEXTS = ["Ann has 3 pens, buys 2. How many?\n3+2=5\nAnswer: 5", "Ben has 9 eggs, gives 4.\n9-4=5\nAnswer: 5"]


def _batch(tok, n=8):
    cfg = load_config(None, {"data": {"synthetic_train_size": n, "max_length": 96}})
    pairs, _, _ = load_tokenized("synthetic", "train", cfg.data, tok)
    return collate_pairs(pairs, tok.pad_token_id), cfg.loss


def _train_steps(model, tok, steps=3):
    batch, loss_cfg = _batch(tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        out = model(batch["input_ids"], batch["attention_mask"], with_reps=True)
        loss, _ = reward_model_loss(
            out.rewards, out.reps, batch["completion_start"], batch["completion_end"], loss_cfg, None, batch["rejected_divergence"]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()


def _rewards(model, tok):
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(enc.input_ids, enc.attention_mask).rewards


def test_lora_trains_adapters_and_heads_only():
    tok = load_tokenizer("tiny")
    model = build_model("tiny", HeadConfig(head="mlp", projection_dim=16), tok, lora=LORA)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("head.", "projection.")) for n in trainable)
    assert any(n.startswith("projection.") for n in trainable) and any(n.startswith("head.") for n in trainable)
    assert not any("k_proj.lora_" in n for n in trainable)  # only the named target modules
    _train_steps(model.train(), tok)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable  # every adapter and head weight moved, and nothing in the trunk
    assert any(".base_layer.weight" in k for k in before)  # the frozen q/v/down weights were checked too


def test_lora_unknown_target_module_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.lora.target_modules \['qkv'\]"):
        build_model("tiny", tokenizer=load_tokenizer("tiny"), lora=LoraSettings(target_modules=("qkv",)))


def test_adapter_alone_on_the_base_model_gives_the_same_rewards(tmp_path, hf_model_dir):
    tok = load_tokenizer(hf_model_dir)
    heads = HeadConfig(head="mlp", mlp_hidden=32)
    model = build_model(hf_model_dir, heads, tok, lora=LoraSettings(rank=4, save_adapter=True))
    _train_steps(model.train(), tok)
    ours = _rewards(model, tok)
    save_reward_model(model, tok, str(tmp_path / "model"))
    adapter = tmp_path / "model" / ADAPTER_DIR
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_HEADS_FILE} <= set(os.listdir(adapter))

    base = build_model(hf_model_dir, heads, tok)  # the pretrained folder, then the adapter and heads on top
    base.backbone = PeftModel.from_pretrained(base.backbone, str(adapter))
    missing, unexpected = base.load_state_dict(load_file(adapter / ADAPTER_HEADS_FILE), strict=False)
    assert not unexpected and not any(k.startswith("head.") for k in missing)
    assert torch.allclose(_rewards(base, tok), ours, atol=1e-5)
    assert not torch.allclose(_rewards(build_model(hf_model_dir, heads, tok), tok), ours, atol=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients():
    tok = load_tokenizer("tiny")
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model("tiny", tokenizer=tok, gradient_checkpointing=ckpt, lora=LORA).train()
        assert model.backbone.base_model.model.is_activation_checkpointing is ckpt
        batch, _ = _batch(tok, n=4)
        model(batch["input_ids"], batch["attention_mask"]).rewards.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n
