"""Ray-free streaming pieces: map_batches' tokenization, pairs back from its columns, length-grouped windows."""

import json
import random

import pyarrow as pa
import pytest

from goalrm.config import DataConfig
from goalrm.data import BadRowError, collate_pairs, read_pairs, synthetic_preference_pairs, tokenize_pairs
from goalrm.data.formats import PreferencePair
from goalrm.data.sampler import micro_batch_indices
from goalrm.data.stream import (
    COUNTS, LINE, PATH, ROW, grouped_batches, order_window, padding_frac, tokenize_block, tokenized_pairs,
)
from goalrm.tiny import tiny_tokenizer

TOK = tiny_tokenizer()
GOOD = {"prompt": "Q: 2+2=", "chosen": "4", "rejected": "5"}


def _jsonl_block(path, lines):
    """Rows as the Ray Data reader makes them from a JSONL file: undecoded lines with their line numbers."""
    return pa.Table.from_pylist([{LINE: raw.encode(), PATH: path, ROW: i + 1} for i, raw in enumerate(lines)])


def _pairs(block, cfg):
    counts = dict.fromkeys(COUNTS, 0)
    return list(tokenized_pairs(tokenize_block(block, TOK, cfg), counts)), counts


def test_block_gives_exactly_the_in_memory_readers_pairs(tmp_path):
    rows = [GOOD, {"question": "1+1?", "correct": ["2", "two"], "incorrect": "3"},
            {"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
            {"prompt": "P" * 60, "chosen": "long answer here", "rejected": "other answer", "rejected_first_error": 2}]
    lines = [json.dumps(r) for r in rows]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = DataConfig(max_length=40, min_prompt_tokens=4)
    expected, stats = tokenize_pairs(read_pairs(path), TOK, 40, 4)
    got, counts = _pairs(_jsonl_block(str(path), lines), cfg)
    assert got == expected and len(got) == 5
    assert counts == {"prompt_truncated": stats.prompt_truncated, "completion_truncated": stats.completion_truncated, "bad_rows": 0}
    assert counts["prompt_truncated"] == 2
    # Parquet rows arrive as columns, with nulls where a row's layout does not use a column
    columns = sorted({k for r in rows for k in r})
    parquet_block = pa.Table.from_pylist([{**dict.fromkeys(columns), **r, PATH: "x.parquet", ROW: i + 1} for i, r in enumerate(rows)])
    got_pq, _ = _pairs(parquet_block, cfg)
    assert [(p.chosen_ids, p.rejected_ids, p.rejected_first_error) for p in got_pq] == [
        (p.chosen_ids, p.rejected_ids, p.rejected_first_error) for p in expected
    ]
    assert got_pq[4].source == "x.parquet:4"


@pytest.mark.parametrize("line, row, field, reason", [
    ('{"prompt": "a", "chosen": ', 2, None, "malformed JSON"),
    (json.dumps({**GOOD, "rejected": "4"}), 2, "rejected", "identical"),
    (json.dumps({"prompt": "P" * 60, "chosen": "abc", "rejected": "abd"}), 2, "rejected", "identical to 'chosen' after truncation"),
])
def test_bad_row_comes_out_as_data_and_raises_with_file_row_field(line, row, field, reason):
    block = _jsonl_block("s3://bucket/shard-7.jsonl", [json.dumps(GOOD), line, json.dumps(GOOD)])
    cfg = DataConfig(max_length=8, min_prompt_tokens=4)
    out = tokenize_block(block, TOK, cfg)  # must not raise: Ray Data would flatten the error to a string
    assert out.num_rows == 1 and out["error"][0].as_py()
    with pytest.raises(BadRowError) as info:
        list(tokenized_pairs(out, dict.fromkeys(COUNTS, 0)))
    assert (info.value.path, info.value.line, info.value.field) == ("s3://bucket/shard-7.jsonl", row, field)
    assert reason in str(info.value)


def test_skip_counts_bad_rows_even_when_a_block_keeps_none():
    cfg = DataConfig(on_bad_row="skip")
    got, counts = _pairs(_jsonl_block("f.jsonl", [json.dumps(GOOD), "{oops", json.dumps({**GOOD, "rejected": "4"})]), cfg)
    assert len(got) == 1 and counts["bad_rows"] == 2
    got, counts = _pairs(_jsonl_block("f.jsonl", ["{oops"]), cfg)
    assert got == [] and counts["bad_rows"] == 1


def test_window_without_grouping_is_the_in_memory_samplers_order():
    """One window over the whole data = one in-memory epoch: the basis of the end-to-end equality test."""
    pairs = list(range(24))  # order_window only permutes, so any items do
    mb, n = 4, 24
    batches = list(grouped_batches(pairs * 3, mb, n // mb, by_length=False, seed=5))
    expected = [micro_batch_indices(step, 0, 0, 1, n, mb, 1, 5) for step in range(3 * n // mb)]
    assert batches == expected


def _varied_pairs(n):
    rng = random.Random(0)
    raw = [PreferencePair("q" * rng.randint(1, 80), "a" * rng.randint(1, 40), "b" * rng.randint(1, 40)) for _ in range(n)]
    return tokenize_pairs(raw, TOK, 256)[0]


def _padding(batches):
    masks = [collate_pairs(b, TOK.pad_token_id)["attention_mask"] for b in batches]
    return padding_frac(sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks))


def test_length_grouping_keeps_every_pair_once_and_cuts_padding():
    pairs = _varied_pairs(256)
    plain = list(grouped_batches(pairs, 8, 16, by_length=False, seed=0))
    grouped = list(grouped_batches(pairs, 8, 16, by_length=True, seed=0))
    assert sorted(map(id, (p for b in grouped for p in b))) == sorted(map(id, pairs))
    assert all(len(b) == 8 for b in grouped)
    assert _padding(grouped) < 0.5 * _padding(plain)
    # batch order is shuffled, not shortest first, and the same seed gives the same batches
    first_lengths = [max(len(p.chosen_ids), len(p.rejected_ids)) for p in grouped[0]]
    assert first_lengths != sorted(len(p.chosen_ids) for p in pairs)[:8]
    assert grouped == list(grouped_batches(pairs, 8, 16, by_length=True, seed=0))
    assert order_window(pairs[:64], 8, True, 0, 0) != order_window(pairs[:64], 8, True, 0, 1)


def test_padding_frac():
    pairs = tokenize_pairs([PreferencePair("p", "aaaa", "b"), PreferencePair("p", "c", "d")], TOK, 64)[0]
    mask = collate_pairs(pairs, TOK.pad_token_id)["attention_mask"]
    # rows: <bos>paaaa<eos> (7), <bos>pc<eos> (4), <bos>pb<eos> (4), <bos>pd<eos> (4): 19 of 28 slots are real
    assert (int(mask.sum()), mask.numel()) == (19, 28)
    assert padding_frac(19, 28) == pytest.approx(9 / 28)
    assert padding_frac(0, 0) == 0.0


def test_synthetic_block_round_trip_keeps_first_error():
    (pair,) = synthetic_preference_pairs(1, seed=2)
    row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "rejected_first_error": pair.rejected_first_error}
    got, _ = _pairs(_jsonl_block("s.jsonl", [json.dumps(row)]), DataConfig())
    assert got[0].rejected_first_error is not None
    assert got[0] == tokenize_pairs([PreferencePair(**row, source="s.jsonl:1")], TOK, 256)[0][0]


class _Shard:
    """Stands in for ray.train.get_dataset_shard: the same tokenized blocks, in order, each epoch."""

    def __init__(self, blocks):
        self.blocks = blocks

    def iter_batches(self, **_):
        return iter(self.blocks)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resumed_stream_continues_where_the_run_stopped(grad_accum):
    """A resumed worker reads its stream from the start and drops what the steps before the checkpoint
    trained on, so step k's micro-batches are the uninterrupted run's (epoch boundaries included)."""
    from goalrm.config import load_config
    from goalrm.train.data_source import StreamTrainData

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in synthetic_preference_pairs(40, seed=5)]
    block = tokenize_block(_jsonl_block("d.jsonl", [json.dumps(r) for r in rows]), TOK, DataConfig(max_length=128))
    cfg = load_config(None, {"data": {"train": "d/", "loader": "ray_data", "group_window": 2, "goal_state_pairs": 12},
                             "train": {"micro_batch_size": 4, "grad_accum": grad_accum, "num_workers": 1}})

    def stream():
        return StreamTrainData(cfg, TOK, 0, 1, shard=_Shard([block.slice(0, 25), block.slice(25)]))

    whole = stream()
    reference = [whole.micro_batch(step, m) for step in range(14) for m in range(grad_accum)]  # 40 pairs: past an epoch
    resumed = stream()
    after = [resumed.micro_batch(step, m) for step in range(9, 14) for m in range(grad_accum)]
    assert after == reference[9 * grad_accum :]
    assert resumed.epoch(14) == whole.epoch(14) >= 1  # passes completed: the resume crossed an epoch too
    with pytest.raises(ValueError, match="cannot go back"):
        resumed.micro_batch(3, 0)
