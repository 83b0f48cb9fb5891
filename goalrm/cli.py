"""goalrm command line: train, eval, score, data."""

import argparse
import json
import sys

from goalrm.env import setup_environment


def _train(args) -> int:
    from goalrm.config import load_config
    from goalrm.train.trainer import train

    cfg = load_config(args.config)
    print(
        f"goalrm train: model={cfg.model.name_or_path} data={cfg.data.train} workers={cfg.train.num_workers} "
        f"zero={cfg.train.zero_stage} {cfg.train.precision} λ={cfg.loss.contrastive_weight} ({cfg.loss.form}) "
        f"steps={cfg.train.max_steps} global_batch={cfg.train.global_batch_size}",
        flush=True,
    )
    result = train(cfg, args.output_dir, ray_address=args.address)
    print(f"model written to {result.model_dir}")
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


def _score(args) -> int:
    from goalrm.config import ScoreConfig
    from goalrm.score.run import score

    fields = {k: v for k, v in vars(args).items() if k in ScoreConfig.__dataclass_fields__}
    score(ScoreConfig(**fields), address=args.address)
    return 0


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
    t.add_argument("--output-dir", default="runs/demo", help="where metrics.jsonl, tensorboard/, checkpoints and model/ go")
    t.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="pairwise accuracy, AUROC and prefix AUROC of Q-values on preference pairs")
    e.add_argument("--model", required=True, help="an exported model folder (OUTPUT_DIR/model)")
    e.add_argument("--data", required=True, help="JSONL/Parquet preference pairs, or 'synthetic' for the held-out demo split")
    e.add_argument("--output-json", help="write the metrics here")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--max-length", type=int, default=1024)
    e.set_defaults(func=_eval)

    c = sub.add_parser("score", help="score and filter completions on Ray Data: reward and token Q-values per row")
    c.add_argument("--model", required=True, help="an exported model folder (OUTPUT_DIR/model)")
    c.add_argument("--input", required=True, help="JSONL/Parquet file, folder or glob (local or a pyarrow filesystem URI)")
    c.add_argument("--output", required=True, help="folder for scored/*.parquet, rejects/, summary.json; rerun into it to resume")
    c.add_argument("--threshold", type=float, default=0.0, help="drop a completion at its first Q-value below this")
    c.add_argument("--goal", help="safetensors file with tensor 'goal' (default: the model's goal_state.safetensors)")
    c.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass, taken in length order")
    c.add_argument("--num-scorers", type=int, default=1, help="scorer actors, one model load each")
    c.add_argument("--gpus-per-scorer", type=float, default=0.0)
    c.add_argument("--cpus-per-scorer", type=float, default=0.0, help="0: share the node's CPUs among the scorers")
    c.add_argument("--threads-per-scorer", type=int, default=0, help="torch threads; 0: the node's CPUs over the scorers")
    c.add_argument("--block-rows", type=int, default=10000, help="input rows per output file; the unit of resuming")
    c.add_argument("--max-length", type=int, default=1024)
    c.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    c.add_argument("--group-col", help="with --answer-col: majority vote per group before and after filtering")
    c.add_argument("--answer-col")
    c.add_argument("--label-col", help="truthy = the row's answer is correct; gives majority-vote accuracy")
    c.add_argument("--address", default=None, help="Ray address to join (default: start a local Ray in-process)")
    c.set_defaults(func=_score)

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
    except (ConfigError, BadRowError, FileNotFoundError) as e:
        print(f"goalrm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
