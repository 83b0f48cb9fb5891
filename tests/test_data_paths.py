"""Data specs: a file, a folder, a glob or a URI, expanded once and read the same way by both loaders."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goalrm.data import BadRowError, read_pairs
from goalrm.data.paths import expand

ROW = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}


def _tree(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "_temporary").mkdir()
    pq.write_table(pa.Table.from_pylist([{**ROW, "chosen": "a"}]), tmp_path / "b.parquet")
    (tmp_path / "a.jsonl").write_text(json.dumps({**ROW, "chosen": "b"}) + "\n")
    (tmp_path / "sub" / "c.jsonl").write_text(json.dumps({**ROW, "chosen": "c"}) + "\n")
    for junk in ("_SUCCESS", ".a.jsonl.crc", "notes.txt", "_temporary/d.jsonl"):
        (tmp_path / junk).write_text("not data\n")
    return tmp_path


def test_folder_takes_data_files_recursively_sorted_and_skips_writer_droppings(tmp_path):
    files = expand(str(_tree(tmp_path)))
    assert files.paths == (f"{tmp_path}/a.jsonl", f"{tmp_path}/b.parquet", f"{tmp_path}/sub/c.jsonl")
    assert files.total_bytes == sum((tmp_path / p).stat().st_size for p in ("a.jsonl", "b.parquet", "sub/c.jsonl"))
    assert [p.chosen for p in read_pairs(tmp_path)] == ["b", "a", "c"]


def test_globs_stay_in_one_folder_unless_double_star(tmp_path):
    _tree(tmp_path)
    assert expand(f"{tmp_path}/*.jsonl").paths == (f"{tmp_path}/a.jsonl",)
    assert expand(f"{tmp_path}/**/*.jsonl").paths == (f"{tmp_path}/a.jsonl", f"{tmp_path}/sub/c.jsonl")
    assert expand(f"{tmp_path}/[ab].*").paths == (f"{tmp_path}/a.jsonl", f"{tmp_path}/b.parquet")
    assert [p.chosen for p in read_pairs(f"{tmp_path}/s?b/*")] == ["c"]


def test_file_uri_and_a_single_file_of_any_name(tmp_path):
    _tree(tmp_path)
    assert expand(f"file://{tmp_path}/sub").paths == (f"{tmp_path}/sub/c.jsonl",)
    (tmp_path / "pairs.txt").write_text(json.dumps(ROW) + "\n")
    assert read_pairs(tmp_path / "pairs.txt")[0].chosen == "4"  # a file named directly is JSONL unless .parquet


def test_nothing_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        expand(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl, \.json or \.parquet files"):
        expand(f"{tmp_path}/*.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        expand(str(tmp_path / "empty"))


def test_bad_row_in_a_shard_names_that_shard(tmp_path):
    pq.write_table(pa.Table.from_pylist([ROW, ROW]), tmp_path / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist([ROW, {**ROW, "rejected": "4"}]), tmp_path / "part-1.parquet")
    with pytest.raises(BadRowError) as info:
        read_pairs(tmp_path)
    assert (info.value.path, info.value.line, info.value.field) == (f"{tmp_path}/part-1.parquet", 2, "rejected")
