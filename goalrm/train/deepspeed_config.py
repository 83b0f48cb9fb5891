"""The DeepSpeed config: derived from goalrm's TrainConfig, merged with an optional user JSON.

Runs on the driver before Ray starts, so a bad or conflicting JSON fails before workers spawn.
"""

from goalrm.config import ConfigError, read_mapping

# goalrm's defaults; a user JSON may override these freely
DEFAULTS = {"steps_per_print": 10**9, "wall_clock_breakdown": False}
# built by goalrm from train.lr, train.weight_decay and its warmup-cosine schedule
OWNED = {"optimizer": "train.lr and train.weight_decay", "scheduler": "train.warmup_steps and train.max_steps"}
# A user JSON that makes ZeRO-3 release every gathered parameter after use, as a model above DeepSpeed's
# live-parameter budget (e.g. 7B) gets by default: a small model then all-gathers in every forward, as a
# large one does, so tests and bench/gpu_check.py see the collectives that big models run
FORCE_PARAM_RELEASE = {
    "zero_optimization": {
        "stage3_param_persistence_threshold": 0,
        "stage3_max_live_parameters": 0,
        "stage3_max_reuse_distance": 0,
        "stage3_prefetch_bucket_size": 0,
    }
}


def deepspeed_config(train, world_size: int) -> dict:
    """goalrm's values, with `train.deepspeed_config` merged in; raises ConfigError on a conflict."""
    ours = _derived(train, world_size)
    user = load_user_json(train.deepspeed_config) if train.deepspeed_config else {}
    conflicts = [f"{k}: set by goalrm from {why}; remove it from the JSON" for k, why in OWNED.items() if k in user]
    conflicts += _conflicts(user, ours)
    if conflicts:
        raise ConfigError(f"train.deepspeed_config {train.deepspeed_config}: conflicts with goalrm's config: " + "; ".join(conflicts))
    merged = _merge(_merge(DEFAULTS, user), ours)
    # torch AdamW needs no compiled op; optimizer offload needs DeepSpeedCPUAdam, which DeepSpeed builds itself
    offload = merged["zero_optimization"].get("offload_optimizer", {}).get("device", "none") != "none"
    merged["optimizer"]["params"]["torch_adam"] = not offload
    if not offload:  # torch's fused AdamW (CPU and CUDA): one kernel for all tensors, as TRL's default optimizer
        merged["optimizer"]["params"]["fused"] = True
    return merged


def _derived(train, world_size: int) -> dict:
    zero = {"stage": train.zero_stage}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch_size * train.grad_accum * world_size,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": {"lr": train.lr, "weight_decay": train.weight_decay}},
    }


def load_user_json(path: str) -> dict:
    return read_mapping(path, "train.deepspeed_config", fmt="json")


def _conflicts(user: dict, ours: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in user.items():
        if k not in ours or v == "auto":  # HF-style "auto": goalrm fills it in
            continue
        if isinstance(v, dict) and isinstance(ours[k], dict):
            out += _conflicts(v, ours[k], f"{prefix}{k}.")
        elif v != ours[k]:
            out.append(f"{prefix}{k}: user {v!r} != goalrm {ours[k]!r}")
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
