"""Rewards and token Q-values for tokenized sequences, in length-sorted batches. No Ray."""

import numpy as np
import torch

from goalrm.export import load_goal, load_reward_model, representation_dim
from goalrm.qvalues import q_values

def load_scorer(model_dir: str, goal_file: str | None = None, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer, goal) ready to score: eval mode, on `device`, its weights read in `dtype`."""
    model, tokenizer, model_goal, _ = load_reward_model(model_dir, device=device, dtype=dtype)
    goal = load_goal(goal_file, model_goal, representation_dim(model))
    return model, tokenizer, goal.to(device)


@torch.inference_mode()
def score_sequences(model, goal, seqs: list[tuple[list[int], int]], pad_id: int, batch_size: int, device="cpu"):
    """`seqs` are (ids, completion start). Returns rewards [N] float32 and one float32 array of
    Q-values per sequence, over its completion (trailing special tokens included, as in training);
    with `goal` None, rewards only (each Q-value entry None).

    Sequences run shortest first, so each batch pads to a length close to its own."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    rewards = np.zeros(len(seqs), dtype=np.float32)
    qs = [None] * len(seqs)
    for b in range(0, len(order), batch_size):
        chunk = order[b : b + batch_size]
        width = max(len(seqs[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(seqs[i][0])
            ids[row, :n] = torch.tensor(seqs[i][0])
            mask[row, :n] = 1
        out = model(ids.to(device), mask.to(device), with_reps=goal is not None)
        q = q_values(out.reps, goal).cpu().numpy() if goal is not None else None
        r = out.rewards.float().cpu().numpy()
        for row, i in enumerate(chunk):
            rewards[i] = r[row]
            qs[i] = q[row, seqs[i][1] : len(seqs[i][0])].astype(np.float32) if q is not None else None
    return rewards, qs
