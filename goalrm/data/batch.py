"""Collate tokenized pairs into one batch: B chosen rows then B rejected rows, for one forward pass."""

import torch

from goalrm.data.tokenize import TokenizedPair
from goalrm.sampling import divergence as divergence_at


def collate_pairs(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded: spans, first_error and rejected_divergence are the tokens' own positions."""
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    starts = [p.chosen_start for p in pairs] + [p.rejected_start for p in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    first_error = [-1 if p.rejected_first_error is None else p.rejected_first_error for p in pairs]
    # where each rejected completion stops copying its chosen one: the contrastive term's negatives start there
    divergence = [divergence_at(p.chosen_ids, p.chosen_start, p.rejected_ids, p.rejected_start) for p in pairs]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "completion_start": torch.tensor(starts, dtype=torch.long),
        "completion_end": mask.sum(1),
        "first_error": torch.tensor(first_error, dtype=torch.long),
        "rejected_divergence": torch.tensor(divergence, dtype=torch.long),
    }
