"""DeepSpeed on the CPU runs its collectives over gloo: its shared-memory op is neither compiled nor used."""

import subprocess
import sys

CHECK = """
import socket
import torch.distributed as dist
from goalrm.train.deepspeed_init import init_distributed
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
deepspeed = init_distributed(use_gpu=False)
from deepspeed.accelerator import get_accelerator
import deepspeed.comm.comm as ds_comm
print(get_accelerator().device_name(), type(ds_comm.cdb).__name__, ds_comm.cdb.shm_comm_op)
"""


def test_cpu_collectives_skip_the_shared_memory_op(tmp_path):
    # a fresh process: DeepSpeed picks its accelerator once, on import; an empty op cache, so a build would show
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ops"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["cpu", "TorchBackend", "None"], done.stdout
    assert not (tmp_path / "ops").exists()  # nothing was compiled
