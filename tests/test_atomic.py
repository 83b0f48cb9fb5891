"""goalrm/atomic.py, the one home of atomic writes: a target is whole or absent, and nothing is left behind."""

import os

import pytest

from goalrm.atomic import is_temp, replace_dir, write_atomic, write_jsonl, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out" / "a.json"
    write_text(str(path), "old")

    def half(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(str(path), half)
    assert path.read_text() == "old" and os.listdir(path.parent) == ["a.json"]


def test_temp_names_are_hidden_and_recognised(tmp_path):
    seen = []
    write_atomic(str(tmp_path / "x.parquet"), lambda tmp: (seen.append(os.path.basename(tmp)), open(tmp, "w").close()))
    assert seen[0].startswith(".x.parquet") and is_temp(seen[0]) and not is_temp("x.parquet")


def test_a_folder_is_replaced_whole(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "new").write_text("1")
    dst.mkdir()
    (dst / "stale").write_text("0")
    replace_dir(str(src), str(dst))
    assert os.listdir(dst) == ["new"] and sorted(os.listdir(tmp_path)) == ["dst", "src"]


def test_jsonl_counts_its_rows(tmp_path):
    assert write_jsonl(str(tmp_path / "r.jsonl"), ({"i": i} for i in range(3))) == 3
    assert (tmp_path / "r.jsonl").read_text().splitlines() == ['{"i": 0}', '{"i": 1}', '{"i": 2}']
