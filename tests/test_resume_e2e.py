"""Runs that survive: resume, a killed worker, a killed save, and exporting a ZeRO-3 checkpoint offline.

Every run is the same 4-step ZeRO-3 job with a checkpoint every 2 steps, so each continuation is
compared against one uninterrupted reference run. Its micro-batches are sized by a token budget, which
cuts the two ranks' pairs into different numbers of micro-batches at some steps: each rank then runs the
most any needs, and a resumed run cuts its steps as the reference did. A test stops a worker at a chosen point with
GOALRM_FAULT (goalrm/train/faults.py) and kills that worker's process by the PID it records.
"""

import json
import os
import shutil
import signal
import threading
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from goalrm.config import load_config
from goalrm.train.checkpoint import COMPLETE, RUN_NAME

pytestmark = pytest.mark.ray

STEPS = 4
# float tolerance for a continuation; measured: identical to the reference run
RTOL = 1e-5
BUDGET = 300  # token slots of a micro-batch: one or two of these pairs, so 5 to 8 micro-batches a step


def _config(max_failures=0):
    overrides = {
        "data": {"synthetic_train_size": 512, "synthetic_eval_size": 32, "goal_state_pairs": 64, "max_tokens_per_micro_batch": BUDGET},
        "train": {
            "zero_stage": 3,
            "max_steps": STEPS,
            "warmup_steps": 2,
            "eval_every": 2,
            "log_every": 1,
            "micro_batch_size": 8,
            "max_failures": max_failures,
        },
    }
    return load_config(None, overrides)


def _metrics(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _checkpoints(run_dir) -> list[str]:
    root = os.path.join(run_dir, RUN_NAME)
    return [os.path.join(root, d) for d in os.listdir(root) if d.startswith("checkpoint_") and os.path.isdir(os.path.join(root, d))]


def _kill_when_stopped(run_dir, pid_file, after_step):
    """Kill the worker that stopped at the fault once the controller has taken its reports up to AFTER_STEP."""

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            steps = [m["step"] for m in _metrics(run_dir)]
            if os.path.exists(pid_file) and steps and steps[-1] >= after_step:
                with open(pid_file) as f:
                    os.kill(json.load(f)["pid"], signal.SIGKILL)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _arm(monkeypatch, tmp_path, at, step):
    pid_file = str(tmp_path / f"stopped-{at}-{step}.pid")
    monkeypatch.setenv("GOALRM_FAULT", json.dumps({"at": at, "step": step, "rank": 1, "pid_file": pid_file}))
    return pid_file


def _assert_same_losses(got: list[dict], want: list[dict]):
    assert [m["step"] for m in got] == [m["step"] for m in want]
    for g, w in zip(got, want):
        for k in ("loss", "bt_loss", "contrastive_loss", "lr", "eval_accuracy", "eval_auroc"):
            if k in w:
                assert g[k] == pytest.approx(w[k], rel=RTOL), (g["step"], k)


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """The uninterrupted run."""
    from goalrm.train.trainer import train

    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    cfg = _config()
    train(cfg, run_dir)
    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert any(a != b for a, b in _cuts(cfg))  # ranks that disagree on their count, and still ran the same forwards
    return run_dir, metrics


def _cuts(cfg) -> list[list[int]]:
    """How many micro-batches each rank's pairs of each step fit the budget in, as the loop cuts them."""
    from goalrm.data.load import load_tokenized
    from goalrm.data.sampler import micro_batch_indices
    from goalrm.data.token_budget import by_length, split
    from goalrm.model import load_tokenizer

    pairs, _, _ = load_tokenized("synthetic", "train", cfg.data, load_tokenizer("tiny"))
    t = cfg.train
    return [
        [len(split(by_length([pairs[i] for i in micro_batch_indices(step, 0, rank, 2, len(pairs), t.micro_batch_size, 1, t.seed)]),
                   BUDGET, packed=False)) for rank in range(2)]
        for step in range(STEPS)
    ]


def test_killed_save_is_never_resumed_and_the_resume_continues_identically(reference, tmp_path, monkeypatch, capsys):
    from goalrm.cli import main

    run_dir = str(tmp_path / "run")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config().to_dict()))
    # rank 1 stops halfway through uploading the step-4 checkpoint; rank 0 has uploaded all of its part
    pid_file = _arm(monkeypatch, tmp_path, "upload", 4)
    killer = _kill_when_stopped(run_dir, pid_file, after_step=3)
    assert main(["train", "--config", str(config), "--output-dir", run_dir]) == 1
    killer.join()
    assert f"continue it with: goalrm train --resume {run_dir}" in capsys.readouterr().err
    assert [m["step"] for m in _metrics(run_dir)] == [1, 2, 3]
    ckpts = _checkpoints(run_dir)
    partial = [d for d in ckpts if not os.path.exists(os.path.join(d, COMPLETE))]
    assert len(ckpts) == 2 and len(partial) == 1  # step 2 complete, step 4 partial
    assert os.path.exists(os.path.join(partial[0], "rng_rank0.pt")) and not os.path.exists(os.path.join(partial[0], "rng_rank1.pt"))

    monkeypatch.delenv("GOALRM_FAULT")
    assert main(["train", "--resume", run_dir]) == 0
    resumed = _metrics(run_dir)[3:]
    # continued from the step-2 checkpoint, not from the partial step-4 one nor from scratch
    _assert_same_losses(resumed, reference[1][2:])
    assert os.path.exists(os.path.join(run_dir, "model", "model.safetensors"))


@pytest.mark.slow  # Ray Train's own restart; tests/test_two_nodes.py (slow too) also loses a node mid-run
def test_killed_worker_is_survived_from_the_last_checkpoint(reference, tmp_path, monkeypatch):
    from goalrm.train.trainer import train

    run_dir = str(tmp_path / "run")
    pid_file = _arm(monkeypatch, tmp_path, "step", 3)  # rank 1 stops after step 3; the last checkpoint is step 2's
    killer = _kill_when_stopped(run_dir, pid_file, after_step=3)
    train(_config(max_failures=1), run_dir)
    killer.join()
    assert os.path.exists(pid_file)  # the worker was killed, and the run finished by itself
    steps = [m["step"] for m in _metrics(run_dir)]
    assert steps == [1, 2, 3, 3, 4]  # restarted at the checkpoint, not at 0
    _assert_same_losses(_metrics(run_dir)[3:], reference[1][2:])


def test_export_consolidates_a_zero3_checkpoint_on_its_own(reference, tmp_path, capsys):
    from goalrm.cli import main

    run_dir = reference[0]
    # only the checkpoint folder travels to the "other machine"
    final = max(_checkpoints(run_dir), key=lambda d: json.load(open(os.path.join(d, COMPLETE)))["step"])
    moved = str(tmp_path / "elsewhere" / "ckpt")
    shutil.copytree(final, moved, ignore=shutil.ignore_patterns("model"))
    out = str(tmp_path / "export")
    assert main(["export", "--checkpoint", moved, "--output", out]) == 0

    want, got = os.path.join(run_dir, "model"), out
    w, g = load_file(os.path.join(want, "model.safetensors")), load_file(os.path.join(got, "model.safetensors"))
    assert w.keys() == g.keys()
    for k in w:
        assert torch.equal(w[k], g[k]), k
    goal_w, goal_g = load_file(os.path.join(want, "goal_state.safetensors")), load_file(os.path.join(got, "goal_state.safetensors"))
    torch.testing.assert_close(goal_g["goal"], goal_w["goal"], rtol=1e-4, atol=1e-5)
    meta_w, meta_g = json.load(open(os.path.join(want, "goalrm.json"))), json.load(open(os.path.join(got, "goalrm.json")))
    assert meta_g["heads"] == meta_w["heads"]
    assert meta_g["reward_mean"] == pytest.approx(meta_w["reward_mean"], rel=1e-4, abs=1e-6)
    assert meta_g["reward_std"] == pytest.approx(meta_w["reward_std"], rel=1e-4)

    # a run folder exports its newest complete checkpoint; an incomplete one is refused
    assert main(["export", "--checkpoint", run_dir, "--output", str(tmp_path / "export2")]) == 0
    assert f"exported {final} " in capsys.readouterr().out
    os.remove(os.path.join(moved, COMPLETE))
    assert main(["export", "--checkpoint", moved, "--output", str(tmp_path / "export3")]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err
