"""Test-only fault injection: one worker stops at a chosen point, so that a test can kill it there.

Armed by GOALRM_FAULT in the driver's environment, a JSON object
  {"at": "step" | "upload", "step": K, "rank": R, "pid_file": PATH}
"step": rank R stops after step K (and its report). "upload": rank R stops halfway through
uploading its part of the checkpoint saved at step K, leaving a partial checkpoint in storage.
The worker writes JSON {"pid": ..., "node_id": ...} to PATH (its process and its Ray node, so a test
can kill either), then sleeps until killed. It fires once per PATH, so a restarted worker group runs
on past the same point.
"""

import json
import os
import time
from pathlib import Path

import ray.train

from goalrm.atomic import write_text

ENV = "GOALRM_FAULT"


def from_env() -> dict | None:
    text = os.environ.get(ENV)
    return json.loads(text) if text else None


def _armed(fault: dict | None, at: str, step: int, rank: int) -> bool:
    return (
        fault is not None
        and (fault["at"], fault["step"], fault["rank"]) == (at, step, rank)
        and not os.path.exists(fault["pid_file"])
    )


def _stop(fault: dict) -> None:
    record = {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
    write_text(fault["pid_file"], json.dumps(record))
    while True:
        time.sleep(60)


def maybe_stop(fault: dict | None, step: int, rank: int) -> None:
    if _armed(fault, "step", step, rank):
        _stop(fault)


def upload_fn(fault: dict | None, step: int, rank: int):
    """For `ray.train.report(checkpoint_upload_fn=...)`: None (Ray's own upload) unless armed here."""
    if not _armed(fault, "upload", step, rank):
        return None

    def partial_upload(checkpoint, dir_name):
        storage = ray.train.get_context().get_storage()
        fs, dest = storage.storage_filesystem, storage.build_checkpoint_path_from_name(dir_name)
        files = sorted(p for p in Path(checkpoint.path).rglob("*") if p.is_file())
        for src in files[: len(files) // 2]:
            target = f"{dest}/{src.relative_to(checkpoint.path).as_posix()}"
            fs.create_dir(target.rsplit("/", 1)[0])
            with fs.open_output_stream(target) as out:
                out.write(src.read_bytes())
        _stop(fault)

    return partial_upload
