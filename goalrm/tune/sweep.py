"""A sweep: one Ray Tune trial per config. Under Train V2 `Tuner(TorchTrainer)` is gone, so each
trial is a function trainable that builds its own TorchTrainer and forwards its eval reports."""

import dataclasses
import json
import math
import os

import yaml

from goalrm.atomic import write_text
from goalrm.config import Config, ConfigError, config_from_dict
from goalrm.console import verbose
from goalrm.train.resources import SCHEDULING_ONLY, check_local_capacity
from goalrm.tune.placement import release_all
from goalrm.tune.results import SweepResult, TrialRecord, summarize_sweep
from goalrm.tune.space import SweepSpec, TuneSettings, apply_values, load_space, parse_space

SWEEP_FILE = "sweep.json"  # base config, space and settings: all that --resume needs
TUNE_DIR = "tune"  # Tune's experiment; a trial's metrics.jsonl and checkpoints are in tune/TRIAL_ID/
ASHA_FILE = "asha_rungs.json"  # ASHA's rung scores so far (goalrm/tune/asha.py)


def sweep_trial(values: dict, base: dict, settings: dict, trials_dir: str) -> None:
    from ray import tune
    from ray.train import CheckpointConfig

    from goalrm.train.report import MetricsLogger, raise_if_stopped
    from goalrm.train.trainer import build_trainer
    from goalrm.tune.placement import RecordPlacementGroup
    from goalrm.tune.report import EvalReportCallback

    cfg = config_from_dict(apply_values(base, values), "trial config")
    s = TuneSettings(**settings)
    # Tune's own trial dir in storage (get_trial_dir() is a local staging copy)
    trial_dir = os.path.join(trials_dir, tune.get_context().get_trial_id())
    os.makedirs(trial_dir, exist_ok=True)
    write_text(os.path.join(trial_dir, "config.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    trainer = build_trainer(
        cfg,
        trial_dir,
        callbacks=[MetricsLogger(trial_dir), EvalReportCallback(s.metric), RecordPlacementGroup(trial_dir)],
        # the best checkpoint and the latest (Ray always keeps the latest)
        checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=s.metric, checkpoint_score_order=s.mode),
    )
    trainer.fit()
    raise_if_stopped(trial_dir)  # a non-finite loss fails the trial


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _trainable(base: dict, settings: TuneSettings, output_dir: str):
    from ray import tune

    trials_dir = os.path.join(output_dir, TUNE_DIR)
    fn = tune.with_parameters(sweep_trial, base=base, settings=dataclasses.asdict(settings), trials_dir=trials_dir)
    return tune.with_resources(fn, settings.trial_resources)


def _max_concurrent(base: Config, s: TuneSettings) -> int:
    """Trials whose driver and workers all fit at once: a trial's driver asks for almost nothing, so
    Tune would otherwise start every trial's driver and leave too little for their workers."""
    import ray

    if s.max_concurrent_trials:
        return s.max_concurrent_trials
    per_worker = base.train.worker_resources()
    need = {k: s.trial_resources.get(k, 0) + base.train.num_workers * per_worker.get(k, 0) for k in {*per_worker, *s.trial_resources}}
    have = ray.cluster_resources()
    fits = [math.floor(have.get(k, 0) / v + 1e-9) for k, v in need.items() if v > 0 and k not in SCHEDULING_ONLY]
    if not fits or min(fits) < 1:
        raise ConfigError(f"one trial needs {need}, more than the cluster has ({ {k: have.get(k, 0) for k in need} })")
    return min(fits)


def search_alg(s: TuneSettings, max_concurrent: int):
    """Ray's variant generator (grid axes crossed, the rest drawn at random), or Optuna."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if s.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=s.seed), max_concurrent)
    # a search generator is not limited by TuneConfig.max_concurrent_trials; it takes its own
    return BasicVariantGenerator(random_state=s.seed, max_concurrent=max_concurrent)


def _tuner(base: Config, trial_base: dict, spec: SweepSpec, output_dir: str, callbacks):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from goalrm.tune.asha import ResumableASHA
    from goalrm.tune.placement import ReleasePlacementGroups
    from goalrm.tune.progress import TrialLines

    s = spec.settings
    concurrent = _max_concurrent(base, s)
    if s.scheduler == "asha":
        scheduler = ResumableASHA(
            os.path.join(output_dir, ASHA_FILE),  # its rungs, for --resume
            time_attr="step",
            max_t=base.train.max_steps,
            grace_period=s.grace_period or base.train.eval_every,
            reduction_factor=s.reduction_factor,
            stop_last_trials=False,  # a swept train.max_steps may run past the base's
        )
    else:
        scheduler = FIFOScheduler()
    if not verbose():
        # Tune's newer console prints its experiment box and a TensorBoard hint even at verbose=0;
        # the older one prints nothing there (read when the sweep starts; a user's own setting stands)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.Tuner(
        _trainable(trial_base, s, output_dir),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            scheduler=scheduler,
            search_alg=search_alg(s, concurrent),
            num_samples=s.num_samples,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=output_dir,
            callbacks=[ReleasePlacementGroups(), TrialLines([a.key for a in spec.axes], s.metric), *callbacks],
            verbose=1 if verbose() else 0,  # Tune's status tables; the trial lines say what happened
        ),
    )


def run_sweep(base: Config, space, output_dir: str, ray_address: str | None = None, overrides: dict | None = None, callbacks=()) -> SweepResult:
    """Run a sweep over `space` (a sweep file path, its parsed dict, or a SweepSpec) on top of `base`.

    Writes OUTPUT_DIR/results.csv, best.yaml, summary.json and the plot; returns what they hold.
    `overrides` replace `tune:` settings; `callbacks` are extra Ray Tune callbacks.
    """
    from goalrm.train.trainer import init_ray

    base_dict = base.to_dict()
    if isinstance(space, str):
        spec = load_space(space, base_dict, overrides)
    elif isinstance(space, dict):
        spec = parse_space(space, base_dict, "space", overrides)
    else:
        spec = space
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(os.path.join(output_dir, TUNE_DIR)):
        raise ConfigError(f"{output_dir} already holds a sweep; resume it with `goalrm tune --resume {output_dir}` or choose another --output-dir")
    os.makedirs(output_dir, exist_ok=True)
    # trials get absolute paths, resolved once, so that a resume from another directory finds the same data
    saved = {
        "base": base_dict,
        "trial_base": base.with_absolute_paths().to_dict(),
        "axes": [dataclasses.asdict(a) for a in spec.axes],
        "settings": dataclasses.asdict(spec.settings),
        "source": spec.source,
    }
    if not ray_address:
        t = base.train
        check_local_capacity(t.num_workers, t.worker_resources(), spec.settings.trial_resources, what="one trial")
    write_text(os.path.join(output_dir, SWEEP_FILE), json.dumps(saved, indent=1))
    init_ray(ray_address)
    try:
        _tuner(base, saved["trial_base"], spec, output_dir, callbacks).fit()
    finally:
        release_all(os.path.join(output_dir, TUNE_DIR))
    return _finish(base, spec, output_dir)


def resume_sweep(output_dir: str, ray_address: str | None = None, retry_failed: bool = False) -> SweepResult:
    """Continue an interrupted sweep: finished trials stay, unfinished ones run again from their start;
    failed ones are kept as failed unless `retry_failed`."""
    from ray import tune

    from goalrm.train.trainer import init_ray
    from goalrm.tune.space import Axis

    output_dir = os.path.abspath(output_dir)
    try:
        with open(os.path.join(output_dir, SWEEP_FILE)) as f:
            saved = json.load(f)
    except OSError:
        raise ConfigError(f"{output_dir} holds no sweep to resume (no {SWEEP_FILE})") from None
    base = config_from_dict(saved["base"], os.path.join(output_dir, SWEEP_FILE))
    spec = SweepSpec(
        axes=tuple(Axis(a["key"], a["kind"], tuple(a["args"])) for a in saved["axes"]),
        settings=TuneSettings(**saved["settings"]),
        source=saved["source"],
    )
    init_ray(ray_address)
    try:
        tune.Tuner.restore(
            os.path.join(output_dir, TUNE_DIR),
            _trainable(saved["trial_base"], spec.settings, output_dir),
            resume_unfinished=True,
            restart_errored=retry_failed,
        ).fit()
    finally:
        release_all(os.path.join(output_dir, TUNE_DIR))
    return _finish(base, spec, output_dir)


def _finish(base: Config, spec: SweepSpec, output_dir: str) -> SweepResult:
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(os.path.join(output_dir, TUNE_DIR))
    keys = [a.key for a in spec.axes]
    records = []
    for trial in analysis.trials:
        values = {k: trial.config[k] for k in keys}
        frame = analysis.trial_dataframes.get(trial.trial_id)
        error = trial.get_error()
        records.append(
            TrialRecord(
                trial_id=trial.trial_id,
                values=values,
                reports=[] if frame is None else frame.to_dict("records"),
                max_steps=config_from_dict(apply_values(base.to_dict(), values)).train.max_steps,
                done=trial.status in ("TERMINATED", "ERROR"),
                error=None if error is None else str(error),
            )
        )
    return summarize_sweep(records, base, spec, output_dir)
