"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

import torch

from goalrm.sampling import sample_states


def position_hidden(rows: int, t: int, h: int = 2) -> torch.Tensor:
    """hidden[r, t] = [r, t, 0...]: a gathered state names the row and position it came from."""
    r = torch.arange(rows, dtype=torch.float64)[:, None].expand(rows, t)
    p = torch.arange(t, dtype=torch.float64)[None].expand(rows, t)
    return torch.stack([r, p] + [p * 0] * (h - 2), -1)


def drawn_positions(t: int, start, end, cfg, seed: int, divergence=None) -> dict[str, torch.Tensor]:
    """The positions sample_states draws for these spans and seed (single goals), read off states that
    name their own row and position. The draw depends on the spans and the generator, not on the states."""
    rows = len(start)
    b = rows // 2
    divergence = start[b:] if divergence is None else divergence  # no shared prefix: the whole rejected completion
    s = sample_states(position_hidden(rows, t), start, end, cfg, torch.Generator().manual_seed(seed), divergence)
    out = {}
    for name, row0 in (("sources", 0), ("positives", 0), ("neg_sources", 0), ("negatives", b)):
        states = getattr(s, name)
        assert torch.equal(states[..., 0], (row0 + torch.arange(b, dtype=states.dtype))[:, None].expand_as(states[..., 0]))
        out[name] = states[..., 1].long()
    return out
