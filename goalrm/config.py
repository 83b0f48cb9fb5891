"""One typed config: dataclasses loaded from YAML and validated up front."""

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources

import yaml

from goalrm import attention, backbones
from goalrm.lora import LoraSettings
from goalrm.losses import LossConfig
from goalrm.model import HeadConfig
from goalrm.sampling import SamplingConfig

SYNTHETIC = "synthetic"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "tiny"  # "tiny", "smollm2-135m", a local HF folder, or a hub id
    head: str = "linear"  # "linear": exports as a plain AutoModelForSequenceClassification | "mlp"
    mlp_hidden: int = 0  # the MLP head's width; 0 = the backbone's hidden size
    projection_dim: int = 0  # > 0: h_t passes through a projection head of this size (contrastive term, Q-values)
    trust_remote_code: bool = False  # run a hub model's own code; off unless set
    gradient_checkpointing: bool = False  # recompute activations in backward (non-reentrant)
    lora: LoraSettings | None = None  # None: full fine-tune
    # auto | sdpa | sdpa_varlen | flex_attention | flash_attention_2 | eager (goalrm/attention.py); auto:
    # sdpa, or with data.packing the varlen kernel for the device (CPU: sdpa_varlen; GPU: FlashAttention-2
    # when installed and bf16, else flex_attention)
    attn_implementation: str = "auto"

    def __post_init__(self):
        self.heads()  # validates
        backbones.check(self.name_or_path)  # a missing package fails here, not in every worker
        if self.attn_implementation not in attention.IMPLEMENTATIONS:
            raise ValueError(f"model.attn_implementation must be one of {', '.join(attention.IMPLEMENTATIONS)}, got {self.attn_implementation!r}")

    def heads(self) -> HeadConfig:
        return HeadConfig(head=self.head, mlp_hidden=self.mlp_hidden, projection_dim=self.projection_dim)


@dataclass(frozen=True)
class DataConfig:
    train: str = SYNTHETIC  # JSONL/Parquet: a file, folder, glob or URI (s3://, gs://, ...); or "synthetic"
    eval: str = SYNTHETIC  # the same; always read into memory
    loader: str = "auto"  # "memory" | "ray_data" (streamed) | "auto": by the train data's size
    group_by_length: bool = True  # batches of similar-length pairs, to cut padding (both loaders)
    group_window: int = 16  # ray_data: micro-batches shuffled and length-sorted together
    packing: bool = False  # padding-free micro-batches (goalrm/data/pack.py); the backbone must read boundaries from position_ids
    # > 0: each rank's pairs of a step (still train.micro_batch_size x train.grad_accum of them) are cut, in
    # length order, into as few forwards as fit this many token slots (padded, or packed); 0: train.grad_accum
    # forwards of train.micro_batch_size pairs (goalrm/data/token_budget.py)
    max_tokens_per_micro_batch: int = 0
    synthetic_train_size: int = 4000  # pairs generated when train is "synthetic"
    synthetic_eval_size: int = 256  # pairs generated when eval is "synthetic" (a disjoint split)
    synthetic_seed: int = 0  # the synthetic data's seed (train.seed is the model's and the order's)
    synthetic_task: str = "chains"  # "chains" | "long_chains" (goalrm/data/synthetic.py)
    max_length: int = 256  # tokens of prompt + completion; the prompt is cut from the left first
    min_prompt_tokens: int = 16  # prompt tokens kept when cutting to max_length
    on_bad_row: str = "error"  # "error" | "skip" (counted and logged)
    goal_state_pairs: int = 2048  # training pairs averaged for the exported goal state; 0 = all

    def __post_init__(self):
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"data.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if self.loader not in ("auto", "memory", "ray_data"):
            raise ValueError(f"data.loader must be 'auto', 'memory' or 'ray_data', got {self.loader!r}")
        if self.loader == "ray_data" and self.train == SYNTHETIC:
            raise ValueError("data.loader: ray_data streams files; data.train is 'synthetic'")
        if self.group_window < 1:
            raise ValueError("data.group_window must be >= 1")
        if self.max_length < 4:
            raise ValueError("data.max_length must be >= 4")
        if self.max_tokens_per_micro_batch and self.max_tokens_per_micro_batch < 2 * self.max_length:
            raise ValueError(
                f"data.max_tokens_per_micro_batch must be 0 (off) or >= 2 x data.max_length = {2 * self.max_length}, "
                f"the slots of the longest pair; got {self.max_tokens_per_micro_batch}"
            )
        if self.synthetic_task not in ("chains", "long_chains"):
            raise ValueError(f"data.synthetic_task must be 'chains' or 'long_chains', got {self.synthetic_task!r}")
        if self.synthetic_train_size < 1 or self.synthetic_eval_size < 1:
            raise ValueError("data.synthetic_train_size and data.synthetic_eval_size must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    num_workers: int = 2  # Ray Train workers (data-parallel ranks)
    use_gpu: bool = False  # one GPU per worker (NCCL); refused before Ray starts on a machine without one
    zero_stage: int = 2  # DeepSpeed ZeRO stage, 0-3
    precision: str = "fp32"  # "fp32" | "bf16"
    lr: float = 1e-5  # AdamW's peak learning rate
    weight_decay: float = 0.0  # AdamW's
    warmup_steps: int = 0  # linear warmup, then cosine decay to 0 at max_steps
    max_steps: int = 100  # optimizer steps of the run
    micro_batch_size: int = 8  # pairs per worker per micro-step
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # gradient clipping
    log_every: int = 10  # steps between report lines
    eval_every: int = 50  # steps between held-out evaluations (and the last step)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at every eval (the last step always checkpoints)
    eval_batch_size: int = 32  # pairs per forward in evaluation and for the export's goal state
    seed: int = 0  # initial weights, pair order and contrastive sampling
    max_failures: int = 3  # worker-group restarts from the last checkpoint; -1: unlimited
    storage_path: str = ""  # Ray Train checkpoints: "" = OUTPUT_DIR; a cloud URI or shared filesystem for multi-node
    offload_optimizer: bool = False  # optimizer state and step on the CPU (DeepSpeedCPUAdam); ZeRO 1-3
    offload_params: bool = False  # parameters on the CPU between uses; ZeRO-3 only
    deepspeed_config: str = ""  # a DeepSpeed JSON merged into goalrm's; conflicting keys are an error
    # Ray resources of one training worker, e.g. {CPU: 8, GPU: 1, accelerator_type:H100: 0.001};
    # {} = {CPU: 1}, plus {GPU: 1} with use_gpu. `goalrm train` and `goalrm tune` both ask for this.
    resources_per_worker: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for name, amount in self.resources_per_worker.items():
            if amount < 0:
                raise ValueError(f"train.resources_per_worker.{name} must be >= 0, got {amount}")
        gpus = self.resources_per_worker.get("GPU", 0)
        if self.use_gpu and "GPU" in self.resources_per_worker and gpus <= 0:
            raise ValueError("train.use_gpu is true but train.resources_per_worker.GPU is 0")
        if gpus > 0 and not self.use_gpu:
            raise ValueError("train.resources_per_worker asks for a GPU: set train.use_gpu: true as well")
        if self.max_failures < -1:
            raise ValueError(f"train.max_failures must be >= -1 (-1: unlimited), got {self.max_failures}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("train.offload_optimizer needs train.zero_stage 1, 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"train.offload_params needs train.zero_stage 3, got {self.zero_stage}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"train.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("num_workers", "max_steps", "micro_batch_size", "grad_accum", "log_every", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if self.checkpoint_every < 0:
            raise ValueError(f"train.checkpoint_every must be >= 0 (0: at every eval), got {self.checkpoint_every}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError("train.lr must be > 0 and 0 <= train.warmup_steps <= train.max_steps")

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.num_workers

    def worker_resources(self) -> dict[str, float]:
        """What one training worker asks Ray for."""
        default = {"CPU": 1.0, **({"GPU": 1.0} if self.use_gpu else {})}
        return {**default, **self.resources_per_worker} if self.resources_per_worker else default

    def is_checkpoint_step(self, step: int) -> bool:
        """Steps counted from 1; the last one always checkpoints, since it carries the export."""
        every = self.checkpoint_every or self.eval_every
        return step % every == 0 or step == self.max_steps

    def is_eval_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.max_steps


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.attention()  # the implementation fits the device and precision

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def attention(self) -> str:
        """model.attn_implementation resolved for the training workers' device (goalrm/attention.py)."""
        return attention.resolve(
            self.model.attn_implementation, "cuda" if self.train.use_gpu else "cpu", self.data.packing, self.train.precision
        )

    def with_absolute_paths(self) -> "Config":
        """Ray workers and Tune trials run in other directories: data files and a local model folder given
        relative to the caller's directory become absolute. Hub ids, URIs and "synthetic" stay as they are."""

        def data(path: str) -> str:
            return path if path == SYNTHETIC or "://" in path else os.path.abspath(os.path.expanduser(path))

        model = self.model.name_or_path
        model = os.path.abspath(model) if os.path.isdir(model) else model
        return dataclasses.replace(
            self,
            model=dataclasses.replace(self.model, name_or_path=model),
            data=dataclasses.replace(self.data, train=data(self.data.train), eval=data(self.data.eval)),
        )


@dataclass(frozen=True)
class ScoreConfig:
    """`goalrm score`; the names are its flags'."""

    model: str  # an exported model folder (OUTPUT_DIR/model)
    input: str  # JSONL/Parquet file, folder, glob or URI
    output: str  # folder for scored/, rejects/, done/, summary.json
    threshold: float = 0.0  # a completion is dropped at its first Q-value below this
    goal: str | None = None  # safetensors with tensor "goal"; default: the model's goal_state.safetensors
    batch_size: int = 256  # at most this many sequences per forward pass, taken in length order
    max_tokens: int = 16384  # at most this many token slots per forward (packed: tokens; padded: rows x the longest)
    attn_implementation: str = "auto"  # as model.attn_implementation; auto: the packed choice for the scorers' device
    num_scorers: int = 1  # actors, one model each
    gpus_per_scorer: float = 0.0  # GPUs per scorer actor (the model runs on cuda when > 0)
    cpus_per_scorer: float = 0.0  # 0: share the node's CPUs, leaving half a CPU for Ray Data
    threads_per_scorer: int = 0  # torch threads; 0: the node's CPUs over the scorers
    block_rows: int = 2000  # rows per block: the unit of output files, of resuming and of the pipeline's overlap
    max_length: int = 1024  # tokens of prompt + completion
    min_prompt_tokens: int = 16  # prompt tokens kept when cutting to max_length
    dtype: str = "float32"  # float32 | bfloat16
    group_col: str | None = None
    answer_col: str | None = None
    label_col: str | None = None

    def __post_init__(self):
        for name in ("batch_size", "max_tokens", "num_scorers", "block_rows", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        try:
            attention.resolve(self.attn_implementation, "cuda" if self.gpus_per_scorer else "cpu", packing=True,
                              precision="bf16" if self.dtype == "bfloat16" else "fp32", training=False)
        except ValueError as e:
            raise ConfigError(str(e).replace("model.attn_implementation", "--attn-implementation")) from None
        for name in ("gpus_per_scorer", "cpus_per_scorer", "threads_per_scorer", "min_prompt_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
        if (self.group_col is None) != (self.answer_col is None) or (self.label_col and not self.group_col):
            raise ConfigError("--group-col and --answer-col go together (and --label-col needs them)")


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is dict:  # dict[str, float], e.g. resources from a YAML mapping
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, f"{where} key"): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:  # tuple[str, ...] from a YAML list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `3e-5` as a string
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'top level'}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'top level'}: {e}") from None


def dataclass_from_dict(cls, data: dict, where: str = ""):
    """Build any frozen config dataclass (e.g. a sweep's settings) with the same checks as Config."""
    return _build(cls, data, where)


def config_from_dict(data: dict, source: str = "config") -> Config:
    try:
        return _build(Config, data or {})
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def read_mapping(path: str, what: str, text: str | None = None, fmt: str = "yaml") -> dict:
    """The top-level mapping of the YAML or JSON (FMT) file PATH, or of TEXT read from it, for WHAT (a
    config, a sweep file, train.deepspeed_config): a ConfigError names the file, line and cause."""
    if text is None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{what} {path}:{e.lineno}: invalid JSON: {e.msg}") from None
    else:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{what} {path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: the top level must be a mapping")
    return data


def load_config(path: str | None = None, overrides: dict | None = None) -> Config:
    """Load a YAML config (None: the embedded demo config), with optional nested overrides."""
    if path is None:
        path, text = "demo.yaml", resources.files("goalrm.configs").joinpath("demo.yaml").read_text()
        data = read_mapping(path, "config", text)
    else:
        data = read_mapping(path, "config")
    return config_from_dict(_merge(data, overrides or {}), path)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


__all__ = ["Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "SamplingConfig", "ScoreConfig", "TrainConfig", "load_config"]
