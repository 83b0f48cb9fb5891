import pytest

from goalrm.config import ConfigError, load_config


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_embedded_demo_config_loads():
    cfg = load_config(None)
    assert cfg.model.name_or_path == "tiny"
    assert cfg.train.num_workers == 2 and cfg.train.zero_stage == 2
    assert cfg.data.train == "synthetic"


def test_yaml_values_and_scientific_notation(tmp_path):
    cfg = load_config(_write(tmp_path, "train:\n  lr: 3e-5\n  zero_stage: 3\nloss:\n  contrastive_weight: 0\n  sampling:\n    strategy: late\n    late_fraction: 0.3\n"))
    assert cfg.train.lr == 3e-5 and cfg.train.zero_stage == 3
    assert cfg.loss.contrastive_weight == 0.0
    assert cfg.loss.sampling.strategy == "late" and cfg.loss.sampling.late_fraction == 0.3
    assert cfg.train.global_batch_size == cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.train.num_workers


@pytest.mark.parametrize(
    "text, match",
    [
        ("train:\n  lrr: 1\n", r"c\.yaml: train: unknown key\(s\) 'lrr'"),
        ("train:\n  zero_stage: 4\n", "zero_stage must be 0, 1, 2 or 3"),
        ("train:\n  max_failures: -2\n", r"train\.max_failures must be >= -1"),
        ("train:\n  max_steps: ten\n", r"train\.max_steps: expected an integer"),
        ("loss:\n  form: magic\n", "form"),
        ("loss:\n  sampling:\n    strategy: early\n", "strategy"),
        ("model:\n  head: conv\n", "head"),
        ("data:\n  on_bad_row: ignore\n", "on_bad_row"),
        ("train:\n  zero_stage: 2\n  offload_params: true\n", "offload_params needs train.zero_stage 3, got 2"),
        ("train:\n  zero_stage: 0\n  offload_optimizer: true\n", "offload_optimizer needs train.zero_stage 1, 2 or 3"),
        ("model:\n  lora:\n    rank: 0\n", "model.lora needs rank >= 1"),
        ("model:\n  lora:\n    target_modules: q_proj\n", r"model\.lora\.target_modules: expected a list"),
        ("model:\n  lora:\n    target_modules: [q_proj, 3]\n", r"model\.lora\.target_modules\[1\]: expected a string"),
        ("model:\n  lora:\n    rnk: 4\n", r"model\.lora: unknown key\(s\) 'rnk'"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("train: [\n", "invalid YAML"),
    ],
)
def test_bad_configs_fail_up_front_with_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_scale_options_load(tmp_path):
    cfg = load_config(_write(tmp_path, "model:\n  gradient_checkpointing: true\n  lora:\n    rank: 4\n    target_modules: [q_proj, v_proj]\ntrain:\n  zero_stage: 3\n  offload_optimizer: true\n  offload_params: true\n"))
    assert cfg.model.gradient_checkpointing and cfg.model.lora.rank == 4 and cfg.model.lora.alpha == 16.0
    assert cfg.model.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.train.offload_optimizer and cfg.train.offload_params
    assert load_config(None).model.lora is None  # off by default


def test_missing_config_file():
    with pytest.raises(ConfigError, match="cannot read config /nonexistent.yaml"):
        load_config("/nonexistent.yaml")


def test_memory_example_config_loads():
    from importlib import resources

    from goalrm.train.deepspeed_config import deepspeed_config

    cfg = load_config(str(resources.files("goalrm.configs").joinpath("memory_example.yaml")))
    assert cfg.train.offload_params and cfg.model.gradient_checkpointing and cfg.model.lora.save_adapter
    assert deepspeed_config(cfg.train, cfg.train.num_workers)["zero_optimization"]["offload_param"] == {"device": "cpu"}
