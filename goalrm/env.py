"""Predictable cache locations, outside the source tree, set before Ray, torch or HF start."""

import os


def cache_root() -> str:
    return os.environ.get("GOALRM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "goalrm"))


def setup_environment() -> None:
    root = cache_root()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(root, "torch_extensions"))
    os.environ.setdefault("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")
    # Ray Train would route every print of a worker through its logger, past contextlib.redirect_stdout
    # (goalrm.console.quiet_stdout) and once more to the console
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def ray_temp_dir() -> str:
    # Ray's socket paths must stay under ~107 characters, so keep this short.
    return os.environ.get("GOALRM_RAY_TMP", "/tmp/goalrm-ray")
