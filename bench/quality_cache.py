"""The frozen trunk's activations for every sequence of a task, computed once and kept on disk.

Stored as one safetensors file: `states` [total tokens, H] (fp32, each sequence's real tokens in
order) and `offsets` [n + 1]. The file name hashes the backbone, the cut and every token id, so a
changed tokenizer, data set or `max_length` never reads a stale cache. While it is computed, every
`PART` sequences are written to a part file beside it (atomically), so an interrupted cache resumes
from its last whole part; the parts are deleted once the cache is whole.
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from goalrm.atomic import write_atomic
from goalrm.frozen_trunk import trunk_states

CACHE = Path(os.environ.get("GOALRM_CACHE", Path.home() / ".cache" / "goalrm")) / "quality"
PART = 64  # sequences per part file: an interrupted cache loses at most this much work


def cache_key(model_name: str, cut: int, seqs) -> str:
    h = hashlib.sha256(f"{model_name}\0{cut}".encode())
    for s in seqs:
        h.update(torch.tensor(s.ids, dtype=torch.int32).numpy().tobytes() + b"\xff\xff\xff\xff")
    return h.hexdigest()[:16]


def cache_path(task, model_name: str, cut: int) -> Path:
    return CACHE / f"{task.name}-{model_name}-cut{cut}-{cache_key(model_name, cut, task.seqs)}.safetensors"


def _part_states(task, model, idx, cut, pad_id, batch) -> torch.Tensor:
    """The trunk states of sequences `idx`, concatenated in that order, in host memory (fp32)."""
    device = next(model.parameters()).device
    out = []
    for b in range(0, len(idx), batch):
        rows = [task.seqs[i].ids for i in idx[b : b + batch]]
        ids = torch.full((len(rows), max(map(len, rows))), pad_id)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)], mask[j, : len(r)] = torch.tensor(r), 1
        h = trunk_states(model, ids.to(device), mask.to(device), cut).to("cpu", torch.float32)
        out += [h[j, : len(r)] for j, r in enumerate(rows)]
    return torch.cat(out)


@torch.no_grad()
def trunk_cache(task, model, model_name: str, cut: int, pad_id: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, offsets) for `task.seqs`, from disk when this exact cache (or some of its parts) exists."""
    path = cache_path(task, model_name, cut)
    if path.exists():
        t = load_file(str(path))
        return t["states"], t["offsets"]
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    lengths = torch.tensor([len(s.ids) for s in task.seqs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    states = torch.empty(int(offsets[-1]), model.config.hidden_size)
    order = torch.argsort(lengths, descending=True).tolist()  # similar lengths per batch: little padding
    t0, computed, total = time.perf_counter(), 0, int(offsets[-1])
    for k in range(0, len(order), PART):
        idx, part = order[k : k + PART], parts / f"{k // PART:05d}.safetensors"
        if part.exists():
            h = load_file(str(part))["states"]
        else:
            h = _part_states(task, model, idx, cut, pad_id, batch)
            write_atomic(str(part), lambda tmp: save_file({"states": h}, tmp))
            computed += len(h)
            rate = computed / (time.perf_counter() - t0)
            done = int(lengths[order[: k + PART]].sum())
            print(f"trunk cache {task.name}: {done}/{total} tokens, {rate:.0f} tok/s, "
                  f"{(total - done) / rate / 60:.1f} min left", flush=True)
        at = 0
        for i in idx:
            n = int(lengths[i])
            states[offsets[i] : offsets[i] + n], at = h[at : at + n], at + n
    # a killed run never leaves a half-written cache
    write_atomic(str(path), lambda tmp: save_file({"states": states, "offsets": offsets}, tmp))
    shutil.rmtree(parts)
    return states, offsets
