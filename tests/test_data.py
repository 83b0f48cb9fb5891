import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goalrm.data import BadRowError, BadRows, collate_pairs, read_pairs, synthetic_pairs, synthetic_preference_pairs, tokenize_pairs
from goalrm.data.formats import PreferencePair
from goalrm.data.tokenize import tokenize_pair
from goalrm.tiny import tiny_tokenizer

TOK = tiny_tokenizer()


def _jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


def test_three_layouts_jsonl(tmp_path):
    p = _jsonl(tmp_path, [
        {"prompt": "Q: 1+1?\n", "chosen": "2", "rejected": "3"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {"question": "2+2?", "correct": ["4", "four"], "incorrect": "5"},
    ])
    pairs = read_pairs(p)
    assert [(x.prompt, x.chosen, x.rejected) for x in pairs] == [
        ("Q: 1+1?\n", "2", "3"),
        ("\n\nHuman: hi\n\nAssistant:", " hello", " go away"),
        ("2+2?\n", "4", "5"),
        ("2+2?\n", "four", "5"),
    ]
    assert pairs[0].source.endswith("d.jsonl:1") and pairs[3].source.endswith("d.jsonl:3")


def test_parquet_and_gzip(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert read_pairs(tmp_path / "d.parquet")[0].chosen == "b"
    assert read_pairs(tmp_path / "d.jsonl.gz")[0].rejected == "c"


def test_conversational_rows_use_chat_template(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<|{{m.role}}|>{{m.content}}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    p = _jsonl(tmp_path, [{
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }])
    (pair,) = read_pairs(p, tokenizer=tok)
    assert pair.prompt == "<|user|>hi\n<|assistant|>"
    assert pair.chosen == "hello\n" and pair.rejected == "no\n"
    with pytest.raises(BadRowError, match="chat template"):
        read_pairs(p)


@pytest.mark.parametrize("row, field, reason", [
    ('{"prompt": "a", "chosen": "b"', None, "malformed JSON"),
    ({"prompt": "a", "chosen": "b"}, "rejected", "missing"),
    ({"prompt": "a", "chosen": 3, "rejected": "c"}, "chosen", "must be a string"),
    ({"prompt": "a", "chosen": "  ", "rejected": "c"}, "chosen", "empty completion"),
    ({"prompt": "a", "chosen": "b", "rejected": "b"}, "rejected", "identical"),
    ({"text": "a"}, None, "unknown layout"),
    ({"chosen": "no turns", "rejected": "x"}, "chosen", "Assistant"),
    ({"question": "q", "correct": "a"}, "incorrect", "missing"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, reason):
    p = _jsonl(tmp_path, [{"prompt": "ok", "chosen": "1", "rejected": "2"}, row])
    with pytest.raises(BadRowError) as exc:
        read_pairs(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:2: ")
    assert reason in msg
    if field:
        assert f"field '{field}'" in msg


def test_skip_mode_counts_and_keeps_good_rows(tmp_path, caplog):
    p = _jsonl(tmp_path, [{"prompt": "a", "chosen": "b", "rejected": "c"}, "{oops", {"prompt": "a", "chosen": "b", "rejected": "b"}, {"prompt": "x", "chosen": "y", "rejected": "z"}])
    bad = BadRows()
    pairs = read_pairs(p, on_bad_row="skip", bad_rows=bad)
    assert [x.prompt for x in pairs] == ["a", "x"]
    assert bad.count == 2 and "2 bad rows skipped" in bad.summary()
    assert sum("skipping bad row" in r.message for r in caplog.records) == 2


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_pairs("nope.jsonl")


def test_completion_span_and_first_error_token():
    pair = synthetic_preference_pairs(1, seed=3)[0]
    (tp,), _ = tokenize_pairs([pair], TOK, max_length=256)
    assert TOK.decode(tp.chosen_ids[tp.chosen_start:]) == pair.chosen + "<eos>"
    assert TOK.decode(tp.rejected_ids[tp.rejected_start:]) == pair.rejected + "<eos>"
    assert TOK.decode(tp.rejected_ids[tp.rejected_first_error:]) == pair.rejected[pair.rejected_first_error:] + "<eos>"
    # exactly what plain `tokenizer(prompt + completion)` gives
    assert tp.chosen_ids == TOK(pair.prompt + pair.chosen).input_ids


def test_truncation_prompt_left_first_then_completion_right():
    pair = PreferencePair("P" * 40, "abcdefghij", "Xbcdefghij")
    stats = None
    from goalrm.data.tokenize import TruncationStats

    stats = TruncationStats()
    tp = tokenize_pair(pair, TOK, max_length=30, min_prompt_tokens=4, stats=stats)
    assert len(tp.chosen_ids) == 30
    assert TOK.decode(tp.chosen_ids) == "<bos>" + "P" * 18 + "abcdefghij<eos>"
    assert stats.prompt_truncated == 2 and stats.completion_truncated == 0
    tp = tokenize_pair(pair, TOK, max_length=12, min_prompt_tokens=4, stats=stats)
    assert TOK.decode(tp.chosen_ids) == "<bos>PPPPabcdef<eos>"
    assert stats.completion_truncated == 2


def test_no_room_and_identical_after_truncation_are_bad_rows():
    pair = PreferencePair("P" * 40, "abc", "abX", source="f.jsonl:7")
    with pytest.raises(BadRowError, match=r"f.jsonl:7: field 'prompt': prompt leaves no room"):
        tokenize_pair(pair, TOK, max_length=6, min_prompt_tokens=4)
    with pytest.raises(BadRowError, match=r"f.jsonl:7: field 'rejected': identical to 'chosen' after truncation"):
        tokenize_pair(pair, TOK, max_length=8, min_prompt_tokens=4)
    kept, _ = tokenize_pairs([pair, PreferencePair("p", "a", "b")], TOK, 8, 4, on_bad_row="skip", bad_rows=(bad := BadRows()))
    assert len(kept) == 1 and bad.count == 1


def test_collate_spans_index_the_same_tokens():
    pairs, _ = tokenize_pairs(synthetic_preference_pairs(4, seed=1), TOK, 256)
    b = collate_pairs(pairs, TOK.pad_token_id)
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    starts = [p.chosen_start for p in pairs] + [p.rejected_start for p in pairs]
    for i, s in enumerate(seqs):
        row = b["input_ids"][i, b["completion_start"][i]: b["completion_end"][i]].tolist()
        assert row == s[starts[i]:]
        assert int(b["attention_mask"][i].sum()) == len(s)
    for j, p in enumerate(pairs):
        assert int(b["input_ids"][4 + j, b["first_error"][j]]) == p.rejected_ids[p.rejected_first_error]


def test_synthetic_is_deterministic_disjoint_and_consistent():
    a, b = synthetic_pairs(200, seed=0), synthetic_pairs(200, seed=0)
    assert a == b and synthetic_pairs(200, seed=1) != a
    train = {p.prompt for p in synthetic_pairs(2000)}
    assert not train & {p.prompt for p in synthetic_pairs(200, split="eval")}
    for p in a:
        assert p.chosen != p.rejected
        assert p.chosen[: p.first_error_char] == p.rejected[: p.first_error_char]
        # the chosen solution's arithmetic is right, the rejected one's has exactly one wrong step
        def wrong_steps(sol):
            steps = [l for l in sol.splitlines() if "=" in l]
            return sum(eval(l.split("=")[0]) != int(l.split("=")[1]) for l in steps)
        assert wrong_steps(p.chosen) == 0 and wrong_steps(p.rejected) == 1
        # the error is carried forward: the final answer follows the wrong chain
        last = [l for l in p.rejected.splitlines() if "=" in l][-1]
        assert p.rejected.endswith(f"Answer: {last.split('=')[1]}")


def test_long_chains_task_errs_early_and_late_in_two_digit_chains():
    import re

    from goalrm.data.synthetic import synthetic_pairs

    pairs = synthetic_pairs(300, seed=0, split="train", task="long_chains")
    wrong_steps, widths = [], set()
    for p in pairs:
        steps = p.chosen.split("\n")[:-1]
        assert 4 <= len(steps) <= 7
        for line in steps:  # every chosen step is right
            a, op, b, c = re.fullmatch(r"(\d+)([+-])(\d+)=(\d+)", line).groups()
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b)) and 0 <= int(c) <= 99
            widths.add(len(c))
        assert p.chosen[: p.first_error_char] == p.rejected[: p.first_error_char] != p.rejected
        wrong_steps.append(p.rejected[: p.first_error_char].count("\n") / (len(steps) - 1))
    assert widths == {1, 2}
    assert min(wrong_steps) == 0 and max(wrong_steps) == 1  # the first step and the last go wrong too
    assert synthetic_pairs(5, task="long_chains") != synthetic_pairs(5)
    with pytest.raises(ValueError, match="long_chains"):
        synthetic_pairs(1, task="trees")


def test_goal_pairs_are_the_first_usable_pairs_read_no_further(tmp_path):
    """The export's goal-state pairs, for both loaders and goalrm export: the first n usable pairs in
    file order, as load_tokenized gives them, without reading past them."""
    from goalrm.config import DataConfig
    from goalrm.data.load import load_goal_pairs, load_tokenized

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in synthetic_preference_pairs(12, seed=2)]
    lines = [json.dumps(r) for r in rows]
    lines[2] = json.dumps({**rows[2], "rejected": rows[2]["chosen"]})  # a bad row, skipped
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:6]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[6:]) + "\n{broken\n")  # beyond the first 8 usable pairs
    cfg = DataConfig(max_length=128, on_bad_row="skip")
    goal = load_goal_pairs(str(tmp_path), 8, cfg, TOK)
    everything, _, _ = load_tokenized(str(tmp_path / "a.jsonl"), "train", cfg, TOK)
    everything += load_tokenized(str(tmp_path / "b.jsonl"), "train", cfg, TOK)[0]
    assert goal == everything[:8] and len(everything) == 11
    strict = DataConfig(max_length=128)  # on_bad_row: error: reading everything meets the bad rows
    with pytest.raises(BadRowError):
        load_goal_pairs(str(tmp_path), 0, strict, TOK)
    assert load_goal_pairs(str(tmp_path / "b.jsonl"), 3, strict, TOK) == everything[5:8]
    assert load_goal_pairs("synthetic", 5, DataConfig(), TOK) == load_tokenized("synthetic", "train", DataConfig(), TOK)[0][:5]
