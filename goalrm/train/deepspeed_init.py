"""DeepSpeed in a training process: its accelerator chosen before the import, its process group on top
of the one already set up (Ray Train's, or a benchmark's own)."""

import os

from goalrm.console import quiet_stdout


def import_deepspeed(use_gpu: bool):
    """DeepSpeed for this process's device. On the CPU its shared-memory all-reduce op stays off, so
    collectives run over gloo: the op is compiled on first use (38 s on the 2-core machine) and made the
    demo's ZeRO-2 steps slower, not faster (150-176 pairs/s against gloo's 186-193; bench/RESULTS.md)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")  # read once, on DeepSpeed's import
    import deepspeed
    import deepspeed.ops

    if not use_gpu:
        # DeepSpeed keeps its probe of each op's compatibility in this dict, and edits to it persist
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def init_distributed(use_gpu: bool):
    """DeepSpeed, its communication backend initialised over the existing torch process group."""
    deepspeed = import_deepspeed(use_gpu)
    with quiet_stdout():  # DeepSpeed prints its op builds and backend choice
        deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
    return deepspeed
