"""Score one block in three stages, each a plain function, so that a pipeline can run them side by side
on different blocks (goalrm/score/run.py): prepare (read, validate, tokenize), forward (rewards and
Q-values), write (rejects, output and done marker, each atomically, the done marker last). No Ray."""

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from goalrm.atomic import write_json, write_jsonl, write_parquet
from goalrm.data.errors import BadRowError
from goalrm.data.formats import completions_from_row
from goalrm.data.tokenize import TruncationStats, tokenize_completion
from goalrm.score.filtering import filter_row, tokens_saved
from goalrm.score.io import DONE, REJECTS, SCORED, Block, output_paths, read_block
from goalrm.score.scorer import score_sequences

ADDED = ("role", "reward", "q_values", "min_q", "first_below", "keep", "first_error")
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
STAGES = ("prepare", "forward", "write")  # a done marker's `stage_seconds` keys


@dataclass
class PreparedBlock:
    """A block read and tokenized: the sequences to score and what the output and rejects need of the input."""

    block: Block
    base: pa.Table  # the good rows' input columns, one row per scored record
    rows: list[int]  # per sequence: its row in `base`
    roles: list[str | None]
    seqs: list[tuple[np.ndarray, int]]  # (token ids int32, completion start)
    first_errors: list[int | None]  # offset of a rejected completion's first wrong token into its Q-values
    rejects: list[dict]
    input_rows: int
    truncated: int
    seconds: dict = field(default_factory=dict)  # per stage, filled as the block goes through them
    rewards: np.ndarray | None = None  # the forward's
    qs: list | None = None
    node: str | None = None  # the Ray node that ran the forward


def prepare_block(fs, block: Block, tokenizer, cfg) -> PreparedBlock:
    t0 = time.perf_counter()
    table, records = read_block(fs, block)
    items, rejects, trunc = [], {}, TruncationStats()  # items: (record index, TokenizedCompletion, role)
    for k, (line, row) in enumerate(records):
        try:
            if isinstance(row, BadRowError):
                raise row
            items += [
                (k, tokenize_completion(c.prompt, c.completion, tokenizer, cfg.max_length, cfg.min_prompt_tokens,
                                        (block.path, line, c.role or "completion"), trunc, c.first_error_char), c.role)
                for c in completions_from_row(row, block.path, line, tokenizer)
            ]
        except BadRowError as err:
            rejects[k] = err  # `items` gained nothing from this row: the list is built before +=
    base, position = _base_table(table, records, sorted({k for k, _, _ in items}), rejects, block.path)
    items = [it for it in items if it[0] in position]
    return PreparedBlock(
        block=block,
        base=base,
        rows=[position[k] for k, _, _ in items],
        roles=[r for _, _, r in items],
        seqs=[(np.asarray(t.ids, dtype=np.int32), t.start) for _, t, _ in items],
        first_errors=[None if t.first_error is None else t.first_error - t.start for _, t, _ in items],
        rejects=[_reject(err, records[k][1]) for k, err in sorted(rejects.items())],
        input_rows=len(records),
        truncated=trunc.prompt_truncated + trunc.completion_truncated,
        seconds={"prepare": time.perf_counter() - t0},
    )


def forward_block(p: PreparedBlock, model, goal, pad_id: int, cfg, device="cpu", packing: str | None = None, node=None) -> PreparedBlock:
    t0 = time.perf_counter()
    p.rewards, p.qs = score_sequences(model, goal, p.seqs, pad_id, cfg.max_tokens, device, packing, cfg.batch_size)
    p.node, p.seconds = node, {**p.seconds, "forward": time.perf_counter() - t0}
    return p


def write_block(p: PreparedBlock, cfg, out_dir: str) -> dict:
    """The block's files, the done marker last; returns the marker."""
    t0 = time.perf_counter()
    filters = [filter_row(q, cfg.threshold) for q in p.qs]
    out = _with_scores(p.base.take(p.rows), p.roles, p.rewards, p.qs, filters, p.first_errors)
    paths = output_paths(out_dir, p.block)
    if p.rejects:
        write_jsonl(paths[REJECTS], p.rejects)
    if out.num_rows:
        write_parquet(paths[SCORED], out)
    seconds = {**p.seconds, "write": time.perf_counter() - t0}
    marker = {
        "block": p.block.as_dict(),
        "input_rows": p.input_rows,
        "rows": out.num_rows,
        "kept": sum(f.keep for f in filters),
        "completion_tokens": sum(len(q) for q in p.qs),
        "tokens_saved": sum(tokens_saved(len(q), f.first_below) for q, f in zip(p.qs, filters)),
        "model_tokens": sum(len(ids) for ids, _ in p.seqs),
        "truncated": p.truncated,
        "bad_rows": len(p.rejects),
        "bad_rows_by_reason": dict(Counter(r["reason"] for r in p.rejects)),
        "seconds": sum(seconds.values()),
        "stage_seconds": seconds,
        "node": p.node,  # the Ray node id of the scorer that ran the forward; None outside Ray
    }
    write_json(paths[DONE], marker)
    return marker


def score_block(fs, block: Block, model, tokenizer, goal, cfg, out_dir: str, device="cpu", node: str | None = None, packing: str | None = None) -> dict:
    """The three stages one after another, in this process."""
    prepared = prepare_block(fs, block, tokenizer, cfg)
    return write_block(forward_block(prepared, model, goal, tokenizer.pad_token_id, cfg, device, packing, node), cfg, out_dir)


def _reject(err: BadRowError, row) -> dict:
    return {"file": err.path, "line": err.line, "field": err.field, "reason": err.reason, "error": str(err),
            "row": None if isinstance(row, BadRowError) else row}


def _base_table(table, records, good: list[int], rejects: dict, path: str) -> tuple[pa.Table, dict[int, int]]:
    """The good rows' input columns, and each record's row in it. Parquet rows come as read; JSON
    rows become columns, and a row whose value does not fit its column's type is rejected."""
    if table is not None:
        return table, {k: k for k in good}
    rows = {k: records[k][1] for k in good}
    for col in dict.fromkeys(c for row in rows.values() for c in row):
        kinds = {k: _kind(row.get(col)) for k, row in rows.items()}
        counts = Counter(v for v in kinds.values() if v is not None)
        major = min(counts, key=lambda v: (-counts[v], v)) if counts else None
        for k, kind in kinds.items():
            if kind not in (None, major) and k not in rejects:
                rejects[k] = BadRowError(path, records[k][0], col, f"a {kind} in a column of {major} values")
    good = [k for k in good if k not in rejects]
    columns = list(dict.fromkeys(c for k in good for c in rows[k]))
    try:
        base = pa.table({c: [rows[k].get(c) for k in good] for c in columns})
    except ARROW_ERRORS as e:
        for k in good:
            rejects[k] = BadRowError(path, records[k][0], None, f"its block's rows do not fit one Parquet schema: {e}")
        return pa.table({}), {}
    return base, {k: i for i, k in enumerate(good)}


def _kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _with_scores(base: pa.Table, roles, rewards, qs, filters, first_errors) -> pa.Table:
    """Input columns (any named like an added column are replaced), then the scores."""
    base = base.drop_columns([c for c in ADDED if c in base.column_names])
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in qs])]).astype(np.int32)
    values = np.concatenate(qs).astype(np.float32) if qs else np.zeros(0, np.float32)
    added = {
        "role": pa.array(roles, pa.string()),
        "reward": pa.array(rewards, pa.float32()),
        "q_values": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32())),
        "min_q": pa.array([f.min_q for f in filters], pa.float32()),
        "first_below": pa.array([f.first_below for f in filters], pa.int32()),
        "keep": pa.array([f.keep for f in filters], pa.bool_()),
        # a rejected completion's first wrong token (offset into q_values), when the input row gives it
        "first_error": pa.array(first_errors, pa.int32()),
    }
    for name, column in added.items():
        base = base.append_column(name, column)
    return base
