"""Writes that a crash never leaves half done: build beside the target, then rename over it."""

import os
import shutil
import uuid


def write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_dir(src: str, dst: str) -> None:
    """Copy SRC to DST; DST is never a half-written folder."""
    tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    shutil.copytree(src, tmp)
    if os.path.exists(dst):
        old = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)
