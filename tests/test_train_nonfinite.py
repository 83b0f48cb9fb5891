"""A NaN loss stops `goalrm train`: exit code 1, the step and the losses named, no retry from a checkpoint
(Ray Train would retry a worker error max_failures times, on the same data, to the same NaN).

Slow tier: a `goalrm train` subprocess with its own Ray (35 s). In `make test`, tests/test_tune.py's
failing trial goes through the same non-finite check in the loop."""

import json
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_nan_loss_stops_the_run_once_with_its_step(tmp_path):
    cfg = {
        "data": {"synthetic_train_size": 256, "synthetic_eval_size": 16, "max_length": 128, "goal_state_pairs": 16},
        # an AdamW step of 1e38 overflows every weight: the loss of step 2 is NaN (bt and contrastive alike)
        "train": {"num_workers": 1, "zero_stage": 0, "lr": 1e38, "warmup_steps": 0, "max_steps": 6,
                  "micro_batch_size": 4, "log_every": 1, "eval_every": 6, "max_failures": 3},
    }
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "goalrm.cli", "train", "--config", str(tmp_path / "nan.yaml"), "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "goalrm: error: training stopped: non-finite loss nan at step 2 (bt nan, contrastive nan)" in done.stderr
    assert "Traceback" not in done.stderr
    reports = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in reports] == [1, 2]  # one attempt: a retry would report step 1 again
    assert "nonfinite_loss" in reports[-1] and not (tmp_path / "run" / "model").exists()
