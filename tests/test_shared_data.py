"""The converters and readers on the real public data in ../shared/data; skipped where it is absent."""

import gzip
import json
from fractions import Fraction
from pathlib import Path

import pytest

from goalrm.data import BadRows, read_pairs
from goalrm.data.gsm8k_perturb import ANNOTATION, convert_perturbed, evaluate
from goalrm.data.gsm8k_solutions import convert_solutions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_gsm8k_solutions_split_by_question(tmp_path):
    summary = convert_solutions(str(DATA / "gsm8k" / "model_solutions_dev.jsonl"), str(tmp_path), seed=0, eval_fraction=0.2)
    assert sum(summary["questions"].values()) == 915 and summary["bad_rows_skipped"] == 0
    assert 0.15 < summary["questions"]["eval"] / 915 < 0.25
    scoring = {s: read_jsonl(tmp_path / f"{s}_scoring.jsonl") for s in ("train", "eval")}
    pairs = {s: read_jsonl(tmp_path / f"{s}_pairs.jsonl") for s in ("train", "eval")}
    assert sum(map(len, scoring.values())) == 4 * 915  # four model solutions per question
    ids = {s: {r["question_id"] for r in scoring[s]} for s in scoring}
    assert not ids["train"] & ids["eval"]
    assert all({p["question_id"] for p in pairs[s]} <= ids[s] for s in pairs)
    # pairs: per question, n_correct x n_incorrect of its four solutions
    expected = sum(
        sum(r["is_correct"] for r in rows) * sum(not r["is_correct"] for r in rows)
        for rows in _by_question(scoring["train"] + scoring["eval"]).values()
    )
    assert sum(map(len, pairs.values())) == expected > 1000
    # the parsed final answer agrees with the label wherever there is one
    rows = scoring["train"] + scoring["eval"]
    assert all((r["answer"] == r["reference_answer"]) == r["is_correct"] for r in rows if r["answer"] is not None)
    assert sum(r["answer"] is None for r in rows) < 20
    assert len(read_pairs(tmp_path / "eval_pairs.jsonl")) == len(pairs["eval"])


def _by_question(rows):
    out = {}
    for r in rows:
        out.setdefault(r["question_id"], []).append(r)
    return out


def test_gsm8k_perturb_on_reference_solutions(tmp_path):
    lines = open(DATA / "gsm8k" / "train.jsonl").readlines()[:800]  # a slice keeps this test to seconds
    (tmp_path / "train.jsonl").write_text("".join(lines))
    summary = convert_perturbed(str(tmp_path / "train.jsonl"), str(tmp_path / "out"), seed=0, eval_fraction=0.1)
    n_pairs, n_skipped = sum(summary["pairs"].values()), sum(summary["solutions_skipped"].values())
    assert n_pairs + n_skipped == 800 and n_pairs > 0.7 * 800
    rows = {s: read_jsonl(tmp_path / "out" / f"{s}_pairs.jsonl") for s in ("train", "eval")}
    assert not {r["question_id"] for r in rows["train"]} & {r["question_id"] for r in rows["eval"]}
    for r in rows["train"] + rows["eval"]:
        chosen_ok = [evaluate(m.group(1)) == Fraction(m.group(2).replace(",", "")) for m in ANNOTATION.finditer(r["chosen"])]
        rejected_ok = [evaluate(m.group(1)) == Fraction(m.group(2).replace(",", "")) for m in ANNOTATION.finditer(r["rejected"])]
        step = r["perturbed_step"]
        assert not rejected_ok[step] and chosen_ok[step]
        # no later calculation gives the error away
        assert all(rejected_ok[i] for i in range(step + 1, len(rejected_ok)) if chosen_ok[i])
    assert len(read_pairs(tmp_path / "out" / "train_pairs.jsonl")) == len(rows["train"])


def test_hh_rlhf_transcripts_through_the_core_reader():
    bad = BadRows()
    pairs = read_pairs(DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz", on_bad_row="skip", bad_rows=bad)
    # 1,855 rows: 4 end in an empty Assistant turn, 4 differ before the last Assistant turn
    assert len(pairs) + bad.count == 1855 and bad.count == 8
    assert set(bad.by_reason) == {"empty completion", "the dialogue before the last Assistant turn differs from 'chosen'"}
    assert all(p.prompt.startswith("\n\nHuman:") and p.prompt.endswith("\n\nAssistant:") for p in pairs)
    assert all(p.chosen != p.rejected for p in pairs)
    raw = [json.loads(line) for line in gzip.open(DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz")]
    for p in pairs:  # the prompt and completion are the transcript, cut at its last Assistant turn
        row = raw[int(p.source.rpartition(":")[2]) - 1]
        assert (p.prompt + p.chosen, p.prompt + p.rejected) == (row["chosen"], row["rejected"])
