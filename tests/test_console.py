"""The console: report lines printed by the driver from metrics.jsonl, as the controller writes it."""

import json
import logging
import threading
import time

import pytest

import goalrm.console as console
from goalrm.console import PROGRESS_EVERY_ENV, Bar, follow_reports, progress_line, report_line


def _report(step, evaluate=False):
    m = {"step": step, "loss": 1.0 / step, "bt_loss": 0.5, "contrastive_loss": 1.2, "pairs_per_s": 10.0, "tokens_per_s": 900.0}
    if evaluate:
        m |= {"eval_accuracy": 0.75, "eval_auroc": 0.8, "eval_q_gap": 0.1}
    return m


def test_report_line():
    assert report_line(_report(10)) == "step    10  loss 0.1000  bt 0.5000  contrastive 1.2000  10.0 pairs/s  900 tok/s"
    assert report_line(_report(20, True)).endswith("| eval acc 0.750  auroc 0.800  q_gap +0.100")


def test_follow_reports_prints_each_new_report_once(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(_report(5)) + "\n")  # a resumed run's earlier report: not printed again

    def controller():
        with open(path, "a") as f:
            for step in (10, 20, 30):
                f.write(json.dumps(_report(step, step == 20)))  # a line lands in two writes
                f.flush()
                time.sleep(0.3)
                f.write("\n")
                f.flush()
        with open(path, "a") as f:
            f.write(json.dumps({"step": 30, "nonfinite_loss": "..."}) + "\n")  # not a report line

    with follow_reports(str(path), total_steps=30):
        writer = threading.Thread(target=controller)
        writer.start()
        writer.join()
    out = capsys.readouterr().out.splitlines()  # not a terminal: report lines only, no bar
    assert out == [report_line(_report(10)), report_line(_report(20, True)), report_line(_report(30))]


def test_progress_line():
    # 100 steps in 140 s since the first report: 1.4 s/step, 880 to go: 1,232 s
    assert progress_line(120, 1000, "step", 141, 100 / 140) == "step 120/1000 (12%), 02:21 elapsed, 1.4 s/step, ETA 20:32"
    assert progress_line(50, 100, "block", 10, 5.0) == "block 50/100 (50%), 00:10 elapsed, 5.0 block/s, ETA 00:10"
    assert progress_line(3, None, "trial", 741, None) == "3 trials, 12:21 elapsed"
    assert progress_line(0, 10, "block", 61, None) == "block 0/10 (0%), 01:01 elapsed"


def test_a_log_gets_a_progress_line_a_minute_with_this_runs_rate(monkeypatch, capsys):
    """Not a terminal (CI, `ray job logs`): a line on stderr once 60 s have passed since the last, its rate
    from this run's first update on, so a resumed run's earlier steps do not make its ETA short."""
    clock = [1000.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    monkeypatch.delenv(PROGRESS_EVERY_ENV, raising=False)
    bar = Bar(1000, "step")
    for t, n in ((10, 500), (70, 560), (100, 590), (131, 620)):  # resumed at step 500
        clock[0] = 1000.0 + t
        bar.update_to(n)
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    # 60 steps in 60 s, then 120 in 121 s
    assert out.err.splitlines() == ["step 560/1000 (56%), 01:10 elapsed, 1.0 step/s, ETA 07:20",
                                    "step 620/1000 (62%), 02:11 elapsed, 1.0 s/step, ETA 06:23"]

    monkeypatch.setenv(PROGRESS_EVERY_ENV, "0")  # off
    bar = Bar(10, "block")
    clock[0] += 1e6
    bar.update_to(5)
    clock[0] += 1e6
    bar.update_to(9)
    assert capsys.readouterr().err == ""


def test_a_bad_progress_interval_is_refused_before_anything_runs(monkeypatch, capsys, tmp_path):
    from goalrm.cli import main

    monkeypatch.setenv(PROGRESS_EVERY_ENV, "1m")
    assert main(["data", "synthetic", "--output", str(tmp_path / "pairs.jsonl")]) == 2
    assert not (tmp_path / "pairs.jsonl").exists()
    assert "GOALRM_PROGRESS_EVERY='1m': expected seconds" in capsys.readouterr().err
    monkeypatch.setenv(PROGRESS_EVERY_ENV, "-5")
    with pytest.raises(ValueError, match="GOALRM_PROGRESS_EVERY='-5'"):
        Bar(10, "block")


def test_ray_driver_drops_only_the_known_harmless_lines(monkeypatch):
    import ray._private.worker as ray_worker

    from goalrm.console import VERBOSE_ENV
    from goalrm.train.trainer import quiet_ray_driver

    forwarded = []
    monkeypatch.setattr(ray_worker, "print_worker_logs", lambda data, f, ignore_prefix=False: forwarded.append(data["lines"]))
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet_ray_driver()
    quiet_ray_driver()  # idempotent: one filter, not two
    many = "WARNING: 8 PYTHON worker processes have been started on node: 07 with address: 192.0.2.2"
    watcher = "core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: '44' has constructor arguments"
    ray_worker.print_worker_logs({"lines": [many], "pid": "raylet", "is_err": False}, None)
    ray_worker.print_worker_logs({"lines": [watcher, "Traceback (most recent call last):", "ValueError: x"]}, None)
    assert forwarded == [["Traceback (most recent call last):", "ValueError: x"]]

    forwarded.clear()
    monkeypatch.setattr(ray_worker, "print_worker_logs", lambda data, f, ignore_prefix=False: forwarded.append(data["lines"]))
    monkeypatch.setenv(VERBOSE_ENV, "1")
    quiet_ray_driver()  # --verbose: everything
    ray_worker.print_worker_logs({"lines": [many]}, None)
    assert forwarded == [[many]]


def test_ray_workers_of_the_local_ray_drop_only_the_known_harmless_warnings(monkeypatch):
    from goalrm.console import VERBOSE_ENV, quiet_ray_worker

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # the hook replaces it; restored after
    names = ("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",
             "ray.train.v2._internal.execution.controller.placement_group_cleaner")
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "filters", [])  # restored after
    quiet_ray_worker()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    for name, harmless in zip(names, ("Failed to send resource request for train-2cc9. If this only happens transiently",
                                      "State API may be temporarily unavailable")):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.warning(harmless)
            logger.warning("the controller lost its workers")  # anything else still prints
        finally:
            logger.removeHandler(handler)
    assert seen == ["the controller lost its workers"] * 2
