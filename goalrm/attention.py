"""Which attention the backbone runs (`model.attn_implementation`), and goalrm's own varlen SDPA.

Packed micro-batches (`data.packing`) hold several sequences in a row. With a varlen implementation the
row is all of a micro-batch's sequences end to end, and attention stays inside each sequence without
computing the blocks across them:
- `sdpa_varlen` (goalrm's, below): torch's SDPA once per sequence of the row. Pure torch, no compile,
  forward and backward on every device: the CPU's choice, where FlexAttention has no backward (torch
  2.13: "FlexAttention does not support backward on CPU") and compiles for 9-12 s per new shape.
- `flex_attention`: transformers builds a document block mask from the position ids; fully masked
  blocks are skipped. Compiled by torch on first use.
- `flash_attention_2`: FlashAttention-2's varlen kernel on the sequences' boundaries (the
  `flash-attn` package, a CUDA GPU, bf16).
With `sdpa` or `eager` a packed row is as long as the batch's longest sequence and its sequences are
masked from each other by a dense mask, so attention pays for the whole row.
"""

import importlib.util

# torch is imported where it is used, so that the CLI's parser can list these names without it
IMPLEMENTATIONS = ("auto", "sdpa", "sdpa_varlen", "flex_attention", "flash_attention_2", "eager")
VARLEN = ("sdpa_varlen", "flex_attention", "flash_attention_2")  # a packed micro-batch is one flat row
GOALRM_VARLEN = "sdpa_varlen"


def resolve(name: str, device_type: str, packing: bool, precision: str = "fp32", training: bool = True) -> str:
    """`auto`: without packing transformers' SDPA; packed, the fastest valid varlen kernel for the device:
    FlashAttention-2 on a GPU that has it (bf16 only), else FlexAttention there, and goalrm's varlen SDPA
    on the CPU. Any other name is returned as given, once `check` passes."""
    if name != "auto":
        check(name, device_type, precision, training)
        return name
    if not packing:
        return "sdpa"
    if device_type == "cuda":
        return "flash_attention_2" if flash_attn_available() and precision == "bf16" else "flex_attention"
    return GOALRM_VARLEN


def check(name: str, device_type: str, precision: str = "fp32", training: bool = True) -> None:
    """Raise ValueError, naming the cause, when NAME cannot run on DEVICE_TYPE in PRECISION. Whether the
    flash-attn package is installed is `require`'s question, asked where the model runs."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {name!r}")
    if name == "flash_attention_2":
        if device_type != "cuda":
            raise ValueError("model.attn_implementation: flash_attention_2 needs a CUDA GPU (train.use_gpu: true)")
        if precision != "bf16":
            raise ValueError("model.attn_implementation: flash_attention_2 runs in bf16 only; set train.precision: bf16")
    if name == "flex_attention" and device_type == "cpu" and training:
        raise ValueError(
            "model.attn_implementation: flex_attention has no backward pass on the CPU (torch); use sdpa_varlen or auto"
        )


def require(implementation: str) -> None:
    """In the process that builds the model: what the implementation needs is installed."""
    if implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("model.attn_implementation: flash_attention_2 needs the flash-attn package here (pip install flash-attn); or use auto")


def packing_layout(implementation: str) -> str:
    """How a packed micro-batch is laid out for a resolved implementation (goalrm/data/pack.py)."""
    return "flat" if implementation in VARLEN else "rows"


def flash_attn_available() -> bool:
    import torch

    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def varlen_kwargs(cu_seqlens, max_len: int) -> dict:
    """The forward's keyword arguments for a flat packed row: transformers hands them to the attention
    function of every layer (FlashAttention-2 and goalrm's varlen SDPA read them)."""
    return {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": max_len, "max_length_k": max_len}


def sdpa_varlen_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Causal SDPA per packed sequence: of a flat row given its boundaries (`cu_seq_lens_q`), or of each row
    whose position ids restart; anything else is transformers' own SDPA. query [B, H, T, D], key and
    value [B, H_kv, T, D]; returns [B, T, H, D]."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    bounds = _boundaries(kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"), attention_mask, query.shape[0])
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    dropout = dropout if module.training else 0.0
    rows = [
        torch.cat(
            [
                F.scaled_dot_product_attention(
                    query[r : r + 1, :, a:b], key[r : r + 1, :, a:b], value[r : r + 1, :, a:b], dropout_p=dropout, is_causal=True, scale=scaling
                )
                for a, b in zip(row[:-1], row[1:])
            ],
            dim=2,
        )
        for r, row in enumerate(bounds)
    ]
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _boundaries(cu_seqlens, position_ids, attention_mask, batch: int) -> list[list[int]] | None:
    """Each row's sequence boundaries [0, ..., T], or None when the batch is not packed. Read on the host
    once per layer: on a GPU a sync, which FlashAttention-2 avoids."""
    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"cu_seq_lens_q describes one flat packed row, got a batch of {batch}")
        return [cu_seqlens.tolist()]
    if position_ids is None or attention_mask is not None:
        return None
    import torch

    width = position_ids.shape[-1]
    starts = position_ids.expand(batch, width) == 0
    if not starts[:, 1:].any():
        return None  # one sequence a row: plain causal attention
    return [[*torch.nonzero(row).flatten().tolist(), width] for row in starts]


def _sdpa_varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for a packed row (the attention function has the boundaries); SDPA's own for padded batches."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    """Make `sdpa_varlen` a name transformers' models take (`attn_implementation=`); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(GOALRM_VARLEN, sdpa_varlen_forward)
    AttentionMaskInterface.register(GOALRM_VARLEN, _sdpa_varlen_mask)
