"""The per-worker training loop: data, then batch, then model, then loss, then step, then report.

Runs inside a Ray Train worker; Ray's process group is reused by DeepSpeed. Every rank runs the same
collectives in the same order: each step's forward and backward, and at a report the all-reduce,
the eval's forwards (shards padded to one length), the checkpoint and, at the end, the export.
"""

import os
import sys
import tempfile
import time

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from transformers.integrations import HfDeepSpeedConfig

from goalrm import attention
from goalrm.config import Config, config_from_dict
from goalrm.console import quiet_libraries, quiet_stdout
from goalrm.data.load import load_tokenized
from goalrm.data import token_budget
from goalrm.data.model_batch import StepBatch, collate_step
from goalrm.data.prefetch import prefetch
from goalrm.data.sampler import even_shard
from goalrm.data.stream import padding_frac
from goalrm.device import bf16_warning
from goalrm.evaluate import PairScores, goal_and_reward_stats, goal_and_reward_summary, evaluate_pairs, summarize
from goalrm.export import save_reward_model
from goalrm.losses import reward_model_loss
from goalrm.model import build_model, load_tokenizer
from goalrm.qvalues import final_token_reps
from goalrm.sampling import sampling_generator
from goalrm.train import checkpoint, faults
from goalrm.train.data_source import train_data_source
from goalrm.train.deepspeed_init import import_deepspeed, init_distributed
from goalrm.train.report import NODE, NONFINITE
from goalrm.train.schedule import warmup_cosine

MODEL_DIR = "model"
LOSSES = ("loss", "bt_loss", "contrastive_loss")


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = config_from_dict(loop_config["config"])
    deepspeed = import_deepspeed(cfg.train.use_gpu)
    quiet_libraries()  # the driver prints one line per report; after DeepSpeed's import, which sets its log level

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")
    if rank == 0 and (slow := bf16_warning(cfg.train.precision, device)):
        print(slow, file=sys.stderr, flush=True)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank

    # data
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    source = train_data_source(cfg, tokenizer, rank, world)  # data.loader: pairs in memory, or a Ray Data shard
    eval_pairs, _, _ = load_tokenized(cfg.data.eval, "eval", cfg.data, tokenizer)

    # model
    attn = loop_config["attention"]
    attention.require(attn)
    packing = attention.packing_layout(attn) if cfg.data.packing else None
    init_distributed(cfg.train.use_gpu)  # DeepSpeed's communication over Ray's process group
    ds_config = loop_config["deepspeed"]  # built and checked on the driver (user JSON merged)
    hf_ds = HfDeepSpeedConfig(ds_config) if cfg.train.zero_stage == 3 else None  # noqa: F841 (must stay alive)
    model = build_model(
        cfg.model.name_or_path,
        cfg.model.heads(),
        tokenizer,
        cfg.model.trust_remote_code,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        lora=cfg.model.lora,
        attn_implementation=attn,
    )
    # DeepSpeed builds the optimizer from the config (AdamW, or DeepSpeedCPUAdam when offloading); the
    # scheduler wraps whichever it built
    with quiet_stdout():
        engine, _, _, scheduler = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: warmup_cosine(s, cfg.train.warmup_steps, cfg.train.max_steps)
            ),
            config=ds_config,
            dist_init_required=None,
        )
    gen = sampling_generator(cfg.train.seed, rank, device)
    # after a worker failure or on --resume: weights, optimizer, scheduler, RNG and step from the last checkpoint
    start = checkpoint.restore(engine, gen, rank)
    run = _Run(cfg, loop_config, engine, scheduler, tokenizer, source, eval_pairs, gen, rank, world, device, packing)

    batches = prefetch(_host_steps(cfg, source, tokenizer.pad_token_id, start, device, packing))
    for step in range(start, cfg.train.max_steps):
        engine.train()
        # batch: the step's pairs in micro-batches, as many on every rank
        sb, progress = next(batches)
        sb = _same_count(sb, cfg, tokenizer.pad_token_id, packing, device).to(device, non_blocking=True)
        for i, (mb, weight) in enumerate(zip(sb.micro, sb.weights())):
            batch = mb.padded
            # model: chosen and rejected in one forward pass
            out = engine(batch["input_ids"], batch["attention_mask"], with_reps=True, packed=mb.packed)
            # loss
            loss, parts = reward_model_loss(
                out.rewards, out.reps, batch["completion_start"], batch["completion_end"], cfg.loss, gen,
                batch["rejected_divergence"],
            )
            # step: the optimizer updates after the step's last micro-batch, on the mean over its pairs
            engine.set_gradient_accumulation_boundary(i == len(sb.micro) - 1)
            engine.backward(loss * weight, scale_wrt_gas=False)
            engine.step()
            run.record(step, parts, weight, mb, out, progress)
        # report
        if not run.report(step + 1):
            return
        faults.maybe_stop(loop_config.get("fault"), step + 1, rank)


def _host_steps(cfg: Config, source, pad_id: int, start: int, device, packing: str | None):
    """Every step's pairs from step `start` on, in micro-batches collated on the host (pinned for a GPU):
    train.grad_accum of train.micro_batch_size pairs, or under data.max_tokens_per_micro_batch as few as
    fit the budget; with the data's progress once they are drawn: (epoch, row counts). Run ahead of the
    device by `prefetch`, so the source's own counters are ahead of what was trained on; these snapshots
    are not."""
    pin, budget = device.type == "cuda", cfg.data.max_tokens_per_micro_batch
    for step in range(start, cfg.train.max_steps):
        micro = [source.micro_batch(step, m) for m in range(cfg.train.grad_accum)]
        if budget:
            micro = token_budget.split(token_budget.by_length([p for pairs in micro for p in pairs]), budget, packing is not None)
        sb = collate_step(micro, pad_id, packing)
        yield (sb.pin_memory() if pin else sb), (source.epoch(step + 1), source.counts())


def _same_count(sb: StepBatch, cfg: Config, pad_id: int, packing: str | None, device) -> StepBatch:
    """Under a token budget ranks cut their pairs into different numbers of micro-batches; each then runs
    the most any rank needs (an all-reduce, in this thread: collectives keep one order on every rank)."""
    budget = cfg.data.max_tokens_per_micro_batch
    if not budget:
        return sb
    parts = int(_all_reduce(torch.tensor(len(sb.micro), dtype=torch.long, device=device), dist.ReduceOp.MAX))
    if parts == len(sb.micro):
        return sb
    return collate_step(token_budget.split(sb.pairs, budget, packing is not None, parts), pad_id, packing)


class _Run:
    """What the loop keeps between reports: running sums on the device, read only at a report."""

    def __init__(self, cfg, loop_config, engine, scheduler, tokenizer, source, eval_pairs, gen, rank, world, device, packing):
        self.cfg, self.loop_config, self.engine, self.scheduler, self.packing = cfg, loop_config, engine, scheduler, packing
        self.tokenizer, self.source, self.gen = tokenizer, source, gen
        self.rank, self.world, self.device = rank, world, device
        self.node = ray.get_runtime_context().get_node_id()
        self.eval_shard, self.eval_real = even_shard(eval_pairs, rank, world)
        goal_dim = cfg.model.projection_dim or engine.module.config.get_text_config().hidden_size
        self.goal_sum = torch.zeros(goal_dim, dtype=torch.float32, device=device)  # running goal estimate for the eval Q-gap
        self.losses = torch.zeros(len(LOSSES), dtype=torch.float32, device=device)
        # the first step whose loss was not finite (0: none yet) and its losses, kept on the device: no
        # per-step host sync
        self.first_nonfinite = torch.zeros((), dtype=torch.long, device=device)
        self.nonfinite_losses = torch.zeros(len(LOSSES), dtype=torch.float32, device=device)
        self.goal_count = self.tokens = self.slots = self.pairs = 0
        self.steps = 0.0  # optimizer steps in this report window: the micro-batches' weights, summed
        self.t0 = time.perf_counter()

    def record(self, step: int, parts: dict, weight: float, mb, out, progress: tuple) -> None:
        """One micro-batch: its losses count by WEIGHT, its share of the step's pairs."""
        self.epoch, self.counts = progress
        losses = torch.stack([parts[k] for k in LOSSES])
        self.losses += losses * weight
        first = ~torch.isfinite(losses).all() & (self.first_nonfinite == 0)
        self.first_nonfinite = torch.where(first, step + 1, self.first_nonfinite)
        self.nonfinite_losses = torch.where(first, losses, self.nonfinite_losses)
        with torch.no_grad():  # free from this forward
            self.goal_sum += final_token_reps(out.reps[: mb.pairs], out.last_index[: mb.pairs]).float().sum(0)
        self.goal_count += mb.pairs
        self.tokens, self.slots, self.pairs = self.tokens + mb.tokens, self.slots + mb.slots, self.pairs + mb.pairs
        self.steps += weight

    def report(self, step: int) -> bool:
        """At log, eval and checkpoint steps: all-reduce, eval, checkpoint, export, report. False when the
        run must stop (a non-finite loss): every rank sees the same all-reduced flag, so all stop together."""
        t = self.cfg.train
        evaluate, save = t.is_eval_step(step), t.is_checkpoint_step(step)
        if not (step % t.log_every == 0 or evaluate or save):
            return True
        elapsed = time.perf_counter() - self.t0
        counts = self.counts  # this rank's share of the run's row counts
        host = torch.tensor([self.tokens, self.slots, self.pairs, *counts.values()], dtype=torch.float64)
        totals = _all_reduce(torch.cat([self.losses.double(), host.to(self.device)])).tolist()
        nonfinite = int(_all_reduce(self.first_nonfinite.clone(), dist.ReduceOp.MAX))
        losses = {k: v / (self.steps * self.world) for k, v in zip(LOSSES, totals)}
        if nonfinite:
            # a deterministic failure: a report (not an exception) ends the run, so Ray Train does not retry it
            ray.train.report({"step": step, NONFINITE: self._nonfinite_message(nonfinite)})
            return False
        tokens, slots, pairs = totals[len(LOSSES) : len(LOSSES) + 3]
        metrics = {
            "step": step,
            NODE: self.node,
            "epoch": self.epoch,
            "lr": self.scheduler.get_last_lr()[0],
            **losses,
            "tokens_per_s": tokens / elapsed,
            "pairs_per_s": pairs / elapsed,
            "padding_frac": padding_frac(tokens, slots),
            **{k: int(v) for k, v in zip(counts, totals[len(LOSSES) + 3 :])},
        }
        if evaluate:
            metrics.update(self._evaluate())
        if save:
            self._save(step, metrics)
        else:
            ray.train.report(metrics)
        self.losses.zero_()
        self.tokens = self.slots = self.pairs = 0
        self.steps = 0.0
        self.t0 = time.perf_counter()
        return True

    def _nonfinite_message(self, step: int) -> str:
        """Naming the first such step of any rank, and that rank's losses there."""
        mine = self.first_nonfinite.item() == step
        rank = torch.tensor(self.rank if mine else self.world, device=self.device)
        first_rank = int(_all_reduce(rank, dist.ReduceOp.MIN))
        losses = _all_reduce(self.nonfinite_losses.clone() if self.rank == first_rank else torch.zeros_like(self.nonfinite_losses))
        loss, bt, contrastive = (f"{v:g}" for v in losses.tolist())
        return f"non-finite loss {loss} at step {step} (bt {bt}, contrastive {contrastive}); lower train.lr or check the data"

    def _evaluate(self) -> dict:
        goal_count = _all_reduce(torch.tensor(float(self.goal_count), dtype=torch.float32, device=self.device))
        goal = _all_reduce(self.goal_sum.clone()) / goal_count.clamp(min=1)
        self.engine.eval()
        scores = evaluate_pairs(
            self.engine, self.eval_shard, self.tokenizer.pad_token_id, self.cfg.train.eval_batch_size, goal,
            self.device, self.packing, n_real=self.eval_real,
        )
        self.goal_sum.zero_()
        self.goal_count = 0
        return {f"eval_{k}": v for k, v in _flatten(summarize(_all_gather_scores(scores))).items()}

    def _save(self, step: int, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(self.engine, tmp, step, self.gen, self.rank, self.loop_config["config"], self.tokenizer)
            if step == self.cfg.train.max_steps:
                self._export(os.path.join(tmp, MODEL_DIR))
            fault = self.loop_config.get("fault")
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_upload_fn=faults.upload_fn(fault, step, self.rank),
            )

    def _export(self, out_dir: str) -> None:
        """HF export plus the goal state: the mean final-token representation of preferred training
        completions. Weights are gathered on rank 0 alone (ZeRO-3: layer by layer) and written from there."""
        engine, device = self.engine, self.device
        self.engine.eval()
        pairs, n_real = self.source.goal_pairs()
        longest = int(_all_reduce(torch.tensor(len(pairs), device=device), dist.ReduceOp.MAX))
        pairs = pairs + pairs[:1] * (longest - len(pairs))  # every rank runs the same forwards
        rep_sum, *stats = goal_and_reward_stats(
            engine, pairs, self.tokenizer.pad_token_id, self.cfg.train.eval_batch_size, device, n_real=n_real
        )
        goal, mean, std = goal_and_reward_summary(_all_reduce(rep_sum), *_all_reduce(torch.stack(stats)).tolist())
        if self.cfg.train.zero_stage == 3:
            state = engine._zero3_consolidated_16bit_state_dict()  # a collective; None on ranks > 0
        else:
            state = engine.module.state_dict() if self.rank == 0 else None
        if self.rank == 0:
            save_reward_model(engine.module, self.tokenizer, out_dir, goal, mean, std, state_dict=state)


def _all_gather_scores(scores: PairScores) -> PairScores:
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, scores)
    merged = PairScores()
    for part in parts:
        merged.extend(part)
    return merged


def _all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    dist.all_reduce(t, op=op)
    return t


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out
