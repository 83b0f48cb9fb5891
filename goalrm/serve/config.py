"""The serve config: one dataclass, loaded from YAML and checked before Ray starts. No Ray.

`--config` takes either a flat mapping of these keys or a Ray Serve config file (as
`serve_configs/reward.yaml`), whose goalrm application's `args` are these keys."""

import functools
from dataclasses import dataclass, field

import yaml

from goalrm import attention
from goalrm.config import ConfigError, dataclass_from_dict

IMPORT_PATH = "goalrm.serve.app:build_app"
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ServeConfig:
    model: str = ""  # an export folder (OUTPUT_DIR/model) or an HF sequence-classification folder
    goal: str | None = None  # safetensors with tensor "goal"; default: the export's goal state, if any
    dtype: str = "float32"
    # dynamic batching: a batch closes at this many real tokens or after the wait, then runs as
    # length-sorted micro-batches of at most micro_batch_tokens token slots (a longer sequence runs alone)
    max_batch_tokens: int = 8192
    batch_wait_timeout_s: float = 0.01
    micro_batch_tokens: int = 2048  # the forward size the hardware runs best: 1-2k measured on a 2-core CPU; far more on a GPU
    # as `goalrm score --attn-implementation`; auto packs each micro-batch padding-free with a kernel that
    # needs no compile (goalrm/serve/model.py), so that slots are real tokens
    attn_implementation: str = "auto"
    # limits per request: over them the answer is 413, or truncation (reported) for tokens when `truncate`
    max_items_per_request: int = 64
    max_tokens_per_item: int = 1024
    truncate: bool = False
    max_request_bytes: int = 8 << 20
    min_prompt_tokens: int = 16  # truncation keeps this many prompt tokens, as `goalrm score` does
    threshold: float = 0.0  # /q_values default: a completion is dropped at its first Q-value below this
    # replicas: a fixed count, or Ray Serve's autoscaling_config (min_replicas, max_replicas, target_ongoing_requests)
    num_replicas: int | None = None
    autoscaling_config: dict | None = None
    # at least the requests that fill a batch (max_batch_tokens over a request's tokens), or batches never fill
    max_ongoing_requests: int = 128
    ray_actor_options: dict = field(default_factory=lambda: {"num_cpus": 1})  # num_gpus: 1 puts the model on CUDA
    torch_threads: int = 0  # 0: the replica's num_cpus
    api_key_file: str | None = None  # when set, every endpoint but /health wants `Authorization: Bearer <key>`

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("max_batch_tokens", "micro_batch_tokens", "max_items_per_request", "max_tokens_per_item", "max_request_bytes", "max_ongoing_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_wait_timeout_s", "min_prompt_tokens", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_tokens_per_item > self.max_batch_tokens:
            # Ray's batch queue fails any single item larger than the batch budget
            raise ValueError(f"max_tokens_per_item ({self.max_tokens_per_item}) must be <= max_batch_tokens ({self.max_batch_tokens})")
        if self.num_replicas is not None and self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.autoscaling_config is not None:
            if not isinstance(self.autoscaling_config, dict):
                raise ValueError(f"autoscaling_config must be a mapping, got {self.autoscaling_config!r}")
            if self.num_replicas is not None:
                raise ValueError("set num_replicas or autoscaling_config, not both")
        if not isinstance(self.ray_actor_options, dict):
            raise ValueError(f"ray_actor_options must be a mapping, got {self.ray_actor_options!r}")
        for name in ("num_cpus", "num_gpus"):
            value = self.ray_actor_options.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ray_actor_options.{name} must be a number >= 0, got {value!r}")
        try:
            attention.resolve(self.attn_implementation, self.device, packing=True, precision=self.precision, training=False)
        except ValueError as e:
            hints = {"model.attn_implementation": "attn_implementation", "train.use_gpu: true": "ray_actor_options: {num_gpus: 1}",
                     "train.precision: bf16": "dtype: bfloat16"}
            raise ValueError(functools.reduce(lambda text, kv: text.replace(*kv), hints.items(), str(e))) from None

    @property
    def device(self) -> str:
        return "cuda" if self.ray_actor_options.get("num_gpus", 0) > 0 else "cpu"

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == "bfloat16" else "fp32"

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.ray_actor_options.get("num_cpus", 1)))

    def deployment_options(self) -> dict:
        """What Ray Serve's `Deployment.options` takes from this config."""
        opts = {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": dict(self.ray_actor_options)}
        if self.autoscaling_config is not None:
            opts["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            opts["num_replicas"] = self.num_replicas or 1
        return opts


def serve_config_from_dict(data: dict, source: str = "serve config") -> ServeConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {data!r}")
    try:
        return dataclass_from_dict(ServeConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_serve_config(path: str | None, overrides: dict | None = None) -> ServeConfig:
    """PATH (None: the defaults), then the non-None OVERRIDES (the command line's flags)."""
    data = {}
    if path is not None:
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read serve config {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        data = _app_args(data, path) if isinstance(data, dict) and "applications" in data else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if not data.get("model"):
        raise ConfigError("no model: pass --model DIR (or set model in the serve config)")
    return serve_config_from_dict(data, path or "serve config")


def _app_args(data: dict, path: str) -> dict:
    """The `args` of the goalrm application in a Ray Serve config file."""
    apps = [a for a in data.get("applications") or [] if isinstance(a, dict) and a.get("import_path") == IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"{path}: a Ray Serve config needs exactly one application with import_path {IMPORT_PATH}, found {len(apps)}")
    return apps[0].get("args") or {}
