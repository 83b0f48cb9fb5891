"""The loader choice and bad-row unwrapping, without starting Ray."""

import json

import pytest

from goalrm.config import ConfigError, load_config
from goalrm.data import BadRowError
from goalrm.train import data_source
from goalrm.train.data_source import input_error, resolve_loader


def test_auto_loader_goes_by_train_data_size(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" * 100)
    cfg = load_config(None, {"data": {"train": str(tmp_path)}})
    assert cfg.data.loader == "auto"
    monkeypatch.setattr(data_source, "MEMORY_MAX_BYTES", 100)
    assert resolve_loader(cfg) == "ray_data"
    monkeypatch.setattr(data_source, "MEMORY_MAX_BYTES", 200)
    assert resolve_loader(cfg) == "memory"
    assert resolve_loader(load_config(None, {"data": {"train": str(tmp_path), "loader": "ray_data"}})) == "ray_data"
    assert resolve_loader(load_config(None)) == "memory"  # synthetic


def test_loader_options_are_checked():
    with pytest.raises(ConfigError, match="data.loader must be"):
        load_config(None, {"data": {"loader": "fast"}})
    with pytest.raises(ConfigError, match="ray_data streams files"):
        load_config(None, {"data": {"loader": "ray_data"}})
    with pytest.raises(ConfigError, match="group_window"):
        load_config(None, {"data": {"group_window": 0}})


class _WorkerGroupError(Exception):
    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_input_error_finds_the_row_through_wrappers():
    err = BadRowError("s3://b/part-1.parquet", 3, "rejected", "identical to 'chosen'")
    try:
        raise RuntimeError("UDF failed") from err
    except RuntimeError as e:
        wrapped = _WorkerGroupError({0: ValueError("other"), 1: e})
    found = input_error(wrapped)
    assert type(found) is BadRowError and str(found) == "s3://b/part-1.parquet:3: field 'rejected': identical to 'chosen'"
    assert input_error(_WorkerGroupError({0: ValueError("other")})) is None
    missing = input_error(_WorkerGroupError({0: FileNotFoundError("data file not found: x.jsonl")}))
    assert type(missing) is FileNotFoundError and str(missing) == "data file not found: x.jsonl"
