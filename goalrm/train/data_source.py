"""Training data from either loader: pairs held in memory and the step-indexed sampler, or a Ray Data stream.

On the driver, `ray_datasets` picks the loader and builds the Ray Data pipeline: files read by
`PairRecords`, validated and tokenized in map_batches by the in-memory reader's own functions. In a
worker, `train_data_source` gives the loop its micro-batches, whichever loader feeds them.
"""

import dataclasses
import functools
import itertools
from collections.abc import Iterator

import pyarrow as pa
import ray.data
import ray.train
from ray.data.datasource import FileBasedDatasource

from goalrm.config import SYNTHETIC, Config, config_from_dict
from goalrm.data.errors import BadRowError
from goalrm.data.formats import json_lines, parquet_rows
from goalrm.data.load import load_goal_pairs, load_tokenized
from goalrm.data.paths import DataFiles, expand, is_parquet
from goalrm.data.sampler import even_shard, micro_batch_indices, pair_lengths
from goalrm.data.stream import COUNTS, LINE, PATH, ROW, grouped_batches, tokenize_block, tokenized_pairs

# auto picks the stream above this much train data; measured in bench/loader_crossover.py (bench/RESULTS.md)
MEMORY_MAX_BYTES = 4 << 20
RAW_BLOCK_ROWS = 1024
DATA_CPUS = 0  # training workers hold every CPU of a small node; reading and tokenizing share them (capped below)


def resolve_loader(cfg: Config) -> str:
    if cfg.data.loader != "auto":
        return cfg.data.loader
    if cfg.data.train == SYNTHETIC:
        return "memory"
    return "memory" if expand(cfg.data.train).total_bytes <= MEMORY_MAX_BYTES else "ray_data"


class PairRecords(FileBasedDatasource):
    """Raw rows with their file and row number, which Ray's own JSON and Parquet readers do not keep.

    JSONL rows stay undecoded bytes, so a malformed line is one bad row in map_batches, not a failed read.
    """

    def __init__(self, files: DataFiles):
        super().__init__(list(files.paths), filesystem=files.filesystem)
        self._files = files

    def _open_input_source(self, filesystem, path, **open_args):
        # Parquet needs random access; JSONL decompresses by extension, as in the in-memory reader
        if is_parquet(path):
            return filesystem.open_input_file(path)
        return filesystem.open_input_stream(path, compression="detect")

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        name = self._files.name(path)
        rows = parquet_rows(f) if is_parquet(path) else ((n, {LINE: raw}) for n, raw in json_lines(f))
        while chunk := [{**row, PATH: name, ROW: n} for n, row in itertools.islice(rows, RAW_BLOCK_ROWS)]:
            yield pa.Table.from_pylist(chunk)


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: str, trust_remote_code: bool):
    from goalrm.model import load_tokenizer

    return load_tokenizer(name_or_path, trust_remote_code)


def _tokenize(block: pa.Table, cfg_dict: dict) -> pa.Table:
    # a task, not an actor pool: Ray reuses worker processes, so the cached tokenizer outlives an epoch's
    # pipeline, while a new actor pool each epoch would pay process start-up and imports every time
    cfg = config_from_dict(cfg_dict)
    return tokenize_block(block, _tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code), cfg.data)


def train_dataset(cfg: Config) -> ray.data.Dataset:
    # at most one reader and one tokenizer process per training worker: each holds a tokenizer and torch's imports
    n = cfg.train.num_workers
    ds = ray.data.read_datasource(PairRecords(expand(cfg.data.train)), num_cpus=DATA_CPUS, concurrency=n)
    ds = ds.map_batches(
        _tokenize,
        fn_kwargs={"cfg_dict": cfg.to_dict()},
        batch_format="pyarrow",
        batch_size=RAW_BLOCK_ROWS,
        num_cpus=DATA_CPUS,
        compute=ray.data.TaskPoolStrategy(size=n),
    )
    ds.context.enable_progress_bars = False  # the run prints one line per report
    return ds


def ray_datasets(cfg: Config) -> tuple[Config, dict]:
    """The config with data.loader resolved, and TorchTrainer's dataset arguments for it."""
    loader = resolve_loader(cfg)
    cfg = cfg.with_absolute_paths()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, loader=loader))
    if loader == "memory":
        return cfg, {}
    # order kept, so a seed gives one run; one worker then sees exactly the in-memory loader's batches
    options = ray.data.ExecutionOptions(preserve_order=True)
    return cfg, {"datasets": {"train": train_dataset(cfg)}, "dataset_config": ray.train.DataConfig(execution_options=options)}


class MemoryTrainData:
    """Every pair on every worker; a micro-batch is a pure function of the step, so a restart resumes exactly."""

    def __init__(self, cfg: Config, tokenizer, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.pairs, self.trunc, self.bad = load_tokenized(cfg.data.train, "train", cfg.data, tokenizer)
        self.lengths = pair_lengths(self.pairs) if cfg.data.group_by_length else None

    def micro_batch(self, step: int, micro: int) -> list:
        t = self.cfg.train
        idx = micro_batch_indices(
            step, micro, self.rank, self.world, len(self.pairs), t.micro_batch_size, t.grad_accum, t.seed, self.lengths
        )
        return [self.pairs[i] for i in idx]

    def epoch(self, steps_done: int) -> float:
        return steps_done * self.cfg.train.global_batch_size / len(self.pairs)

    def counts(self) -> dict:
        """This rank's share of the run's counts: every rank read all the data, so rank 0 reports them."""
        full = {"prompt_truncated": self.trunc.prompt_truncated, "completion_truncated": self.trunc.completion_truncated, "bad_rows": self.bad.count}
        return full if self.rank == 0 else dict.fromkeys(COUNTS, 0)

    def goal_pairs(self) -> tuple[list, int]:
        """This rank's share of the pairs the goal state averages (the first data.goal_state_pairs, as
        `load_goal_pairs` reads them), padded to the same length on every rank (ZeRO-3 needs equal
        forwards), and how many are real."""
        return even_shard(self.pairs[: self.cfg.data.goal_state_pairs or None], self.rank, self.world)


class StreamTrainData:
    """This worker's Ray Data shard, read again each epoch, in length-grouped micro-batches.

    A resumed run reads its stream again from the start and drops the micro-batches the steps before the
    checkpoint trained on. With one worker it then trains on exactly what an uninterrupted run would
    (Ray Data keeps file order); with several, Ray Data's streaming split may hand a worker other blocks
    than the first time, so each worker skips as many micro-batches as it had trained on, not the same ones.
    """

    def __init__(self, cfg: Config, tokenizer, rank: int, world: int, shard=None):
        self.cfg, self.tokenizer, self.rank, self.world = cfg, tokenizer, rank, world
        self.epochs, self.shard = 0, shard
        self.next_micro = 0  # index of the next micro-batch of this worker's stream
        self.seen = dict.fromkeys(COUNTS, 0)  # counts of this pass's rows so far
        self.last_pass = None  # counts of the last complete pass: the data's own, for this worker's shard
        d, t = cfg.data, cfg.train
        self.batches = grouped_batches(self._pairs(), t.micro_batch_size, d.group_window, d.group_by_length, t.seed)

    def _pairs(self) -> Iterator:
        shard = self.shard if self.shard is not None else ray.train.get_dataset_shard("train")
        while True:
            n = 0
            for batch in shard.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
                for pair in tokenized_pairs(batch, self.seen):
                    n += 1
                    yield pair
            if not n:
                raise ValueError(f"{self.cfg.data.train}: no usable preference pairs for this worker")
            self.epochs += 1
            self.last_pass, self.seen = self.seen, dict.fromkeys(COUNTS, 0)

    def micro_batch(self, step: int, micro: int) -> list:
        target = step * self.cfg.train.grad_accum + micro
        if target < self.next_micro:
            raise ValueError(f"the stream is at micro-batch {self.next_micro}; it cannot go back to {target}")
        while True:  # after a resume: the micro-batches of the steps already trained on come first
            pairs = next(self.batches)
            self.next_micro += 1
            if self.next_micro > target:
                return pairs

    def epoch(self, steps_done: int) -> float:
        return float(self.epochs)  # passes completed: the stream's length is unknown until one ends

    def counts(self) -> dict:
        return dict(self.last_pass or self.seen)

    def goal_pairs(self) -> tuple[list, int]:
        """This rank's share of the first data.goal_state_pairs of the files, read from their start: the
        same pairs as the memory loader's and `goalrm export`'s (padded to one length on every rank)."""
        pairs = load_goal_pairs(self.cfg.data.train, self.cfg.data.goal_state_pairs, self.cfg.data, self.tokenizer)
        return even_shard(pairs, self.rank, self.world)


def input_error(err: BaseException) -> Exception | None:
    """The bad row or missing file behind a failed run, through Ray Train's worker errors and Ray's task errors."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        # clean copies, free of Ray's wrapper classes
        if isinstance(e, BadRowError):
            return BadRowError(e.path, e.line, e.field, e.reason)
        if isinstance(e, FileNotFoundError):
            return FileNotFoundError(str(e))
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None), *getattr(e, "worker_failures", {}).values()]
    return None


def train_data_source(cfg: Config, tokenizer, rank: int, world: int):
    if cfg.data.loader == "ray_data":
        return StreamTrainData(cfg, tokenizer, rank, world)
    return MemoryTrainData(cfg, tokenizer, rank, world)
