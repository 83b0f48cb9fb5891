"""LoRA on the backbone through peft; the reward head and projection head stay fully trainable.

The export merges the adapters into plain weights, so it loads like a full fine-tune; the adapter
alone can be saved beside it. Both work from a state dict, which a ZeRO-3 run gathers on rank 0.
"""

import os
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

ADAPTER_DIR = "adapter"  # inside the export folder: peft's adapter files plus the heads
ADAPTER_HEADS_FILE = "goalrm_heads.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    save_adapter: bool = False  # also write the adapter alone to <export>/adapter/

    def __post_init__(self):
        if self.rank < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("model.lora needs rank >= 1, alpha > 0 and 0 <= dropout < 1")
        if not self.target_modules:
            raise ValueError("model.lora.target_modules must name at least one module")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_modules), bias="none"
        )


def add_lora(model, settings: LoraSettings):
    """Wrap `model.backbone` in peft LoRA: the trunk freezes, the adapters and the heads train."""
    try:
        model.backbone = get_peft_model(model.backbone, settings.peft_config())
    except ValueError as e:  # peft's message when no module matches target_modules
        raise ValueError(f"model.lora.target_modules {list(settings.target_modules)}: {e}") from None
    model.lora = settings
    return model


def merge_lora(state: dict[str, torch.Tensor], settings: LoraSettings) -> dict[str, torch.Tensor]:
    """A reward model's state dict with the adapters merged into plain weights, W + (alpha / r) B A, and
    peft's wrapping names undone. Works on tensors alone, so a large export never builds a second model."""
    scale = settings.alpha / settings.rank
    out = {}
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        name = key.replace("backbone.base_model.model.", "backbone.", 1)
        if key.endswith(".base_layer.weight"):
            stem = key[: -len(".base_layer.weight")]
            a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
            delta = (b.float() @ a.float()) * scale
            value = (value.float() + delta).to(value.dtype)
            name = name.replace(".base_layer.weight", ".weight")
        elif key.endswith(".base_layer.bias"):
            name = name.replace(".base_layer.bias", ".bias")
        out[name] = value
    return out


def save_adapter(backbone, state: dict[str, torch.Tensor], adapter_dir: str) -> None:
    """The adapter alone, as peft saves it (adapter_config.json, adapter_model.safetensors), plus the
    heads it needs to score. `backbone` is the live peft model (for its config); `state` the reward model's."""
    from peft import get_peft_model_state_dict

    os.makedirs(adapter_dir, exist_ok=True)
    inner = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    adapter = get_peft_model_state_dict(backbone, state_dict=inner)
    save_file({k: v.contiguous() for k, v in adapter.items()}, os.path.join(adapter_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    backbone.peft_config["default"].save_pretrained(adapter_dir)
    heads = {k: v.contiguous() for k, v in state.items() if k.startswith(("head.", "projection."))}
    save_file(heads, os.path.join(adapter_dir, ADAPTER_HEADS_FILE))
