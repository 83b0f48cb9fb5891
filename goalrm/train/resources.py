"""Whether the Ray resources a run asks for can exist where it runs; checked before Ray starts.

What one worker asks for is `TrainConfig.worker_resources()`: the one place `goalrm train` and
`goalrm tune` read it from.
"""

import os

from goalrm.config import ConfigError

SCHEDULING_ONLY = {"memory", "object_store_memory"}  # Ray's own accounting, on every node


def local_capacity() -> dict[str, float]:
    """What the local Ray that goalrm starts offers: the running one's, else this machine's CPUs and GPUs."""
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_local_capacity(num_workers: int, per_worker: dict, extra: dict | None = None, what: str = "the run") -> None:
    """Raise ConfigError, naming the real cause, when NUM_WORKERS workers of PER_WORKER (plus EXTRA, e.g.
    a sweep trial's own process) can never be placed on the local Ray."""
    have = local_capacity()
    extra = extra or {}
    for name in sorted({*per_worker, *extra} - SCHEDULING_ONLY):
        need = num_workers * per_worker.get(name, 0) + extra.get(name, 0)
        if need <= have.get(name, 0) + 1e-9:
            continue
        if name == "GPU" and not have.get("GPU"):
            raise ConfigError(
                f"train.use_gpu: true, but this machine has no GPU (torch.cuda.device_count() is 0) and no Ray cluster "
                f"was given; set train.use_gpu: false, or join a cluster with GPUs (--address)"
            )
        if name not in ("CPU", "GPU"):
            raise ConfigError(
                f"train.resources_per_worker.{name}: the local Ray has no resource {name!r}; join a cluster that has it (--address)"
            )
        raise ConfigError(
            f"{what} needs {need:g} {name} ({num_workers} workers x {per_worker.get(name, 0):g}"
            + (f" + {extra[name]:g} for the trial's own process" if extra.get(name) else "")
            + f") but the local Ray has {have.get(name, 0):g}; lower train.num_workers or train.resources_per_worker.{name}"
        )
