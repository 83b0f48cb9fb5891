"""Which pairs each worker trains on at each step, as a pure function of the step.

Every sample's place is fixed by (seed, step, micro-step, rank), so workers see disjoint
data and a run restarted at step k sees exactly what an uninterrupted run would.

With lengths given, each epoch's order is length-grouped: a global batch holds pairs of
similar length, so padding stays small, while batch order stays random.
"""

from collections.abc import Sequence
from functools import lru_cache

import torch

WINDOW_BATCHES = 50  # global batches per sorted window: wide enough to match lengths, narrow enough to stay random


def epoch_permutation(n: int, epoch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def pair_lengths(pairs) -> tuple[int, ...]:
    """A pair's padded width: chosen and rejected share the batch, so the longer of the two."""
    return tuple(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)


def length_grouped(
    order: torch.Tensor, lengths: torch.Tensor, batch: int, generator: torch.Generator, lead: int = 0,
    window_batches: int = WINDOW_BATCHES,
) -> torch.Tensor:
    """Reorder `order` so each run of `batch` items after the first `lead` holds similar lengths.

    Windows of `window_batches` batches are sorted by length and cut into batches; the full
    batches are then shuffled. `lead` items come first and the remainder last, so that batches
    stay aligned with step boundaries that do not start at this order's first item.
    """
    window = batch * window_batches
    parts = [order[i : i + window] for i in range(0, len(order), window)]
    ranked = torch.cat([p[torch.sort(lengths[p], stable=True).indices] for p in parts])
    lead = min(lead, len(ranked))
    full = (len(ranked) - lead) // batch
    body = ranked[lead : lead + full * batch].view(full, batch)
    body = body[torch.randperm(full, generator=generator)].flatten()
    return torch.cat([ranked[:lead], body, ranked[lead + full * batch :]])


@lru_cache(maxsize=4)
def epoch_order(n: int, epoch: int, seed: int, lengths: tuple[int, ...] | None = None, batch: int = 1) -> torch.Tensor:
    """Sample order for one epoch: a permutation of range(n), length-grouped into `batch`-sized runs when lengths are given."""
    perm = epoch_permutation(n, epoch, seed)
    if lengths is None:
        return perm
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_009)
    # epoch e starts e*n samples into the stream: the first batch boundary is `lead` samples in
    lead = (-epoch * n) % batch
    return length_grouped(perm, torch.tensor(lengths), batch, g, lead)


def micro_batch_indices(
    step: int, micro: int, rank: int, world: int, n: int, micro_batch: int, grad_accum: int, seed: int,
    lengths: Sequence[int] | None = None,
) -> list[int]:
    """`lengths` (one per pair, e.g. `pair_lengths(pairs)`) turns on length grouping."""
    if lengths is not None:
        lengths = tuple(lengths)  # no copy when already a tuple; hashable for the per-epoch cache
        if len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} pairs")
    batch = micro_batch * grad_accum * world
    first = ((step * grad_accum + micro) * world + rank) * micro_batch
    out, orders = [], {}
    for g in range(first, first + micro_batch):
        epoch, pos = divmod(g, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, epoch, seed, lengths, batch)
        out.append(int(orders[epoch][pos]))
    return out


def even_shard(items: list, rank: int, world: int) -> tuple[list, int]:
    """Rank's share `items[rank::world]`, padded with copies of `items[0]` to ceil(len / world) items,
    and how many of them are real. Under ZeRO-3 every forward all-gathers the parameters, so ranks that
    ran different numbers of forwards would stop matching each other's collectives; the padded items'
    results are dropped."""
    mine = items[rank::world]
    size = -(-len(items) // world)
    return mine + items[:1] * (size - len(mine)), len(mine)
