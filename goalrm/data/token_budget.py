"""Micro-batches sized by tokens (`data.max_tokens_per_micro_batch`), as verl's dynamic batch size.

A step still trains on the same pairs: each rank's `train.micro_batch_size x train.grad_accum` of them.
What the budget changes is how they are cut into forward passes: in length order, each micro-batch as
full as the budget allows, so short pairs share a few big forwards and long ones get small ones. Every
rank runs the same number of forwards (ZeRO-2 and 3 reduce in each backward, ZeRO-3 gathers in each
forward): a rank that needs fewer cuts its biggest micro-batches in two until it has as many.
"""

from goalrm.data.tokenize import TokenizedPair


def slots(pairs: list[TokenizedPair], packed: bool) -> int:
    """Token slots one forward over PAIRS pays for: their tokens packed, or 2 rows of the longest padded."""
    if packed:
        return sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return 2 * len(pairs) * max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)


def by_length(pairs: list[TokenizedPair]) -> list[TokenizedPair]:
    """Shortest first; ties keep their order, so the same pairs always cut the same way."""
    return sorted(pairs, key=lambda p: max(len(p.chosen_ids), len(p.rejected_ids)))


def split(pairs: list[TokenizedPair], budget: int, packed: bool, parts: int | None = None) -> list[list[TokenizedPair]]:
    """PAIRS (in length order, `by_length`) cut into consecutive micro-batches of at most BUDGET slots
    each, as few as fit; then, given PARTS (at least that many, at most one per pair), the micro-batch
    with most pairs is halved until there are PARTS. A pair alone over the budget is an error."""
    out: list[list[TokenizedPair]] = []
    for p in pairs:
        if slots([p], packed) > budget:
            raise ValueError(
                f"a pair of {len(p.chosen_ids)} + {len(p.rejected_ids)} tokens needs {slots([p], packed)} slots, over "
                f"data.max_tokens_per_micro_batch {budget}"
            )
        if out and slots(out[-1] + [p], packed) <= budget:
            out[-1].append(p)
        else:
            out.append([p])
    if parts is not None:
        if not len(out) <= parts <= len(pairs):
            raise ValueError(f"cannot cut {len(pairs)} pairs into {parts} micro-batches of at most {budget} slots")
        while len(out) < parts:
            i = max(range(len(out)), key=lambda k: len(out[k]))  # the first of the largest
            half = (len(out[i]) + 1) // 2
            out[i : i + 1] = [out[i][:half], out[i][half:]]
    return out


def sequence_batches(lengths: list[int], budget: int, packed: bool, max_seqs: int | None = None) -> list[list[int]]:
    """Indices of single sequences (scoring, serving) in length order, cut so that one forward over each
    batch pays at most BUDGET slots (packed: their tokens; padded: rows times the longest) and holds at
    most MAX_SEQS; a sequence over the budget goes alone. Similar lengths share a forward and pad little."""
    out, current, tokens = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        cost = tokens + lengths[i] if packed else (len(current) + 1) * lengths[i]
        if current and (cost > budget or (max_seqs is not None and len(current) == max_seqs)):
            out.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        out.append(current)
    return out
