"""The reward model: a HF causal-LM backbone, a scalar head on the last real token, and
the final hidden states as token representations (optionally through a projection head).
Its export and loading are in goalrm/export.py.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging as hf_logging

from goalrm import attention
from goalrm.backbones import resolve
from goalrm.console import verbose
from goalrm.data.pack import Packed, unpack
from goalrm.lora import LoraSettings, add_lora
from goalrm.tiny import TINY_NAME, tiny_config, tiny_tokenizer


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


class RewardOutput(NamedTuple):
    """A named tuple, so that ZeRO-3's module hooks reach its tensors: DeepSpeed walks tuples, lists and
    dicts only, and warns in every ZeRO-3 run about any other output type."""

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
        # the export is written as this class, with the backbone under this prefix (goalrm/export.py)
        self.seq_cls_name, self.base_model_prefix = type(seq_cls).__name__, seq_cls.base_model_prefix
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
            # no attention_mask and no cache: transformers takes the sequence boundaries from position_ids;
            # a flat row's are handed to the attention of every layer too (goalrm/attention.py)
            varlen = {} if packed.cu_seqlens is None else attention.varlen_kwargs(packed.cu_seqlens, packed.max_len)
            out = self.backbone(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False, **varlen)
            hidden = unpack(out.last_hidden_state, packed)
        last = last_token_index(attention_mask)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        # each head runs in its own weights' dtype: under ZeRO-3 bf16 the backbone is bf16 while heads
        # built outside zero.Init stay fp32; rewards leave in fp32 either way
        rewards = self.head(pooled.to(_dtype(self.head))).squeeze(-1).float()
        # h_t for the contrastive term and Q-values; computed inside forward so ZeRO-3 gathers the projection
        reps = None
        if with_reps:
            reps = hidden if self.projection is None else self.projection(hidden.to(_dtype(self.projection)))
        return RewardOutput(rewards=rewards, hidden=hidden, reps=reps, last_index=last)


class _HeldReports(logging.Filter):
    """Keeps transformers' LOAD REPORT back until the load says whether it is worth reading."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True

    def release(self, log: logging.Logger) -> None:
        log.removeFilter(self)
        for record in self.held:
            log.handle(record)


def load_seq_cls(name_or_path: str, **kwargs) -> nn.Module:
    """A causal LM checkpoint as AutoModelForSequenceClassification. transformers' LOAD REPORT would
    print, in every worker, what every reward model has: a new reward head (MISSING) and an unused LM
    head (UNEXPECTED). It prints only when it says more: backbone weights that would start random,
    weights of the wrong shape, or a failed load (whose error points at it); always with --verbose."""
    if verbose():
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    log = hf_logging.get_logger("transformers.modeling_utils")
    held = _HeldReports()
    log.addFilter(held)
    try:
        seq_cls, info = AutoModelForSequenceClassification.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except Exception:
        held.release(log)
        raise
    log.removeFilter(held)
    backbone = seq_cls.base_model_prefix + "."
    if any(k.startswith(backbone) for k in info["missing_keys"]) or info["mismatched_keys"]:
        held.release(log)
    return seq_cls


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


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
    dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = False,
    lora: LoraSettings | None = None,
    attn_implementation: str = "sdpa",
) -> RewardModel:
    """A fresh reward model: `tiny` is randomly initialised; anything else loads pretrained weights.
    `attn_implementation` is a resolved one (goalrm/attention.py's `resolve`), not "auto".

    Every weight, backbone and new heads alike, is `dtype`, whatever dtype a checkpoint was saved in
    (transformers 5 would keep a bf16 checkpoint bf16). Training asks for fp32: DeepSpeed's bf16 mode
    casts the module itself and keeps fp32 master weights."""
    attention.register()
    if name_or_path == TINY_NAME:
        config = tiny_config(num_labels=1)
        seq_cls = AutoModelForSequenceClassification.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    else:
        name_or_path = resolve(name_or_path)  # named backbones (smollm2-135m) to their cached folder
        config = AutoConfig.from_pretrained(name_or_path, num_labels=1, trust_remote_code=trust_remote_code)
        seq_cls = load_seq_cls(
            name_or_path, config=config, trust_remote_code=trust_remote_code, dtype=dtype, attn_implementation=attn_implementation
        )
    if tokenizer is not None and seq_cls.config.pad_token_id is None:
        seq_cls.config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        # non-reentrant: correct with a frozen (LoRA) trunk and with ZeRO-3's parameter hooks
        seq_cls.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = RewardModel(seq_cls, heads)
    if not is_deepspeed_zero3_enabled():  # zero.Init made the backbone's (partitioned) weights in its dtype
        model = model.to(dtype)  # the new heads too
    return add_lora(model, lora) if lora is not None else model
