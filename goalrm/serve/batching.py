"""Token budgets for dynamic batching, no Ray: a request cut into chunks that fit a batch, and the
batch's size in tokens (Ray Serve's `batch_size_fn`). Its length-sorted micro-batches are
goalrm/data/token_budget.py's `sequence_batches`."""

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
