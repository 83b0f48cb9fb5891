"""End-to-end sweeps on a local 2-CPU Ray: ASHA, a failing trial, best.yaml, the plot, resume."""

import csv
import json
import os
import signal

import pytest
import yaml

from goalrm.cli import main
from goalrm.config import load_config

pytestmark = pytest.mark.slow

# tiny preset, one worker per trial (two trials side by side on 2 CPUs), an eval every 10 steps and a
# checkpoint only at the end: ASHA still sees every eval
BASE = {
    "model": {"name_or_path": "tiny"},
    "data": {"synthetic_train_size": 512, "synthetic_eval_size": 64, "max_length": 128, "goal_state_pairs": 32},
    "train": {"num_workers": 1, "zero_stage": 0, "lr": 1.0e-3, "max_steps": 30, "micro_batch_size": 16,
              "log_every": 10, "eval_every": 10, "checkpoint_every": 30, "eval_batch_size": 64},
}


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return str(path)


def _rows(out_dir):
    return list(csv.DictReader(open(os.path.join(out_dir, "results.csv"))))


def test_sweep_asha_failure_best_yaml_and_plot(ray_session, base_yaml, tmp_path, capsys):
    # ASHA ranks by the training loss here, which λ orders by construction (λ=1 adds ~1.4 to it), so
    # its decision does not hang on AUROC differences of a few dozen steps. λ=1e39 makes the loss inf.
    # One trial at a time: λ=0 has reached the rung at step 10 before λ=1 does, so ASHA's cut does not
    # hang on which of two side-by-side trials reports first (CI saw λ=1 arrive first and go on).
    space = tmp_path / "space.yaml"
    space.write_text(
        "space:\n  loss.contrastive_weight: {grid: [0.0, 1.0, 1.0e+39]}\n"
        "tune: {metric: loss, mode: min, grace_period: 10, max_concurrent_trials: 1}\n"
    )
    out = str(tmp_path / "sweep")
    assert main(["tune", "--config", base_yaml, "--space", str(space), "--output-dir", out]) == 0
    printed = capsys.readouterr().out

    rows = _rows(out)
    by_lam = {float(r["loss.contrastive_weight"]): r for r in rows}
    assert set(by_lam) == {0.0, 1.0, 1e39}
    failed = by_lam[1e39]
    assert failed["status"] == "failed" and failed["error"].startswith("FloatingPointError: non-finite loss inf at step 1")
    # the failure cost the others nothing: each trained and evaluated
    for lam in (0.0, 1.0):
        assert by_lam[lam]["status"] in ("finished", "stopped early") and int(by_lam[lam]["best_step"]) >= 10
    assert by_lam[0.0]["status"] == "finished" and by_lam[0.0]["steps"] == "30"
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert [float(r["loss.contrastive_weight"]) for r in stopped] == [1.0] and int(stopped[0]["steps"]) < 30  # its loss is far above
    assert [r["loss.contrastive_weight"] for r in rows][0] == "0.0" and rows[-1]["status"] == "failed"
    assert "stopped early" in printed and "FloatingPointError" in printed
    assert "Configuration for experiment" not in printed and "tensorboard --logdir" not in printed  # Tune's own chatter

    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["best_values"] == {"loss.contrastive_weight": 0.0}
    ckpt = summary["best_checkpoint"]
    assert os.path.isdir(os.path.join(ckpt, "deepspeed")) and ckpt.startswith(os.path.join(out, "tune"))
    assert f"best checkpoint: {ckpt}" in printed
    assert open(os.path.join(out, "metric.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(os.path.join(out, "metric.png")) > 10_000
    for trial in rows:  # each trial's own logs and full config
        trial_dir = os.path.join(out, "tune", trial["trial"])
        assert os.path.exists(os.path.join(trial_dir, "config.yaml"))

    # best.yaml is the best trial's complete config, which `goalrm train --config` takes as it is
    best = load_config(os.path.join(out, "best.yaml"))
    trial = load_config(os.path.join(out, "tune", rows[0]["trial"], "config.yaml"))
    assert best == trial and best.loss.contrastive_weight == 0.0 and best.train.max_steps == 30


_interrupted = []  # the callback is pickled with the sweep and restored on resume: interrupt only once


def _interrupt_after_first_trial():
    from ray.tune import Callback

    class InterruptAfterFirstTrial(Callback):
        """Ctrl+C as a user would press it, once the first trial has finished."""

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not _interrupted:
                _interrupted.append(trial.trial_id)
                os.kill(os.getpid(), signal.SIGINT)

    return InterruptAfterFirstTrial()


def test_interrupted_sweep_resumes(ray_session, tmp_path, capsys):
    from goalrm.config import config_from_dict
    from goalrm.tune import run_sweep

    out = str(tmp_path / "sweep")
    space = {"space": {"train.max_steps": {"grid": [10, 40]}}, "tune": {"scheduler": "fifo"}}
    result = run_sweep(config_from_dict(BASE), space, out, callbacks=[_interrupt_after_first_trial()])
    assert result.interrupted
    status = {r["train.max_steps"]: r["status"] for r in result.rows}
    assert status == {10: "finished", 40: "unfinished"}
    assert json.load(open(os.path.join(out, "summary.json")))["interrupted"] is True
    short = next(r["trial"] for r in result.rows if r["train.max_steps"] == 10)
    assert _interrupted == [short]
    short_log = open(os.path.join(out, "tune", short, "metrics.jsonl")).read()

    assert main(["tune", "--resume", out]) == 0
    printed = capsys.readouterr().out
    assert "interrupted: resume with" not in printed
    rows = {r["train.max_steps"]: r for r in _rows(out)}
    assert rows["10"]["status"] == "finished" and rows["40"]["status"] == "finished" and rows["40"]["steps"] == "40"
    assert open(os.path.join(out, "tune", short, "metrics.jsonl")).read() == short_log  # not run again
    assert json.load(open(os.path.join(out, "summary.json")))["interrupted"] is False
    assert os.path.exists(os.path.join(out, "best.yaml"))
