"""Readers: every layout, JSONL / gz / Parquet, and bad rows named by file, line and field."""

import gzip
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goalrm.data import BadRowError, BadRows, PreferencePair, read_pairs, synthetic_preference_pairs
from goalrm.data.formats import pairs_from_records
from goalrm.tiny import tiny_tokenizer

TEMPLATE = (
    "{% for m in messages %}<|{{m.role}}|>{{m.content}}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
GOOD = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def chat_tok():
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def test_prompt_chosen_rejected(tmp_path):
    row = {**GOOD, "rejected_first_error": 0}
    pairs = read_pairs(write_jsonl(tmp_path / "d.jsonl", [row, "", "   "]))
    assert pairs == [PreferencePair("2+2=", "4", "5", f"{tmp_path / 'd.jsonl'}:1", 0)]


def test_hh_rlhf_split_at_last_assistant_turn(tmp_path):
    head = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:"
    pairs = read_pairs(write_jsonl(tmp_path / "hh.jsonl", [{"chosen": head + " 4", "rejected": head + " 5"}]))
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == (head, " 4", " 5")


def test_math_layout_all_combinations(tmp_path):
    row = {"question": "What is 2+2?", "correct": ["4", "four"], "incorrect": "5"}
    pairs = read_pairs(write_jsonl(tmp_path / "m.json", [row]))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("What is 2+2?\n", "4", "5"), ("What is 2+2?\n", "four", "5")]
    row = {"question": "Q: ", "correct": "a", "incorrect": ["b"]}
    assert read_pairs(write_jsonl(tmp_path / "m2.jsonl", [row]))[0].prompt == "Q: "


def test_conversational_with_prompt(tmp_path, chat_tok):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    (pair,) = read_pairs(write_jsonl(tmp_path / "c.jsonl", [row]), tokenizer=chat_tok)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("<|user|>hi\n<|assistant|>", "hello\n", "go away\n")


def test_conversational_whole_conversations(tmp_path, chat_tok):
    user = {"role": "user", "content": "hi"}
    row = {"chosen": [user, {"role": "assistant", "content": "hello"}], "rejected": [user, {"role": "assistant", "content": "no"}]}
    (pair,) = read_pairs(write_jsonl(tmp_path / "c.jsonl", [row]), tokenizer=chat_tok)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("<|user|>hi\n<|assistant|>", "hello\n", "no\n")


def test_gzip_and_parquet(tmp_path):
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(GOOD) + "\n")
    assert read_pairs(gz)[0].chosen == "4"
    pq_path = tmp_path / "d.parquet"
    rows = [GOOD, {"prompt": "3+3=", "chosen": "6", "rejected": "6"}]
    pq.write_table(pa.Table.from_pylist(rows), pq_path)
    with pytest.raises(BadRowError, match=r"d\.parquet:2: field 'rejected': identical"):
        read_pairs(pq_path)
    bad_rows = BadRows()
    assert [p.source for p in read_pairs(pq_path, on_bad_row="skip", bad_rows=bad_rows)] == [f"{pq_path}:1"]
    assert bad_rows.count == 1


def test_parquet_nulls_from_mixed_layouts(tmp_path):
    path = tmp_path / "mixed.parquet"
    hh = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    pq.write_table(pa.Table.from_pylist([GOOD, hh]), path)  # row 2 gets prompt=null
    assert [p.prompt for p in read_pairs(path)] == ["2+2=", "\n\nHuman: a\n\nAssistant:"]


BAD_ROWS = [
    ('{"prompt": "x", "chosen": ', None, "malformed JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    ({"text": "hello"}, None, "unknown layout"),
    ({"prompt": "x", "chosen": "a"}, "rejected", "missing"),
    ({"chosen": "a", "rejected": "b", "prompt": 3}, "prompt", "must be a string"),
    ({"prompt": "x", "chosen": 7, "rejected": "b"}, "chosen", "must be a string"),
    ({"prompt": "x", "chosen": "a", "rejected": "  \n"}, "rejected", "empty completion"),
    ({"prompt": "x", "chosen": "a", "rejected": "a"}, "rejected", "identical"),
    ({"prompt": "x", "chosen": "a", "rejected": "b", "rejected_first_error": 5}, "rejected_first_error", "character offset"),
    ({"chosen": "no turns", "rejected": "b"}, "chosen", "Assistant:"),
    (
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"},
        "rejected",
        "differs",
    ),
    ({"correct": "4", "incorrect": "5"}, "question", "missing"),
    ({"question": "q", "correct": "4"}, "incorrect", "missing"),
    ({"question": "q", "correct": ["4", 4], "incorrect": "5"}, "correct", "must be a string"),
    ({"question": "q", "correct": "4", "incorrect": ["5", "4"]}, "incorrect", "identical"),
    ({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}, "chosen", "chat_template"),
]


@pytest.mark.parametrize("row,field,reason", BAD_ROWS)
def test_bad_row_names_file_line_field(tmp_path, row, field, reason):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, "", row])
    with pytest.raises(BadRowError) as info:
        read_pairs(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}:3: " + (f"field '{field}': " if field else ""))
    assert reason in str(err)


def test_chat_rows_without_template_or_with_bad_messages(tmp_path, chat_tok):
    user = {"role": "user", "content": "hi"}
    rows = [
        {"chosen": [user, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "yo"}, user]},
        {"prompt": [user], "chosen": [], "rejected": [{"role": "assistant", "content": "b"}]},
        {"prompt": [user], "chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "b"}]},
    ]
    bad_rows = BadRows()
    assert read_pairs(write_jsonl(tmp_path / "c.jsonl", rows), chat_tok, "skip", bad_rows) == []
    assert [(e.line, e.field) for e in bad_rows.errors] == [(1, "rejected"), (2, "chosen"), (3, "chosen")]


def test_skip_mode_counts_logs_and_keeps_good_rows(tmp_path, caplog):
    rows = [GOOD, "{oops", {"prompt": "x", "chosen": "a", "rejected": "a"}, {"prompt": "y", "chosen": "b", "rejected": "c"}]
    bad_rows = BadRows()
    with caplog.at_level(logging.WARNING, logger="goalrm.data"):
        pairs = read_pairs(write_jsonl(tmp_path / "d.jsonl", rows), on_bad_row="skip", bad_rows=bad_rows)
    assert [p.prompt for p in pairs] == ["2+2=", "y"]
    assert bad_rows.count == 2
    assert sum(bad_rows.by_reason.values()) == 2
    assert bad_rows.summary().startswith("2 bad rows skipped")
    assert len([r for r in caplog.records if "d.jsonl" in r.getMessage()]) == 2


def test_skip_mode_without_bad_rows_still_works(tmp_path):
    assert len(read_pairs(write_jsonl(tmp_path / "d.jsonl", [GOOD, "{"]), on_bad_row="skip")) == 1


def test_invalid_utf8_line_is_one_bad_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(BadRowError, match=r"d\.jsonl:2: not valid UTF-8"):
        read_pairs(path)


def test_bad_option_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="on_bad_row"):
        read_pairs(write_jsonl(tmp_path / "d.jsonl", [GOOD]), on_bad_row="ignore")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_pairs(tmp_path / "nope.jsonl")


def test_pairs_from_records_is_the_shared_path():
    pairs = pairs_from_records([(4, GOOD)], "ray://block")
    assert pairs[0].source == "ray://block:4"


def test_synthetic_preference_pairs():
    pairs = synthetic_preference_pairs(3, seed=1, split="eval")
    assert [p.source for p in pairs] == ["synthetic:eval:1", "synthetic:eval:2", "synthetic:eval:3"]
    for p in pairs:
        e = p.rejected_first_error
        assert p.chosen[:e] == p.rejected[:e] and p.chosen[e] != p.rejected[e]
