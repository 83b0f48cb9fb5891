"""`goalrm score`: the filtering math, majority voting, blocks and resuming (fast, no Ray), and
end-to-end runs on one shared local Ray (slow)."""

import gzip
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from goalrm.cli import main
from goalrm.config import ConfigError, ScoreConfig
from goalrm.data.errors import BadRowError
from goalrm.data.formats import Completion, completions_from_row
from goalrm.data.tokenize import tokenize_completion
from goalrm.score.block import score_block
from goalrm.score.filtering import filter_row, tokens_saved
from goalrm.score.io import DONE, REJECTS, SCORED, input_files, output_paths, pending_blocks, plan_blocks, read_block
from goalrm.score.majority import majority_answer, majority_report
from goalrm.score.run import scorer_cpus
from goalrm.score.scorer import load_scorer, score_sequences

ADDED_ORDER = ["role", "reward", "q_values", "min_q", "first_below", "keep", "first_error"]
ADDED = {"role": pa.string(), "reward": pa.float32(), "min_q": pa.float32(), "first_below": pa.int32(), "keep": pa.bool_(), "first_error": pa.int32()}


@pytest.fixture(scope="module")
def model_dir(tiny_export):
    return tiny_export  # the tiny export conftest.py shares with the serve tests


def _rows(n, start=0):
    """Generated answers: group of 4 per question, answer and correctness label, varied lengths."""
    return [
        {"id": i, "prompt": f"Q{i // 4}: 2+{i // 4}=? ", "completion": "Work: " + "x" * (3 + 7 * (i % 5)) + f" so {i % 3}",
         "group": i // 4, "answer": i % 3, "label": i % 3 == 0, "meta": {"k": i}}
        for i in range(start, start + n)
    ]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _with_bad_rows(path):
    lines = [json.dumps(r) for r in _rows(30)]
    lines[3] = "{not json"
    lines[10] = json.dumps({"id": 10, "prompt": "p", "completion": "   "})
    lines[17] = json.dumps({"id": 17, "prompt": 5, "completion": "c"})
    lines[21] = json.dumps({**_rows(1, 21)[0], "answer": "two"})  # a string where the column holds numbers
    lines.insert(12, "")  # blank lines are skipped, not rows
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- the math, no Ray


def test_filter_row_first_below_and_min():
    q = np.array([0.5, 0.2, -0.1, 0.3, -0.4], dtype=np.float32)
    f = filter_row(q, 0.0)
    assert (f.first_below, f.keep) == (2, False) and f.min_q == pytest.approx(-0.4)
    assert filter_row(q, -0.5).first_below is None and filter_row(q, -0.5).keep
    assert filter_row(q, 0.6).first_below == 0
    assert filter_row(q, 0.2).first_below == 2  # strictly below


def test_tokens_saved_counts_tokens_after_first_below():
    assert tokens_saved(5, 2) == 2
    assert tokens_saved(5, 0) == 4
    assert tokens_saved(5, 4) == 0
    assert tokens_saved(5, None) == 0


def test_majority_vote_by_hand():
    # group a: answers 1,1,2 (labels: 1 correct) with the two 1s dropped -> after: 2 (wrong)
    # group b: answers 3,4,4 all dropped -> falls back to all rows: 4 both times (correct)
    # group c: answers 5,6 kept, a tie -> "5" < "6" both times (5 is wrong)
    groups = ["a", "a", "a", "b", "b", "b", "c", "c"]
    answers = [1, 1, 2, 3, 4, 4, 5, 6]
    labels = [True, True, False, False, True, True, False, True]
    keep = [False, False, True, False, False, False, True, True]
    r = majority_report(groups, answers, keep, labels)
    assert r == {"groups": 3, "groups_all_filtered": 1, "majority_changed": 1,
                 "accuracy_before": pytest.approx(2 / 3), "accuracy_after": pytest.approx(1 / 3)}
    assert "accuracy_before" not in majority_report(groups, answers, keep)
    assert majority_answer([6, 5]) == majority_answer([5, 6]) == 5


def test_completions_from_row_layouts_and_errors():
    assert completions_from_row({"prompt": "p", "completion": "c", "x": 1}, "f", 1) == [Completion("p", "c")]
    pair = completions_from_row({"prompt": "p", "chosen": "a", "rejected": "b"}, "f", 1)
    assert pair == [Completion("p", "a", "chosen"), Completion("p", "b", "rejected")]
    math = completions_from_row({"question": "q", "correct": ["a", "a2"], "incorrect": ["b"]}, "f", 1)
    assert [(c.completion, c.role) for c in math] == [("a", "chosen"), ("b", "rejected"), ("a2", "chosen")]
    for row, field in [({"prompt": "p", "completion": ""}, "completion"), ({"completion": "c"}, "prompt"),
                       ({"prompt": "p", "chosen": "a", "rejected": "a"}, "rejected"), ({"text": "t"}, None)]:
        with pytest.raises(BadRowError) as e:
            completions_from_row(row, "f.jsonl", 7)
        assert (e.value.path, e.value.line, e.value.field) == ("f.jsonl", 7, field)


@pytest.mark.parametrize("attn", ["sdpa", "sdpa_varlen", "eager"])
def test_token_budget_batches_packed_or_padded_match_one_at_a_time(model_dir, attn):
    model, tok, goal, packing = load_scorer(model_dir, attn=attn)
    assert packing == ("flat" if attn == "sdpa_varlen" else "rows")  # the tiny Llama takes packed rows
    texts = [("Q: ", "a" * n) for n in (40, 3, 17, 60, 1, 25, 9)]
    seqs = []
    for p, c in texts:
        ids = tok(p + c)["input_ids"]
        seqs.append((ids, len(tok(p)["input_ids"]) - 1))  # the byte tokenizer: prompt tokens after <bos>, before <eos>
    r_single, q_single = score_sequences(model, goal, seqs, tok.pad_token_id, max_tokens=1)  # one a forward
    for layout in (packing, None):  # packed in its layout, then padded
        r_batched, q_batched = score_sequences(model, goal, seqs, tok.pad_token_id, max_tokens=120, packing=layout)
        np.testing.assert_allclose(r_batched, r_single, atol=1e-5)
        for (ids, start), qb, qs in zip(seqs, q_batched, q_single):
            assert qb.dtype == np.float32 and len(qb) == len(ids) - start
            np.testing.assert_allclose(qb, qs, atol=1e-5)


# ---------------------------------------------------------------- blocks, no Ray


def test_blocks_cover_every_line_once_with_line_numbers(tmp_path):
    lines = [json.dumps({"i": i}) if i % 4 else "" for i in range(23)]
    path = _write_jsonl(tmp_path / "a.jsonl", lines)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"i": i}) + "\n" for i in range(5)))
    pq.write_table(pa.table({"i": list(range(25))}), tmp_path / "c.parquet", row_group_size=7)
    fs, files = input_files(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["a.jsonl", "b.jsonl.gz", "c.parquet"]
    blocks = plan_blocks(fs, files, block_rows=5)
    assert [(b.file_index, b.start, b.stop) for b in blocks if b.file_index == 0] == [(0, 0, 5), (0, 5, 10), (0, 10, 15), (0, 15, 20), (0, 20, 23)]
    assert [(b.start, b.stop) for b in blocks if b.file_index == 1] == [(0, 5)]
    assert len({b.name for b in blocks}) == len(blocks) == 5 + 1 + 5
    seen = {0: [], 1: [], 2: []}
    for b in blocks:
        table, records = read_block(fs, b)
        assert (table is not None) == (b.file_index == 2)
        seen[b.file_index] += [(line, row["i"]) for line, row in records]
    assert seen[0] == [(i + 1, i) for i in range(23) if i % 4]  # file line numbers, blank lines skipped
    assert seen[1] == [(i + 1, i) for i in range(5)]
    assert seen[2] == [(i + 1, i) for i in range(25)]  # ranges across row groups
    assert plan_blocks(fs, files, 5) == blocks  # the same names on a rerun
    assert [os.path.basename(f) for f in input_files(str(tmp_path / "*.jsonl*"))[1]] == ["a.jsonl", "b.jsonl.gz"]


def test_score_block_keeps_columns_and_rejects_with_reasons(tmp_path, model_dir):
    path = _with_bad_rows(tmp_path / "in.jsonl")
    fs, files = input_files(str(path))
    (block,) = plan_blocks(fs, files, 100)
    model, tok, goal, packing = load_scorer(model_dir)
    cfg = ScoreConfig(model=model_dir, input=str(path), output=str(tmp_path / "out"), batch_size=4)
    marker = score_block(fs, block, model, tok, goal, cfg, cfg.output, packing=packing)
    paths = output_paths(cfg.output, block)
    t = pq.read_table(paths[SCORED])
    assert t.column_names == ["id", "prompt", "completion", "group", "answer", "label", "meta", *ADDED_ORDER]
    assert sorted(t["id"].to_pylist()) == [i for i in range(30) if i not in (3, 10, 17, 21)]
    assert t["meta"].to_pylist()[0] == {"k": 0}
    rejects = [json.loads(l) for l in open(paths[REJECTS])]
    assert [(r["line"], r["field"]) for r in rejects] == [(4, None), (11, "completion"), (19, "prompt"), (23, "answer")]
    assert rejects[0]["reason"].startswith("malformed JSON") and rejects[3]["row"]["answer"] == "two"
    assert (marker["rows"], marker["bad_rows"], marker["input_rows"]) == (26, 4, 30)
    assert marker["completion_tokens"] == sum(len(q) for q in t["q_values"].to_pylist())


def test_a_killed_jobs_leftovers_leave_the_unmarked_blocks_to_score(tmp_path, model_dir):
    """What a killed job leaves: a block done, a block written but not marked done, a half-written temp file."""
    data = _write_jsonl(tmp_path / "in.jsonl", _rows(30))
    fs, files = input_files(str(data))
    blocks = plan_blocks(fs, files, 10)
    out = str(tmp_path / "out")
    cfg = ScoreConfig(model=model_dir, input=str(data), output=out, block_rows=10)
    model, tok, goal, packing = load_scorer(model_dir)
    assert pending_blocks(out, blocks) == blocks  # a first run: nothing there yet
    for b in blocks[:2]:
        score_block(fs, b, model, tok, goal, cfg, out, packing=packing)
    os.remove(output_paths(out, blocks[1])[DONE])
    stale = tmp_path / "out" / SCORED / f".{blocks[2].name}.parquet.tmp-deadbeef"
    stale.write_bytes(b"PAR1 partial")
    assert pending_blocks(out, blocks) == blocks[1:]
    assert not stale.exists()
    assert os.path.exists(output_paths(out, blocks[0])[SCORED])  # the done block is kept as it was


def test_pair_layout_scores_chosen_and_rejected_as_two_rows(tmp_path, model_dir):
    rows = [{"prompt": "2+2=", "chosen": "4", "rejected": "5", "id": 0}, {"question": "1+1?", "correct": ["2"], "incorrect": ["3", "4"], "id": 1}]
    table = pa.table({k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)})
    pq.write_table(table, tmp_path / "pairs.parquet")
    fs, files = input_files(str(tmp_path / "pairs.parquet"))
    (block,) = plan_blocks(fs, files, 10)
    model, tok, goal, packing = load_scorer(model_dir)
    cfg = ScoreConfig(model=model_dir, input=str(tmp_path), output=str(tmp_path / "out"))
    score_block(fs, block, model, tok, goal, cfg, cfg.output, packing=packing)
    t = pq.read_table(output_paths(cfg.output, block)[SCORED])
    assert list(zip(t["id"].to_pylist(), t["role"].to_pylist())) == [(0, "chosen"), (0, "rejected"), (1, "chosen"), (1, "rejected"), (1, "rejected")]
    assert t.schema.field("correct").type == table.schema.field("correct").type  # input columns as read


def test_first_wrong_token_of_rejected_rows_and_localization_summary(tmp_path, model_dir):
    """Synthetic pairs know where the rejected solution goes wrong: scored rows carry that token's offset
    into q_values, and the summary's detection numbers equal goalrm.localization on the same Q-values."""
    from goalrm.localization import DetectionTally, false_alarm_threshold
    from goalrm.score.summary import localization_from_output

    assert main(["data", "synthetic", "--output", str(tmp_path / "pairs.jsonl"), "--n", "24"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "pairs.jsonl")]
    fs, files = input_files(str(tmp_path / "pairs.jsonl"))
    model, tok, goal, packing = load_scorer(model_dir)
    cfg = ScoreConfig(model=model_dir, input=str(tmp_path / "pairs.jsonl"), output=str(tmp_path / "out"))
    for block in plan_blocks(fs, files, 10):
        score_block(fs, block, model, tok, goal, cfg, cfg.output, packing=packing)
    t = pd.read_parquet(tmp_path / "out" / SCORED)
    chosen, rejected = t[t.role == "chosen"], t[t.role == "rejected"]
    assert chosen.first_error.isna().all() and rejected.first_error.notna().all() and len(rejected) == 24
    for row, (_, out) in zip(rows, rejected.iterrows()):  # the offset names the token holding the first wrong character
        ids, start, error = tokenize_completion(row["prompt"], row["rejected"], tok, cfg.max_length, first_error_char=row["rejected_first_error"])
        assert out.first_error == error - start and 0 <= out.first_error < len(out.q_values)
        wrong_char = row["rejected"][row["rejected_first_error"]]
        assert wrong_char in tok.decode(ids[error])
    want = DetectionTally(false_alarm_threshold(chosen.min_q.to_numpy()))
    for q, e in zip(rejected.q_values, rejected.first_error):
        want.add(list(q), int(e))
    assert localization_from_output(str(tmp_path / "out")) == pytest.approx(want.metrics())
    assert want.metrics()["n_with_first_error"] == 24


def test_cli_errors_before_ray(tmp_path, model_dir, capsys):
    data = _write_jsonl(tmp_path / "in.jsonl", _rows(4))
    assert main(["score", "--model", str(tmp_path), "--input", str(data), "--output", str(tmp_path / "o")]) == 2
    assert "is not a goalrm export" in capsys.readouterr().err
    assert main(["score", "--model", model_dir, "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "--input not found" in capsys.readouterr().err
    save_file({"goal": torch.ones(7)}, str(tmp_path / "g.safetensors"))
    assert main(["score", "--model", model_dir, "--input", str(data), "--output", str(tmp_path / "o"), "--goal", str(tmp_path / "g.safetensors")]) == 2
    assert "tensor 'goal' has shape [7], but the model's representations have size 128" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--group-col and --answer-col"):
        ScoreConfig(model="m", input="i", output="o", group_col="g")


def test_scorer_cpus_are_a_share_of_one_node():
    def cfg(**kw):
        return ScoreConfig(model="m", input="i", output="o", **kw)

    # one 2-CPU node: a share each, half a CPU left to Ray Data
    assert scorer_cpus(cfg(num_scorers=2), [{"CPU": 2.0}]) == (1, 0.75)
    assert scorer_cpus(cfg(num_scorers=1), [{"CPU": 2.0}]) == (2, 1.5)
    # a head without CPUs and two 8-CPU nodes: one scorer must fit on one node, not take the cluster's 16 CPUs
    nodes = [{"CPU": 0.0}, {"CPU": 8.0}, {"CPU": 8.0}]
    assert scorer_cpus(cfg(num_scorers=1), nodes) == (8, 7.5)
    assert scorer_cpus(cfg(num_scorers=3), nodes) == (4, 3.75)  # 2 on one node, 1 on the other
    # GPU scorers land only on nodes with GPUs: 8 per 96-CPU node, whatever the CPU head has
    gpu_nodes = [{"CPU": 8.0}, {"CPU": 96.0, "GPU": 8.0}, {"CPU": 96.0, "GPU": 8.0}]
    assert scorer_cpus(cfg(num_scorers=16, gpus_per_scorer=1), gpu_nodes) == (12, 95.5 / 8)
    assert scorer_cpus(cfg(num_scorers=2, threads_per_scorer=3, cpus_per_scorer=2.5), nodes) == (3, 2.5)


# ---------------------------------------------------------------- end to end on Ray (slow)


def _run(model_dir, data, out, **kw):
    from goalrm.score.run import score

    return score(ScoreConfig(model=model_dir, input=str(data), output=str(out), **kw), print_summary=False)


def _files(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_score_bad_rows_two_scorers_on_two_cpus_then_idempotent_rerun(tmp_path, model_dir, ray_session):
    data = tmp_path / "in"
    data.mkdir()
    _with_bad_rows(data / "a.jsonl")
    pq.write_table(pa.Table.from_pylist(_rows(12, start=100)), data / "b.parquet", row_group_size=5)
    out = tmp_path / "out"
    # two scorers on a 2-CPU Ray: whole CPUs each would wait forever; the timeout catches that
    s = _run(model_dir, data, out, block_rows=8, num_scorers=2, batch_size=4)
    assert (s["input_rows"], s["rows"], s["bad_rows"], s["blocks"], s["blocks_this_run"]) == (42, 38, 4, 6, 6)
    t = pq.read_table(out / SCORED)  # plain pyarrow, the folder as a dataset
    for name, tp in ADDED.items():
        assert t.schema.field(name).type == tp, name
    qtype = t.schema.field("q_values").type
    assert pa.types.is_list(qtype) and qtype.value_type == pa.float32()
    assert sorted(t["id"].to_pylist()) == sorted([i for i in range(30) if i not in (3, 10, 17, 21)] + list(range(100, 112)))
    df = pd.read_parquet(out / SCORED)
    assert len(df) == 38 and df["keep"].dtype == bool
    for q, m, fb, keep in zip(df["q_values"], df["min_q"], df["first_below"], df["keep"]):
        assert m == pytest.approx(min(q)) and keep == pd.isna(fb)
        assert pd.isna(fb) or (q[int(fb)] < 0 and all(x >= 0 for x in q[: int(fb)]))
    rejects = [json.loads(l) for n in sorted(os.listdir(out / REJECTS)) for l in open(out / REJECTS / n)]
    assert [(os.path.basename(r["file"]), r["line"], r["field"]) for r in rejects] == [
        ("a.jsonl", 4, None), ("a.jsonl", 11, "completion"), ("a.jsonl", 19, "prompt"), ("a.jsonl", 23, "answer")]
    assert json.load(open(out / "summary.json"))["rows"] == 38

    before = {sub: _files(out / sub) for sub in (SCORED, REJECTS, DONE)}
    again = _run(model_dir, data, out, block_rows=8, num_scorers=2, batch_size=4)
    assert again["blocks_this_run"] == 0 and again["rows"] == 38
    assert {sub: _files(out / sub) for sub in (SCORED, REJECTS, DONE)} == before
    with pytest.raises(ConfigError, match="differs in block_rows"):
        _run(model_dir, data, out, block_rows=9)


@pytest.mark.ray
@pytest.mark.slow  # the rerun that skips finished blocks is the test above's; this one's is a killed job's leftovers
@pytest.mark.timeout(240)
def test_interrupted_job_rerun_gives_every_row_once(tmp_path, model_dir, ray_session):
    data = _write_jsonl(tmp_path / "in.jsonl", _rows(40))
    out = tmp_path / "out"
    fs, files = input_files(str(data))
    blocks = plan_blocks(fs, files, 10)
    cfg = ScoreConfig(model=model_dir, input=str(data), output=str(out), block_rows=10)
    model, tok, goal, packing = load_scorer(model_dir)
    # what a killed job leaves: a block done, a block written but not marked done, a half-written temp file
    for b in blocks[:2]:
        score_block(fs, b, model, tok, goal, cfg, str(out), packing=packing)
    os.remove(output_paths(str(out), blocks[1])[DONE])
    stale = out / SCORED / f".{blocks[2].name}.parquet.tmp-deadbeef"
    stale.write_bytes(b"PAR1 partial")
    s = _run(model_dir, data, out, block_rows=10, num_scorers=1)
    assert s["blocks_this_run"] == 3 and s["blocks_done"] == 4 and s["rows"] == 40
    ids = pq.read_table(out / SCORED)["id"].to_pylist()
    assert sorted(ids) == list(range(40))
    assert not stale.exists()
    assert sorted(os.listdir(out / SCORED)) == sorted(b.name + ".parquet" for b in blocks)


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_majority_vote_report_end_to_end(tmp_path, model_dir, ray_session, capsys):
    # 3 groups of 3: answers (a: 1,1,2  b: 7,8,8  c: 4,4,4); correct answers a=1, b=7, c=4
    rows, truth = [], {"a": 1, "b": 7, "c": 4}
    for g, answers in (("a", [1, 1, 2]), ("b", [7, 8, 8]), ("c", [4, 4, 4])):
        rows += [{"prompt": f"{g}? ", "completion": f"it is {x}" + "." * j, "g": g, "ans": x, "ok": x == truth[g]}
                 for j, x in enumerate(answers)]
    data = _write_jsonl(tmp_path / "votes.jsonl", rows)
    out = tmp_path / "out"
    # every Q-value (a cosine) is below 2: every row drops at its first token, every group falls back to all rows
    args = ["score", "--model", model_dir, "--input", str(data), "--output", str(out), "--threshold", "2",
            "--group-col", "g", "--answer-col", "ans", "--label-col", "ok"]
    assert main(args) == 0
    s = json.load(open(out / "summary.json"))
    n_tokens = [len(q) for q in pq.read_table(out / SCORED)["q_values"].to_pylist()]
    assert s["kept"] == 0 and s["tokens_saved"] == sum(n - 1 for n in n_tokens)
    assert s["majority"] == {"groups": 3, "groups_all_filtered": 3, "majority_changed": 0,
                             "accuracy_before": pytest.approx(2 / 3), "accuracy_after": pytest.approx(2 / 3),
                             "tokens_saved_fraction": pytest.approx(s["tokens_saved"] / sum(n_tokens))}
    assert "accuracy 0.667 -> 0.667" in capsys.readouterr().out
    # a threshold below every cosine keeping everything: test_filter_row_first_below_and_min and the vote by hand
