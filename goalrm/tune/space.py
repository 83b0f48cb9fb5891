"""A sweep file: `space:` maps dotted config keys to distributions, `tune:` holds the sweep's settings.

    # one line on what the sweep asks
    space:
      loss.contrastive_weight: {grid: [0.0, 0.1, 0.5, 1.0]}
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
    tune:
      metric: eval_auroc

Every key and every value a trial can get is checked against the Config dataclasses before Ray starts.
"""

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, field

from goalrm.config import Config, ConfigError, config_from_dict, dataclass_from_dict, read_mapping

# kind -> number of arguments (None: a list of values)
KINDS = {"grid": None, "choice": None, "uniform": 2, "loguniform": 2, "randint": 2, "qrandint": 3}
SCHEDULERS = ("asha", "fifo")
SEARCHES = ("random", "optuna")


@dataclass(frozen=True)
class TuneSettings:
    metric: str = "eval_auroc"  # any eval report key: eval_accuracy, eval_auroc, eval_q_gap, eval_prefix_auroc_0.5, ...
    mode: str = "max"  # "max" | "min"
    scheduler: str = "asha"  # "asha": stop weak trials early | "fifo": every trial runs to train.max_steps
    grace_period: int = 0  # ASHA: steps a trial always gets; 0 = train.eval_every (its first eval)
    reduction_factor: float = 2.0  # ASHA: keep the best 1/reduction_factor at each rung
    search: str = "random"  # "random": grid axes crossed, the rest drawn at random | "optuna" (needs optuna)
    num_samples: int = 1  # draws per grid point (random), or trials in all (optuna)
    max_concurrent_trials: int = 0  # 0 = as many as the cluster's CPUs/GPUs fit at once
    seed: int = 0  # for the random draws and Optuna's sampler
    # the trial's own process, which only waits on its TorchTrainer: memory alone, so that its workers
    # (train.resources_per_worker) get every CPU; Ray refuses a bundle of nothing
    trial_resources: dict = field(default_factory=lambda: {"CPU": 0, "memory": 2**28})

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"tune.mode must be 'max' or 'min', got {self.mode!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"tune.scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.search not in SEARCHES:
            raise ValueError(f"tune.search must be one of {SEARCHES}, got {self.search!r}")
        if self.grace_period < 0 or self.reduction_factor <= 1:
            raise ValueError("tune.grace_period must be >= 0 and tune.reduction_factor > 1")
        if self.num_samples < 1 or self.max_concurrent_trials < 0:
            raise ValueError("tune.num_samples must be >= 1 and tune.max_concurrent_trials >= 0")
        res = self.trial_resources
        if not isinstance(res, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in res.values()):
            raise ValueError(f"tune.trial_resources must map resource names to numbers >= 0, e.g. {{CPU: 0.01}}, got {res!r}")
        if not any(res.values()):
            raise ValueError("tune.trial_resources must ask for something (Ray rejects {CPU: 0}); e.g. {memory: 268435456}")


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config key, e.g. "loss.sampling.goal"
    kind: str  # one of KINDS
    args: tuple  # the values (grid, choice) or the bounds (and step)

    def to_tune(self):
        from ray import tune

        if self.kind in ("grid", "choice"):
            return (tune.grid_search if self.kind == "grid" else tune.choice)(list(self.args))
        return getattr(tune, self.kind)(*self.args)


@dataclass(frozen=True)
class SweepSpec:
    axes: tuple[Axis, ...]
    settings: TuneSettings
    source: str = "sweep"

    def param_space(self) -> dict:
        return {a.key: a.to_tune() for a in self.axes}

    def total_trials(self) -> int:
        """Trials the sweep runs when it completes: num_samples of the grid axes crossed (Ray's variant
        generator), or num_samples (Optuna, which takes no grid)."""
        return self.settings.num_samples * math.prod(len(a.args) for a in self.axes if a.kind == "grid")


def set_key(data: dict, key: str, value) -> dict:
    """A copy of nested `data` with dotted `key` set to `value`."""
    head, _, rest = key.partition(".")
    out = dict(data)
    out[head] = set_key(out.get(head) or {}, rest, value) if rest else value
    return out


def apply_values(base: dict, values: dict) -> dict:
    """The config dict of one trial: `base` with each swept dotted key set."""
    for key, value in values.items():
        base = set_key(base, key, value.item() if hasattr(value, "item") else value)  # numpy scalars from Ray
    return base


def _field_type(key: str):
    """The type of the config leaf at dotted `key`, or ConfigError naming the first unknown part."""
    cls, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        where = ".".join(parts[:i]) or "top level"
        if part not in names:
            raise ConfigError(f"'{key}' is not a config key: {where} has no '{part}'; known: {', '.join(names)}")
        tp = hints[part]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args and typing.get_origin(tp) is not None else tp
        if i + 1 < len(parts):
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"'{key}' is not a config key: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            cls = tp
        elif dataclasses.is_dataclass(tp):
            raise ConfigError(f"'{key}' is a section; sweep one of its keys: {', '.join(f.name for f in dataclasses.fields(tp))}")
    return tp


def _typed(key: str, value, base: dict):
    """`value` as the config holds it at `key` (YAML 1.1 reads 1e-4 as a string); ConfigError if invalid."""
    try:
        obj = config_from_dict(set_key(base, key, value), "trial")
    except ConfigError as e:
        raise ConfigError(f"'{key}': value {value!r} gives an invalid config: {e}") from None
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _parse_axis(key: str, spec, base: dict) -> Axis:
    """One `space:` entry; every value a trial can get must make a valid config (ranges: both ends)."""
    tp = _field_type(key)
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"'{key}': expected one of {{{', '.join(f'{k}: ...' for k in KINDS)}}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    n = KINDS[kind]
    if not isinstance(args, list) or not args or (n is not None and len(args) != n):
        want = "a non-empty list of values" if n is None else f"a list of {n} numbers"
        raise ConfigError(f"'{key}': {kind} takes {want}, got {args!r}")
    if kind in ("grid", "choice"):
        return Axis(key=key, kind=kind, args=tuple(_typed(key, v, base) for v in args))
    if kind in ("uniform", "loguniform"):
        if tp is not float:
            raise ConfigError(f"'{key}' is {tp.__name__}-valued: use grid, choice, randint or qrandint, not {kind}")
        lo, hi = (_typed(key, a, base) for a in args)
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            raise ConfigError(f"'{key}': {kind} needs low < high (and low > 0 for loguniform), got {args!r}")
        return Axis(key=key, kind=kind, args=(lo, hi))
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"'{key}': {kind} bounds must be integers, got {args!r}")
    if not args[0] < args[1] or (kind == "qrandint" and args[2] < 1):
        raise ConfigError(f"'{key}': {kind} needs low < high (and step >= 1 for qrandint), got {args!r}")
    _typed(key, args[0], base)
    _typed(key, args[1] - 1 if kind == "randint" else args[1], base)  # Ray's randint excludes its upper bound
    return Axis(key=key, kind=kind, args=tuple(args))


def parse_space(data: dict, base: dict, source: str = "sweep", overrides: dict | None = None) -> SweepSpec:
    """Check a sweep file's contents against the base config dict; `overrides` replace `tune:` settings."""
    try:
        if not isinstance(data, dict) or set(data) - {"space", "tune"}:
            raise ConfigError(f"the top level must hold only 'space' and 'tune', got {sorted(data) if isinstance(data, dict) else data!r}")
        space = data.get("space")
        if not isinstance(space, dict) or not space:
            raise ConfigError("'space' must map at least one dotted config key to a distribution")
        axes = tuple(_parse_axis(key, spec, base) for key, spec in space.items())
        settings = dataclass_from_dict(TuneSettings, {**(data.get("tune") or {}), **(overrides or {})}, "tune")
        if settings.search == "optuna":
            if importlib.util.find_spec("optuna") is None:
                raise ConfigError("tune.search: optuna needs the optuna package (pip install 'goalrm[optuna]')")
            grids = [a.key for a in axes if a.kind == "grid"]
            if grids:
                raise ConfigError(f"Optuna cannot search a grid; use choice for {', '.join(grids)}")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return SweepSpec(axes=axes, settings=settings, source=source)


def load_space(path: str, base: dict, overrides: dict | None = None) -> SweepSpec:
    return parse_space(read_mapping(path, "sweep file"), base, path, overrides)
