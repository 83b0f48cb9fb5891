"""Input files and their blocks, and reading a block. No Ray.

A block is (input file, row range): its output, rejects and done marker are named after the
file's place in the sorted input list and the range, so a rerun writes the same names."""

import fnmatch
import io
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from goalrm.atomic import is_temp
from goalrm.data.formats import parse_json_line

SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
SCORED, REJECTS, DONE = "scored", "rejects", "done"


@dataclass(frozen=True)
class Block:
    path: str  # as the filesystem names it
    file_index: int  # place in the sorted input list
    start: int  # first row (Parquet) or physical line (JSONL), 0-based
    stop: int
    offset: int  # byte offset of line `start` in plain JSONL; 0 otherwise

    @property
    def name(self) -> str:
        return f"part-{self.file_index:05d}-{self.start:012d}-{self.stop:012d}"

    def as_dict(self) -> dict:
        return asdict(self)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def input_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """A file, a folder (searched recursively), or a glob; data files only, sorted."""
    fs, path = filesystem(uri)
    if any(c in path for c in "*?["):
        root = path[: min(path.find(c) for c in "*?[" if c in path)].rpartition("/")[0] or "/"
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"--input not found: {uri}")
        if info.type == pafs.FileType.File:
            return fs, [path]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File and not os.path.basename(i.path).startswith((".", "_"))]
    files = sorted(f for f in files if f.endswith(SUFFIXES))
    if not files:
        raise FileNotFoundError(f"--input {uri}: no {', '.join(SUFFIXES)} files")
    return fs, files


def plan_blocks(fs, files: list[str], block_rows: int) -> list[Block]:
    blocks = []
    for index, path in enumerate(files):
        if path.endswith(".parquet"):
            with fs.open_input_file(path) as f:
                n = pq.ParquetFile(f).metadata.num_rows
            blocks += [Block(path, index, s, min(s + block_rows, n), 0) for s in range(0, n, block_rows)]
        elif path.endswith(".gz"):  # no seeking into gzip: one block per file
            with fs.open_input_stream(path) as f:  # pyarrow decompresses by the file's suffix
                n = sum(1 for _ in io.BufferedReader(f, 1 << 20))
            blocks.append(Block(path, index, 0, n, 0))
        else:
            blocks += _line_blocks(fs, path, index, block_rows)
    return blocks


def _line_blocks(fs, path, index, block_rows) -> list[Block]:
    starts, offset, n = [], 0, 0
    with fs.open_input_stream(path) as f:
        for line in io.BufferedReader(f, 1 << 20):
            if n % block_rows == 0:
                starts.append((n, offset))
            offset += len(line)
            n += 1
    return [Block(path, index, s, min(s + block_rows, n), off) for s, off in starts]


def read_block(fs, block: Block) -> tuple[pa.Table | None, list[tuple[int, object]]]:
    """(Parquet table of the block's rows, or None for JSONL; [(line or row number, row or BadRowError)])."""
    if block.path.endswith(".parquet"):
        with fs.open_input_file(block.path) as f:
            table = _parquet_range(pq.ParquetFile(f), block.start, block.stop)
        return table, [(block.start + i + 1, row) for i, row in enumerate(table.to_pylist())]
    rows = []
    gz = block.path.endswith(".gz")
    with (fs.open_input_stream if gz else fs.open_input_file)(block.path) as raw:
        if not gz:
            raw.seek(block.offset)
        for i, line in enumerate(io.BufferedReader(raw, 1 << 20)):
            if i >= block.stop - block.start:
                break
            if line.strip():
                n = block.start + i + 1
                rows.append((n, parse_json_line(line, block.path, n)))
    return None, rows


def _parquet_range(pf: pq.ParquetFile, start: int, stop: int) -> pa.Table:
    groups, first, pos = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if pos < stop and pos + n > start:
            first = pos if first is None else first
            groups.append(g)
        pos += n
    if not groups:
        return pf.schema_arrow.empty_table()
    return pf.read_row_groups(groups).slice(start - first, stop - start)


def output_paths(out_dir: str, block: Block) -> dict[str, str]:
    return {
        SCORED: os.path.join(out_dir, SCORED, block.name + ".parquet"),
        REJECTS: os.path.join(out_dir, REJECTS, block.name + ".jsonl"),
        DONE: os.path.join(out_dir, DONE, block.name + ".json"),
    }


def pending_blocks(out_dir: str, blocks: list[Block]) -> list[Block]:
    """The blocks a (re)run still has to score: those without a done marker. A killed job's half-written
    temp files go first; a block written but not marked done is scored again, and its files replaced."""
    _remove_stale_tmp(out_dir)
    return [b for b in blocks if not os.path.exists(output_paths(out_dir, b)[DONE])]


def _remove_stale_tmp(out_dir: str) -> None:
    """Temp files a killed job left behind; one job per output folder at a time."""
    for sub in (SCORED, REJECTS, DONE):
        folder = os.path.join(out_dir, sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if is_temp(name):
                os.remove(os.path.join(folder, name))
