"""goalrm command line: train, export, tune, eval, score, serve, steer, report, data."""

import argparse
import json
import os
import sys

from goalrm.attention import IMPLEMENTATIONS
from goalrm.console import VERBOSE_ENV, progress_every, quiet_libraries
from goalrm.env import setup_environment

DEFAULT_OUTPUT_DIR = "runs/demo"


def _train(args) -> int:
    from goalrm.config import ConfigError, load_config
    from goalrm.train.trainer import run_config, train

    if args.resume and (args.config or args.output_dir or args.model):
        raise ConfigError("--resume DIR continues in DIR with the config the run started with (DIR/config.yaml); drop --config, --model and --output-dir")
    cfg = run_config(args.resume) if args.resume else load_config(args.config, {"model": {"name_or_path": args.model}} if args.model else None)
    print(
        f"goalrm train: model={cfg.model.name_or_path} data={cfg.data.train} workers={cfg.train.num_workers} "
        f"zero={cfg.train.zero_stage} {cfg.train.precision} λ={cfg.loss.contrastive_weight} ({cfg.loss.form}) "
        f"steps={cfg.train.max_steps} global_batch={cfg.train.global_batch_size} "
        f"attention={cfg.attention()}{' (auto)' if cfg.model.attn_implementation == 'auto' else ''}{' packed' if cfg.data.packing else ''}",
        flush=True,
    )
    from ray.train import TrainingFailedError

    output_dir = args.resume or args.output_dir or DEFAULT_OUTPUT_DIR
    try:
        result = train(cfg, output_dir, ray_address=args.address, resume=bool(args.resume))
    except TrainingFailedError as e:
        print(f"goalrm: error: training failed: {e}", file=sys.stderr)
        print(f"goalrm: the run keeps its last complete checkpoint; continue it with: goalrm train --resume {output_dir}", file=sys.stderr)
        return 1
    print(f"model written to {result.model_dir}")
    return 0


TUNE_FLAGS = ("metric", "mode", "scheduler", "search", "num_samples", "max_concurrent_trials")


def _tune(args) -> int:
    from goalrm.config import ConfigError, load_config
    from goalrm.tune import resume_sweep, run_sweep
    from goalrm.tune.results import format_table

    if args.resume:
        if args.space or args.config or any(getattr(args, k) is not None for k in TUNE_FLAGS):
            raise ConfigError("--resume DIR takes the sweep saved in DIR; drop --config, --space and the tune.* flags")
        result = resume_sweep(args.resume, ray_address=args.address, retry_failed=args.retry_failed)
    else:
        if not args.space or not args.output_dir:
            raise ConfigError("goalrm tune needs --space and --output-dir (or --resume DIR)")
        overrides = {k: getattr(args, k) for k in TUNE_FLAGS if getattr(args, k) is not None}
        result = run_sweep(load_config(args.config), args.space, args.output_dir, ray_address=args.address, overrides=overrides)
    print(format_table(result.rows))
    for name, path in result.files.items():
        print(f"{name}: {path}")
    if result.interrupted:
        print(f"interrupted: resume with `goalrm tune --resume {result.output_dir}`")
    if result.best_trial is None:
        print("goalrm: error: no trial produced the metric; see the error column", file=sys.stderr)
        return 1
    print(f"best: trial {result.best_trial}, {result.metric} {result.best_value:.4f} at step {result.rows[0]['best_step']}")
    ckpt_step = result.rows[0]["checkpoint_step"]
    if result.best_checkpoint is None:
        print("best checkpoint: none (no eval of the best trial saved one; see train.checkpoint_every)")
    elif ckpt_step != result.rows[0]["best_step"]:
        print(f"best checkpoint: {result.best_checkpoint} (step {ckpt_step}: the best step saved none; see train.checkpoint_every)")
    else:
        print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def _export(args) -> int:
    from goalrm.train.consolidate import export_checkpoint

    ckpt = export_checkpoint(args.checkpoint, args.output, train_data=args.train_data)
    print(f"exported {ckpt} to {args.output}")
    return 0


def _eval(args) -> int:
    from goalrm.device import resolve_device
    from goalrm.eval_cli import run_eval

    metrics = run_eval(
        args.model, args.data, args.output_json, args.batch_size, args.max_length, resolve_device(args.device), args.dtype
    )
    print(format_eval(metrics))
    return 0


def format_eval(m: dict) -> str:
    from goalrm.eval_cli import eval_rows

    rows = eval_rows(m)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _steer(args) -> int:
    from goalrm.device import resolve_device
    from goalrm.steer import SteerSettings
    from goalrm.steer_cli import format_summary, parse_modes, run_steer

    settings = SteerSettings(args.candidates, args.step_tokens, args.max_new_tokens, args.seed)
    rows = run_steer(
        args.policy, args.rm, args.prompts, settings, parse_modes(args.modes), args.goal, args.output,
        device=resolve_device(args.device),
    )
    if not args.output:
        print("\n".join(json.dumps(r) for r in rows))
    print(format_summary(rows), file=sys.stdout if args.output else sys.stderr)
    return 0


def _report(args) -> int:
    from goalrm.device import resolve_device
    from goalrm.report.build import build_report

    metrics = build_report(
        args.run, args.data, args.output, args.samples, args.batch_size, args.max_length, resolve_device(args.device)
    )
    print(format_eval(metrics))
    print(f"report written to {args.output}")
    return 0


def _score(args) -> int:
    from goalrm.config import ScoreConfig
    from goalrm.score.run import score

    fields = {k: v for k, v in vars(args).items() if k in ScoreConfig.__dataclass_fields__}
    score(ScoreConfig(**fields), address=args.address)
    return 0


def _serve(args) -> int:
    from goalrm.serve.config import load_serve_config
    from goalrm.serve.run import serve_until_stopped

    cfg = load_serve_config(args.config, {"model": args.model, "api_key_file": args.api_key_file})
    serve_until_stopped(cfg, args.host, args.port, address=args.address)
    return 0


def _data_synthetic(args) -> int:
    from goalrm.atomic import write_jsonl
    from goalrm.data.synthetic import synthetic_pairs

    write_jsonl(args.output, (
        {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "rejected_first_error": p.first_error_char}
        for p in synthetic_pairs(args.n, seed=args.seed, split=args.split, task=args.task)
    ))
    print(f"wrote {args.n} {args.split} pairs to {args.output}")
    return 0


def _data_gsm8k_solutions(args) -> int:
    from goalrm.data.gsm8k_solutions import convert_solutions

    if args.reference_chosen:
        print("goalrm: warning: reference-chosen pairs teach the reference's style, not correctness; "
              "they go to *_pairs_reference.jsonl, for a separate, labelled run", file=sys.stderr)
    summary = convert_solutions(args.input, args.output_dir, args.seed, args.eval_fraction, args.reference_chosen, args.on_bad_row)
    print(json.dumps(summary, indent=2))
    return 0


def _data_gsm8k_perturb(args) -> int:
    from goalrm.data.gsm8k_perturb import convert_perturbed

    print(json.dumps(convert_perturbed(args.input, args.output_dir, args.seed, args.eval_fraction, args.on_bad_row), indent=2))
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _gsm8k_args(p: argparse.ArgumentParser, eval_fraction: float) -> None:
    p.add_argument("--input", required=True, help="JSONL (.jsonl.gz) or Parquet file")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0, help="seeds the split by question (and the perturbations)")
    p.add_argument("--eval-fraction", type=_fraction, default=eval_fraction, help="share of questions held out")
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error")


def _scoring_args(p: argparse.ArgumentParser) -> None:
    """The pairs a command scores with an exported model (eval, report)."""
    p.add_argument("--data", required=True, help="JSONL/Parquet preference pairs, or 'synthetic' for the held-out demo split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: the GPU when torch sees one")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="goalrm", description="Goal-conditioned contrastive reward models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="also print Ray's, DeepSpeed's and transformers' own log lines")

    t = sub.add_parser("train", parents=[common], help="train a reward model on Ray Train (no --config: the embedded demo)")
    t.add_argument("--config", help="YAML config; omitted: the built-in demo (tiny model, synthetic data, 2 CPU workers, ZeRO-2)")
    t.add_argument(
        "--output-dir", help=f"where config.yaml, metrics.jsonl, tensorboard/, checkpoints and model/ go (default: {DEFAULT_OUTPUT_DIR}); must not hold a run yet"
    )
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last complete checkpoint, with the config it started with")
    t.add_argument("--model", help="overrides model.name_or_path: 'tiny', 'smollm2-135m', a local HF folder or a hub id")
    t.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    t.set_defaults(func=_train)

    u = sub.add_parser("tune", parents=[common], help="Ray Tune sweep over config keys (ASHA or FIFO); writes results.csv, best.yaml, a plot")
    u.add_argument("--config", help="base YAML config the sweep varies; omitted: the built-in demo")
    u.add_argument("--space", help="sweep file: `space:` (dotted key -> grid/choice/uniform/loguniform/randint/qrandint) and `tune:` settings")
    u.add_argument("--output-dir", help="where results.csv, best.yaml, summary.json, metric.png and tune/ (the trials) go")
    u.add_argument("--resume", metavar="DIR", help="continue the interrupted sweep in DIR (finished trials are kept)")
    u.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again from their start")
    u.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    g = u.add_argument_group("tune: settings (override the sweep file's)")
    g.add_argument("--metric", help="eval report key to optimise (default eval_auroc)")
    g.add_argument("--mode", choices=["max", "min"])
    g.add_argument("--scheduler", choices=["asha", "fifo"])
    g.add_argument("--search", choices=["random", "optuna"])
    g.add_argument("--num-samples", type=int)
    g.add_argument("--max-concurrent-trials", type=int, help="0: as many as the cluster fits")
    u.set_defaults(func=_tune)
    x = sub.add_parser("export", parents=[common], help="consolidate a training checkpoint (e.g. ZeRO-3 shards) into the HF export, on CPU without Ray")
    x.add_argument("--checkpoint", required=True, help="a checkpoint folder (RUN/ray_train/checkpoint_*), or a run folder: its newest complete checkpoint")
    x.add_argument("--output", required=True, help="the export folder to write (as OUTPUT_DIR/model)")
    x.add_argument("--train-data", help="the training data for the goal state and reward statistics, if not where the run's config says")
    x.set_defaults(func=_export)

    e = sub.add_parser("eval", parents=[common], help="pairwise accuracy, AUROC and prefix AUROC of Q-values on preference pairs")
    e.add_argument("--model", required=True, help="an exported model folder (OUTPUT_DIR/model)")
    _scoring_args(e)
    e.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the weights are read in this dtype")
    e.add_argument("--output-json", help="write the metrics here")
    e.set_defaults(func=_eval)

    g = sub.add_parser("steer", parents=[common], help="guided decoding: keep the sampled chunk with the highest Q-value toward the goal")
    g.add_argument("--policy", required=True, help="causal LM that proposes text: a local HF folder, hub id, or 'tiny' (random, a smoke test)")
    g.add_argument("--rm", required=True, help="an exported reward model folder (OUTPUT_DIR/model)")
    g.add_argument("--prompts", required=True, help="JSONL/Parquet rows with 'prompt', or a text file with one prompt per line")
    g.add_argument("--candidates", type=int, default=8, help="K chunks sampled per step when steering")
    g.add_argument("--step-tokens", type=int, default=8, help="N policy tokens per chunk")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--goal", help="safetensors with tensor 'goal' of the representation size (default: the export's goal_state.safetensors)")
    g.add_argument("--modes", default="steer,sample,greedy", help="comma-separated: steer, sample (K=1), greedy")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="policy and reward model; auto: the GPU when torch sees one")
    g.add_argument("--output", help="JSONL: prompt, mode, text, final_q, q_trace per step (default: stdout)")
    g.set_defaults(func=_steer)

    r = sub.add_parser("report", parents=[common], help="one self-contained HTML page: Q-value heatmaps, AUROC against prefix, rewards, training curves")
    r.add_argument("--run", required=True, help="a training output dir (holding model/ and metrics.jsonl)")
    _scoring_args(r)
    r.add_argument("--output", required=True, help="the HTML file to write")
    r.add_argument("--samples", type=int, default=4, help="pairs shown as token-level Q-value heatmaps")
    r.set_defaults(func=_report)

    c = sub.add_parser("score", parents=[common], help="score and filter completions on Ray Data: reward and token Q-values per row")
    c.add_argument("--model", required=True, help="an exported model folder (OUTPUT_DIR/model)")
    c.add_argument("--input", required=True, help="JSONL/Parquet file, folder or glob (local or a pyarrow filesystem URI)")
    c.add_argument("--output", required=True, help="folder for scored/*.parquet, rejects/, summary.json; rerun into it to resume")
    c.add_argument("--threshold", type=float, default=0.0, help="drop a completion at its first Q-value below this")
    c.add_argument("--goal", help="safetensors file with tensor 'goal' (default: the model's goal_state.safetensors)")
    c.add_argument("--batch-size", type=int, default=256, help="at most this many sequences per forward pass, taken in length order")
    c.add_argument("--max-tokens", type=int, default=16384, help="at most this many token slots per forward pass (packed: tokens)")
    c.add_argument("--attn-implementation", default="auto", choices=IMPLEMENTATIONS,
                   help="the scorers' attention (auto: packed varlen; CPU sdpa_varlen, GPU flash_attention_2 or flex_attention)")
    c.add_argument("--num-scorers", type=int, default=1, help="scorer actors, one model load each")
    c.add_argument("--gpus-per-scorer", type=float, default=0.0, help="GPUs per scorer actor; > 0 runs the model on CUDA")
    c.add_argument("--cpus-per-scorer", type=float, default=0.0, help="0: share the node's CPUs among the scorers")
    c.add_argument("--threads-per-scorer", type=int, default=0, help="torch threads; 0: the node's CPUs over the scorers")
    c.add_argument("--block-rows", type=int, default=2000, help="input rows per output file; the unit of resuming and of the pipeline")
    c.add_argument("--max-length", type=int, default=1024)
    c.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the weights are read in this dtype")
    c.add_argument("--group-col", help="with --answer-col: majority vote per group before and after filtering")
    c.add_argument("--answer-col", help="the column holding each row's answer, for the majority vote")
    c.add_argument("--label-col", help="truthy = the row's answer is correct; gives majority-vote accuracy")
    c.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    c.set_defaults(func=_score)

    v = sub.add_parser("serve", parents=[common], help="serve rewards and token Q-values over HTTP on Ray Serve, batching across requests")
    v.add_argument("--model", help="an exported model folder (OUTPUT_DIR/model) or an HF sequence-classification folder (safetensors)")
    v.add_argument("--config", help="serve config: ServeConfig keys (goalrm/serve/config.py), or a Ray Serve file like serve_configs/reward.yaml")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    v.add_argument("--api-key-file", help="a file holding a key; requests must then send `Authorization: Bearer <key>` (all but /health)")
    v.set_defaults(func=_serve)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synthetic", help="write the built-in arithmetic preference pairs as JSONL")
    s.add_argument("--output", required=True, help="the JSONL file to write (its folder is created)")
    s.add_argument("--n", type=int, default=256, help="pairs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["train", "eval"], default="eval", help="one of two disjoint splits")
    s.add_argument("--task", choices=["chains", "long_chains"], default="chains", help="long_chains: 4-7 steps of two-digit numbers")
    s.set_defaults(func=_data_synthetic)
    g = dsub.add_parser(
        "gsm8k-solutions",
        help="GSM8K model solutions labelled is_correct to pairs (correct chosen, incorrect rejected, per question) "
        "and scoring rows; writes {train,eval}_pairs.jsonl, {train,eval}_scoring.jsonl, summary.json",
    )
    _gsm8k_args(g, eval_fraction=0.2)
    g.add_argument(
        "--reference-chosen", action="store_true",
        help="also write {train,eval}_pairs_reference.jsonl: ground_truth chosen over each incorrect solution "
        "(a model trained on these learns the reference's style, not correctness)",
    )
    g.set_defaults(func=_data_gsm8k_solutions)
    g = dsub.add_parser(
        "gsm8k-perturb",
        help="GSM8K reference solutions ({question, answer} with <<a*b=c>> annotations) to pairs whose rejected "
        "has one calculation wrong, carried forward; writes {train,eval}_pairs.jsonl, summary.json",
    )
    _gsm8k_args(g, eval_fraction=0.05)
    g.set_defaults(func=_data_gsm8k_perturb)
    return p


def main(argv=None) -> int:
    setup_environment()
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"
    quiet_libraries()
    try:
        progress_every()  # a bad GOALRM_PROGRESS_EVERY fails here, not when the first bar starts
    except ValueError as e:
        print(f"goalrm: error: {e}", file=sys.stderr)
        return 2
    from goalrm.config import ConfigError
    from goalrm.data.errors import BadRowError

    try:
        return args.func(args)
    except (ConfigError, BadRowError, FileNotFoundError, FileExistsError) as e:
        print(f"goalrm: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a training run stopped on a NaN or infinite loss; not retried
        print(f"goalrm: error: training stopped: {e}", file=sys.stderr)
        return 1


def job_main(command: str) -> int:
    """A Ray Jobs entrypoint: COMMAND with the job's flags, joining the cluster it was submitted to.

    "auto" fails when there is no cluster, so a submitted job never starts a Ray of its own.
    """
    return main([command, "--address", "auto", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
