"""Writes that a crash never leaves half done: build beside the target under a hidden temporary name,
then rename over it. Every file and folder goalrm writes for a user goes through here."""

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable

TMP_MARK = ".tmp-"


def temp_path(path: str) -> str:
    """A hidden name beside PATH: readers of the folder (pyarrow, pandas, globs) skip it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def is_temp(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp)` fills a temporary file or folder, which then replaces PATH: PATH is whole or absent
    (a folder PATH is replaced whole, never merged)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        if os.path.isfile(tmp):
            with open(tmp, "rb") as f:  # on disk before the rename makes it visible
                os.fsync(f.fileno())
        if os.path.isdir(path) and os.path.isdir(tmp):
            old = temp_path(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, write)


def write_bytes(path: str, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomic(path, write)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def write_jsonl(path: str, rows: Iterable[dict]) -> int:
    """One JSON object a line; returns how many."""
    n = 0

    def write(tmp):
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
                n += 1

    write_atomic(path, write)
    return n


def write_parquet(path: str, table) -> None:
    import pyarrow.parquet as pq

    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def replace_dir(src: str, dst: str) -> None:
    """Copy the folder SRC to DST; DST is never a half-written folder."""
    write_atomic(dst, lambda tmp: shutil.copytree(src, tmp))
