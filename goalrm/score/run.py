"""`goalrm score` on Ray Data: a pipeline over the input's blocks, each stage on other blocks at once
(goalrm/score/block.py): CPU tasks read and tokenize ahead of the model, an actor pool of scorers runs
the forwards (one model load per actor), CPU tasks write behind them; then the summary."""

import functools
import json
import os
import pickle
import time

import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from goalrm.config import ConfigError, ScoreConfig
from goalrm.console import counting, quiet_libraries, verbose
from goalrm.export import GOAL_FILE, load_goal, read_meta
from goalrm.atomic import write_json
from goalrm.score.block import forward_block, prepare_block, write_block
from goalrm.score.io import Block, filesystem, input_files, pending_blocks, plan_blocks
from goalrm.score.scorer import load_scorer
from goalrm.score.summary import format_summary, localization_from_output, majority_from_output, read_markers, summarize
from goalrm.train.storage import filesystem_type, is_shared, spans_hosts

JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
STAGE_CPUS = 0.25  # a read/tokenize or write task: beside the scorers, in the half CPU `scorer_cpus` leaves


def score(cfg: ScoreConfig, address: str | None = None, print_summary: bool = True) -> dict:
    from goalrm.train.trainer import init_ray

    out_dir = os.path.abspath(cfg.output)
    _check_model(cfg)
    fs, files = input_files(cfg.input)
    blocks = plan_blocks(fs, files, cfg.block_rows)
    _claim(out_dir, cfg, fs, files)
    todo = pending_blocks(out_dir, blocks)
    run_markers, t0 = [], time.perf_counter()
    if todo:
        init_ray(address)
        check_shared_paths(cfg, out_dir, spans_hosts())
        t0 = time.perf_counter()  # scoring time: actor start-up and model loads included, Ray's own start not
        run_markers = _score_blocks(todo, cfg, out_dir)
    summary = summarize(read_markers(out_dir, blocks), len(blocks), run_markers, time.perf_counter() - t0)
    if (loc := localization_from_output(out_dir)) is not None:
        summary["localization"] = loc
    if cfg.group_col:
        summary["majority"] = majority_from_output(out_dir, cfg.group_col, cfg.answer_col, cfg.label_col)
        summary["majority"]["tokens_saved_fraction"] = summary["tokens_saved_fraction"]
    write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
    if print_summary:
        print(format_summary(summary), flush=True)
    return summary


@functools.lru_cache(maxsize=2)
def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    quiet_libraries()
    return AutoTokenizer.from_pretrained(model_dir)  # the export's own, as the scorer loads it


def _prepare(row: dict, cfg: ScoreConfig) -> dict:
    """A read/tokenize task: a block's rows to its sequences (a Ray Data worker process keeps the tokenizer)."""
    block = Block(row["path"], *(int(row[k]) for k in ("file_index", "start", "stop", "offset")))
    fs, _ = filesystem(cfg.input)
    return {"block": pickle.dumps(prepare_block(fs, block, _tokenizer(cfg.model), cfg))}


class BlockScorer:
    """One Ray Data actor: loads the model once, then runs the forwards of whole prepared blocks."""

    def __init__(self, cfg: ScoreConfig, threads: int):
        import ray

        quiet_libraries()
        torch.set_num_threads(threads)
        self.node = ray.get_runtime_context().get_node_id()
        self.cfg = cfg
        self.device = "cuda" if cfg.gpus_per_scorer else "cpu"
        self.model, self.tokenizer, self.goal, self.packing = load_scorer(cfg.model, cfg.goal, self.device, cfg.dtype, cfg.attn_implementation)

    def __call__(self, batch: dict) -> dict:
        out = []
        for payload in batch["block"]:
            p = forward_block(pickle.loads(payload), self.model, self.goal, self.tokenizer.pad_token_id, self.cfg, self.device, self.packing, self.node)
            out.append(pickle.dumps(p))
        return {"block": out}


def _write(row: dict, cfg: ScoreConfig, out_dir: str) -> dict:
    """A write task: a scored block's files, the done marker last."""
    return {"marker": json.dumps(write_block(pickle.loads(row["block"]), cfg, out_dir))}


def _score_blocks(todo: list[Block], cfg: ScoreConfig, out_dir: str) -> list[dict]:
    import ray
    from ray.data import ActorPoolStrategy

    threads, cpus = scorer_cpus(cfg, [n["Resources"] for n in ray.nodes() if n["Alive"]])
    ds = ray.data.from_items([b.as_dict() for b in todo], override_num_blocks=len(todo))
    ds = ds.map(_prepare, fn_kwargs={"cfg": cfg}, num_cpus=STAGE_CPUS)
    ds = ds.map_batches(
        BlockScorer,
        fn_constructor_kwargs={"cfg": cfg, "threads": threads},
        batch_size=1,
        compute=ActorPoolStrategy(size=min(cfg.num_scorers, len(todo))),
        num_cpus=cpus,
        num_gpus=cfg.gpus_per_scorer or None,
    )
    ds = ds.map(_write, fn_kwargs={"cfg": cfg, "out_dir": out_dir}, num_cpus=STAGE_CPUS)
    ds.context.enable_progress_bars = verbose()  # ours counts blocks and rows
    markers = []
    with counting(len(todo), "block") as bar:
        for row in ds.iter_rows():
            markers.append(json.loads(row["marker"]))
            bar.update_to(len(markers))
    return markers


def scorer_cpus(cfg: ScoreConfig, nodes: list[dict]) -> tuple[int, float]:
    """(torch threads, Ray CPUs) of one scorer, given each node's Ray resources: a share of one node,
    never of the whole cluster, which no node has. Every node that can hold a scorer (CPUs, and the
    GPUs it asks for) gets room for ceil(scorers / such nodes) of them, sized by the smallest node,
    so that all of them fit wherever Ray places them."""
    usable = [n["CPU"] for n in nodes if n.get("CPU", 0) > 0 and n.get("GPU", 0) >= cfg.gpus_per_scorer]
    node_cpus = min(usable, default=1.0)  # no such node yet (an autoscaler may add it): a small share
    per_node = -(-cfg.num_scorers // max(1, len(usable)))
    threads = cfg.threads_per_scorer or max(1, int(node_cpus // per_node))
    # whole CPUs for every actor can leave Ray Data none for its own tasks: it then waits forever
    cpus = cfg.cpus_per_scorer or min(float(threads), max(0.1, (node_cpus - 0.5) / per_node))
    return threads, cpus


def check_shared_paths(cfg: ScoreConfig, out_dir: str, spans_hosts: bool, mounts_file: str = "/proc/mounts") -> None:
    """Scorers on any node read the model and the input, and write their blocks, by the paths given here,
    and the summary reads the blocks back on this one: on several hosts every node must mount them."""
    for flag, path in (("--model", cfg.model), ("--input", cfg.input), ("--output", out_dir)):
        if spans_hosts and not is_shared(path, mounts_file):
            raise ConfigError(
                f"{flag} {path} is on a node-local filesystem ({filesystem_type(path, mounts_file)}), but the scorers "
                "run on several hosts; use a filesystem every node mounts (NFS, Lustre, a FUSE mount)"
                + (" or a URI (s3://, gs://)" if flag == "--input" else "")
            )


def _check_model(cfg: ScoreConfig) -> None:
    """Fail before Ray starts: no export, no goal, or a goal of the wrong size."""
    meta = read_meta(cfg.model)
    goal_path = os.path.join(cfg.model, GOAL_FILE)
    dim = meta["heads"].get("projection_dim") or AutoConfig.from_pretrained(cfg.model).get_text_config().hidden_size
    load_goal(cfg.goal, load_file(goal_path)["goal"] if os.path.exists(goal_path) else None, dim)


def _claim(out_dir: str, cfg: ScoreConfig, fs, files: list[str]) -> None:
    """Record what the output folder holds; a rerun must be the same job, or block names would mix."""
    job = {
        "model": os.path.abspath(cfg.model),
        "goal": cfg.goal and os.path.abspath(cfg.goal),
        "files": [[f, fs.get_file_info(f).size] for f in files],
        **{k: getattr(cfg, k) for k in ("threshold", "block_rows", "max_length", "min_prompt_tokens", "dtype")},
    }
    path = os.path.join(out_dir, JOB_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        differ = sorted(k for k in job if old.get(k) != job[k])
        if differ:
            raise ConfigError(f"--output {out_dir} holds another job's results (it differs in {', '.join(differ)}); use a new folder")
        return
    write_json(path, job)
