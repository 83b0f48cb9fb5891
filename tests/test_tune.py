"""End-to-end sweeps on a local 2-CPU Ray: `goalrm tune` with two trials side by side, one failing; and (slow
tier) ASHA, a failing trial, best.yaml, the plot, an interrupt and its resume."""

import csv
import json
import os
import signal

import pytest
import yaml

from goalrm.cli import main
from goalrm.config import load_config

pytestmark = pytest.mark.ray

# tiny preset, one worker per trial, an eval every 10 steps and a checkpoint only at the end: ASHA
# still sees every eval
BASE = {
    "model": {"name_or_path": "tiny"},
    "data": {"synthetic_train_size": 512, "synthetic_eval_size": 64, "max_length": 128, "goal_state_pairs": 32},
    "train": {"num_workers": 1, "zero_stage": 0, "lr": 1.0e-3, "max_steps": 20, "micro_batch_size": 16,
              "log_every": 10, "eval_every": 10, "checkpoint_every": 20, "eval_batch_size": 64},
}
STEPS = BASE["train"]["max_steps"]


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return str(path)


def _rows(out_dir):
    return list(csv.DictReader(open(os.path.join(out_dir, "results.csv"))))


def _interrupt_after_first_trial(marker: str):
    """Ctrl+C as a user would press it, once the first trial has finished. Tune pickles its callbacks with
    the sweep and restores them on resume, a module global's value included: a file says it happened."""
    from ray.tune import Callback

    class InterruptAfterFirstTrial(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(trial.trial_id)
                os.kill(os.getpid(), signal.SIGINT)

    return InterruptAfterFirstTrial()


def test_cli_sweep_two_trials_side_by_side_one_failing(ray_session, base_yaml, tmp_path, capsys):
    """`goalrm tune` as a user runs it: a failing trial costs the other nothing, and best.yaml is the best
    trial's whole config. Both trials fit on the 2-CPU Ray at once, so Tune starts them side by side."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"space": {"loss.contrastive_weight": {"grid": [0.0, 1.0e39]}}, "tune": {"metric": "loss", "mode": "min"}}))
    out = str(tmp_path / "sweep")
    assert main(["tune", "--config", base_yaml, "--space", str(space), "--output-dir", out]) == 0
    printed = capsys.readouterr().out
    by_lam = {float(r["loss.contrastive_weight"]): r for r in _rows(out)}
    assert by_lam[0.0]["status"] == "finished" and by_lam[0.0]["steps"] == str(STEPS)
    assert by_lam[1e39]["status"] == "failed" and by_lam[1e39]["error"].startswith("FloatingPointError: non-finite loss inf at step 1")
    assert "FloatingPointError" in printed and "Configuration for experiment" not in printed
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["interrupted"] is False and summary["best_values"] == {"loss.contrastive_weight": 0.0}
    best = load_config(os.path.join(out, "best.yaml"))
    assert best == load_config(os.path.join(out, "tune", by_lam[0.0]["trial"], "config.yaml"))


@pytest.mark.slow  # four Ray Train runs one after another; the test above is the default tier's sweep
def test_asha_sweep_interrupted_and_resumed_with_a_failing_trial(ray_session, base_yaml, tmp_path, capsys):
    """One sweep, started from Python and resumed from the CLI after a Ctrl+C: ASHA's cut, a failing trial,
    best.yaml, the plot, and a resume that keeps the finished trial as it was.

    ASHA ranks by the training loss here, which λ orders by construction (λ=1 adds ~1.4 to it), so its
    decision does not hang on AUROC differences of a few dozen steps. λ=1e39 makes the loss inf. One trial
    at a time: λ=0 has finished (and passed the rung at step 10) before λ=1 starts, so ASHA's cut does not
    hang on which of two side-by-side trials reports first, and the interrupt comes between trials."""
    from goalrm.tune import run_sweep

    space = {
        "space": {"loss.contrastive_weight": {"grid": [0.0, 1.0, 1.0e39]}},
        "tune": {"metric": "loss", "mode": "min", "grace_period": 10, "max_concurrent_trials": 1},
    }
    out = str(tmp_path / "sweep")
    marker = str(tmp_path / "interrupted")
    result = run_sweep(load_config(base_yaml), space, out, callbacks=[_interrupt_after_first_trial(marker)])
    assert result.interrupted
    status = {r["loss.contrastive_weight"]: r["status"] for r in result.rows}
    assert status[0.0] == "finished" and {status.get(1.0), status.get(1e39)} <= {"unfinished", None}
    assert json.load(open(os.path.join(out, "summary.json")))["interrupted"] is True
    first = next(r["trial"] for r in result.rows if r["loss.contrastive_weight"] == 0.0)
    assert open(marker).read() == first
    first_log = open(os.path.join(out, "tune", first, "metrics.jsonl")).read()
    capsys.readouterr()

    assert main(["tune", "--resume", out]) == 0
    printed = capsys.readouterr().out
    assert "interrupted: resume with" not in printed
    assert open(os.path.join(out, "tune", first, "metrics.jsonl")).read() == first_log  # not run again

    rows = _rows(out)
    by_lam = {float(r["loss.contrastive_weight"]): r for r in rows}
    assert set(by_lam) == {0.0, 1.0, 1e39}
    failed = by_lam[1e39]
    assert failed["status"] == "failed" and failed["error"].startswith("FloatingPointError: non-finite loss inf at step 1")
    # the failure cost the others nothing: each trained and evaluated
    for lam in (0.0, 1.0):
        assert by_lam[lam]["status"] in ("finished", "stopped early") and int(by_lam[lam]["best_step"]) >= 10
    assert by_lam[0.0]["status"] == "finished" and by_lam[0.0]["steps"] == str(STEPS)
    stopped = [r for r in rows if r["status"] == "stopped early"]
    # its loss is far above λ=0's at the rung, which the resumed scheduler still knew
    assert [float(r["loss.contrastive_weight"]) for r in stopped] == [1.0] and int(stopped[0]["steps"]) < STEPS
    assert [r["loss.contrastive_weight"] for r in rows][0] == "0.0" and rows[-1]["status"] == "failed"
    assert "stopped early" in printed and "FloatingPointError" in printed
    assert "Configuration for experiment" not in printed and "tensorboard --logdir" not in printed  # Tune's own chatter

    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["interrupted"] is False
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
    assert best == trial and best.loss.contrastive_weight == 0.0 and best.train.max_steps == STEPS
