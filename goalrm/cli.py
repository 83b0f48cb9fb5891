"""goalrm command line: train, export, eval, data."""

import argparse
import json
import sys

from goalrm.env import setup_environment

DEFAULT_OUTPUT_DIR = "runs/demo"


def _train(args) -> int:
    from goalrm.config import ConfigError, load_config
    from goalrm.train.trainer import run_config, train

    if args.resume and (args.config or args.output_dir):
        raise ConfigError("--resume DIR continues in DIR with the config the run started with (DIR/config.yaml); drop --config and --output-dir")
    cfg = run_config(args.resume) if args.resume else load_config(args.config)
    print(
        f"goalrm train: model={cfg.model.name_or_path} data={cfg.data.train} workers={cfg.train.num_workers} "
        f"zero={cfg.train.zero_stage} {cfg.train.precision} λ={cfg.loss.contrastive_weight} ({cfg.loss.form}) "
        f"steps={cfg.train.max_steps} global_batch={cfg.train.global_batch_size}",
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


def _export(args) -> int:
    from goalrm.train.consolidate import export_checkpoint

    ckpt = export_checkpoint(args.checkpoint, args.output, train_data=args.train_data)
    print(f"exported {ckpt} to {args.output}")
    return 0


def _eval(args) -> int:
    from goalrm.eval_cli import run_eval

    metrics = run_eval(args.model, args.data, args.output_json, batch_size=args.batch_size, max_length=args.max_length)
    print(format_eval(metrics))
    return 0


def format_eval(m: dict) -> str:
    rows = [("pairs", f"{m['n_pairs']}"), ("accuracy", f"{m['accuracy']:.3f}"), ("AUROC (reward)", f"{m['auroc']:.3f}")]
    for frac, v in m.get("prefix_auroc", {}).items():
        rows.append((f"AUROC (mean Q, first {float(frac):.0%})", f"{v:.3f}"))
    if "q_before_error" in m:
        rows.append(("rejected: mean Q before first wrong token", f"{m['q_before_error']:+.3f}"))
        rows.append(("rejected: mean Q after first wrong token", f"{m['q_after_error']:+.3f}"))
        rows.append(("chosen: mean Q over the same positions", f"{m['q_after_error_chosen']:+.3f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _data_synthetic(args) -> int:
    from goalrm.data.synthetic import synthetic_pairs

    with open(args.output, "w") as f:
        for p in synthetic_pairs(args.n, seed=args.seed, split=args.split):
            row = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "rejected_first_error": p.first_error_char}
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.n} {args.split} pairs to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="goalrm", description="Goal-conditioned contrastive reward models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a reward model on Ray Train (no --config: the embedded demo)")
    t.add_argument("--config", help="YAML config; omitted: the built-in demo (tiny model, synthetic data, 2 CPU workers, ZeRO-2)")
    t.add_argument(
        "--output-dir", help=f"where config.yaml, metrics.jsonl, tensorboard/, checkpoints and model/ go (default: {DEFAULT_OUTPUT_DIR}); must not hold a run yet"
    )
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last complete checkpoint, with the config it started with")
    t.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    t.set_defaults(func=_train)

    x = sub.add_parser("export", help="consolidate a training checkpoint (e.g. ZeRO-3 shards) into the HF export, on CPU without Ray")
    x.add_argument("--checkpoint", required=True, help="a checkpoint folder (RUN/ray_train/checkpoint_*), or a run folder: its newest complete checkpoint")
    x.add_argument("--output", required=True, help="the export folder to write (as OUTPUT_DIR/model)")
    x.add_argument("--train-data", help="the training data for the goal state and reward statistics, if not where the run's config says")
    x.set_defaults(func=_export)

    e = sub.add_parser("eval", help="pairwise accuracy, AUROC and prefix AUROC of Q-values on preference pairs")
    e.add_argument("--model", required=True, help="an exported model folder (OUTPUT_DIR/model)")
    e.add_argument("--data", required=True, help="JSONL/Parquet preference pairs, or 'synthetic' for the held-out demo split")
    e.add_argument("--output-json", help="write the metrics here")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--max-length", type=int, default=1024)
    e.set_defaults(func=_eval)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synthetic", help="write the built-in arithmetic preference pairs as JSONL")
    s.add_argument("--output", required=True)
    s.add_argument("--n", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["train", "eval"], default="eval")
    s.set_defaults(func=_data_synthetic)
    return p


def main(argv=None) -> int:
    setup_environment()
    args = build_parser().parse_args(argv)
    from goalrm.config import ConfigError
    from goalrm.data.errors import BadRowError

    try:
        return args.func(args)
    except (ConfigError, BadRowError, FileNotFoundError, FileExistsError) as e:
        print(f"goalrm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
