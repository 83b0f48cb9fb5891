"""Padding-free micro-batches: pack a padded batch's sequences, and unpack the hidden states.

Two layouts (goalrm/attention.py picks one for the attention implementation):
- "flat": every sequence end to end in one row, with their boundaries (`cu_seqlens`), for a varlen
  attention that computes nothing across sequences; no slot is padding.
- "rows": first-fit-decreasing into rows as long as the batch's longest sequence, for SDPA or eager
  attention, which mask the sequences of a row from each other densely: a packed batch never has more
  slots than the padded one and attention stays O(T^2) per row.
Either way position_ids restart at 0 for each sequence: with attention_mask=None (and no KV cache)
transformers reads each restart as a sequence boundary (masking_utils.find_packed_sequence_indices),
so attention never crosses one.
"""

from dataclasses import dataclass, fields

import torch


LAYOUTS = ("flat", "rows")


@dataclass
class Packed:
    input_ids: torch.Tensor  # [R, C]: flat, one row of every real token; rows, R <= N rows of C = the longest sequence
    position_ids: torch.Tensor  # [R, C]; a row's free tail (rows) is one dummy sequence of its own
    index: torch.Tensor  # [N, T] flat slot (row * C + column) of each padded position; 0 at padding
    mask: torch.Tensor  # [N, T] bool, the padded batch's attention mask
    cu_seqlens: torch.Tensor | None = None  # flat: [N + 1] int32 boundaries of the sequences in the row
    max_len: int = 0  # flat: the longest sequence

    def to(self, device, non_blocking: bool = False) -> "Packed":
        return Packed(**{f.name: _move(getattr(self, f.name), device, non_blocking) for f in fields(self)})

    def pin_memory(self) -> "Packed":
        return Packed(**{f.name: _move(getattr(self, f.name), None, False) for f in fields(self)})


def _move(value, device, non_blocking):
    """A tensor field to DEVICE (None: into pinned host memory); other fields as they are."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.pin_memory() if device is None else value.to(device, non_blocking=non_blocking)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sequence indices per row, longest first, each into the first row with room."""
    rows, free = [], []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int, layout: str = "rows") -> Packed:
    """Pack the real tokens of a padded batch (left or right padding) in LAYOUT."""
    if layout not in LAYOUTS:
        raise ValueError(f"packing layout must be one of {LAYOUTS}, got {layout!r}")
    mask = attention_mask.bool()
    lengths = mask.sum(1).tolist()
    if layout == "flat":
        return _pack_flat(input_ids, mask, lengths)
    capacity = max(lengths)
    rows = first_fit_decreasing(lengths, capacity)
    ids = torch.full((len(rows), capacity), pad_id, dtype=input_ids.dtype)
    positions = torch.zeros((len(rows), capacity), dtype=torch.long)
    index = torch.zeros(input_ids.shape, dtype=torch.long)
    for r, seqs in enumerate(rows):
        col = 0
        for i in seqs:
            n = lengths[i]
            ids[r, col : col + n] = input_ids[i][mask[i]]
            positions[r, col : col + n] = torch.arange(n)
            index[i][mask[i]] = r * capacity + col + torch.arange(n)
            col += n
        positions[r, col:] = torch.arange(capacity - col)
    return Packed(input_ids=ids, position_ids=positions, index=index, mask=mask)


def _pack_flat(input_ids: torch.Tensor, mask: torch.Tensor, lengths: list[int]) -> Packed:
    """Every sequence in batch order, end to end in one row."""
    cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    index = torch.zeros(input_ids.shape, dtype=torch.long)
    index[mask] = torch.arange(int(cu[-1]))  # row-major order of the real tokens is the sequences' order
    positions = torch.cat([torch.arange(n) for n in lengths])
    return Packed(
        input_ids=input_ids[mask][None], position_ids=positions[None], index=index, mask=mask, cu_seqlens=cu, max_len=max(lengths)
    )


def unpack(hidden: torch.Tensor, packed: Packed) -> torch.Tensor:
    """[R, C, H] packed hidden states to the padded layout [N, T, H]; zeros at padding."""
    gathered = hidden.reshape(-1, hidden.shape[-1])[packed.index]
    return gathered * packed.mask.unsqueeze(-1).to(gathered.dtype)


# Backbones whose attention mask comes from transformers' create_causal_mask, which reads the packed
# sequence boundaries from position_ids (transformers 5.24). Others (e.g. Mistral, Phi-3) would
# silently attend across the sequences of a packed row.
PACKING_MODEL_TYPES = ("gemma", "gpt2", "gpt_neox", "llama", "qwen2")


def check_packing_support(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Raise ValueError, before any training, when `data.packing` would be wrong for this backbone."""
    from transformers import AutoConfig

    from goalrm.backbones import resolve
    from goalrm.tiny import TINY_NAME, tiny_config

    if name_or_path == TINY_NAME:
        config = tiny_config()
    else:
        config = AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if config.model_type not in PACKING_MODEL_TYPES:
        raise ValueError(
            f"data.packing: {name_or_path} is a {config.model_type!r} model, whose attention does not take sequence "
            f"boundaries from position_ids; packing supports {', '.join(PACKING_MODEL_TYPES)}. Set data.packing: false"
        )
