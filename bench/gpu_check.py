"""GPU acceptance check: one PASS or FAIL line per item, then a summary line; exit 0 only if all pass.

    python bench/gpu_check.py                      # on a GPU host, from anywhere; about 3-4 minutes
    python bench/gpu_check.py --device cpu --tiny  # the dry run CI runs (tests/test_gpu_check.py)

Items:
  train           SmolLM2-135M (`make smollm2`), bf16, ZeRO-2, λ = 0.5, data.packing, through
                  goalrm's `train` on a local Ray with use_gpu: finite losses, held-out eval, a loadable export
  zero3-odd-eval  ZeRO-3 with parameter release forced, 33 eval pairs and 65 goal pairs on one worker per GPU:
                  the run finishes and its sharded eval equals one process's
  score, eval,    `goalrm score --gpus-per-scorer 1`, `goalrm eval --device cuda`, `goalrm steer --device cuda`
  steer           on the train item's export, each against a CPU computation of the same rows
  throughput      goalrm's step (RewardModel, reward_model_loss with λ = 0.5, DeepSpeed ZeRO-2 bf16, one
                  process) on a random 820.6M Llama, 8 + 8 sequences of 256-1024 tokens packed into one row
                  for the auto attention (FlashAttention-2 with flash-attn, else FlexAttention; on the CPU
                  goalrm's sdpa_varlen): real tokens/s, MFU, peak memory
  score-speed     the same model scoring 2,000 sequences of varied lengths in bf16 (the CPU: fp32): goalrm's
                  token-budget packed forwards against a naive loop (input order, batches of 16, padded),
                  rewards equal; tokens/s of both and their ratio

The GPU image has torch, transformers and peft but not Ray or DeepSpeed. When `import ray` fails, the
wheels of ../shared/gpu-wheels (copied into .whl/ at the repo root, or --wheels DIR) are installed into
/tmp/site with the line of its README, and the check runs itself again with PYTHONPATH=/tmp/site.
Everything but the result lines (Ray, DeepSpeed, transformers, the workers' logs) goes to a log file,
kept with the outputs when an item fails; --verbose shows it all on the console instead.
"""

import argparse
import contextlib
import glob
import importlib.metadata
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # goalrm runs from the checkout: the GPU image has its dependencies, not goalrm

from goalrm.config import ConfigError  # noqa: E402
from goalrm.device import resolve_device  # noqa: E402
from goalrm.env import setup_environment  # noqa: E402

SITE = "/tmp/site"  # where ../shared/gpu-wheels/README.md installs the wheels (--site)
INSTALLED = "GOALRM_GPU_CHECK_INSTALLED"  # set when the check runs again after installing: install once
PRECISION = "bf16"  # train and throughput; zero3-odd-eval runs fp32, to compare with one process exactly
LAMBDA = 0.5
SCORE_DTYPE = "bfloat16"  # goalrm score's fast path on a GPU; eval and steer run float32: both dtypes are checked
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# largest difference allowed against the CPU fp32 computation, relative to max(1, largest reference value)
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
BASELINE = "baseline on an H100: plain PyTorch 44.6%, DeepSpeed ZeRO-2 one process 38.9% (../shared/gpu-wheels/README.md)"


@dataclass(frozen=True)
class Profile:
    """How big each item runs: the full check on a GPU, or the tiny dry run."""

    model: str  # the train item's backbone, also steer's policy
    lr: float
    train_steps: int
    eval_every: int
    micro_batch: int
    train_pairs: int
    eval_pairs: int
    zero3_steps: int
    shape: str  # bench/shapes.py: the throughput item's random Llama
    pairs_per_step: int  # throughput: this many chosen and as many rejected rows in one forward
    seq_len: int
    warmup_steps: int
    timed_steps: int
    score_rows: int  # score-speed: sequences scored by each of the two loops
    matmul_size: int  # the peak-FLOP/s matmul is this square
    item_timeout_s: int  # a mismatched collective hangs on NCCL: the item fails instead of the check


FULL = Profile(
    model="smollm2-135m", lr=1e-5, train_steps=40, eval_every=20, micro_batch=16, train_pairs=2000, eval_pairs=128,
    zero3_steps=20, shape="llama-820m", pairs_per_step=8, seq_len=1024, warmup_steps=3, timed_steps=10, score_rows=2000, matmul_size=8192,
    item_timeout_s=300,
)
TINY = Profile(
    model="tiny", lr=1e-3, train_steps=10, eval_every=5, micro_batch=8, train_pairs=400, eval_pairs=32,
    zero3_steps=6, shape="tiny", pairs_per_step=2, seq_len=64, warmup_steps=2, timed_steps=3, score_rows=48, matmul_size=512,
    item_timeout_s=600,  # a busy shared CI machine: an item there can take minutes
)


class Failed(Exception):
    """An item ran and found something wrong; the message is its FAIL line's reason."""


@dataclass
class Context:
    profile: Profile
    device: torch.device
    workdir: str
    peak_tflops: float | None
    export: str | None = None  # the train item's model folder

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def cli_device(self) -> list[str]:
        return ["--device", self.device.type]


# ---------------------------------------------------------------- Ray and DeepSpeed on a bare GPU image


def bootstrap(wheels_dir: str, site: str) -> str | None:
    """None when Ray imports and DeepSpeed is installed. Else install the wheels and run again (no
    return), or the reason neither is possible."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        error = str(e)
    else:
        if importlib.util.find_spec("deepspeed") is not None:  # imported later, once its accelerator is set
            return None
        error = "No module named 'deepspeed'"
    if os.environ.get(INSTALLED):
        return f"Ray or DeepSpeed still does not import after installing {wheels_dir}/*.whl into {site}: {error}"
    wheels = sorted(glob.glob(os.path.join(wheels_dir, "*.whl")))
    if not wheels:
        return (
            f"{error}, and {wheels_dir} holds no wheels: copy ../shared/gpu-wheels/ (its .whl files and fallback/) "
            f"into .whl/ at the repo root or pass --wheels DIR, or pip install 'ray[train,tune,data]==2.60.0' deepspeed==0.19.8"
        )
    pip_error = install(wheels + fallback_wheels(wheels_dir), site)
    if pip_error:
        return f"installing {wheels_dir}/*.whl into {site} failed: {pip_error}"
    run_again_with(site)


def fallback_wheels(wheels_dir: str) -> list[str]:
    """pydantic 2.14 needs typing_extensions >= 4.16: the README's fallback wheel, when the host's is older."""
    try:
        version = tuple(int(x) for x in importlib.metadata.version("typing_extensions").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = (0, 0)
    return sorted(glob.glob(os.path.join(wheels_dir, "fallback", "*.whl"))) if version < (4, 16) else []


def install(wheels: list[str], site: str) -> str:
    """The README's pip line; pip's last error line, or "" when it worked."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", site, *wheels]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return "" if proc.returncode == 0 else (lines[-1] if lines else f"pip exited {proc.returncode}")


def run_again_with(site: str) -> None:
    """Replace this process by the same command with SITE first on PYTHONPATH (Ray's workers inherit it)."""
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, INSTALLED: "1", "RAY_AUTH_MODE": "disabled"}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


# ---------------------------------------------------------------- the console


class Console:
    """Result lines to the terminal. Unless verbose, file descriptors 1 and 2 go to LOG_PATH, so Ray,
    DeepSpeed, NCCL, the workers' logs (Ray forwards them to the driver) and Ray's own processes,
    which inherit them, all write there."""

    def __init__(self, log_path: str, verbose: bool):
        sys.stdout.flush()
        sys.stderr.flush()
        self.terminal = os.fdopen(os.dup(1), "w", buffering=1)
        self.log_path = None if verbose else log_path
        if self.log_path:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)

    def line(self, text: str) -> None:
        self.terminal.write(text + "\n")
        self.terminal.flush()
        if self.log_path:
            print(text, flush=True)  # also in the log, between the output it summarises


@contextlib.contextmanager
def deadline(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"no result after {seconds} s (a hang, e.g. collectives that do not match)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def reason(e: BaseException) -> str:
    if isinstance(e, Failed):
        return str(e)
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:300]}"


# ---------------------------------------------------------------- items


def check_train(ctx: Context) -> str:
    from goalrm.backbones import check as check_backbone
    from goalrm.export import load_reward_model
    from goalrm.train.trainer import train

    p = ctx.profile
    try:
        check_backbone(p.model)
    except ValueError as e:  # no fallback to the tiny preset: the item is about this backbone
        raise Failed(f"{e}; then run the check again") from None
    overrides = {
        "model": {"name_or_path": p.model},
        "data": {"synthetic_train_size": p.train_pairs, "synthetic_eval_size": p.eval_pairs,
                 "goal_state_pairs": 4 * p.micro_batch, "packing": True},
        "loss": {"contrastive_weight": LAMBDA},
        "train": {"num_workers": 1, "zero_stage": 2, "precision": PRECISION, "lr": p.lr, "micro_batch_size": p.micro_batch,
                  "max_steps": p.train_steps, "eval_every": p.eval_every, "log_every": p.eval_every},
    }
    _, reports, model_dir = run_training(ctx, "train", overrides)
    final = reports[-1]
    if "eval_accuracy" not in final or final["eval_n_pairs"] != p.eval_pairs:
        raise Failed(f"the last report has no held-out eval of {p.eval_pairs} pairs: {final}")
    _, _, goal, _ = load_reward_model(model_dir, device=ctx.device)
    if goal is None:
        raise Failed(f"{model_dir} has no goal state")
    ctx.export = model_dir
    return (
        f"{p.model} {PRECISION} ZeRO-2 λ={LAMBDA} packing, 1 {ctx.device.type} worker: {final['step']} steps, "
        f"loss {reports[0]['loss']:.3f} -> {final['loss']:.3f}, padding {final['padding_frac']:.1%}, "
        f"{final['tokens_per_s']:,.0f} tokens/s; eval accuracy {final['eval_accuracy']:.3f} on {final['eval_n_pairs']} "
        f"held-out pairs; export loads with its goal state"
    )


def check_zero3(ctx: Context) -> str:
    from goalrm.data.load import load_tokenized
    from goalrm.evaluate import evaluate_pairs, summarize
    from goalrm.export import load_reward_model
    from goalrm.train.deepspeed_config import FORCE_PARAM_RELEASE

    workers = torch.cuda.device_count() if ctx.gpu else 2  # NCCL cannot put two ranks on one GPU
    ds_json = os.path.join(ctx.workdir, "zero3_release.json")
    with open(ds_json, "w") as f:
        json.dump(FORCE_PARAM_RELEASE, f)
    steps = ctx.profile.zero3_steps
    # like tests/test_train_e2e.py's run: shards of 17/16 eval and 33/32 goal pairs, batch counts that differ
    overrides = {
        "data": {"synthetic_train_size": 512, "synthetic_eval_size": 33, "goal_state_pairs": 65},
        "train": {"num_workers": workers, "zero_stage": 3, "max_steps": steps, "eval_every": steps // 2,
                  "log_every": steps // 2, "eval_batch_size": 16, "micro_batch_size": 8, "deepspeed_config": ds_json},
    }
    cfg, reports, model_dir = run_training(ctx, "zero3", overrides)
    final = reports[-1]
    if final.get("eval_n_pairs") != 33:
        raise Failed(f"the last eval scored {final.get('eval_n_pairs')} pairs, not 33")
    model, tok, _, _ = load_reward_model(model_dir, device=ctx.device)
    pairs, _, _ = load_tokenized("synthetic", "eval", cfg.data, tok)
    alone = summarize(evaluate_pairs(model, pairs, tok.pad_token_id, 16, None, ctx.device))
    keys = ("accuracy", "auroc", "reward_margin")
    gap = relative_gap([final[f"eval_{k}"] for k in keys], [alone[k] for k in keys])
    if gap > TOLERANCE["float32"]:
        raise Failed(f"the sharded eval differs from one process's by {gap:.2e}: {[(k, final[f'eval_{k}'], alone[k]) for k in keys]}")
    detail = (
        f"{workers} {ctx.device.type} worker{'s' * (workers > 1)}, fp32 ZeRO-3 with stage3_* = 0, eval batch 16: {final['step']} steps; "
        f"the eval of all 33 pairs equals one process's (max difference {gap:.1e})"
    )
    if workers < 2:
        detail += "; with 1 GPU the shards are even: the uneven-shard part needs >= 2 GPUs (CI covers it on CPU with 2 gloo workers)"
    return detail


def check_score(ctx: Context) -> str:
    import pyarrow.parquet as pq

    from goalrm.score.io import SCORED

    pairs, _ = sample_inputs(ctx)
    out = os.path.join(ctx.workdir, "score")
    dtype = SCORE_DTYPE
    run_cli(["score", "--model", export(ctx), "--input", pairs, "--output", out, "--batch-size", "4",
             "--gpus-per-scorer", "1" if ctx.gpu else "0", "--dtype", dtype])
    got = pq.read_table(os.path.join(out, SCORED))
    want = cpu_scores(ctx, pairs, os.path.join(ctx.workdir, "score_cpu"))
    if got.num_rows != want.num_rows or got.num_rows == 0:
        raise Failed(f"{got.num_rows} rows scored on {ctx.device.type}, {want.num_rows} on the CPU")
    reward_gap = relative_gap(got["reward"].to_pylist(), want["reward"].to_pylist())
    q_gap = relative_gap(_flat(got["q_values"]), _flat(want["q_values"]))
    if max(reward_gap, q_gap) > TOLERANCE[dtype]:
        raise Failed(f"{dtype} on {ctx.device.type} differs from CPU fp32 by {reward_gap:.2e} (rewards), {q_gap:.2e} (Q-values); tolerance {TOLERANCE[dtype]:g}")
    return (
        f"{got.num_rows} rows, {dtype} on {ctx.device.type} (--gpus-per-scorer {'1' if ctx.gpu else '0'}): rewards within "
        f"{reward_gap:.1e}, Q-values within {q_gap:.1e} of CPU fp32 (tolerance {TOLERANCE[dtype]:g})"
    )


def check_eval(ctx: Context) -> str:
    from goalrm.eval_cli import run_eval

    pairs, _ = sample_inputs(ctx)
    out = os.path.join(ctx.workdir, "eval.json")
    run_cli(["eval", "--model", export(ctx), "--data", pairs, "--batch-size", "4", "--output-json", out, *ctx.cli_device])
    with open(out) as f:
        got = json.load(f)
    want = run_eval(export(ctx), pairs, batch_size=4, device="cpu")
    keys = [k for k in ("reward_margin", "q_gap", "q_before_error", "q_after_error", "q_after_error_chosen") if k in want]
    gap = relative_gap([got[k] for k in keys], [want[k] for k in keys])
    if gap > TOLERANCE["float32"]:
        raise Failed(f"float32 on {ctx.device.type} differs from the CPU by {gap:.2e} in {', '.join(keys)}")
    return f"{got['n_pairs']} pairs, float32 on {ctx.device.type}: {', '.join(keys)} within {gap:.1e} of the CPU"


def check_steer(ctx: Context) -> str:
    from goalrm.export import load_reward_model
    from goalrm.steer import final_q

    _, prompts = sample_inputs(ctx)
    out = os.path.join(ctx.workdir, "steer.jsonl")
    run_cli(["steer", "--policy", ctx.profile.model, "--rm", export(ctx), "--prompts", prompts, "--candidates", "4",
             "--step-tokens", "4", "--max-new-tokens", "8", "--modes", "steer,greedy", "--output", out, *ctx.cli_device])
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    if not rows or any(r["final_q"] != r["q_trace"][-1] for r in rows):
        raise Failed(f"{out}: no rows, or a final Q that is not the last of its trace")
    model, tok, goal, _ = load_reward_model(export(ctx))  # the CPU, fp32
    want = final_q(model, tok, goal.float(), [r["prompt"] + r["text"] for r in rows]).tolist()
    gap = relative_gap([r["final_q"] for r in rows], want)
    if gap > TOLERANCE["float32"]:
        raise Failed(f"final Q-values on {ctx.device.type} differ from the CPU's by {gap:.2e}")
    return f"{len(rows)} decodes (steer, greedy) on {ctx.device.type}: final Q-values within {gap:.1e} of the CPU"


def check_throughput(ctx: Context) -> str:
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoModelForSequenceClassification

    from goalrm import attention
    from goalrm.config import TrainConfig
    from goalrm.losses import LossConfig
    from goalrm.model import RewardModel
    from goalrm.sampling import sampling_generator
    from goalrm.tiny import tiny_config
    from goalrm.train.deepspeed_config import deepspeed_config
    from shapes import SHAPES  # bench/, on the path as this script's folder
    from vs_trl import engine_step, init_process_group

    p, device = ctx.profile, ctx.device
    if ctx.gpu:
        torch.cuda.set_device(device)
    init_process_group("nccl" if ctx.gpu else "gloo")
    try:
        attn = attention.resolve("auto", device.type, packing=True, precision=PRECISION)  # as `goalrm train` picks
        attention.register()
        config = tiny_config(num_labels=1, **SHAPES[p.shape])
        with torch.device(device):  # initialised where it trains: no host copy of the weights
            model = RewardModel(AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, attn_implementation=attn))
        params = sum(q.numel() for q in model.parameters())
        train = TrainConfig(num_workers=1, zero_stage=2, precision=PRECISION, micro_batch_size=p.pairs_per_step,
                            max_steps=p.warmup_steps + p.timed_steps)
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed reads it; Ray Train sets it in a worker
        # the optimizer from goalrm's DeepSpeed config, as in goalrm/train/loop.py (fused torch AdamW)
        engine, *_ = deepspeed.initialize(model=model, model_parameters=[q for q in model.parameters() if q.requires_grad],
                                          config=deepspeed_config(train, 1), dist_init_required=None)
        gen = sampling_generator(0, 0, engine.device)
        batch = random_batch(config.vocab_size, p.pairs_per_step, p.seq_len, engine.device, gen, attention.packing_layout(attn))
        loss_cfg = LossConfig(contrastive_weight=LAMBDA)
        if ctx.gpu:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(lambda: engine_step(engine, batch, loss_cfg, gen), p.warmup_steps, p.timed_steps, device)
        memory = peak_memory(device)
        tokens_per_s = p.timed_steps * batch.tokens / seconds
        peak, source = peak_flops(ctx)
        mfu = 6 * params * tokens_per_s / peak
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return (
        f"{params / 1e6:.1f}M params ({p.shape}), {p.pairs_per_step}+{p.pairs_per_step} sequences of {p.seq_len // 4}-{p.seq_len} "
        f"tokens packed ({batch.tokens} real, attention {attn}), ZeRO-2 {PRECISION} λ={LAMBDA}, 1 process: {tokens_per_s:,.0f} "
        f"tokens/s, MFU {mfu:.1%} of {peak / 1e12:,.1f} TFLOP/s ({source}), {memory}; {BASELINE}"
    )


def check_score_speed(ctx: Context) -> str:
    from transformers import AutoModelForSequenceClassification

    from goalrm import attention
    from goalrm.data.pack import PACKING_MODEL_TYPES
    from goalrm.model import RewardModel
    from goalrm.qvalues import q_values
    from goalrm.score.scorer import score_sequences, scoring_attention
    from goalrm.tiny import tiny_config
    from shapes import SHAPES

    p, device = ctx.profile, ctx.device
    dtype = SCORE_DTYPE if ctx.gpu else "float32"
    attn = scoring_attention("auto", device.type, dtype)  # as `goalrm score` picks
    attention.register()
    config = tiny_config(num_labels=1, **SHAPES[p.shape])
    torch.manual_seed(0)
    with torch.device(device):
        ours = RewardModel(AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, attn_implementation=attn))
        naive = RewardModel(AutoModelForSequenceClassification.from_config(config, dtype=torch.float32))
    naive.load_state_dict(ours.state_dict())
    ours, naive = ours.to(DTYPES[dtype]).eval(), naive.to(DTYPES[dtype]).eval()
    gen = torch.Generator().manual_seed(1)
    # completions log-normal around a quarter of seq_len, a long tail cut at seq_len; a fifth is prompt
    lengths = torch.clamp((torch.randn(p.score_rows, generator=gen) * 0.6).exp() * p.seq_len / 4, 8, p.seq_len).long().tolist()
    seqs = [(torch.randint(3, config.vocab_size, (n,), generator=gen).tolist(), n // 5) for n in lengths]
    goal = torch.randn(config.hidden_size, generator=gen).to(device)
    tokens = sum(lengths)
    packing = attention.packing_layout(attn) if config.model_type in PACKING_MODEL_TYPES else None

    def run_ours():
        return score_sequences(ours, goal, seqs, config.pad_token_id, 16384, device, packing, 256)[0]

    def run_naive():  # what one writes first: batches of 16 in input order, right-padded
        rewards = []
        with torch.inference_mode():
            for b in range(0, len(seqs), 16):
                chunk = seqs[b : b + 16]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.full((len(chunk), width), config.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, (s, _) in enumerate(chunk):
                    ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
                out = naive(ids.to(device), mask.to(device), with_reps=True)
                q = q_values(out.reps, goal).cpu()
                _ = [q[i, start : len(s)].tolist() for i, (s, start) in enumerate(chunk)]
                rewards += out.rewards.float().cpu().tolist()
        return rewards

    run_ours(), run_naive()  # warm-up: kernels, and FlexAttention's compile
    t_ours = timed(run_ours, 0, 1, device)
    t_naive = timed(run_naive, 0, 1, device)
    gap = relative_gap(run_ours().tolist(), run_naive())
    if gap > TOLERANCE[dtype]:
        raise Failed(f"packed rewards differ from the padded loop's by {gap:.2e} (tolerance {TOLERANCE[dtype]:g})")
    return (
        f"{p.score_rows} sequences, {tokens} tokens ({p.shape}, {dtype}): goalrm {tokens / t_ours:,.0f} tokens/s "
        f"(attention {attn}, {'packed ' + packing if packing else 'padded'}), naive padded loop {tokens / t_naive:,.0f} "
        f"tokens/s: x{t_naive / t_ours:.2f}; rewards within {gap:.1e}"
    )


CHECKS = (
    ("train", check_train),
    ("zero3-odd-eval", check_zero3),
    ("score", check_score),
    ("eval", check_eval),
    ("steer", check_steer),
    ("throughput", check_throughput),
    ("score-speed", check_score_speed),
)


# ---------------------------------------------------------------- helpers of the items


def run_training(ctx: Context, name: str, overrides: dict):
    """goalrm's `train` in WORKDIR/NAME, use_gpu on a GPU: its config, its reports (every loss finite,
    the last step reached) and its export folder."""
    from goalrm.config import load_config
    from goalrm.train.loop import LOSSES
    from goalrm.train.report import METRICS_FILE
    from goalrm.train.trainer import train

    try:  # the metrics logger writes TensorBoard from Ray Train's controller, where a missing package is obscure
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as e:
        raise Failed(f"goalrm's metrics logger needs TensorBoard, a goalrm dependency ({e}): pip install tensorboard") from None
    train_overrides = {"use_gpu": ctx.gpu, "warmup_steps": 0, **overrides["train"]}
    cfg = load_config(None, {**overrides, "train": train_overrides})  # the demo config underneath: synthetic data
    out = os.path.join(ctx.workdir, name)
    result = train(cfg, out)
    with open(os.path.join(out, METRICS_FILE)) as f:
        reports = [json.loads(line) for line in f]
    bad = [(r["step"], k, r[k]) for r in reports for k in LOSSES if not math.isfinite(r[k])]
    if bad:
        raise Failed(f"non-finite losses (step, loss, value): {bad[:3]}")
    if reports[-1]["step"] != cfg.train.max_steps:
        raise Failed(f"the last report is step {reports[-1]['step']}, not {cfg.train.max_steps}")
    return cfg, reports, result.model_dir


def export(ctx: Context) -> str:
    if ctx.export is None:
        raise Failed("needs the export of the train item, which did not pass")
    return ctx.export


def sample_inputs(ctx: Context) -> tuple[str, str]:
    """8 held-out synthetic pairs (JSONL, as `goalrm data synthetic` writes them) and 2 of their prompts."""
    pairs, prompts = os.path.join(ctx.workdir, "pairs.jsonl"), os.path.join(ctx.workdir, "prompts.jsonl")
    if not os.path.exists(prompts):
        run_cli(["data", "synthetic", "--output", pairs, "--n", "8"])
        with open(pairs) as f, open(prompts, "w") as out:
            for line in list(f)[:2]:
                out.write(json.dumps({"prompt": json.loads(line)["prompt"]}) + "\n")
    return pairs, prompts


def run_cli(argv: list[str]) -> None:
    from goalrm.cli import main

    rc = main(argv)
    if rc != 0:
        raise Failed(f"goalrm {' '.join(argv[:1])} exited {rc} (its error is in the log)")


def cpu_scores(ctx: Context, data: str, out: str):
    """`goalrm score`'s output for DATA, computed here on the CPU in fp32 (no Ray)."""
    import pyarrow.parquet as pq

    from goalrm.config import ScoreConfig
    from goalrm.score.block import score_block
    from goalrm.score.io import SCORED, input_files, plan_blocks
    from goalrm.score.scorer import load_scorer

    cfg = ScoreConfig(model=export(ctx), input=data, output=out, batch_size=4)
    model, tok, goal, packing = load_scorer(cfg.model)
    fs, files = input_files(data)
    for block in plan_blocks(fs, files, cfg.block_rows):
        score_block(fs, block, model, tok, goal, cfg, out, packing=packing)
    return pq.read_table(os.path.join(out, SCORED))


def _flat(column) -> list[float]:
    return [x for row in column.to_pylist() for x in row]


def relative_gap(got: list[float], want: list[float]) -> float:
    """Largest |got - want|, over max(1, largest |want|): absolute for values near 1, relative for large ones."""
    if len(got) != len(want):
        raise Failed(f"{len(got)} values against {len(want)} from the CPU")
    if not want:
        return 0.0
    scale = max(1.0, max(abs(w) for w in want))
    return max(abs(g - w) for g, w in zip(got, want)) / scale


def random_batch(vocab: int, pairs: int, seq_len: int, device, gen: torch.Generator, packing: str | None = None):
    """PAIRS chosen and PAIRS rejected rows of random tokens, made on DEVICE, as `collate_for_model` lays
    them out: lengths from a quarter of SEQ_LEN to SEQ_LEN, right-padded, the completion each row's
    second half; with PACKING (a layout), packed too."""
    from goalrm.data.model_batch import ModelBatch
    from goalrm.data.pack import pack

    rows = 2 * pairs
    lengths = torch.randint(seq_len // 4, seq_len + 1, (rows,), generator=gen, device=device)
    lengths[0] = seq_len  # the padded width
    ids = torch.randint(3, vocab, (rows, seq_len), generator=gen, device=device, dtype=torch.long)  # 0-2: specials
    mask = (torch.arange(seq_len, device=device) < lengths[:, None]).long()
    ids = ids * mask  # pad id 0
    padded = {
        "input_ids": ids,
        "attention_mask": mask,
        "completion_start": lengths // 2,
        "completion_end": lengths,
        "first_error": torch.full((pairs,), -1, dtype=torch.long, device=device),
        # random rejected rows share nothing with the chosen ones: negatives from the completion's start
        "rejected_divergence": lengths[pairs:] // 2,
    }
    packed = None if packing is None else pack(ids.cpu(), mask.cpu(), 0, packing).to(device)
    tokens = int(mask.sum())
    return ModelBatch(padded, packed, pairs, tokens, tokens if packed is not None else mask.numel())


def timed(step, warmup: int, steps: int, device) -> float:
    """Seconds for STEPS calls of STEP after WARMUP untimed ones, the device drained at both ends."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - t0


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(ctx: Context) -> tuple[float, str]:
    """FLOP/s to take MFU against: --peak-tflops, else a large bf16 matmul measured here and now."""
    if ctx.peak_tflops:
        return ctx.peak_tflops * 1e12, "given with --peak-tflops"
    n, device = ctx.profile.matmul_size, ctx.device
    a, b, c = (torch.randn(n, n, dtype=torch.bfloat16, device=device) for _ in range(3))
    iterations = 50 if ctx.gpu else 5
    seconds = timed(lambda: torch.matmul(a, b, out=c), 5, iterations, device)
    return 2 * n**3 * iterations / seconds, f"measured now: bf16 {n}x{n} matmul; --peak-tflops to give one"


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB (torch.cuda.max_memory_allocated)"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB (the whole check's process)"


def describe(device: torch.device | None, asked: str) -> str:
    if device is None:
        return f"{asked} (unavailable), torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"cpu ({os.cpu_count()} cores), torch {torch.__version__}"


# ---------------------------------------------------------------- main


def run_checks(ctx: Context | None, blocked: str | None, console: Console) -> int:
    """Each item's PASS or FAIL line; the number that failed. BLOCKED fails them all with its reason."""
    failed = 0
    for name, check in CHECKS:
        t0 = time.perf_counter()
        try:
            if blocked:
                raise Failed(blocked)
            with deadline(ctx.profile.item_timeout_s):
                detail = check(ctx)
            console.line(f"PASS {name}: {detail} [{time.perf_counter() - t0:.0f} s]")
        except Exception as e:
            if not isinstance(e, Failed):  # a Failed says all it knows in its line
                traceback.print_exc()  # into the log
            console.line(f"FAIL {name}: {reason(e)}")
            failed += 1
    return failed


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tiny preset and small shapes: the dry run (with --device cpu)")
    p.add_argument("--wheels", default=os.path.join(REPO, ".whl"), help="Ray and DeepSpeed wheels to install when Ray does not import")
    p.add_argument("--site", default=SITE, help="where the wheels are installed")
    p.add_argument("--peak-tflops", type=float, help="the device's bf16 peak for MFU (default: measured with a large matmul)")
    p.add_argument("--verbose", action="store_true", help="everything on the console (default: a log file)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    # Ray's processes inherit the environment: its workers import goalrm from this checkout too
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    device = ctx = blocked = None
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        blocked = f"{e}; the dry run is --device cpu --tiny"
    # before anything imports DeepSpeed, which picks its accelerator on import; Ray's workers choose theirs
    os.environ.setdefault("DS_ACCELERATOR", args.device)
    setup_environment()
    blocked = blocked or bootstrap(args.wheels, args.site)
    workdir = tempfile.mkdtemp(prefix="goalrm-gpu-check-")
    console = Console(os.path.join(workdir, "gpu_check.log"), args.verbose)
    if device is not None:
        ctx = Context(TINY if args.tiny else FULL, device, workdir, args.peak_tflops)
    try:
        failed = run_checks(ctx, blocked, console)
    finally:
        _stop_ray()
    summary = f"gpu_check: {len(CHECKS) - failed} passed, {failed} failed in {time.perf_counter() - t0:.0f} s, device {describe(device, args.device)}"
    if failed:
        console.line(summary + f"; log and outputs in {workdir}")
        return 1
    console.line(summary)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _stop_ray() -> None:
    """Ray's processes, if an item started them; without importing Ray, which may not import here."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
