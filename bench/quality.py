"""Quality on real data (issue 7): goalrm reward models with and without the contrastive term.

The paper fine-tunes 7B models on GPUs. Here, on a 2-core CPU: SmolLM2-135M-Instruct with its
bottom decoder layers frozen and their activations computed once per data set
(goalrm/frozen_trunk.py, bench/quality_cache.py). Each run trains the decoder layers from `--cut` up, the
final norm and the heads with goalrm's own loss, contrastive sampling, schedule and metrics.
For one seed every setting gets the same split, the same initial weights, the same pairs in the same
order and the same number of steps: the setting is the only difference.

    python bench/quality.py --task gsm8k --settings bt paper infonce --seeds 0 1 2
    python bench/quality.py --task hh --settings bt paper --seeds 0 1 2
    python bench/quality.py --task gsm8k_perturb --cut 24 --perturb-pairs 3000 --settings lm bt paper --seeds 0 1 2
    python bench/quality.py --table          # mean ± std over seeds of everything recorded, and differences from bt by seed

`lm` trains nothing: the untrained LM's own token log-probabilities, scored like a reward model.

`--device cuda` (or `auto` where torch sees a GPU) computes the cache and trains on the GPU, one batch of
cached states moved at a time. `--cut 0` trains all 30 decoder layers (the embeddings stay frozen): minutes
on a GPU, about an hour per 3,000-pair epoch on a 2-core CPU in bf16.
`--precision bf16` runs the trained layers under bf16 autocast (weights, optimizer and cache stay fp32):
about twice the steps per second on this CPU, and the natural setting on a GPU.

Finished runs are appended to runs/quality/results.jsonl and skipped when asked for again (same
task and its number of pairs, setting, seed, --cut, learning rate, steps and precision); delete the file after changing a config.
An unfinished run saves its state at each point of its learning curve (runs/quality/progress/), and at
the step it is on when asked to stop (SIGTERM or Ctrl-C); the same command continues it from there.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from goalrm.config import ConfigError, load_config
from goalrm.device import DEVICES, bf16_warning, resolve_device
from goalrm.console import counting
from goalrm.frozen_trunk import merge_top, top_only
from goalrm.losses import reward_model_loss
from goalrm.metrics import auroc, pairwise_accuracy
from goalrm.export import save_reward_model
from goalrm.localization import localization
from goalrm.model import build_model, load_tokenizer
from goalrm.qvalues import final_token_reps, prefix_mean_q, q_values
from goalrm.sampling import divergence, sampling_generator
from goalrm.score.filtering import filter_row, tokens_saved
from goalrm.score.majority import majority_report
from goalrm.data.sampler import micro_batch_indices
from goalrm.train.schedule import warmup_cosine

from quality_cache import trunk_cache  # bench/, on the path when a bench script runs
from quality_data import GSM8K, GSM8K_TRAIN, HH, gsm8k_perturb_task, gsm8k_task, hh_task, question_ids
from quality_lm import lm_metrics, load_lm, token_logprobs, top_lm
from quality_progress import load_progress, progress_file, save_progress, stop_requests
from quality_table import pairs_of, print_table

CONFIGS = Path(__file__).resolve().parents[1] / "goalrm" / "configs"
RESULTS = Path("runs/quality/results.jsonl")
PROGRESS = Path("runs/quality/progress")  # unfinished runs' saved state (bench/quality_progress.py)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
FILTER_CALIBRATION = (0.05, 0.1, 0.25)  # thresholds: this quantile of min-Q over correct training solutions
# overrides of goalrm/configs/quality_<task>.yaml; the config's own loss is the paper's form at λ = 0.5
SETTINGS = {
    "bt": {"loss": {"contrastive_weight": 0.0}},
    "paper": {},
    "infonce": {"loss": {"form": "infonce"}},
    "paper-λ1": {"loss": {"contrastive_weight": 1.0}},
    "paper-late": {"loss": {"sampling": {"strategy": "late"}}},
    "paper-mean-goal": {"loss": {"sampling": {"goal": "mean"}}},
    "paper-projection": {"model": {"projection_dim": 128}},
    "lm": None,  # no training: the base LM's own token log-probabilities (bench/quality_lm.py)
}


def features(states, offsets, task, idx, device):
    """Padded trunk states of sequences `idx` (right padding), their mask and completion spans, on
    `device` (the cache stays in host memory; one batch at a time moves)."""
    lengths = [int(offsets[i + 1] - offsets[i]) for i in idx]
    emb = torch.zeros(len(idx), max(lengths), states.shape[1], dtype=torch.float32)
    mask = torch.zeros(len(idx), max(lengths), dtype=torch.long)
    for j, (i, n) in enumerate(zip(idx, lengths)):
        emb[j, :n], mask[j, :n] = states[offsets[i] : offsets[i + 1]], 1
    start = torch.tensor([task.seqs[i].start for i in idx], dtype=torch.long)
    return emb.to(device), mask.to(device), start.to(device), torch.tensor(lengths, dtype=torch.long, device=device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `train.precision: bf16`; the weights, their gradients and AdamW stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train(model, cfg, task, states, offsets, pairs, seed, probe=None, progress=None):
    """The training steps; every `train.eval_every` steps and at the end, `probe()` (a held-out
    accuracy) is recorded in the curve and the run's state saved to `progress`, from which an
    interrupted run continues; a stop asked for (SIGTERM, Ctrl-C) saves it at the step it ends.
    Returns (mean of the last 20 steps' losses, curve, seconds spent training, those before an
    interruption included)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.train.warmup_steps, cfg.train.max_steps))
    device = next(model.parameters()).device
    if slow := bf16_warning(cfg.train.precision, device):
        print(slow, flush=True)
    gen = sampling_generator(seed, 0, device)  # as the training loop seeds rank 0
    lengths = [max(len(task.seqs[c].ids), len(task.seqs[r].ids)) for c, r in pairs] if cfg.data.group_by_length else None
    done, losses, curve, earlier = load_progress(progress, model, opt, sched, gen)
    t0 = time.perf_counter() - earlier  # a continued run's time counts its first part too
    model.train()
    # a bar with ETA on a terminal, a line a minute in a log; SIGTERM or Ctrl-C saves and stops after the step
    with counting(cfg.train.max_steps, "step") as bar, stop_requests() as stop:
        if done:
            bar.update_to(done)
            bar.write(f"continuing from step {done}/{cfg.train.max_steps} ({progress})")
        for step in range(done, cfg.train.max_steps):
            batch = [pairs[i] for i in micro_batch_indices(step, 0, 0, 1, len(pairs), cfg.train.micro_batch_size, 1, seed, lengths)]
            emb, mask, start, end = features(states, offsets, task, [c for c, _ in batch] + [r for _, r in batch], device)
            seqs = [(task.seqs[c], task.seqs[r]) for c, r in batch]
            div = torch.tensor([divergence(c.ids, c.start, r.ids, r.start) for c, r in seqs], dtype=torch.long, device=device)
            with autocast(device, cfg.train.precision):
                out = model(None, mask, with_reps=True, inputs_embeds=emb)
            loss, parts = reward_model_loss(out.rewards, out.reps, start, end, cfg.loss, gen, div)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
            opt.step()
            sched.step()
            losses.append({k: float(v) for k, v in parts.items()})
            bar.update_to(step + 1)
            at_point = (step + 1) % cfg.train.eval_every == 0 or step + 1 == cfg.train.max_steps
            if at_point:
                if probe is not None:
                    curve.append((step + 1, probe()))
                    bar.write(f"step {step + 1}/{cfg.train.max_steps}: held-out pair accuracy {curve[-1][1]:.3f}")
                    model.train()
                if progress is not None:
                    save_progress(progress, step + 1, model, opt, sched, gen, losses, curve, time.perf_counter() - t0)
            if stop:  # a step's batch comes from its number alone, so a run can continue from any step
                if progress is not None:
                    if not at_point:
                        save_progress(progress, step + 1, model, opt, sched, gen, losses, curve, time.perf_counter() - t0)
                    bar.write(f"stopped at step {step + 1}/{cfg.train.max_steps}, saved to {progress}; the same command continues")
                raise SystemExit(128 + stop[0])
    tail = losses[-20:]
    return {k: sum(p[k] for p in tail) / len(tail) for k in tail[0]}, curve, time.perf_counter() - t0


@torch.no_grad()
def forward_all(model, task, states, offsets, idx, goal=None, batch=32, precision="fp32"):
    """Per sequence: reward, reward at each prefix fraction, last-token rep; and Q traces when a goal is given.
    Everything returned is on the CPU, in fp32."""
    model.eval()
    device = next(model.parameters()).device
    goal = None if goal is None else goal.to(device)
    out = {"reward": [], "prefix_reward": {f: [] for f in FRACTIONS}, "final": [], "prefix_q": {f: [] for f in FRACTIONS}, "q": []}
    for b in range(0, len(idx), batch):
        emb, mask, start, end = features(states, offsets, task, idx[b : b + batch], device)
        with autocast(device, precision):
            res = model(None, mask, with_reps=True, inputs_embeds=emb)
            rows = torch.arange(len(start), device=device)
            prefix_reward = {}
            for f in FRACTIONS:  # the reward head read at the prefix's last token: a partial solution's reward
                cut = start + torch.clamp(torch.ceil((end - start).float() * f).long(), min=1) - 1
                prefix_reward[f] = model.head(res.hidden[rows, cut]).squeeze(-1).float()
        out["reward"] += res.rewards.float().tolist()
        out["final"].append(final_token_reps(res.reps, res.last_index).float().cpu())
        for f in FRACTIONS:
            out["prefix_reward"][f] += prefix_reward[f].tolist()
        if goal is not None:
            q = q_values(res.reps, goal)
            for f in FRACTIONS:
                out["prefix_q"][f] += prefix_mean_q(q, start, end, f).tolist()
            out["q"] += [q[j, start[j] : end[j]].cpu().numpy() for j in rows]
    out["final"] = torch.cat(out["final"])
    return out


def held_out_accuracy(model, task, states, offsets, eval_pairs, precision="fp32") -> float:
    idx = [i for p in eval_pairs for i in p]
    r = torch.tensor(forward_all(model, task, states, offsets, idx, precision=precision)["reward"])
    return pairwise_accuracy(r[0::2], r[1::2])


def evaluate(model, task, states, offsets, train_pairs, eval_pairs, eval_seqs, precision="fp32"):
    chosen = sorted({c for c, _ in train_pairs})
    # the default goal state: mean final-token rep of preferred completions
    goal = forward_all(model, task, states, offsets, chosen, precision=precision)["final"].mean(0)
    res = forward_all(model, task, states, offsets, eval_seqs, goal, precision=precision)
    labels = torch.tensor([task.seqs[i].label for i in eval_seqs], dtype=torch.long)
    pos = {i: j for j, i in enumerate(eval_seqs)}
    rc = torch.tensor([res["reward"][pos[c]] for c, _ in eval_pairs])
    rr = torch.tensor([res["reward"][pos[r]] for _, r in eval_pairs])
    m = {
        "pairwise_accuracy": pairwise_accuracy(rc, rr),
        "auroc": auroc(torch.tensor(res["reward"]), labels),
        "prefix_auroc_q": {str(f): auroc(torch.tensor(res["prefix_q"][f]), labels) for f in FRACTIONS},
        "prefix_auroc_reward": {str(f): auroc(torch.tensor(res["prefix_reward"][f]), labels) for f in FRACTIONS},
    }
    if task.name == "gsm8k":
        ref = forward_all(model, task, states, offsets, chosen, goal, precision=precision)
        m["filtering"] = filtering(task, eval_seqs, res["q"], [float(q.min()) for q in ref["q"]])
    if task.name == "gsm8k_perturb":  # the first wrong token is known: how soon Q falls after it
        q = lambda i: res["q"][pos[i]].tolist()  # noqa: E731
        m["localization"] = localization([q(c) for c, _ in eval_pairs], [q(r) for _, r in eval_pairs],
                                         [task.seqs[r].error for _, r in eval_pairs])
    return m


def filtering(task, eval_seqs, q_traces, train_min_q):
    """Q-value filtering before majority voting over each held-out question's four solutions."""
    groups, answers = question_ids(task, eval_seqs), [task.seqs[i].answer for i in eval_seqs]
    labels = [task.seqs[i].label for i in eval_seqs]
    total = sum(len(q) for q in q_traces)
    out = {}
    for quantile in FILTER_CALIBRATION:
        threshold = float(torch.quantile(torch.tensor(train_min_q), quantile))
        rows = [filter_row(q, threshold) for q in q_traces]
        report = majority_report(groups, answers, [r.keep for r in rows], labels)
        out[str(quantile)] = {
            "threshold": threshold,
            "tokens_saved": sum(tokens_saved(len(q), r.first_below) for q, r in zip(q_traces, rows)) / total,
            "rejected": sum(not r.keep for r in rows) / len(rows),
            "accuracy_before": report["accuracy_before"],
            "accuracy_after": report["accuracy_after"],
        }
    return out


def export(model, cfg, task, states, offsets, train_pairs, cut, out_dir):
    """The trained top merged into the whole backbone, saved as a goalrm model (for steer, score, report)."""
    tok = load_tokenizer(cfg.model.name_or_path)
    full = merge_top(build_model(cfg.model.name_or_path, cfg.model.heads(), tok), model, cut)
    goal = forward_all(model, task, states, offsets, sorted({c for c, _ in train_pairs}), precision=cfg.train.precision)["final"].mean(0)
    save_reward_model(full, tok, out_dir, goal_state=goal)
    print(f"exported {out_dir}", flush=True)


def lm_reference(task, states, offsets, args, seed):
    """The untrained LM's own token log-probabilities, scored like a reward model (bench/quality_lm.py)."""
    cfg = load_config(str(CONFIGS / f"quality_{task.name}.yaml"))
    train_pairs, eval_pairs, eval_seqs = task.split(seed, args.eval_fraction)
    t0 = time.perf_counter()
    lm = top_lm(load_lm(cfg.model.name_or_path), args.cut).to(args.device)
    traces = dict(zip(eval_seqs, token_logprobs(lm, lambda idx: features(states, offsets, task, idx, args.device), task, eval_seqs)))
    return {
        "task": task.name, "pairs": len(task.pairs), "setting": "lm", "seed": seed, "cut": args.cut, "steps": 0, "lr": None,
        "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "eval_seqs": len(eval_seqs), "final_loss": None,
        "curve": [], "seconds": round(time.perf_counter() - t0, 1), "device": args.device.type, **lm_metrics(traces, task, eval_pairs, eval_seqs, FRACTIONS),
    }


def run_config(task, args, setting, seed):
    given = {"lr": args.lr, "max_steps": args.steps, "eval_every": args.eval_every, "precision": args.precision}
    train_overrides = {"seed": seed, **{k: v for k, v in given.items() if v}}
    return load_config(str(CONFIGS / f"quality_{task.name}.yaml"), {**SETTINGS[setting], "train": train_overrides})


def run_progress(task, args, setting, seed):
    """Where a trained run saves its progress (None: it does not)."""
    if setting == "lm":
        return None
    cfg = run_config(task, args, setting, seed)
    # how often the curve is measured is not the run: a held-out pass leaves weights and sampler as they were
    cfg = replace(cfg, train=replace(cfg.train, eval_every=1))  # one value for every run
    return progress_file(args.progress, task, setting, seed, args.cut, args.eval_fraction, cfg)


def run(task, states, offsets, args, setting, seed):
    if setting == "lm":
        return lm_reference(task, states, offsets, args, seed)
    cfg = run_config(task, args, setting, seed)
    train_pairs, eval_pairs, eval_seqs = task.split(seed, args.eval_fraction)
    torch.manual_seed(seed)  # the heads' initial weights: the same for every setting of this seed
    model = top_only(build_model(cfg.model.name_or_path, cfg.model.heads()), args.cut).to(args.device)
    final_loss, curve, train_seconds = train(model, cfg, task, states, offsets, train_pairs, seed,
                                             lambda: held_out_accuracy(model, task, states, offsets, eval_pairs, cfg.train.precision),
                                             run_progress(task, args, setting, seed))
    t0 = time.perf_counter() - train_seconds
    metrics = evaluate(model, task, states, offsets, train_pairs, eval_pairs, eval_seqs, cfg.train.precision)
    if args.export:
        export(model, cfg, task, states, offsets, train_pairs, args.cut, os.path.join(args.export, f"{task.name}-{setting}-seed{seed}"))
    return {
        "task": task.name, "pairs": len(task.pairs), "setting": setting, "seed": seed, "cut": args.cut, "steps": cfg.train.max_steps,
        "micro_batch": cfg.train.micro_batch_size, "lr": cfg.train.lr, "train_pairs": len(train_pairs),
        "eval_pairs": len(eval_pairs), "eval_seqs": len(eval_seqs), "final_loss": final_loss, "curve": curve,
        "seconds": round(time.perf_counter() - t0, 1), "device": args.device.type, "precision": cfg.train.precision, **metrics,
    }


def done_runs() -> set:
    if not RESULTS.exists():
        return set()
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    return {run_key(r) for r in rows}


def run_key(row) -> tuple:
    """What makes two runs the same run: task and its size, setting, seed, cut, learning rate, steps, precision."""
    # lm rows once had no lr; rows from before --precision ran in fp32
    return row["task"], pairs_of(row), row["setting"], row["seed"], row["cut"], row.get("lr"), row["steps"], row.get("precision", "fp32")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("gsm8k", "gsm8k_perturb", "hh"))
    p.add_argument("--settings", nargs="+", default=["bt", "paper"], choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cut", type=int, default=28, help="first trained decoder layer (SmolLM2-135M has 30; 0 trains them all)")
    p.add_argument("--eval-fraction", type=float, default=0.25)
    p.add_argument("--hh-pairs", type=int, default=600)
    p.add_argument("--perturb-pairs", type=int, default=1000, help="gsm8k_perturb: questions (one pair each)")
    p.add_argument("--lr", type=float, default=None, help="overrides the config's train.lr (recorded with each run)")
    p.add_argument("--steps", type=int, default=None, help="overrides the config's train.max_steps (recorded with each run)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="overrides train.eval_every: how often the curve is measured (a held-out pass each time; not part of a run's key)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where the runs train and the trunk cache is computed (auto: the GPU when torch sees one)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                   help="overrides train.precision: bf16 autocast for the trained layers (recorded with each run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--export", default="", help="also save each run's model, whole, under this folder")
    p.add_argument("--table", action="store_true", help="print the mean ± std table of runs/quality/results.jsonl, with differences from bt paired by seed")
    args = p.parse_args(argv)
    if args.table:
        return print_table(RESULTS)
    if args.task is None:
        p.error("--task is required unless --table")
    try:
        args.device = resolve_device(args.device)
    except ConfigError as e:
        sys.exit(f"bench/quality.py: {e}")
    source = {"gsm8k": GSM8K, "gsm8k_perturb": GSM8K_TRAIN, "hh": HH}[args.task]
    if not source.exists():
        sys.exit(f"bench/quality.py: {source} is absent; the quality runs need ../shared/data")
    torch.set_num_threads(args.threads)
    args.progress = PROGRESS
    cfg = load_config(str(CONFIGS / f"quality_{args.task}.yaml"))
    tok = load_tokenizer(cfg.model.name_or_path)
    task = {"gsm8k": lambda: gsm8k_task(tok, cfg.data.max_length),
            "gsm8k_perturb": lambda: gsm8k_perturb_task(tok, cfg.data.max_length, args.perturb_pairs),
            "hh": lambda: hh_task(tok, cfg.data.max_length, args.hh_pairs)}[args.task]()
    trunk = build_model(cfg.model.name_or_path, tokenizer=tok).eval().to(args.device)
    states, offsets = trunk_cache(task, trunk, cfg.model.name_or_path, args.cut, tok.pad_token_id)
    del trunk
    done = done_runs()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # seed-major: an interrupted sweep has every setting for the seeds it finished
        for setting in args.settings:
            lr, steps = (None, 0) if setting == "lm" else (args.lr or cfg.train.lr, args.steps or cfg.train.max_steps)
            precision = "fp32" if setting == "lm" else args.precision or cfg.train.precision
            if (task.name, len(task.pairs), setting, seed, args.cut, lr, steps, precision) in done:
                continue
            row = run(task, states, offsets, args, setting, seed)
            with open(RESULTS, "a") as f:  # one whole line per finished run
                f.write(json.dumps(row) + "\n")
            if (progress := run_progress(task, args, setting, seed)) is not None:
                progress.unlink(missing_ok=True)  # only now: the row is on disk
            print(json.dumps({k: row[k] for k in ("task", "setting", "seed", "seconds", "pairwise_accuracy", "auroc")}), flush=True)


if __name__ == "__main__":
    main()
