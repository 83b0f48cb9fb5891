"""The per-worker training loop: data, then batch, then model, then loss, then step, then report.

Runs inside a Ray Train worker; Ray's process group is reused by DeepSpeed.
"""

import logging
import os
import tempfile
import time

import ray.train
import torch
import torch.distributed as dist
from transformers.integrations import HfDeepSpeedConfig
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from goalrm.config import config_from_dict
from goalrm.data.batch import collate_pairs
from goalrm.data.load import load_tokenized
from goalrm.data.sampler import micro_batch_indices, pair_lengths
from goalrm.evaluate import PairScores, goal_and_reward_stats, score_pairs, summarize
from goalrm.losses import reward_model_loss
from goalrm.model import build_model, load_tokenizer, save_reward_model
from goalrm.qvalues import final_token_reps
from goalrm.train.deepspeed_config import deepspeed_config
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
    train_pairs, trunc, bad = load_tokenized(cfg.data.train, "train", cfg.data, tokenizer)
    eval_pairs, _, _ = load_tokenized(cfg.data.eval, "eval", cfg.data, tokenizer)
    eval_shard = eval_pairs[rank::world]
    lengths = pair_lengths(train_pairs) if cfg.data.group_by_length else None

    # model
    deepspeed.init_distributed(dist_backend="nccl" if cfg.train.use_gpu else "gloo")  # wraps Ray's process group
    ds_config = deepspeed_config(cfg.train, world)
    hf_ds = HfDeepSpeedConfig(ds_config) if cfg.train.zero_stage == 3 else None  # noqa: F841 (must stay alive)
    model = build_model(cfg.model.name_or_path, cfg.model.heads(), tokenizer, cfg.model.trust_remote_code)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.train.warmup_steps, cfg.train.max_steps)
    )
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=None
    )
    pad_id = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + rank)
    lam = cfg.loss.contrastive_weight
    hidden_size = engine.module.config.get_text_config().hidden_size
    goal_dim = cfg.model.projection_dim or hidden_size
    goal_sum, goal_count = torch.zeros(goal_dim, device=device), torch.zeros((), device=device)

    window = {"loss": 0.0, "bt_loss": 0.0, "contrastive_loss": 0.0, "tokens": 0, "slots": 0, "pairs": 0, "n": 0}
    t_window = time.perf_counter()
    for step in range(cfg.train.max_steps):
        engine.train()
        for micro in range(cfg.train.grad_accum):
            # batch
            idx = micro_batch_indices(
                step, micro, rank, world, len(train_pairs), cfg.train.micro_batch_size, cfg.train.grad_accum, cfg.train.seed,
                lengths,
            )
            batch = {k: v.to(device) for k, v in collate_pairs([train_pairs[i] for i in idx], pad_id).items()}
            # model: chosen and rejected in one forward pass
            out = engine(batch["input_ids"], batch["attention_mask"], with_reps=True)
            # loss
            loss, parts = reward_model_loss(
                out.rewards, out.reps, batch["completion_start"], batch["completion_end"], cfg.loss, generator=gen
            )
            # step
            engine.backward(loss)
            engine.step()
            with torch.no_grad():  # running goal estimate for the eval Q-gap, free from this forward
                n = len(idx)
                goal_sum += final_token_reps(out.reps[:n], out.last_index[:n]).float().sum(0)
                goal_count += n
            for k in ("loss", "bt_loss", "contrastive_loss"):
                window[k] += parts[k]
            window["tokens"] += int(batch["attention_mask"].sum())
            window["slots"] += batch["attention_mask"].numel()
            window["pairs"] += len(idx)
            window["n"] += 1

        # report
        last = step + 1 == cfg.train.max_steps
        evaluate = (step + 1) % cfg.train.eval_every == 0 or last
        if (step + 1) % cfg.train.log_every == 0 or evaluate:
            elapsed = time.perf_counter() - t_window
            keys = ("loss", "bt_loss", "contrastive_loss", "tokens", "slots", "pairs")
            totals = _all_reduce(torch.tensor([float(window[k]) for k in keys], dtype=torch.float64, device=device))
            totals = dict(zip(keys, totals.tolist()))
            metrics = {
                "step": step + 1,
                "epoch": (step + 1) * cfg.train.global_batch_size / len(train_pairs),
                "lr": scheduler.get_last_lr()[0],
                **{k: totals[k] / (window["n"] * world) for k in ("loss", "bt_loss", "contrastive_loss")},
                "tokens_per_s": totals["tokens"] / elapsed,
                "pairs_per_s": totals["pairs"] / elapsed,
                "padding_frac": 1 - totals["tokens"] / totals["slots"],
                "prompt_truncated": trunc.prompt_truncated,
                "completion_truncated": trunc.completion_truncated,
                "bad_rows": bad.count,
            }
            if not evaluate:
                ray.train.report(metrics)
            else:
                goal = _all_reduce(goal_sum.clone()) / _all_reduce(goal_count.clone()).clamp(min=1)
                engine.eval()
                scores = score_pairs(engine, eval_shard, pad_id, cfg.train.eval_batch_size, goal, device)
                metrics.update({f"eval_{k}": v for k, v in _flatten(summarize(_all_gather_scores(scores))).items()})
                goal_sum.zero_(), goal_count.zero_()
                with tempfile.TemporaryDirectory() as tmp:
                    engine.save_checkpoint(tmp, tag="deepspeed")
                    if last:
                        _export(engine, tokenizer, train_pairs, cfg, pad_id, device, rank, os.path.join(tmp, MODEL_DIR))
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            window = dict.fromkeys(window, 0)
            t_window = time.perf_counter()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _export(engine, tokenizer, train_pairs, cfg, pad_id, device, rank, out_dir):
    """HF export plus the goal state: the mean final-token representation of preferred training completions."""
    import deepspeed

    pairs = train_pairs[: cfg.data.goal_state_pairs or None][rank :: dist.get_world_size()]
    rep_sum, count, r_sum, r_sqsum = goal_and_reward_stats(engine, pairs, pad_id, cfg.train.eval_batch_size, device)
    stats = _all_reduce(torch.tensor([count, r_sum, r_sqsum], dtype=torch.float64, device=device))
    goal = _all_reduce(rep_sum.float()) / stats[0]
    n_rewards = 2 * stats[0]
    mean = float(stats[1] / n_rewards)
    std = float((stats[2] / n_rewards - mean**2).clamp(min=0).sqrt())
    unset_hf_deepspeed_config()  # the export builds a plain, unpartitioned model
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank == 0:
            state = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
            save_reward_model(engine.module, tokenizer, out_dir, goal, mean, std, state_dict=state)
