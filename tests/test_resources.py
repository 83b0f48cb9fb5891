"""Worker resources: one place for train and tune, and an impossible request refused before Ray starts."""

import pytest
import torch

from goalrm.cli import main
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
    import ray

    assert not ray.is_initialized()  # the check is about the machine, before any Ray starts
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)


def test_use_gpu_without_a_gpu_names_the_real_cause(no_gpu_machine, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"train.use_gpu: true, but this machine has no GPU"):
        check_local_capacity(2, {"CPU": 1, "GPU": 1})
    (tmp_path / "gpu.yaml").write_text("train:\n  use_gpu: true\n")
    assert main(["train", "--config", str(tmp_path / "gpu.yaml"), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "this machine has no GPU" in err and "storage" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the output dir is claimed


def test_more_cpus_or_a_custom_resource_than_the_machine_has(no_gpu_machine):
    with pytest.raises(ConfigError, match=r"needs 4 CPU \(2 workers x 2\) but the local Ray has 2"):
        check_local_capacity(2, {"CPU": 2})
    with pytest.raises(ConfigError, match=r"one trial needs 2.5 CPU \(2 workers x 1 \+ 0.5 for the trial's own process\)"):
        check_local_capacity(2, {"CPU": 1}, {"CPU": 0.5}, what="one trial")
    with pytest.raises(ConfigError, match=r"resources_per_worker.tpu: the local Ray has no resource 'tpu'"):
        check_local_capacity(1, {"CPU": 1, "tpu": 1})
    check_local_capacity(2, {"CPU": 1}, {"CPU": 0, "memory": 2**28})  # fits: a trial's process asks for memory only
