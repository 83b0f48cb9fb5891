"""The frozen trunk's activations for every sequence of a task, computed once and kept on disk.

Stored as one safetensors file: `states` [total tokens, H] (fp32, each sequence's real tokens in
order) and `offsets` [n + 1]. The file name hashes the backbone, the cut and every token id, so a
changed tokenizer, data set or `max_length` never reads a stale cache.
"""

import hashlib
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from goalrm.atomic import write_atomic
from goalrm.frozen_trunk import trunk_states

CACHE = Path(os.environ.get("GOALRM_CACHE", Path.home() / ".cache" / "goalrm")) / "quality"


def cache_key(model_name: str, cut: int, seqs) -> str:
    h = hashlib.sha256(f"{model_name}\0{cut}".encode())
    for s in seqs:
        h.update(torch.tensor(s.ids, dtype=torch.int32).numpy().tobytes() + b"\xff\xff\xff\xff")
    return h.hexdigest()[:16]


@torch.no_grad()
def trunk_cache(task, model, model_name: str, cut: int, pad_id: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, offsets) for `task.seqs`, from disk when this exact cache exists."""
    path = CACHE / f"{task.name}-{model_name}-cut{cut}-{cache_key(model_name, cut, task.seqs)}.safetensors"
    if path.exists():
        t = load_file(str(path))
        return t["states"], t["offsets"]
    lengths = torch.tensor([len(s.ids) for s in task.seqs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    states = torch.empty(int(offsets[-1]), model.config.hidden_size)
    order = torch.argsort(lengths, descending=True).tolist()  # similar lengths per batch: little padding
    t0, done = time.perf_counter(), 0
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        width = int(lengths[idx].max())
        ids = torch.full((len(idx), width), pad_id)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            ids[j, : lengths[i]], mask[j, : lengths[i]] = torch.tensor(task.seqs[i].ids), 1
        h = trunk_states(model, ids, mask, cut)
        for j, i in enumerate(idx):
            states[offsets[i] : offsets[i + 1]] = h[j, : lengths[i]]
        done += int(lengths[idx].sum())
        if (b // batch) % 25 == 0:
            rate = done / (time.perf_counter() - t0)
            print(f"trunk cache {task.name}: {done}/{int(offsets[-1])} tokens, {rate:.0f} tok/s, "
                  f"{(int(offsets[-1]) - done) / rate / 60:.1f} min left", flush=True)
    # a killed run never leaves a half-written cache
    write_atomic(str(path), lambda tmp: save_file({"states": states, "offsets": offsets}, tmp))
    return states, offsets
