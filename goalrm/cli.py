"""goalrm command line: train, eval, data."""

import argparse
import json
import sys

from goalrm.env import setup_environment


def _train(args) -> int:
    from goalrm.config import load_config
    from goalrm.train.trainer import train

    cfg = load_config(args.config, {"model": {"name_or_path": args.model}} if args.model else None)
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


def _data_synthetic(args) -> int:
    from goalrm.data.synthetic import synthetic_pairs

    with open(args.output, "w") as f:
        for p in synthetic_pairs(args.n, seed=args.seed, split=args.split):
            row = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "rejected_first_error": p.first_error_char}
            f.write(json.dumps(row) + "\n")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="goalrm", description="Goal-conditioned contrastive reward models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a reward model on Ray Train (no --config: the embedded demo)")
    t.add_argument("--config", help="YAML config; omitted: the built-in demo (tiny model, synthetic data, 2 CPU workers, ZeRO-2)")
    t.add_argument("--model", help="overrides model.name_or_path: 'tiny', 'smollm2-135m', a local HF folder or a hub id")
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

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synthetic", help="write the built-in arithmetic preference pairs as JSONL")
    s.add_argument("--output", required=True)
    s.add_argument("--n", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["train", "eval"], default="eval")
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
    from goalrm.config import ConfigError
    from goalrm.data.errors import BadRowError

    try:
        return args.func(args)
    except (ConfigError, BadRowError, FileNotFoundError) as e:
        print(f"goalrm: error: {e}", file=sys.stderr)
        return 2


def job_main(command: str) -> int:
    """A Ray Jobs entrypoint: COMMAND with the job's flags, joining the cluster it was submitted to.

    "auto" fails when there is no cluster, so a submitted job never starts a Ray of its own.
    """
    return main([command, "--address", "auto", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
