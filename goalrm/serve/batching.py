"""Token budgets for dynamic batching, no Ray: a request cut into chunks that fit a batch, the
batch's size in tokens (Ray Serve's `batch_size_fn`), and length-sorted micro-batches."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """Consecutive sequences of one request, (ids, completion start) each; one entry in Ray's batch queue."""

    seqs: list
    tokens: int
    q_values: bool = False  # its request wants Q-values; a batch without any such chunk skips them


def chunk_tokens(chunks: list[Chunk]) -> int:
    """`batch_size_fn`: Ray Serve calls it on the growing batch at every arrival, so it stays a plain sum."""
    return sum(c.tokens for c in chunks)


def chunks(seqs: list, budget: int, q_values: bool = False) -> list[Chunk]:
    """SEQS in order, cut so that no chunk holds more than BUDGET tokens (each sequence fits alone)."""
    out, current, tokens = [], [], 0
    for s in seqs:
        n = len(s[0])
        if current and tokens + n > budget:
            out.append(Chunk(current, tokens, q_values))
            current, tokens = [], 0
        current.append(s)
        tokens += n
    if current:
        out.append(Chunk(current, tokens, q_values))
    return out


def micro_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, cut so that a micro-batch padded to its longest row has at most
    BUDGET token slots: similar lengths share a forward pass and pad little."""
    out, current = [], []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and (len(current) + 1) * lengths[i] > budget:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out
