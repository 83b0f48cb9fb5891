"""`goalrm train`: run the training loop on Ray Train and place the export in OUTPUT_DIR/model."""

import os
import shutil
import uuid
from dataclasses import dataclass, replace

from goalrm.config import SYNTHETIC, Config
from goalrm.env import ray_temp_dir, setup_environment
from goalrm.train.loop import MODEL_DIR, train_loop_per_worker


@dataclass
class TrainResult:
    model_dir: str
    metrics: dict
    checkpoint_path: str


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join `address` when given; else start an embedded local Ray whose dashboard binds to localhost."""
    import ray

    setup_environment()
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the embedded local Ray has no auth to set up
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            _temp_dir=ray_temp_dir(),
            log_to_driver=True,
        )


def train(cfg: Config, output_dir: str, ray_address: str | None = None) -> TrainResult:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from goalrm.train.report import MetricsLogger

    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    init_ray(ray_address)
    t = cfg.train
    resources = {"GPU": 1, "CPU": 1} if t.use_gpu else {"CPU": 1}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": absolute_paths(cfg).to_dict()},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        run_config=RunConfig(
            name="ray_train",
            storage_path=output_dir,
            callbacks=[MetricsLogger(output_dir)],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    model_dir = os.path.join(output_dir, MODEL_DIR)
    with result.checkpoint.as_directory() as ckpt:
        _replace_dir(os.path.join(ckpt, MODEL_DIR), model_dir)
    return TrainResult(model_dir=model_dir, metrics=result.metrics or {}, checkpoint_path=result.checkpoint.path)


def absolute_paths(cfg: Config) -> Config:
    """Ray workers run in another directory: data files and a local model folder given relative to
    the caller's directory become absolute. Hub ids, URIs and "synthetic" stay as they are."""
    def fix(path: str) -> str:
        return path if path == SYNTHETIC or "://" in path else os.path.abspath(path)

    model = cfg.model.name_or_path
    model = os.path.abspath(model) if os.path.isdir(model) else model
    return replace(
        cfg, model=replace(cfg.model, name_or_path=model), data=replace(cfg.data, train=fix(cfg.data.train), eval=fix(cfg.data.eval))
    )


def _replace_dir(src: str, dst: str) -> None:
    """Copy then rename, so DST is never a half-written export."""
    tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, tmp)
    if os.path.exists(dst):
        old = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)
