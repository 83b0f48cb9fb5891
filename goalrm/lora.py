"""LoRA on the backbone through peft; the reward head and projection head stay fully trainable.

The export merges the adapters into plain weights, so it loads like a full fine-tune; the adapter
alone can be saved beside it.
"""

import copy
import os
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

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


def merge_for_export(model, state: dict[str, torch.Tensor], adapter_dir: str | None = None):
    """A plain (LoRA-free) copy of `model` holding `state` with the adapters merged in, and its state dict.

    Works from a state dict, so a ZeRO-3 export can pass its gathered parameters; the live module
    is left untouched. With `adapter_dir`, the adapter alone (peft's adapter_config.json and
    adapter_model.safetensors) and the heads it needs to score are written there first.
    """
    from goalrm.model import RewardModel

    fresh = RewardModel(AutoModelForSequenceClassification.from_config(model.config), model.heads)
    fresh.backbone = get_peft_model(fresh.backbone, copy.deepcopy(model.backbone.peft_config["default"]))
    fresh.load_state_dict(state, strict=True)
    if adapter_dir is not None:
        fresh.backbone.save_pretrained(adapter_dir, safe_serialization=True)
        heads = {k: v.contiguous() for k, v in state.items() if k.startswith(("head.", "projection."))}
        save_file(heads, os.path.join(adapter_dir, ADAPTER_HEADS_FILE))
    fresh.backbone = fresh.backbone.merge_and_unload()
    return fresh, fresh.state_dict()
