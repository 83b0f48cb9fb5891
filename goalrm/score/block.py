"""Score one block: read, validate, tokenize, score, then write rejects, output and done marker,
each atomically, the done marker last. No Ray."""

import time
from collections import Counter

import numpy as np
import pyarrow as pa

from goalrm.data.errors import BadRowError
from goalrm.data.formats import completions_from_row
from goalrm.data.tokenize import TruncationStats, tokenize_completion
from goalrm.score.filtering import filter_row, tokens_saved
from goalrm.atomic import write_json, write_jsonl, write_parquet
from goalrm.score.io import DONE, REJECTS, SCORED, Block, output_paths, read_block
from goalrm.score.scorer import score_sequences

ADDED = ("role", "reward", "q_values", "min_q", "first_below", "keep", "first_error")
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def score_block(fs, block: Block, model, tokenizer, goal, cfg, out_dir: str, device="cpu", node: str | None = None) -> dict:
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
    seqs = [(t.ids, t.start) for _, t, _ in items]
    rewards, qs = score_sequences(model, goal, seqs, tokenizer.pad_token_id, cfg.batch_size, device)
    filters = [filter_row(q, cfg.threshold) for q in qs]
    errors = [None if t.first_error is None else t.first_error - t.start for _, t, _ in items]
    out = _with_scores(base.take([position[k] for k, _, _ in items]), [r for _, _, r in items], rewards, qs, filters, errors)
    paths = output_paths(out_dir, block)
    if rejects:
        write_jsonl(paths[REJECTS], [_reject(err, records[k][1]) for k, err in sorted(rejects.items())])
    if out.num_rows:
        write_parquet(paths[SCORED], out)
    marker = {
        "block": block.as_dict(),
        "input_rows": len(records),
        "rows": out.num_rows,
        "kept": sum(f.keep for f in filters),
        "completion_tokens": sum(len(q) for q in qs),
        "tokens_saved": sum(tokens_saved(len(q), f.first_below) for q, f in zip(qs, filters)),
        "model_tokens": sum(len(ids) for ids, _ in seqs),
        "truncated": trunc.prompt_truncated + trunc.completion_truncated,
        "bad_rows": len(rejects),
        "bad_rows_by_reason": dict(Counter(err.reason for err in rejects.values())),
        "seconds": time.perf_counter() - t0,
        "node": node,  # the Ray node id of the scorer that ran it; None outside Ray
    }
    write_json(paths[DONE], marker)
    return marker


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
