"""goalrm's DeepSpeed config, offload switches and the user JSON merge (no Ray, no DeepSpeed run)."""

import json

import pytest

from goalrm.cli import main
from goalrm.config import ConfigError, load_config
from goalrm.train.deepspeed_config import deepspeed_config


def _train_cfg(tmp_path, user=None, **train):
    if user is not None:
        path = tmp_path / "ds.json"
        path.write_text(user if isinstance(user, str) else json.dumps(user))
        train["deepspeed_config"] = str(path)
    return load_config(None, {"train": train}).train


def test_derived_from_goalrm_config(tmp_path):
    t = _train_cfg(tmp_path, zero_stage=3, micro_batch_size=4, grad_accum=2, lr=3e-4, precision="bf16")
    ds = deepspeed_config(t, world_size=2)
    assert ds["train_batch_size"] == 16 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["zero_optimization"] == {"stage": 3} and ds["bf16"] == {"enabled": True}
    # torch AdamW, no compiled op, when nothing is offloaded
    assert ds["optimizer"] == {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0, "torch_adam": True, "fused": True}}


@pytest.mark.parametrize("stage, params", [(2, False), (3, False), (3, True)])
def test_offload_sets_deepspeed_cpu_adam(tmp_path, stage, params):
    ds = deepspeed_config(_train_cfg(tmp_path, zero_stage=stage, offload_optimizer=True, offload_params=params), 2)
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert ("offload_param" in ds["zero_optimization"]) is params
    assert ds["optimizer"]["params"]["torch_adam"] is False  # DeepSpeed then builds DeepSpeedCPUAdam
    assert "fused" not in ds["optimizer"]["params"]


def test_user_json_merges_and_can_turn_on_offload(tmp_path):
    user = {
        "train_micro_batch_size_per_gpu": 8,  # same as goalrm: fine
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True}, "stage3_max_live_parameters": 1000},
        "steps_per_print": 5,
    }
    ds = deepspeed_config(_train_cfg(tmp_path, user, zero_stage=3, micro_batch_size=8), 2)
    assert ds["gradient_accumulation_steps"] == 1
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True}, "stage3_max_live_parameters": 1000}
    assert ds["steps_per_print"] == 5  # a goalrm default, not a goalrm setting
    assert ds["optimizer"]["params"]["torch_adam"] is False  # offload via the JSON needs DeepSpeedCPUAdam too


def test_user_json_conflicts_name_every_key(tmp_path):
    user = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}, "optimizer": {"type": "Adam"}}
    t = _train_cfg(tmp_path, user, zero_stage=3, micro_batch_size=8)
    with pytest.raises(ConfigError) as e:
        deepspeed_config(t, 2)
    msg = str(e.value)
    assert "ds.json" in msg
    for part in (
        "train_micro_batch_size_per_gpu: user 4 != goalrm 8",
        "zero_optimization.stage: user 2 != goalrm 3",
        "bf16.enabled: user True != goalrm False",
        "optimizer: set by goalrm from train.lr and train.weight_decay",
    ):
        assert part in msg


@pytest.mark.parametrize(
    "user, match",
    [("{not json", r"ds\.json:1: invalid JSON"), ("[1, 2]", "top level must be a mapping")],
)
def test_bad_user_json(tmp_path, user, match):
    with pytest.raises(ConfigError, match=match):
        deepspeed_config(_train_cfg(tmp_path, user), 2)


def test_conflicting_json_fails_in_the_cli_before_ray(tmp_path, capsys):
    (tmp_path / "ds.json").write_text('{"gradient_clipping": 0.5}')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  deepspeed_config: {tmp_path / 'ds.json'}\n")
    assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "goalrm: error: train.deepspeed_config" in err and "gradient_clipping: user 0.5 != goalrm 1.0" in err
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_user_json_fails_in_the_cli(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  deepspeed_config: /nonexistent/ds.json\n")
    assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    assert "cannot read train.deepspeed_config /nonexistent/ds.json" in capsys.readouterr().err
