"""A goalrm export: an HF sequence-classification folder (safetensors shards, config, tokenizer) plus
goalrm's small side files. Written from a state dict alone, so a ZeRO-3 run gathers its weights on
rank 0 only and never builds a second model; loaded straight in the dtype and on the device asked for.

A linear-head model is a plain `AutoModelForSequenceClassification` (`num_labels=1`): it loads in
transformers with no goalrm code.
"""

import copy
import json
import os
from dataclasses import asdict

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from goalrm import attention
from goalrm.atomic import write_text
from goalrm.config import ConfigError
from goalrm.lora import ADAPTER_DIR, merge_lora, save_adapter
from goalrm.model import HeadConfig, RewardModel

GOALRM_FILE = "goalrm.json"  # head, projection and reward statistics
GOAL_FILE = "goal_state.safetensors"  # tensor "goal": [D], the default Q-value goal state
EXTRA_HEADS_FILE = "goalrm_heads.safetensors"  # MLP head and projection head weights, when present
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def seq_cls_state(model: RewardModel, state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """`model`'s state dict (or one gathered for it) split into the HF sequence-classification weights,
    LoRA merged in, and goalrm's extra heads (MLP head, projection)."""
    if model.lora is not None:
        state = merge_lora(state, model.lora)
    prefix = f"{model.base_model_prefix}."
    seq = {prefix + k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    extra = {k: v for k, v in state.items() if k.startswith(("head.", "projection."))}
    if model.heads.head == "linear":
        seq["score.weight"] = extra.pop("head.weight")
    else:  # unused, the MLP head scores; present so that plain transformers loads the folder without warnings
        hidden = model.config.get_text_config().hidden_size
        seq["score.weight"] = torch.zeros(1, hidden, dtype=next(iter(seq.values())).dtype)
    return seq, extra


def save_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str,
    goal_state: torch.Tensor | None = None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the export to OUT_DIR. `state_dict` (e.g. gathered from ZeRO-3 shards on rank 0) replaces
    the module's own; only its tensors are written, in their own dtype."""
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k: _own_storage(v.detach().cpu()) for k, v in state.items()}
    if model.lora is not None and model.lora.save_adapter:
        save_adapter(model.backbone, state, os.path.join(out_dir, ADAPTER_DIR))
    seq, extra = seq_cls_state(model, state)
    os.makedirs(out_dir, exist_ok=True)
    save_torch_state_dict(seq, out_dir, max_shard_size="5GB")
    config = copy.deepcopy(model.config)
    config.architectures = [model.seq_cls_name]
    config.dtype = next(iter(seq.values())).dtype
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if extra:
        save_file(extra, os.path.join(out_dir, EXTRA_HEADS_FILE))
    if goal_state is not None:
        save_file({"goal": goal_state.detach().float().cpu().contiguous()}, os.path.join(out_dir, GOAL_FILE))
    meta = {"heads": asdict(model.heads), "reward_mean": reward_mean, "reward_std": reward_std}
    write_text(os.path.join(out_dir, GOALRM_FILE), json.dumps(meta, indent=2))


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """A tensor that owns exactly its storage: DeepSpeed's (ZeRO-1/2) parameters are views into one flat
    buffer, which safetensors refuses to write; a gathered ZeRO-3 tensor is not copied again."""
    t = t.contiguous()
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


def read_meta(model_dir: str) -> dict:
    path = os.path.join(model_dir, GOALRM_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{model_dir} is not a goalrm export: {GOALRM_FILE} is missing")
    with open(path) as f:
        return json.load(f)


def load_reward_model(
    model_dir: str, trust_remote_code: bool = False, device="cpu", dtype: str | torch.dtype = "float32", attn_implementation: str = "sdpa"
):
    """Returns (model, tokenizer, goal state or None, meta dict): in eval mode, on `device`, its weights
    read straight in `dtype` (no fp32 copy first), its attention `attn_implementation` (goalrm/attention.py)."""
    meta = read_meta(model_dir)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    attention.register()
    seq_cls = AutoModelForSequenceClassification.from_pretrained(
        model_dir, trust_remote_code=trust_remote_code, dtype=dtype, attn_implementation=attn_implementation
    )
    model = RewardModel(seq_cls, HeadConfig(**meta["heads"]))
    extra_path = os.path.join(model_dir, EXTRA_HEADS_FILE)
    if os.path.exists(extra_path):
        _, unexpected = model.load_state_dict(load_file(extra_path), strict=False)
        if unexpected:
            raise ValueError(f"{extra_path}: unexpected tensors {unexpected}")
    goal_path = os.path.join(model_dir, GOAL_FILE)
    goal = load_file(goal_path)["goal"] if os.path.exists(goal_path) else None
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer, None if goal is None else goal.to(device), meta


def representation_dim(model: RewardModel) -> int:
    """The size of h_t, and so of a goal state: the projection's, else the backbone's hidden size."""
    return model.heads.projection_dim or model.config.get_text_config().hidden_size


def load_goal(path: str | None, model_goal: torch.Tensor | None, dim: int) -> torch.Tensor:
    """The goal state Q-values point toward: the tensor "goal" of the safetensors file PATH (--goal),
    else the export's own; float32, of the model's representation size `dim`."""
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--goal {path}: file not found")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"--goal {path}: not a readable safetensors file ({e})") from None
        if "goal" not in tensors:
            raise ConfigError(f"--goal {path}: no tensor named 'goal' (found {sorted(tensors)})")
        goal, source = tensors["goal"], f"--goal {path}"
    elif model_goal is None:
        raise ConfigError(f"the model folder has no {GOAL_FILE}; pass --goal FILE")
    else:
        goal, source = model_goal, GOAL_FILE
    if goal.shape != (dim,):
        raise ConfigError(f"{source}: tensor 'goal' has shape {list(goal.shape)}, but the model's representations have size {dim}")
    return goal.float()
