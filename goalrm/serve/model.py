"""The model a replica serves: a goalrm export, or any HF sequence-classification reward model whose
`score` head reads the last real token (Llama, Qwen2, Mistral, GPT-2, ...). Q-values need a goal
state: the export's, or `goal`. Safetensors only, no remote code. No Ray."""

import glob
import json
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from goalrm.config import ConfigError
from goalrm.model import GOAL_FILE, GOALRM_FILE, RewardModel, load_reward_model, load_tokenizer
from goalrm.score.scorer import DTYPES, load_goal


@dataclass
class ServedModel:
    model: RewardModel
    tokenizer: object
    goal: torch.Tensor | None  # on the model's device; None: rewards only
    info: dict


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
    goal = goal_state(model_dir, goal_file)
    dim = _meta(model_dir).get("heads", {}).get("projection_dim") or config.get_text_config().hidden_size
    if goal is not None and goal.numel() != dim:
        raise ConfigError(f"the goal state has {goal.numel()} values but the model's representations have {dim}")


def load_served_model(model_dir: str, goal_file: str | None, device: str, dtype: str) -> ServedModel:
    if os.path.exists(os.path.join(model_dir, GOALRM_FILE)):
        model, tokenizer, _, meta = load_reward_model(model_dir)
        kind = "goalrm"
    else:
        seq_cls = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
        _check_head(seq_cls, model_dir)
        model, tokenizer, meta, kind = RewardModel(seq_cls), load_tokenizer(model_dir), {}, "hf"
    goal = goal_state(model_dir, goal_file)
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    info = {
        "model": os.path.abspath(model_dir),
        "kind": kind,
        "goal_state": goal is not None,
        "goal_dim": None if goal is None else goal.numel(),
        "dtype": dtype,
        "device": device,
        "reward_mean": meta.get("reward_mean"),
        "reward_std": meta.get("reward_std"),
    }
    return ServedModel(model, tokenizer, None if goal is None else goal.to(device), info)


def _check_head(seq_cls, model_dir: str) -> None:
    if seq_cls.config.num_labels != 1 or not isinstance(getattr(seq_cls, "score", None), torch.nn.Linear):
        raise ConfigError(
            f"--model {model_dir}: a reward model has one label and a last-token `score` head "
            f"({type(seq_cls).__name__} has num_labels={seq_cls.config.num_labels})"
        )


def goal_state(model_dir: str, goal_file: str | None) -> torch.Tensor | None:
    """GOAL_FILE when given, else the export's goal state, else None (rewards only)."""
    if goal_file:
        return load_goal(None, goal_file)
    path = os.path.join(model_dir, GOAL_FILE)
    return load_file(path)["goal"].float() if os.path.exists(path) else None


def _meta(model_dir: str) -> dict:
    path = os.path.join(model_dir, GOALRM_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
