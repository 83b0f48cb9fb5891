"""Training checkpoints: what each rank saves at an eval, and how a run continues from one.

A checkpoint folder (OUTPUT_DIR/ray_train/checkpoint_*) holds:
  deepspeed/       DeepSpeed's engine state, every rank's shard: weights, optimizer, LR scheduler, step
  rng_rank{R}.pt   rank R's RNG states: the contrastive sampling generator and torch's
  config.yaml      the run's config, and
  hf/              the HF model config and tokenizer: with these the folder exports alone (`goalrm export`)
  COMPLETE         {"step": N}, written by the Ray Train controller after every rank's files are stored

The data position needs no state: the sampler is a pure function of the step.

Ray Train decides which checkpoint a run continues from: `ray.train.get_checkpoint()` is the latest
one its controller registered, and the controller registers one only when every rank has reported,
i.e. finished uploading. A save cut short by a dead process is never registered, and never gets
COMPLETE, which is what tools that list folders instead of asking Ray go by.
"""

import json
import os
from glob import glob

import ray.train
import torch
import yaml

RUN_NAME = "ray_train"  # Ray Train's run folder inside OUTPUT_DIR
ENGINE_TAG = "deepspeed"
CONFIG_FILE = "config.yaml"
HF_DIR = "hf"
COMPLETE = "COMPLETE"


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def save(engine, out_dir: str, step: int, gen: torch.Generator, rank: int, config: dict, tokenizer) -> None:
    engine.save_checkpoint(out_dir, tag=ENGINE_TAG, client_state={"step": step})
    rng = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, os.path.join(out_dir, _rng_file(rank)))
    if rank == 0:
        with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        engine.module.config.save_pretrained(os.path.join(out_dir, HF_DIR))
        tokenizer.save_pretrained(os.path.join(out_dir, HF_DIR))


def restore(engine, gen: torch.Generator, rank: int) -> int:
    """Load the run's latest checkpoint, if it has one, into ENGINE, GEN and torch's RNG.
    Returns the number of steps already done (0 without a checkpoint)."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        path, client = engine.load_checkpoint(d, tag=ENGINE_TAG)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint '{ENGINE_TAG}' in {ckpt.path}")
        rng = torch.load(os.path.join(d, _rng_file(rank)), weights_only=True)
    gen.set_state(rng["gen"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"])
    return client["step"]


class MarkComplete(ray.train.UserCallback):
    """Runs in the controller once every rank has reported, so COMPLETE is the checkpoint's last file."""

    def after_report(self, run_context, metrics, checkpoint):
        if checkpoint is not None:
            with checkpoint.filesystem.open_output_stream(f"{checkpoint.path}/{COMPLETE}") as f:
                f.write(json.dumps({"step": metrics[0]["step"]}).encode())


def complete_checkpoint(path: str) -> str:
    """PATH itself if it is a complete checkpoint folder; for a run folder, its newest complete checkpoint."""
    if os.path.isdir(os.path.join(path, ENGINE_TAG)):
        if not os.path.exists(os.path.join(path, COMPLETE)):
            raise FileNotFoundError(f"{path} is an incomplete checkpoint (no {COMPLETE}: its save was cut short)")
        return path
    steps = {}
    for marker in glob(os.path.join(path, RUN_NAME, "checkpoint_*", COMPLETE)):
        with open(marker) as f:
            steps[os.path.dirname(marker)] = json.load(f)["step"]
    if not steps:
        raise FileNotFoundError(f"{path} is neither a checkpoint folder nor a run folder with a complete checkpoint")
    return max(steps, key=lambda d: (steps[d], d))
