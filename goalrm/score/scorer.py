"""Rewards and token Q-values for tokenized sequences, in length-sorted forwards of a token budget,
packed padding-free where the backbone allows. No Ray."""

import numpy as np
import torch

from goalrm import attention
from goalrm.data.pack import PACKING_MODEL_TYPES, pack
from goalrm.data.token_budget import sequence_batches
from goalrm.export import load_goal, load_reward_model, representation_dim
from goalrm.qvalues import q_values

PRECISION = {"float32": "fp32", "bfloat16": "bf16"}


def scoring_attention(name: str, device: str, dtype: str) -> str:
    """The attention a scorer runs: `auto` is the training rule's packed choice (goalrm/attention.py);
    forward only, so FlexAttention is valid on the CPU too."""
    return attention.resolve(name, torch.device(device).type, packing=True, precision=PRECISION[dtype], training=False)


def load_scorer(model_dir: str, goal_file: str | None = None, device: str = "cpu", dtype: str = "float32", attn: str = "auto"):
    """(model, tokenizer, goal, packing layout or None) ready to score: eval mode, on `device`, its weights
    read in `dtype`. Backbones that cannot take packed rows (goalrm/data/pack.py) score padded batches."""
    attn = scoring_attention(attn, device, dtype)
    attention.require(attn)
    model, tokenizer, model_goal, _ = load_reward_model(model_dir, device=device, dtype=dtype, attn_implementation=attn)
    goal = load_goal(goal_file, model_goal, representation_dim(model))
    return model, tokenizer, goal.to(device), packing_layout(model, attn)


def packing_layout(model, attn: str) -> str | None:
    """How `score_sequences` lays out a forward for a model loaded with the resolved ATTN: packed in
    goalrm/data/pack.py's layout, or None (padded) for a backbone that cannot take packed rows."""
    return attention.packing_layout(attn) if model.config.model_type in PACKING_MODEL_TYPES else None


@torch.inference_mode()
def score_sequences(
    model, goal, seqs: list[tuple[list[int], int]], pad_id: int, max_tokens: int, device="cpu", packing: str | None = None,
    max_seqs: int | None = None,
):
    """`seqs` are (ids, completion start). Returns rewards [N] float32 and one float32 array of
    Q-values per sequence, over its completion (trailing special tokens included, as in training);
    with `goal` None, rewards only (each Q-value entry None).

    Sequences run shortest first, in forwards of at most MAX_TOKENS token slots (packed, in PACKING's
    layout: their tokens; padded: rows times the longest) and MAX_SEQS sequences."""
    rewards = np.zeros(len(seqs), dtype=np.float32)
    qs = [None] * len(seqs)
    for chunk in sequence_batches([len(ids) for ids, _ in seqs], max_tokens, packing is not None, max_seqs):
        width = max(len(seqs[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(seqs[i][0])
            ids[row, :n] = torch.as_tensor(seqs[i][0], dtype=torch.long)
            mask[row, :n] = 1
        packed = None if packing is None else pack(ids, mask, pad_id, packing).to(device)
        out = model(ids.to(device), mask.to(device), with_reps=goal is not None, packed=packed)
        q = q_values(out.reps, goal).cpu().numpy() if goal is not None else None
        r = out.rewards.float().cpu().numpy()
        for row, i in enumerate(chunk):
            rewards[i] = r[row]
            qs[i] = q[row, seqs[i][1] : len(seqs[i][0])].astype(np.float32) if q is not None else None
    return rewards, qs
