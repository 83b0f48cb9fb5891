"""Streaming data, without Ray: a block of raw rows to tokenized columns, and a pair stream to length-grouped batches.

Ray Data's map_batches calls `tokenize_block`; a training worker turns its shard back into pairs with
`tokenized_pairs` and into micro-batches with `grouped_batches`. Validation and tokenization are the
in-memory reader's own functions, so both loaders accept and reject exactly the same rows.
"""

import itertools
import json
from collections.abc import Iterable, Iterator

import pyarrow as pa

from goalrm.data.errors import BadRowError, BadRows
from goalrm.data.formats import pairs_from_records, parse_json_line
from goalrm.data.sampler import epoch_permutation
from goalrm.data.tokenize import TokenizedPair, tokenize_pairs

# columns the reader adds to every raw row; a JSONL row is its undecoded line
PATH, ROW, LINE = "__goalrm_path", "__goalrm_row", "__goalrm_line"
COUNTS = ("prompt_truncated", "completion_truncated", "bad_rows")
TOKENIZED_SCHEMA = pa.schema([
    ("chosen_ids", pa.list_(pa.int32())),
    ("chosen_start", pa.int32()),
    ("rejected_ids", pa.list_(pa.int32())),
    ("rejected_start", pa.int32()),
    ("rejected_first_error", pa.int32()),
    ("source", pa.string()),
    *[(k, pa.int32()) for k in COUNTS],
    ("error", pa.string()),  # a bad row under on_bad_row: error, as JSON [path, line, field, reason]
])


def _record(row: dict):
    if row.get(LINE) is not None:
        return parse_json_line(row[LINE], row[PATH], row[ROW])
    return {k: v for k, v in row.items() if k not in (PATH, ROW, LINE)}


def _row(p: TokenizedPair | None = None, error: BadRowError | None = None) -> dict:
    return {
        "chosen_ids": p.chosen_ids if p else [],
        "chosen_start": p.chosen_start if p else 0,
        "rejected_ids": p.rejected_ids if p else [],
        "rejected_start": p.rejected_start if p else 0,
        "rejected_first_error": p.rejected_first_error if p else None,
        "source": p.source if p else "",
        **dict.fromkeys(COUNTS, 0),
        "error": json.dumps([error.path, error.line, error.field, error.reason]) if error else None,
    }


def tokenize_block(block: pa.Table, tokenizer, data_cfg) -> pa.Table:
    """Raw rows to one row per tokenized pair, under the config's bad-row rule.

    The block's truncation and skipped-row counts ride on its first output row, so the consumer can sum
    them; a block whose rows were all skipped yields one row with no pair to carry them. Under
    `on_bad_row: error` the first bad row comes out as an `error` row for the consumer to raise: raised
    here, Ray Data would hand the trainer only a traceback string.
    """
    bad = BadRows()
    try:
        pairs = []
        for path, rows in itertools.groupby(block.to_pylist(), key=lambda r: r[PATH]):
            records = ((r[ROW], _record(r)) for r in rows)
            pairs += pairs_from_records(records, path, tokenizer, data_cfg.on_bad_row, bad)
        tokenized, stats = tokenize_pairs(
            pairs, tokenizer, data_cfg.max_length, data_cfg.min_prompt_tokens, data_cfg.on_bad_row, bad
        )
    except BadRowError as err:
        return pa.Table.from_pylist([_row(error=err)], schema=TOKENIZED_SCHEMA)
    rows = [_row(p) for p in tokenized] or ([_row()] if bad.count else [])
    if rows:
        rows[0].update(prompt_truncated=stats.prompt_truncated, completion_truncated=stats.completion_truncated, bad_rows=bad.count)
    return pa.Table.from_pylist(rows, schema=TOKENIZED_SCHEMA)


def tokenized_pairs(batch: pa.Table, counts: dict) -> Iterator[TokenizedPair]:
    """Pairs back from `tokenize_block`'s columns, adding its COUNTS into `counts`; an error row raises."""
    for row in batch.to_pylist():
        if row["error"]:
            raise BadRowError(*json.loads(row["error"]))
        for k in COUNTS:
            counts[k] += row[k]
        if row["chosen_ids"]:
            yield TokenizedPair(
                row["chosen_ids"], row["chosen_start"], row["rejected_ids"], row["rejected_start"],
                row["rejected_first_error"], row["source"],
            )


def pair_length(p: TokenizedPair) -> int:
    return max(len(p.chosen_ids), len(p.rejected_ids))  # both rows share the batch's width


def order_window(window: list, micro_batch: int, by_length: bool, seed: int, index: int) -> list[list]:
    """Shuffle a window with the in-memory sampler's permutation; with `by_length`, sort it by length (ties stay
    shuffled), cut it into micro-batches and shuffle their order, so each batch holds pairs of similar length."""
    shuffled = [window[i] for i in epoch_permutation(len(window), index, seed)]
    if by_length:
        shuffled.sort(key=pair_length)
    batches = [shuffled[i : i + micro_batch] for i in range(0, len(shuffled), micro_batch)]
    if by_length:
        batches = [batches[i] for i in epoch_permutation(len(batches), index, seed + 1)]
    return batches


def grouped_batches(
    pairs: Iterable, micro_batch: int, window_batches: int, by_length: bool, seed: int
) -> Iterator[list]:
    """Micro-batches from a pair stream, `window_batches` of them at a time; a final partial window is kept."""
    it = iter(pairs)
    for index in itertools.count():
        window = list(itertools.islice(it, micro_batch * window_batches))
        if not window:
            return
        yield from order_window(window, micro_batch, by_length, seed, index)


def padding_frac(real_tokens: float, slots: float) -> float:
    """Share of a batch's token slots that are padding."""
    return 1.0 - real_tokens / slots if slots else 0.0
