"""Run folders and checkpoints without Ray: which checkpoint counts, and what a run dir may be reused for."""

import json
import os

import pytest

from goalrm.cli import main
from goalrm.config import ConfigError, load_config
from goalrm.train.checkpoint import COMPLETE, ENGINE_TAG, RUN_NAME, complete_checkpoint
from goalrm.train.trainer import run_config, train


def _checkpoint(run_dir, name, step=None):
    d = os.path.join(run_dir, RUN_NAME, name)
    os.makedirs(os.path.join(d, ENGINE_TAG))
    if step is not None:
        with open(os.path.join(d, COMPLETE), "w") as f:
            json.dump({"step": step}, f)
    return d


def test_newest_complete_checkpoint_wins_and_incomplete_ones_are_refused(tmp_path):
    run = str(tmp_path)
    _checkpoint(run, "checkpoint_2026-01-01_00-00-01.000000", step=2)
    newest_complete = _checkpoint(run, "checkpoint_2026-01-01_00-00-02.000000", step=4)
    partial = _checkpoint(run, "checkpoint_2026-01-01_00-00-03.000000")  # a save cut short
    assert complete_checkpoint(run) == newest_complete
    assert complete_checkpoint(newest_complete) == newest_complete
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
        complete_checkpoint(partial)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor a run folder"):
        complete_checkpoint(str(tmp_path / "empty"))


def test_a_run_dir_holds_one_run_and_resumes_only_with_its_config(tmp_path, capsys):
    run = str(tmp_path / "run")
    cfg = load_config(None)
    os.makedirs(run)
    with open(os.path.join(run, "config.yaml"), "w") as f:
        f.write("train:\n  max_steps: 7\n")
    assert run_config(run).train.max_steps == 7
    # these all fail before Ray starts
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, run)
    with pytest.raises(ConfigError, match=r"changed: .*train\.max_steps"):
        train(cfg, run, resume=True)
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        train(cfg, str(tmp_path / "nothing"), resume=True)
    assert main(["train", "--resume", run, "--config", "x.yaml"]) == 2
    assert "drop --config, --model and --output-dir" in capsys.readouterr().err
    assert main(["train", "--output-dir", run]) == 2
    assert f"{run} already holds a run" in capsys.readouterr().err


def test_a_storage_path_holds_one_run(tmp_path):
    """Ray Train continues the run it finds under the storage path: a second run there would silently
    start from the first one's checkpoints (or, finished, export its model as its own)."""
    storage = str(tmp_path / "shared")
    _checkpoint(storage, "checkpoint_2026-01-01_00-00-01.000000", step=2)  # another output dir's run
    cfg = load_config(None, {"train": {"storage_path": storage}})
    with pytest.raises(FileExistsError, match=f"train.storage_path {storage} already holds a run"):
        train(cfg, str(tmp_path / "new_run"))  # before Ray starts
    assert not os.path.exists(tmp_path / "new_run" / "config.yaml")
