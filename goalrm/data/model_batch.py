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


@dataclass
class StepBatch:
    """One optimizer step's pairs on this rank, cut into micro-batches and collated on the host."""

    pairs: list[TokenizedPair]  # in the order they were cut
    micro: list[ModelBatch]

    def weights(self) -> list[float]:
        """Each micro-batch's share of the step's pairs: its mean loss times this is its part of the step's."""
        return [mb.pairs / len(self.pairs) for mb in self.micro]

    def to(self, device, non_blocking: bool = False) -> "StepBatch":
        return StepBatch(self.pairs, [mb.to(device, non_blocking) for mb in self.micro])

    def pin_memory(self) -> "StepBatch":
        return StepBatch(self.pairs, [mb.pin_memory() for mb in self.micro])


def collate_step(micro: list[list[TokenizedPair]], pad_id: int, packing: str | None = None) -> StepBatch:
    return StepBatch([p for pairs in micro for p in pairs], [collate_for_model(pairs, pad_id, packing) for pairs in micro])
