"""cluster.yaml passes the validation `ray up` runs before it touches a cloud."""

import copy
import os

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_validates_like_ray_up():
    config = prepare_config(_load())  # the first steps of `ray up`'s _bootstrap_config
    validate_config(config)
    assert config["head_node_type"] == "head"
    assert config["available_node_types"]["gpu_8x"]["resources"]["GPU"] == 8
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start


def test_validator_rejects_a_broken_config():
    broken = copy.deepcopy(_load())
    broken["available_node_types"]["gpu_8x"]["min_wokers"] = 1  # typo: the schema allows no extra keys
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
