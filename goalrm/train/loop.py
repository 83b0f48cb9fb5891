"""The per-worker training loop: data, then batch, then model, then loss, then step, then report.

Runs inside a Ray Train worker; Ray's process group is reused by DeepSpeed.
"""

import logging
import math
import os
import tempfile
import time

import ray.train
import torch
import torch.distributed as dist
from transformers.integrations import HfDeepSpeedConfig
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from goalrm.config import config_from_dict
from goalrm.data.load import load_tokenized
from goalrm.data.pack import collate_for_model
from goalrm.data.stream import padding_frac
from goalrm.evaluate import PairScores, goal_and_reward_stats, goal_and_reward_summary, score_pairs, summarize
from goalrm.losses import reward_model_loss
from goalrm.model import build_model, load_tokenizer, save_reward_model
from goalrm.qvalues import final_token_reps
from goalrm.train import checkpoint, faults
from goalrm.train.data_source import train_data_source
from goalrm.train.schedule import warmup_cosine

MODEL_DIR = "model"


def _all_gather_scores(scores: PairScores) -> PairScores:
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, scores)
    merged = PairScores()
    for part in parts:
        merged.extend(part)
    return merged


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = config_from_dict(loop_config["config"])
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.train.use_gpu else "cpu")
    import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator on import

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # the controller prints one line per report

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device(f"cuda:{ray.train.torch.get_device().index}") if cfg.train.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank

    # data
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    source = train_data_source(cfg, tokenizer, rank, world)  # data.loader: pairs in memory, or a Ray Data shard
    eval_pairs, _, _ = load_tokenized(cfg.data.eval, "eval", cfg.data, tokenizer)
    eval_shard = eval_pairs[rank::world]

    # model
    deepspeed.init_distributed(dist_backend="nccl" if cfg.train.use_gpu else "gloo")  # wraps Ray's process group
    ds_config = loop_config["deepspeed"]  # built and checked on the driver (user JSON merged)
    hf_ds = HfDeepSpeedConfig(ds_config) if cfg.train.zero_stage == 3 else None  # noqa: F841 (must stay alive)
    model = build_model(
        cfg.model.name_or_path,
        cfg.model.heads(),
        tokenizer,
        cfg.model.trust_remote_code,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        lora=cfg.model.lora,
    )
    # DeepSpeed builds the optimizer from the config (AdamW, or DeepSpeedCPUAdam when offloading); the
    # scheduler wraps whichever it built
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, cfg.train.warmup_steps, cfg.train.max_steps)
        ),
        config=ds_config,
        dist_init_required=None,
    )
    pad_id = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + rank)
    # after a worker failure or on --resume: weights, optimizer, scheduler, RNG and step from the last checkpoint
    start = checkpoint.restore(engine, gen, rank)
    fault = loop_config.get("fault")  # test-only (goalrm/train/faults.py)
    lam = cfg.loss.contrastive_weight
    hidden_size = engine.module.config.get_text_config().hidden_size
    goal_dim = cfg.model.projection_dim or hidden_size
    goal_sum, goal_count = torch.zeros(goal_dim, device=device), torch.zeros((), device=device)

    window = {"loss": 0.0, "bt_loss": 0.0, "contrastive_loss": 0.0, "tokens": 0, "slots": 0, "pairs": 0, "n": 0}
    t_window = time.perf_counter()
    for step in range(start, cfg.train.max_steps):
        engine.train()
        for micro in range(cfg.train.grad_accum):
            # batch
            pairs = source.micro_batch(step, micro)
            batch, packed = collate_for_model(pairs, pad_id, device, cfg.data.packing)
            # model: chosen and rejected in one forward pass
            out = engine(batch["input_ids"], batch["attention_mask"], with_reps=True, packed=packed)
            # loss
            loss, parts = reward_model_loss(
                out.rewards, out.reps, batch["completion_start"], batch["completion_end"], cfg.loss, generator=gen
            )
            if not math.isfinite(parts["loss"]):  # fail loudly: DeepSpeed would go on stepping on NaN weights
                raise FloatingPointError(
                    f"non-finite loss {parts['loss']} at step {step + 1} (bt {parts['bt_loss']}, "
                    f"contrastive {parts['contrastive_loss']}); lower train.lr or check the data"
                )
            # step
            engine.backward(loss)
            engine.step()
            with torch.no_grad():  # running goal estimate for the eval Q-gap, free from this forward
                n = len(pairs)
                goal_sum += final_token_reps(out.reps[:n], out.last_index[:n]).float().sum(0)
                goal_count += n
            for k in ("loss", "bt_loss", "contrastive_loss"):
                window[k] += parts[k]
            window["tokens"] += int(batch["attention_mask"].sum())
            window["slots"] += (batch["attention_mask"] if packed is None else packed.input_ids).numel()
            window["pairs"] += len(pairs)
            window["n"] += 1

        # report
        last = step + 1 == cfg.train.max_steps
        evaluate = (step + 1) % cfg.train.eval_every == 0 or last
        if (step + 1) % cfg.train.log_every == 0 or evaluate:
            elapsed = time.perf_counter() - t_window
            counts = source.counts()  # this rank's share of the run's row counts
            keys = ("loss", "bt_loss", "contrastive_loss", "tokens", "slots", "pairs", *counts)
            totals = _all_reduce(torch.tensor([float({**window, **counts}[k]) for k in keys], dtype=torch.float64, device=device))
            totals = dict(zip(keys, totals.tolist()))
            metrics = {
                "step": step + 1,
                "epoch": source.epoch(step + 1),
                "lr": scheduler.get_last_lr()[0],
                **{k: totals[k] / (window["n"] * world) for k in ("loss", "bt_loss", "contrastive_loss")},
                "tokens_per_s": totals["tokens"] / elapsed,
                "pairs_per_s": totals["pairs"] / elapsed,
                "padding_frac": padding_frac(totals["tokens"], totals["slots"]),
                **{k: int(totals[k]) for k in counts},
            }
            if not evaluate:
                ray.train.report(metrics)
            else:
                goal = _all_reduce(goal_sum.clone()) / _all_reduce(goal_count.clone()).clamp(min=1)
                engine.eval()
                scores = score_pairs(engine, eval_shard, pad_id, cfg.train.eval_batch_size, goal, device, cfg.data.packing)
                metrics.update({f"eval_{k}": v for k, v in _flatten(summarize(_all_gather_scores(scores))).items()})
                goal_sum.zero_(), goal_count.zero_()
                with tempfile.TemporaryDirectory() as tmp:
                    checkpoint.save(engine, tmp, step + 1, gen, rank, loop_config["config"], tokenizer)
                    if last:
                        _export(engine, tokenizer, source.goal_pairs(), cfg, pad_id, device, rank, os.path.join(tmp, MODEL_DIR))
                    ray.train.report(
                        metrics,
                        checkpoint=ray.train.Checkpoint.from_directory(tmp),
                        checkpoint_upload_fn=faults.upload_fn(fault, step + 1, rank),
                    )
            window = dict.fromkeys(window, 0)
            t_window = time.perf_counter()
        faults.maybe_stop(fault, step + 1, rank)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _export(engine, tokenizer, pairs, cfg, pad_id, device, rank, out_dir):
    """HF export plus the goal state: the mean final-token representation of preferred training completions."""
    import deepspeed

    rep_sum, count, r_sum, r_sqsum = goal_and_reward_stats(engine, pairs, pad_id, cfg.train.eval_batch_size, device)
    stats = _all_reduce(torch.tensor([count, r_sum, r_sqsum], dtype=torch.float64, device=device))
    goal, mean, std = goal_and_reward_summary(_all_reduce(rep_sum.float()), *stats.tolist())
    unset_hf_deepspeed_config()  # the export builds a plain, unpartitioned model
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank == 0:
            state = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
            save_reward_model(engine.module, tokenizer, out_dir, goal, mean, std, state_dict=state)
