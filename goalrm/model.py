"""The reward model: a HF causal-LM backbone, a scalar head on the last real token, and
the final hidden states as token representations (optionally through a projection head).

A linear-head model is stored as an `AutoModelForSequenceClassification` (`num_labels=1`), so
its export loads in plain transformers with no goalrm code.
"""

import json
import os
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from goalrm.backbones import resolve
from goalrm.data.pack import Packed, unpack
from goalrm.lora import ADAPTER_DIR, LoraSettings, add_lora, merge_for_export
from goalrm.tiny import TINY_NAME, tiny_config, tiny_tokenizer

GOALRM_FILE = "goalrm.json"  # head, projection and reward statistics
GOAL_FILE = "goal_state.safetensors"  # tensor "goal": [H], the default Q-value goal state
EXTRA_HEADS_FILE = "goalrm_heads.safetensors"  # MLP head and projection head weights, when present


@dataclass(frozen=True)
class HeadConfig:
    head: str = "linear"  # "linear" (exports as plain AutoModelForSequenceClassification) | "mlp"
    mlp_hidden: int = 0  # 0 means the backbone's hidden size
    projection_dim: int = 0  # 0: no projection head; representations are the final hidden states

    def __post_init__(self):
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"model.head must be 'linear' or 'mlp', got {self.head!r}")
        if self.mlp_hidden < 0 or self.projection_dim < 0:
            raise ValueError("model.mlp_hidden and model.projection_dim must be >= 0")


@dataclass
class RewardOutput:
    rewards: torch.Tensor  # [N]
    hidden: torch.Tensor  # [N, T, H] final hidden states
    reps: torch.Tensor | None  # [N, T, D] representations h_t, when asked for
    last_index: torch.Tensor  # [N] position of each row's last real token


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rightmost real token per row; right for left and right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


class RewardModel(nn.Module):
    def __init__(self, seq_cls: nn.Module, heads: HeadConfig = HeadConfig()):
        super().__init__()
        self.heads = heads
        self.lora: LoraSettings | None = None  # set by add_lora
        self.config = seq_cls.config
        self.backbone = seq_cls.base_model
        hidden = self.config.get_text_config().hidden_size
        if heads.head == "linear":
            self.head = seq_cls.score
        else:
            inner = heads.mlp_hidden or hidden
            self.head = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, 1))
        self.projection = None
        if heads.projection_dim:
            self.projection = nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, heads.projection_dim)
            )

    def forward(
        self, input_ids, attention_mask, with_reps: bool = False, packed: Packed | None = None, inputs_embeds=None
    ) -> RewardOutput:
        """`packed` (goalrm/data/pack.py) runs the backbone on the packed rows of this padded batch; the
        output is the same as without it, in the padded layout. `inputs_embeds` replaces `input_ids`
        (pass None for them), e.g. frozen-trunk states (goalrm/frozen_trunk.py)."""
        if packed is None:
            hidden = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        else:
            # no attention_mask and no cache: transformers takes the sequence boundaries from position_ids
            out = self.backbone(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False)
            hidden = unpack(out.last_hidden_state, packed)
        last = last_token_index(attention_mask)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        rewards = self.head(pooled).squeeze(-1).float()
        # h_t for the contrastive term and Q-values; computed inside forward so ZeRO-3 gathers the projection
        reps = None
        if with_reps:
            reps = hidden if self.projection is None else self.projection(hidden)
        return RewardOutput(rewards=rewards, hidden=hidden, reps=reps, last_index=last)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    if name_or_path == TINY_NAME:
        return tiny_tokenizer()
    tok = AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(
    name_or_path: str,
    heads: HeadConfig = HeadConfig(),
    tokenizer: PreTrainedTokenizerBase | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    lora: LoraSettings | None = None,
) -> RewardModel:
    """A fresh reward model: `tiny` is randomly initialised; anything else loads pretrained weights."""
    if name_or_path == TINY_NAME:
        config = tiny_config(num_labels=1)
        seq_cls = AutoModelForSequenceClassification.from_config(config)
    else:
        name_or_path = resolve(name_or_path)  # named backbones (smollm2-135m) to their cached folder
        config = AutoConfig.from_pretrained(name_or_path, num_labels=1, trust_remote_code=trust_remote_code)
        seq_cls = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, trust_remote_code=trust_remote_code, dtype=dtype
        )
    if tokenizer is not None and seq_cls.config.pad_token_id is None:
        seq_cls.config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        # non-reentrant: correct with a frozen (LoRA) trunk and with ZeRO-3's parameter hooks
        seq_cls.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = RewardModel(seq_cls, heads)
    return add_lora(model, lora) if lora is not None else model


def save_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str,
    goal_state: torch.Tensor | None = None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """HF export in safetensors, plus goalrm's small side files. `state_dict` overrides the
    module's own (e.g. consolidated from ZeRO-3 shards). LoRA adapters are merged into the weights."""
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if model.lora is not None:
        model, state = merge_for_export(model, state, os.path.join(out_dir, ADAPTER_DIR) if model.lora.save_adapter else None)
    seq_cls = AutoModelForSequenceClassification.from_config(model.config)
    prefix = seq_cls.base_model_prefix
    seq_state = {f"{prefix}.{k[len('backbone.'):]}": v for k, v in state.items() if k.startswith("backbone.")}
    extra = {k: v for k, v in state.items() if k.startswith(("head.", "projection."))}
    if model.heads.head == "linear":
        seq_state["score.weight"] = extra.pop("head.weight")
    else:
        seq_state["score.weight"] = torch.zeros_like(seq_cls.score.weight)  # unused: the MLP head scores
    seq_cls.load_state_dict(seq_state, strict=True)
    os.makedirs(out_dir, exist_ok=True)
    seq_cls.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if extra:
        save_file(extra, os.path.join(out_dir, EXTRA_HEADS_FILE))
    if goal_state is not None:
        save_file({"goal": goal_state.detach().float().cpu().contiguous()}, os.path.join(out_dir, GOAL_FILE))
    meta = {"heads": asdict(model.heads), "reward_mean": reward_mean, "reward_std": reward_std}
    with open(os.path.join(out_dir, GOALRM_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def load_reward_model(model_dir: str, trust_remote_code: bool = False):
    """Returns (model, tokenizer, goal_state or None, meta dict)."""
    meta_path = os.path.join(model_dir, GOALRM_FILE)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{model_dir} is not a goalrm export: {GOALRM_FILE} is missing")
    with open(meta_path) as f:
        meta = json.load(f)
    seq_cls = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = RewardModel(seq_cls, HeadConfig(**meta["heads"]))
    extra_path = os.path.join(model_dir, EXTRA_HEADS_FILE)
    if os.path.exists(extra_path):
        missing, unexpected = model.load_state_dict(load_file(extra_path), strict=False)
        if unexpected:
            raise ValueError(f"{extra_path}: unexpected tensors {unexpected}")
    goal_path = os.path.join(model_dir, GOAL_FILE)
    goal = load_file(goal_path)["goal"] if os.path.exists(goal_path) else None
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer, goal, meta
