"""Paths in a config are the caller's; Ray workers and Tune trials run elsewhere, so they become absolute."""

from goalrm.config import load_config


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "base").mkdir(parents=True)
    cfg = load_config(overrides={"model": {"name_or_path": "runs/base"}, "data": {"train": "d/train.jsonl", "eval": "/abs/eval.jsonl"}})
    fixed = cfg.with_absolute_paths()
    assert fixed.model.name_or_path == str(tmp_path / "runs" / "base")
    assert (fixed.data.train, fixed.data.eval) == (str(tmp_path / "d" / "train.jsonl"), "/abs/eval.jsonl")
    assert fixed.train == cfg.train and fixed.loss == cfg.loss


def test_hub_ids_uris_and_synthetic_stay():
    cfg = load_config(overrides={"model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M"}, "data": {"train": "s3://b/t.parquet"}})
    fixed = cfg.with_absolute_paths()
    assert (fixed.model.name_or_path, fixed.data.train, fixed.data.eval) == ("HuggingFaceTB/SmolLM2-135M", "s3://b/t.parquet", "synthetic")
