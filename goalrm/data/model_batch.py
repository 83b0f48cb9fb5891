"""A micro-batch as the model takes it: built on the host, then moved to the step's device in one go."""

from dataclasses import dataclass

import torch

from goalrm.data.batch import collate_pairs
from goalrm.data.pack import Packed, pack
from goalrm.data.tokenize import TokenizedPair


@dataclass
class ModelBatch:
    padded: dict[str, torch.Tensor]  # collate_pairs' tensors: B chosen rows, then B rejected
    packed: Packed | None  # the same sequences packed padding-free (data.packing), in their layout
    pairs: int
    tokens: int  # real tokens
    slots: int  # token slots the forward pays for (padded or packed)

    def to(self, device, non_blocking: bool = False) -> "ModelBatch":
        padded = {k: v.to(device, non_blocking=non_blocking) for k, v in self.padded.items()}
        packed = None if self.packed is None else self.packed.to(device, non_blocking=non_blocking)
        return ModelBatch(padded, packed, self.pairs, self.tokens, self.slots)

    def pin_memory(self) -> "ModelBatch":
        """Page-locked host memory, so that a non-blocking copy to a GPU overlaps compute."""
        padded = {k: v.pin_memory() for k, v in self.padded.items()}
        packed = None if self.packed is None else self.packed.pin_memory()
        return ModelBatch(padded, packed, self.pairs, self.tokens, self.slots)


def collate_for_model(pairs: list[TokenizedPair], pad_id: int, packing: str | None = None) -> ModelBatch:
    """The padded batch and, given a packing layout ("flat" or "rows", goalrm/attention.py's
    `packing_layout`), its packed form; on the host (packing loops over rows)."""
    padded = collate_pairs(pairs, pad_id)
    mask = padded["attention_mask"]
    packed = pack(padded["input_ids"], mask, pad_id, packing) if packing else None
    slots = mask.numel() if packed is None else packed.input_ids.numel()
    return ModelBatch(padded, packed, len(pairs), int(mask.sum()), slots)
