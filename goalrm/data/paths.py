"""A data spec to the files it names: a file, a folder, a glob, or a URI, listed through pyarrow's filesystems."""

import os
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

COMPRESSION = (".gz", ".bz2", ".zst", ".lz4")
JSON_EXTENSIONS = (".jsonl", ".json")
PARQUET_EXTENSION = ".parquet"


@dataclass(frozen=True)
class DataFiles:
    filesystem: pafs.FileSystem
    paths: tuple[str, ...]  # as the filesystem names them, sorted
    sizes: tuple[int, ...]
    prefix: str = ""  # "s3://" etc., so messages name a file as the user would

    def name(self, path: str) -> str:
        return self.prefix + path

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


def is_parquet(path: str) -> bool:
    return path.endswith(PARQUET_EXTENSION)


def _is_data_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    for ext in COMPRESSION:
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.endswith(JSON_EXTENSIONS) or is_parquet(base)


def _glob_regex(pattern: str) -> re.Pattern:
    """`*` and `?` stay inside one path component; `**/` spans any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _split_uri(spec: str) -> tuple[pafs.FileSystem, str, str]:
    if "://" not in spec:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(spec)), ""
    scheme = spec.split("://", 1)[0]
    # pyarrow cannot parse a URI with glob characters in it: parse the part before them
    cut = min((spec.index(c) for c in "*?[" if c in spec), default=len(spec))
    head = spec[:cut].rsplit("/", 1)[0] if cut < len(spec) else spec
    fs, head_path = pafs.FileSystem.from_uri(head)
    path = head_path + spec[len(head) :]
    return fs, path, "" if scheme == "file" else f"{scheme}://"


def expand(spec: str) -> DataFiles:
    """Every data file the spec names, sorted, so both loaders read rows in the same order."""
    fs, path, prefix = _split_uri(spec)
    if any(c in path for c in "*?["):
        wild = min(path.index(c) for c in "*?[" if c in path)
        base = path[:wild].rsplit("/", 1)[0] or "/"
        pattern = _glob_regex(path)
        infos = [i for i in _listing(fs, base, spec) if pattern.match(i.path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"data file not found: {spec}")
        infos = [info] if info.type == pafs.FileType.File else _listing(fs, path, spec)
    if not infos:
        raise FileNotFoundError(f"no .jsonl, .json or .parquet files (optionally compressed) match {spec}")
    infos.sort(key=lambda i: i.path)
    return DataFiles(fs, tuple(i.path for i in infos), tuple(i.size for i in infos), prefix)


def _listing(fs, base: str, spec: str) -> list:
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise FileNotFoundError(f"data folder not found: {spec}") from None
    hidden = re.compile(r"(^|/)[._]")  # _SUCCESS, .crc, _temporary/ and other writers' droppings
    return [
        i for i in infos
        if i.type == pafs.FileType.File and _is_data_file(i.path) and not hidden.search(i.path[len(base):])
    ]
