"""`goalrm export`: a training checkpoint's ZeRO shards to the HF export, in one process on CPU.

Needs no GPU, no Ray cluster and no DeepSpeed engine, only the checkpoint folder: it carries the
run's config, the HF model config and the tokenizer. The exported goal state and reward statistics
are computed, as the run computes them, from the training data named in the config (or `train_data`),
so that data must be readable where this runs.
"""

import os
import tempfile

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from goalrm.atomic import replace_dir
from goalrm.config import ConfigError, load_config
from goalrm.data.load import load_goal_pairs
from goalrm.evaluate import goal_and_reward_stats, goal_and_reward_summary
from goalrm.export import save_reward_model
from goalrm.lora import merge_lora
from goalrm.model import RewardModel
from goalrm.train.checkpoint import CONFIG_FILE, ENGINE_TAG, HF_DIR, complete_checkpoint


def export_checkpoint(path: str, output_dir: str, train_data: str | None = None) -> str:
    """Export the checkpoint at PATH (or a run folder's newest complete one) to OUTPUT_DIR; returns the checkpoint used."""
    ckpt = complete_checkpoint(path)
    cfg = load_config(os.path.join(ckpt, CONFIG_FILE), {"data": {"train": train_data}} if train_data else None)
    if cfg.train.zero_stage == 0:
        raise ConfigError(f"{ckpt}: a train.zero_stage 0 run saves no ZeRO shards; its final checkpoint holds model/")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed's import picks one
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(ckpt, tag=ENGINE_TAG)
    hf = os.path.join(ckpt, HF_DIR)
    trust = cfg.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(hf, trust_remote_code=trust)
    seq_cls = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(hf, trust_remote_code=trust), trust_remote_code=trust)
    model = RewardModel(seq_cls, cfg.model.heads())
    if cfg.model.lora is not None:  # a plain model with the adapters merged in, as the run's own export
        state = merge_lora(state, cfg.model.lora)
    model.load_state_dict(state)
    model.eval()

    pairs = load_goal_pairs(cfg.data.train, cfg.data.goal_state_pairs, cfg.data, tokenizer)
    goal, mean, std = goal_and_reward_summary(*goal_and_reward_stats(model, pairs, tokenizer.pad_token_id, cfg.train.eval_batch_size))
    with tempfile.TemporaryDirectory() as tmp:
        save_reward_model(model, tokenizer, tmp, goal, mean, std)
        replace_dir(tmp, output_dir)
    return ckpt
