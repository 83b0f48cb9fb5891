"""Training through Ray Data: a Parquet folder streamed to the workers, against the in-memory loader."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from goalrm.config import load_config
from goalrm.data.synthetic import synthetic_pairs

pytestmark = pytest.mark.ray


def _rows(n, seed):
    return [
        {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "rejected_first_error": p.first_error_char}
        for p in synthetic_pairs(n, seed=seed)
    ]


def _folder(tmp_path, bad_row):
    """Two shards, 32 good rows; the second shard's 9th row is `bad_row`."""
    rows = _rows(32, seed=4)
    folder = tmp_path / "pairs"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:16]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[16:24] + [bad_row] + rows[24:]), folder / "part-1.parquet")
    return folder


def _overrides(folder, loader, **data):
    return {
        "data": {"train": str(folder), "eval": str(folder / "part-0.parquet"), "loader": loader, "goal_state_pairs": 8, **data},
        "train": {"num_workers": 1, "micro_batch_size": 8, "max_steps": 8, "log_every": 2, "eval_every": 8, "warmup_steps": 0, "lr": 1e-3},
    }


def test_parquet_folder_through_ray_data_trains_exactly_like_memory(ray_session, tmp_path):
    """Equality is defined by making both loaders pick the same batches in the same order.

    The in-memory loader shuffles each epoch with the step-indexed sampler's permutation; the Ray Data
    loader shuffles each window of `group_window` micro-batches with the same permutation function,
    indexed by window. With one worker, Ray Data keeping file order (preserve_order), length grouping
    off and a window of exactly the dataset (4 x 8 = 32 pairs, after the one skipped bad row), every
    window is one epoch of the in-memory loader, so both see identical batches, the same model seed and
    the same contrastive sampling seed: per-report losses must match to float tolerance. The skipped
    row checks that both loaders count it.
    """
    from goalrm.train.trainer import train

    folder = _folder(tmp_path, {"prompt": "x", "chosen": "same", "rejected": "same", "rejected_first_error": None})
    runs = {}
    for loader in ("memory", "ray_data"):
        cfg = load_config(None, _overrides(folder, loader, on_bad_row="skip", group_by_length=False, group_window=4))
        train(cfg, str(tmp_path / loader))
        runs[loader] = [json.loads(l) for l in open(tmp_path / loader / "metrics.jsonl")]
    mem, stream = runs["memory"], runs["ray_data"]
    assert [m["step"] for m in mem] == [m["step"] for m in stream] == [2, 4, 6, 8]
    for a, b in zip(mem, stream):
        for key in ("loss", "bt_loss", "contrastive_loss", "padding_frac"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
        assert 0 < a["padding_frac"] < 1
    assert mem[-1]["bad_rows"] == stream[-1]["bad_rows"] == 1
    assert mem[-1]["eval_accuracy"] == pytest.approx(stream[-1]["eval_accuracy"])
    # the two runs did go through different loaders: the stream counts completed passes
    assert (mem[0]["epoch"], stream[0]["epoch"]) == (0.5, 0.0)
    assert (tmp_path / "ray_data" / "model" / "goal_state.safetensors").exists()


@pytest.mark.slow  # the message itself is tests/test_stream.py's (no Ray); this is its way through Ray Data and Train
def test_bad_row_in_a_parquet_shard_stops_the_run_naming_file_row_field(ray_session, tmp_path, capsys):
    from goalrm.cli import main

    folder = _folder(tmp_path, {"prompt": "x", "chosen": "  ", "rejected": "b", "rejected_first_error": None})
    config = tmp_path / "c.yaml"
    overrides = _overrides(folder, "ray_data")
    overrides["train"]["max_failures"] = 0  # a bad row fails every retry the same way
    config.write_text(yaml.safe_dump(overrides))
    assert main(["train", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"goalrm: error: {folder}/part-1.parquet:9: field 'chosen': empty completion" in err
