"""Which pairs each worker trains on at each step, as a pure function of the step.

Every sample's place is fixed by (seed, step, micro-step, rank), so workers see disjoint
data and a run restarted at step k sees exactly what an uninterrupted run would.
"""

import torch


def epoch_permutation(n: int, epoch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def micro_batch_indices(
    step: int, micro: int, rank: int, world: int, n: int, micro_batch: int, grad_accum: int, seed: int
) -> list[int]:
    first = ((step * grad_accum + micro) * world + rank) * micro_batch
    out, perms = [], {}
    for g in range(first, first + micro_batch):
        epoch, pos = divmod(g, n)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(n, epoch, seed)
        out.append(int(perms[epoch][pos]))
    return out
