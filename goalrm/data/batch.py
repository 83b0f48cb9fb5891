"""Collate tokenized pairs into one batch: B chosen rows then B rejected rows, for one forward pass."""

import torch

from goalrm.data.tokenize import TokenizedPair
from goalrm.sampling import divergence as divergence_at


def collate_pairs(pairs: list[TokenizedPair], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Spans and first_error are in padded-row coordinates: left padding shifts them by the row's pad count."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    starts = [p.chosen_start for p in pairs] + [p.rejected_start for p in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    shift = torch.zeros(len(seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        off = width - len(s) if padding_side == "left" else 0
        ids[i, off : off + len(s)] = torch.tensor(s)
        mask[i, off : off + len(s)] = 1
        shift[i] = off
    lengths = mask.sum(1)
    b = len(pairs)
    first_error = torch.tensor([-1 if p.rejected_first_error is None else p.rejected_first_error for p in pairs], dtype=torch.long)
    first_error = torch.where(first_error >= 0, first_error + shift[b:], first_error)
    # where each rejected completion stops copying its chosen one: the contrastive term's negatives start there
    divergence = torch.tensor([divergence_at(p.chosen_ids, p.chosen_start, p.rejected_ids, p.rejected_start) for p in pairs], dtype=torch.long)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "completion_start": torch.tensor(starts, dtype=torch.long) + shift,
        "completion_end": shift + lengths,
        "first_error": first_error,
        "rejected_divergence": divergence + shift[b:],
    }
