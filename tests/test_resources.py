"""Worker resources: one place for train and tune, and an impossible request refused before Ray starts."""

import os
import subprocess
import sys

import pytest

from goalrm.config import ConfigError, load_config
from goalrm.train.resources import check_local_capacity


def _train(**train):
    return load_config(None, {"train": train}).train


def test_worker_resources_default_and_override():
    assert _train().worker_resources() == {"CPU": 1.0}
    assert _train(use_gpu=True).worker_resources() == {"CPU": 1.0, "GPU": 1.0}
    t = _train(use_gpu=True, resources_per_worker={"CPU": 8, "accelerator_type:H100": 0.001})
    assert t.worker_resources() == {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 0.001}


@pytest.mark.parametrize(
    "train, needle",
    [
        ({"resources_per_worker": {"GPU": 1}}, "set train.use_gpu: true"),
        ({"use_gpu": True, "resources_per_worker": {"GPU": 0}}, "GPU is 0"),
        ({"resources_per_worker": {"CPU": -1}}, "resources_per_worker.CPU must be >= 0"),
        ({"resources_per_worker": {"CPU": "all"}}, "resources_per_worker.CPU: expected a number"),
        ({"resources_per_worker": [1]}, "resources_per_worker: expected a mapping"),
    ],
)
def test_bad_resources_are_named(train, needle):
    with pytest.raises(ConfigError, match=needle):
        _train(**train)


@pytest.fixture
def no_gpu_machine(monkeypatch):
    """What the local Ray would offer on a 2-CPU machine without GPUs."""
    monkeypatch.setattr("goalrm.train.resources.local_capacity", lambda: {"CPU": 2.0, "GPU": 0.0})


def test_use_gpu_without_a_gpu_names_the_real_cause(no_gpu_machine, tmp_path):
    with pytest.raises(ConfigError, match=r"train.use_gpu: true, but this machine has no GPU"):
        check_local_capacity(2, {"CPU": 1, "GPU": 1})
    # the command, in a process of its own on a machine that shows no GPU: refused before any Ray starts
    (tmp_path / "gpu.yaml").write_text("train:\n  use_gpu: true\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GOALRM_RAY_TMP": str(tmp_path / "ray")}
    cmd = [sys.executable, "-m", "goalrm.cli", "train", "--config", str(tmp_path / "gpu.yaml"), "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "this machine has no GPU" in done.stderr and "storage" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "ray").exists()  # no output dir claimed, no Ray started


def test_more_cpus_or_a_custom_resource_than_the_machine_has(no_gpu_machine):
    with pytest.raises(ConfigError, match=r"needs 4 CPU \(2 workers x 2\) but the local Ray has 2"):
        check_local_capacity(2, {"CPU": 2})
    with pytest.raises(ConfigError, match=r"one trial needs 2.5 CPU \(2 workers x 1 \+ 0.5 for the trial's own process\)"):
        check_local_capacity(2, {"CPU": 1}, {"CPU": 0.5}, what="one trial")
    with pytest.raises(ConfigError, match=r"resources_per_worker.tpu: the local Ray has no resource 'tpu'"):
        check_local_capacity(1, {"CPU": 1, "tpu": 1})
    check_local_capacity(2, {"CPU": 1}, {"CPU": 0, "memory": 2**28})  # fits: a trial's process asks for memory only
