"""A sweep's outputs from trial records, without Ray: statuses, the table, best.yaml, summary and plot."""

import csv
import json
import os

import pytest

from goalrm.config import load_config
from goalrm.tune.results import TrialRecord, format_table, short_error, summarize_sweep, trial_row
from goalrm.tune.space import parse_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = load_config(os.path.join(ROOT, "goalrm", "configs", "sweep.yaml"))
SPACE = {"space": {"loss.contrastive_weight": {"grid": [0.0, 0.5, 1.0]}, "loss.sampling.goal": {"choice": ["single", "mean"]}}}

# Tune's error.txt for a trial whose worker hit the loop's NaN guard, shortened
NAN_TRACE = """Failure # 1 (occurred at 2026-11-27_18-46-04)
ray::ImplicitFunc.train() (pid=2000, ip=192.0.2.2, actor_id=ab)
  File "/venv/ray/tune/trainable/trainable.py", line 331, in train
    raise skipped from exception_cause(skipped)
  File "/work/goalrm/tune/sweep.py", line 41, in sweep_trial
    trainer.fit()
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
Traceback (most recent call last):
  File "/work/goalrm/train/loop.py", line 100, in train_loop_per_worker
    raise FloatingPointError(
FloatingPointError: non-finite loss nan at step 2 (bt nan, contrastive nan); lower train.lr or check the data
"""


def _reports(steps_and_values, checkpoint_prefix="/ckpt"):
    return [
        {"step": s, "eval_auroc": v, "eval_accuracy": v - 0.05, "checkpoint_path": f"{checkpoint_prefix}/{s}"}
        for s, v in steps_and_values
    ]


def _records():
    return [
        TrialRecord("t_fin", {"loss.contrastive_weight": 0.5, "loss.sampling.goal": "single"},
                    _reports([(100, 0.60), (200, 0.81), (300, 0.78)], "/a"), 300, done=True),
        TrialRecord("t_asha", {"loss.contrastive_weight": 0.0, "loss.sampling.goal": "mean"},
                    _reports([(100, 0.55)], "/b"), 300, done=True),
        TrialRecord("t_nan", {"loss.contrastive_weight": 1.0, "loss.sampling.goal": "single"}, [], 300, done=True, error=NAN_TRACE),
        # rerun on resume: the first attempt's 0.95 must not count
        TrialRecord("t_rerun", {"loss.contrastive_weight": 1.0, "loss.sampling.goal": "mean"},
                    _reports([(100, 0.70), (200, 0.95), (100, 0.62), (200, 0.74), (300, 0.79)], "/d"), 300, done=True),
    ]


def test_status_and_last_run():
    fin, asha, nan, rerun = _records()
    assert [r.status for r in (fin, asha, nan, rerun)] == ["finished", "stopped early", "failed", "finished"]
    assert [r["step"] for r in rerun.last_run()] == [100, 200, 300]
    unfinished = TrialRecord("t_run", {}, _reports([(100, 0.5)]), 300, done=False)
    assert unfinished.status == "unfinished"


def test_short_error_keeps_the_users_exception():
    assert short_error(NAN_TRACE) == (
        "FloatingPointError: non-finite loss nan at step 2 (bt nan, contrastive nan); lower train.lr or check the data"
    )
    assert short_error("ray.exceptions.RayTaskError: boom") == "ray.exceptions.RayTaskError: boom"
    oom = "ray.train.WorkerGroupError: Training failed due to worker errors:\nA worker health check failed.\n" \
          "7 worker(s) were killed due to the node running low on memory. Memory on the node was 22.47GB used\nRay killed 7 worker(s)"
    assert short_error(oom).startswith("7 worker(s) were killed due to the node running low on memory")
    assert short_error("x" * 500).endswith("...") and len(short_error("x" * 500)) == 300


def test_summary_table_best_yaml_and_plot(tmp_path):
    spec = parse_space(SPACE, BASE.to_dict(), "lambda.yaml")
    result = summarize_sweep(_records(), BASE, spec, str(tmp_path))

    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["trial"] for r in rows] == ["t_fin", "t_rerun", "t_asha", "t_nan"]
    assert [r["status"] for r in rows] == ["finished", "finished", "stopped early", "failed"]
    fin = rows[0]
    assert (float(fin["best_eval_auroc"]), fin["best_step"], float(fin["final_eval_auroc"])) == (0.81, "200", 0.78)
    assert float(fin["final_eval_accuracy"]) == pytest.approx(0.73) and fin["steps"] == "300"
    assert fin["loss.contrastive_weight"] == "0.5" and fin["loss.sampling.goal"] == "single"
    assert float(rows[1]["best_eval_auroc"]) == 0.79  # the rerun's own best, not the lost attempt's 0.95
    assert rows[3]["error"].startswith("FloatingPointError: non-finite loss nan at step 2") and rows[3]["best_eval_auroc"] == ""

    assert result.best_trial == "t_fin" and result.best_value == 0.81 and result.best_checkpoint == "/a/200"
    assert not result.interrupted
    best = load_config(str(tmp_path / "best.yaml"))  # what `goalrm train --config best.yaml` loads
    assert best == result.best_config
    assert best.loss.contrastive_weight == 0.5 and best.loss.sampling.goal == "single"
    assert best.train == BASE.train and best.data == BASE.data
    assert open(tmp_path / "best.yaml").readline().startswith("# best trial t_fin of lambda.yaml: eval_auroc 0.8100 at step 200")

    lines = format_table(result.rows).splitlines()  # what the CLI prints
    assert lines[0].split()[:4] == ["trial", "status", "loss.contrastive_weight", "loss.sampling.goal"]
    assert "checkpoint" not in lines[0] and len(lines) == 5
    assert lines[1].split()[:6] == ["t_fin", "finished", "0.5", "single", "0.81", "200"]
    assert lines[3].split()[:3] == ["t_asha", "stopped", "early"] and "FloatingPointError" in lines[4]

    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["best_checkpoint"] == "/a/200" and summary["best_values"] == {"loss.contrastive_weight": 0.5, "loss.sampling.goal": "single"}
    assert summary["trials"] == {"finished": 2, "stopped early": 1, "failed": 1}
    assert open(tmp_path / "metric.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_min_mode_interrupted_and_all_failed(tmp_path):
    spec = parse_space({**SPACE, "tune": {"metric": "eval_auroc", "mode": "min"}}, BASE.to_dict())
    records = _records() + [TrialRecord("t_run", {"loss.contrastive_weight": 0.0, "loss.sampling.goal": "single"}, [], 300, done=False)]
    result = summarize_sweep(records, BASE, spec, str(tmp_path))
    assert result.best_trial == "t_asha" and result.interrupted
    assert [r["trial"] for r in result.rows][-2:] == ["t_run", "t_nan"]

    failed = [r for r in _records() if r.error]
    out = tmp_path / "failed"
    out.mkdir()
    result = summarize_sweep(failed, BASE, parse_space(SPACE, BASE.to_dict()), str(out))
    assert result.best_trial is None and result.best_config is None
    assert not (out / "best.yaml").exists() and json.load(open(out / "summary.json"))["best_trial"] is None


def test_best_eval_without_a_checkpoint_points_at_the_best_one_saved(tmp_path):
    # train.checkpoint_every 300 with eval_every 100: Tune's frame has NaN where no checkpoint was saved
    reports = _reports([(100, 0.60), (200, 0.81), (300, 0.78)], "/a")
    reports[0]["checkpoint_path"] = reports[1]["checkpoint_path"] = float("nan")
    rec = TrialRecord("t_fin", {"loss.contrastive_weight": 0.5, "loss.sampling.goal": "single"}, reports, 300, done=True)
    row = trial_row(rec, "eval_auroc", "max")
    assert (row["best_step"], row["checkpoint"], row["checkpoint_step"]) == (200, "/a/300", 300)

    none_saved = TrialRecord("t", {}, [{**r, "checkpoint_path": float("nan")} for r in reports], 300, done=True)
    assert (trial_row(none_saved, "eval_auroc", "max")["checkpoint"], trial_row(none_saved, "eval_auroc", "max")["checkpoint_step"]) == ("", "")

    spec = parse_space(SPACE, BASE.to_dict(), "lambda.yaml")
    result = summarize_sweep([rec], BASE, spec, str(tmp_path))
    assert result.best_checkpoint == "/a/300"
    assert json.load(open(tmp_path / "summary.json"))["best_checkpoint"] == "/a/300"  # a path, never NaN


def test_a_sweep_stopped_between_trials_is_interrupted(tmp_path):
    # a Ctrl+C after a trial finished, before Tune created the next: no trial is unfinished, yet the
    # 3-value grid is not done, and `goalrm tune --resume` would run the rest
    spec = parse_space(SPACE, BASE.to_dict())
    assert spec.total_trials() == 3
    two = _records()[:2]
    assert summarize_sweep(two, BASE, spec, str(tmp_path)).interrupted
    assert json.load(open(tmp_path / "summary.json"))["interrupted"] is True
    assert not summarize_sweep(_records()[:3], BASE, spec, str(tmp_path)).interrupted
    assert parse_space({**SPACE, "tune": {"num_samples": 4}}, BASE.to_dict()).total_trials() == 12
