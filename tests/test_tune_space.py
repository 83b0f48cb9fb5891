"""Sweep files: parsing, validation against the Config dataclasses, and the shipped spaces."""

import glob
import os

import numpy as np
import pytest

from goalrm.cli import main
from goalrm.config import ConfigError, load_config
from goalrm.tune.space import apply_values, load_space, parse_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = load_config(os.path.join(ROOT, "goalrm", "configs", "sweep.yaml")).to_dict()


def _parse(space, tune=None):
    return parse_space({"space": space, **({"tune": tune} if tune else {})}, BASE, "s.yaml")


def test_every_kind_becomes_a_ray_domain():
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = _parse(
        {
            "loss.contrastive_weight": {"grid": [0.0, 0.5]},
            "loss.sampling.goal": {"choice": ["single", "mean"]},
            "loss.sampling.late_fraction": {"uniform": [0.1, 0.9]},
            "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
            "loss.sampling.sim_samples": {"randint": [1, 9]},
            "train.micro_batch_size": {"qrandint": [8, 32, 8]},
        }
    )
    space = spec.param_space()
    assert space["loss.contrastive_weight"] == {"grid_search": [0.0, 0.5]}
    assert isinstance(space["loss.sampling.goal"], Categorical) and space["loss.sampling.goal"].categories == ["single", "mean"]
    lr = space["train.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1.0e-4, 1.0e-2)
    assert np.median(lr.sample(size=2000)) < 2e-3  # log-uniform: median near 1e-3, where uniform's is near 5e-3
    assert isinstance(space["loss.sampling.sim_samples"], Integer) and space["loss.sampling.sim_samples"].upper == 9
    draws = {space["train.micro_batch_size"].sample() for _ in range(50)}
    assert draws <= {8, 16, 24, 32} and len(draws) > 1
    assert spec.settings.metric == "eval_auroc" and spec.settings.scheduler == "asha"


@pytest.mark.parametrize(
    "space, needle",
    [
        ({"loss.contrastive_weigth": {"grid": [0.1]}}, "'loss.contrastive_weigth' is not a config key: loss has no 'contrastive_weigth'"),
        ({"los.contrastive_weight": {"grid": [0.1]}}, "top level has no 'los'"),
        ({"loss.sampling": {"grid": [1]}}, "'loss.sampling' is a section"),
        ({"train.lr.x": {"grid": [1]}}, "'train.lr' is a value, not a section"),
        ({"loss.sampling.strategy": {"grid": ["random", "latest"]}}, "'loss.sampling.strategy': value 'latest' gives an invalid config"),
        ({"loss.contrastive_weight": {"choice": [0.5, -1.0]}}, "contrastive_weight must be >= 0"),
        ({"train.max_steps": {"uniform": [10, 100]}}, "'train.max_steps' is int-valued: use grid, choice, randint or qrandint"),
        ({"loss.sampling.late_fraction": {"uniform": [0.0, 1.0]}}, "late_fraction must be in (0, 1]"),
        ({"loss.contrastive_weight": {"loguniform": [0.0, 1.0]}}, "low > 0 for loguniform"),
        ({"train.lr": {"loguniform": [0.0, 1.0]}}, "train.lr must be > 0"),
        ({"train.max_steps": {"randint": [10, 10]}}, "needs low < high"),
        ({"train.max_steps": {"randint": [1.5, 10]}}, "bounds must be integers"),
        ({"train.lr": {"uniform": [1.0e-3]}}, "uniform takes a list of 2 numbers"),
        ({"train.lr": {"grid": []}}, "grid takes a non-empty list of values"),
        ({"train.lr": {"normal": [0, 1]}}, "'train.lr': expected one of {grid: ..."),
        ({"train.lr": 1.0e-3}, "'train.lr': expected one of"),
        ({"train.use_gpu": {"grid": ["yes"]}}, "expected true or false"),
    ],
)
def test_bad_space_names_the_key(space, needle):
    with pytest.raises(ConfigError) as e:
        _parse(space)
    assert str(e.value).startswith("s.yaml: ") and needle in str(e.value), str(e.value)


def test_values_are_typed_as_the_config_holds_them():
    spec = parse_space({"space": {"train.lr": {"grid": ["1e-3", 2]}, "loss.contrastive_weight": {"uniform": ["1e-2", 1]}}}, BASE)
    assert spec.axes[0].args == (1e-3, 2.0) and spec.axes[1].args == (1e-2, 1.0)
    assert all(type(v) is float for a in spec.axes for v in a.args)


def test_last_value_of_randint_is_checked_not_its_exclusive_bound():
    _parse({"loss.sampling.sim_samples": {"randint": [1, 5]}})  # draws 1..4
    with pytest.raises(ConfigError, match="value 0 gives an invalid config"):
        _parse({"loss.sampling.sim_samples": {"randint": [0, 5]}})


@pytest.mark.parametrize(
    "tune, needle",
    [
        ({"mode": "maximize"}, "tune.mode must be 'max' or 'min'"),
        ({"scheduler": "pbt"}, "tune.scheduler must be one of"),
        ({"num_samples": 0}, "tune.num_samples must be >= 1"),
        ({"metrik": "x"}, "tune: unknown key(s) 'metrik'"),
        ({"trial_resources": {"CPU": 0}}, "Ray rejects {CPU: 0}"),
        ({"trial_resources": {"CPU": "one"}}, "tune.trial_resources must map resource names to numbers"),
        ({"worker_resources": {"CPU": 1}}, "unknown key(s) 'worker_resources'"),  # train.resources_per_worker now
        ({"search": "optuna"}, "Optuna cannot search a grid; use choice for loss.contrastive_weight"),
    ],
)
def test_bad_settings_are_named(tune, needle):
    with pytest.raises(ConfigError) as e:
        _parse({"loss.contrastive_weight": {"grid": [0.0, 0.5]}}, tune)
    assert needle in str(e.value), str(e.value)


def test_file_level_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  train.lr: {grid: [1.0e-3}\n")
    with pytest.raises(ConfigError, match=f"{bad}: invalid YAML"):
        load_space(str(bad), BASE)
    bad.write_text("spaces:\n  train.lr: {grid: [1.0e-3]}\n")
    with pytest.raises(ConfigError, match="only 'space' and 'tune'"):
        load_space(str(bad), BASE)
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        load_space(str(tmp_path / "missing.yaml"), BASE)


def test_overrides_replace_file_settings():
    spec = parse_space({"space": {"train.lr": {"choice": [1.0e-3]}}, "tune": {"num_samples": 2}}, BASE, overrides={"num_samples": 5, "scheduler": "fifo"})
    assert spec.settings.num_samples == 5 and spec.settings.scheduler == "fifo"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "tune_spaces", "*.yaml"))))
def test_shipped_spaces_are_valid_and_say_what_they_ask(path):
    first = open(path).readline()
    assert first.startswith("# ") and first.rstrip().endswith("?"), first
    for base in (BASE, load_config(None).to_dict()):
        spec = load_space(path, base)
        assert spec.axes


def test_shipped_spaces_cover_the_paper_knobs():
    keys = {a.key for p in glob.glob(os.path.join(ROOT, "tune_spaces", "*.yaml")) for a in load_space(p, BASE).axes}
    assert {"loss.contrastive_weight", "loss.sampling.goal", "loss.sampling.strategy", "loss.sampling.late_fraction",
            "loss.sampling.sim_samples", "model.head", "model.projection_dim"} <= keys
    lam = load_space(os.path.join(ROOT, "tune_spaces", "lambda.yaml"), BASE).axes
    assert [(a.key, a.kind, a.args) for a in lam] == [("loss.contrastive_weight", "grid", (0.0, 0.1, 0.5, 1.0))]


def test_apply_values_sets_nested_keys_and_unwraps_numpy():
    out = apply_values(BASE, {"loss.sampling.sim_samples": np.int64(6), "train.lr": np.float64(2e-3), "model.head": "mlp"})
    assert out["loss"]["sampling"]["sim_samples"] == 6 and type(out["loss"]["sampling"]["sim_samples"]) is int
    assert out["train"]["lr"] == 2e-3 and out["model"]["head"] == "mlp"
    assert out["loss"]["sampling"]["goal"] == BASE["loss"]["sampling"]["goal"]
    assert BASE["loss"]["sampling"]["sim_samples"] != 6  # the base is not modified


def test_cli_errors_stop_before_ray(tmp_path, capsys):
    assert main(["tune", "--resume", str(tmp_path)]) == 2
    assert "holds no sweep to resume" in capsys.readouterr().err
    space = tmp_path / "s.yaml"
    space.write_text("space:\n  loss.contrastive_weigth: {grid: [0.1]}\n")
    assert main(["tune", "--space", str(space), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("goalrm: error: ") and "'loss.contrastive_weigth' is not a config key" in err
    assert main(["tune", "--output-dir", str(tmp_path / "o")]) == 2
    assert "needs --space" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_optuna_suggests_valid_configs_from_a_shipped_space():
    from goalrm.config import config_from_dict
    from goalrm.tune.sweep import search_alg

    spec = load_space(os.path.join(ROOT, "tune_spaces", "full.yaml"), BASE, overrides={"search": "optuna"})
    searcher = search_alg(spec.settings, max_concurrent=2)
    assert searcher.set_search_properties("eval_auroc", "max", spec.param_space())
    suggested = [searcher.suggest(f"t{i}") for i in range(2)]
    assert searcher.suggest("t2") is None  # at most 2 trials at once
    for values in suggested:
        assert set(values) == {a.key for a in spec.axes}
        cfg = config_from_dict(apply_values(BASE, values))
        assert 1e-4 <= cfg.train.lr <= 3e-3 and cfg.loss.sampling.sim_samples % 2 == 0
    assert suggested[0] != suggested[1]
