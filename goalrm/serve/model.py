"""The model a replica serves: a goalrm export, or any HF sequence-classification reward model whose
`score` head reads the last real token (Llama, Qwen2, Mistral, GPT-2, ...). Q-values need a goal
state: the export's, or `goal`. Safetensors only, no remote code. No Ray."""

import glob
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from goalrm import attention
from goalrm.config import ConfigError
from goalrm.export import DTYPES, GOAL_FILE, GOALRM_FILE, load_goal, load_reward_model, read_meta, representation_dim
from goalrm.model import RewardModel, load_tokenizer
from goalrm.score.scorer import packing_layout, scoring_attention


@dataclass
class ServedModel:
    model: RewardModel
    tokenizer: object
    goal: torch.Tensor | None  # on the model's device; None: rewards only
    info: dict
    packing: str | None = None  # score_sequences' packed layout; None: padded forwards


def is_export(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, GOALRM_FILE))


def goal_source(model_dir: str, goal_file: str | None) -> str | None:
    """Where Q-values take their goal state from: GOAL_FILE when given, else the export's; None: rewards only."""
    if goal_file:
        return goal_file
    path = os.path.join(model_dir, GOAL_FILE)
    return path if os.path.exists(path) else None


def check_model_dir(model_dir: str, goal_file: str | None) -> None:
    """What can fail before Ray starts, without loading weights: the folder, safetensors weights, an
    architecture with a last-token `score` head, and the goal state's size."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--model {model_dir}: no such folder")
    if not glob.glob(os.path.join(model_dir, "*.safetensors")):
        raise ConfigError(f"--model {model_dir}: no *.safetensors weights (goalrm serve loads safetensors only)")
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        with torch.device("meta"):
            _check_head(AutoModelForSequenceClassification.from_config(config), model_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--model {model_dir}: not a sequence-classification model transformers builds without remote code: {e}") from None
    if goal_source(model_dir, goal_file) is not None:
        dim = (read_meta(model_dir)["heads"].get("projection_dim") if is_export(model_dir) else 0) or config.get_text_config().hidden_size
        export_goal = os.path.join(model_dir, GOAL_FILE)
        load_goal(goal_file, None if goal_file else load_file(export_goal)["goal"], dim)


def serving_attention(name: str, device: str, dtype: str) -> str:
    """`goalrm score`'s choice, but never a kernel that compiles per shape: a server's batches come in
    every shape, and FlexAttention would compile at request time. So `auto` on a GPU without
    FlashAttention-2 serves padded SDPA batches (length-sorted), and packs on the CPU and with FA2."""
    resolved = scoring_attention(name, device, dtype)
    return "sdpa" if name == "auto" and resolved == "flex_attention" else resolved


def load_served_model(model_dir: str, goal_file: str | None, device: str, dtype: str, attn: str = "auto") -> ServedModel:
    attn = serving_attention(attn, device, dtype)
    attention.require(attn)
    if is_export(model_dir):
        model, tokenizer, model_goal, meta = load_reward_model(model_dir, device=device, dtype=dtype, attn_implementation=attn)
        kind = "goalrm"
    else:
        attention.register()
        seq_cls = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False, dtype=DTYPES[dtype], attn_implementation=attn
        )
        _check_head(seq_cls, model_dir)
        model, tokenizer, model_goal, meta, kind = RewardModel(seq_cls).to(device).eval(), load_tokenizer(model_dir), None, {}, "hf"
    goal = None
    if goal_source(model_dir, goal_file) is not None:
        goal = load_goal(goal_file, model_goal, representation_dim(model)).to(device)
    packing = packing_layout(model, attn)
    info = {
        "model": os.path.abspath(model_dir),
        "kind": kind,
        "goal_state": goal is not None,
        "goal_dim": None if goal is None else goal.numel(),
        "dtype": dtype,
        "device": device,
        "attention": attn,
        "packed": packing is not None,
        "reward_mean": meta.get("reward_mean"),
        "reward_std": meta.get("reward_std"),
    }
    return ServedModel(model, tokenizer, goal, info, packing)


def _check_head(seq_cls, model_dir: str) -> None:
    if seq_cls.config.num_labels != 1 or not isinstance(getattr(seq_cls, "score", None), torch.nn.Linear):
        raise ConfigError(
            f"--model {model_dir}: a reward model has one label and a last-token `score` head "
            f"({type(seq_cls).__name__} has num_labels={seq_cls.config.num_labels})"
        )
