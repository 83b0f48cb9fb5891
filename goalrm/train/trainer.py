"""`goalrm train`: run the training loop on Ray Train and place the export in OUTPUT_DIR/model."""

import os
import tempfile
from dataclasses import dataclass

import yaml

from goalrm.atomic import replace_dir, write_text
from goalrm.config import Config, ConfigError, load_config
from goalrm.console import VERBOSE_ENV, follow_reports, verbose
from goalrm.data.pack import check_packing_support
from goalrm.env import ray_temp_dir, setup_environment
from goalrm.train import faults
from goalrm.train.checkpoint import CONFIG_FILE, RUN_NAME, MarkComplete
from goalrm.train.deepspeed_config import deepspeed_config
from goalrm.train.resources import check_local_capacity
from goalrm.train.storage import check_storage, holds_run, run_may_span_hosts
from goalrm.train.loop import MODEL_DIR, train_loop_per_worker


@dataclass
class TrainResult:
    model_dir: str
    metrics: dict
    checkpoint_path: str


# Lines Ray forwards to the driver that say nothing to a goalrm user: a sweep's trials ask for no CPU
# (goalrm/tune/sweep.py), so the raylet warns of "many" worker processes; and Ray Train's controller
# notes that its PreemptionWatcher's constructor arguments live in the object store.
_HARMLESS_RAY_LINES = (
    "PYTHON worker processes have been started on node",
    "Actor with class name: 'PreemptionWatcher'",
)


def quiet_ray_driver() -> None:
    """In the driver, after ray.init: drop the known-harmless lines above from what Ray forwards; every
    other line, warnings and errors included, prints as before. A no-op with --verbose."""
    if verbose():
        return
    import ray._private.worker as ray_worker

    forward = getattr(ray_worker, "print_worker_logs", None)
    if forward is None or getattr(forward, "goalrm_filtered", False):
        return  # another Ray version, or filtered already

    def filtered(data, print_file, ignore_prefix=False):
        lines = [line for line in data.get("lines", []) if not any(h in line for h in _HARMLESS_RAY_LINES)]
        if lines:
            forward({**data, "lines": lines}, print_file, ignore_prefix)

    filtered.goalrm_filtered = True
    ray_worker.print_worker_logs = filtered  # both the worker-log and the raylet-error streams print here


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join `address` when given; else start an embedded local Ray, with no dashboard, whose processes all
    start quiet (`goalrm.console.quiet_ray_worker`). --verbose reaches every worker through the runtime env."""
    import logging

    import ray

    setup_environment()
    if ray.is_initialized():
        return
    quiet = {} if verbose() else {"logging_level": logging.WARNING}  # Ray's own "Started a local Ray" lines
    runtime_env = {"env_vars": {VERBOSE_ENV: "1"}} if verbose() else None
    if address:
        ctx = ray.init(address=address, runtime_env=runtime_env, **quiet)
        have = ray.cluster_resources()
        print(f"joined the Ray cluster at {ctx.address_info['gcs_address']}: {len(ray.nodes())} nodes, "
              f"{have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs", flush=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the embedded local Ray has no auth to set up
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            _temp_dir=ray_temp_dir(),
            log_to_driver=True,
            runtime_env={**(runtime_env or {}), "worker_process_setup_hook": "goalrm.console.quiet_ray_worker"},
            **quiet,
        )
    quiet_ray_driver()


def build_trainer(cfg: Config, output_dir: str, callbacks: list, checkpoint_config=None):
    """The TorchTrainer of one run; a sweep builds one per trial with its own callbacks and resources."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from goalrm.train.data_source import ray_datasets

    if cfg.data.packing:
        try:
            check_packing_support(cfg.model.name_or_path, cfg.model.trust_remote_code)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    cfg, data_args = ray_datasets(cfg)  # data.loader resolved; the Ray Data pipeline when streaming
    t = cfg.train
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "attention": cfg.attention(),  # resolved here, so that every worker runs what the first line said
            "deepspeed": deepspeed_config(t, t.num_workers),
            "fault": faults.from_env(),
        },
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=t.worker_resources()
        ),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        run_config=RunConfig(
            # Ray Train continues a run it finds under this name and storage path: that is --resume
            name=RUN_NAME,
            storage_path=t.storage_path or output_dir,
            callbacks=[*callbacks, MarkComplete()],
            checkpoint_config=checkpoint_config or CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
        ),
        **data_args,
    )


def run_config(output_dir: str) -> Config:
    """The config a run in OUTPUT_DIR started with."""
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{output_dir} holds no goalrm run: {CONFIG_FILE} is missing")
    return load_config(path)


def train(cfg: Config, output_dir: str, ray_address: str | None = None, resume: bool = False) -> TrainResult:
    """Train into OUTPUT_DIR, which must not hold a run yet; with `resume`, continue the run there
    from its last complete checkpoint (CFG must be the config it started with: `run_config`)."""
    from goalrm.train.data_source import input_error
    from goalrm.train.report import METRICS_FILE, MetricsLogger, raise_if_stopped

    deepspeed_config(cfg.train, cfg.train.num_workers)  # a bad user JSON fails here, before Ray starts
    t = cfg.train
    if not ray_address:
        check_local_capacity(t.num_workers, t.worker_resources())  # e.g. use_gpu on a machine without GPUs
    output_dir = os.path.abspath(output_dir)
    _claim_output_dir(cfg, output_dir, resume)
    init_ray(ray_address)
    check_storage(t.storage_path or output_dir, run_may_span_hosts(t.num_workers, t.worker_resources()))
    trainer = build_trainer(cfg, output_dir, callbacks=[MetricsLogger(output_dir)])
    try:
        with follow_reports(os.path.join(output_dir, METRICS_FILE), t.max_steps):
            result = trainer.fit()
        if result.error:
            raise result.error
    except Exception as e:  # a bad row or missing file surfaces as itself, not as a worker traceback
        if (cause := input_error(e)) is None:
            raise
        raise cause from None
    raise_if_stopped(output_dir)
    model_dir = os.path.join(output_dir, MODEL_DIR)
    copy_export(result.checkpoint, model_dir)
    return TrainResult(model_dir=model_dir, metrics=result.metrics or {}, checkpoint_path=result.checkpoint.path)


def copy_export(ckpt, model_dir: str) -> None:
    """The final checkpoint's model/ to MODEL_DIR, atomically; from cloud storage only model/ is
    downloaded, not the optimizer shards beside it."""
    import pyarrow.fs

    with tempfile.TemporaryDirectory() as tmp:
        pyarrow.fs.copy_files(f"{ckpt.path}/{MODEL_DIR}", tmp, source_filesystem=ckpt.filesystem)
        replace_dir(tmp, model_dir)


def _claim_output_dir(cfg: Config, output_dir: str, resume: bool) -> None:
    """A fresh run records its config; a resumed one must bring the same config."""
    if resume:
        changed = _changed_keys(run_config(output_dir).to_dict(), cfg.to_dict())
        if changed:
            raise ConfigError(f"{output_dir}/{CONFIG_FILE}: a resumed run keeps the config it started with; changed: {', '.join(changed)}")
        return
    if os.path.exists(os.path.join(output_dir, CONFIG_FILE)) or os.path.exists(os.path.join(output_dir, RUN_NAME)):
        raise FileExistsError(f"{output_dir} already holds a run: continue it with `goalrm train --resume {output_dir}`, or pick another output dir")
    storage = cfg.train.storage_path
    if storage and holds_run(storage, RUN_NAME):  # Ray Train would continue that run's checkpoints as this one's
        raise FileExistsError(
            f"train.storage_path {storage} already holds a run ({RUN_NAME}/); give each run its own storage_path"
        )
    os.makedirs(output_dir, exist_ok=True)
    write_text(os.path.join(output_dir, CONFIG_FILE), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in a.keys() | b.keys():
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _changed_keys(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return sorted(out)
