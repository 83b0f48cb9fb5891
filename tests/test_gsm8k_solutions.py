"""`goalrm data gsm8k-solutions` on small inline samples: pairs, scoring rows, the split, bad rows."""

import json

import pytest

from goalrm.cli import main
from goalrm.data import BadRowError, read_pairs
from goalrm.data.gsm8k import final_answer, normalize_answer, prompt_for, question_id
from goalrm.data.gsm8k_solutions import convert_solutions

Q1 = {
    "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "ground_truth": "Tom has 3 + 4 = <<3+4=7>>7 apples.\nA: 7",
    "6b": {"solution": "3 + 4 = <<3+4=7>>7\nA: 7", "is_correct": True},
    "6b_v": {"solution": "3 + 4 = <<3+4=8>>8\nA: 8", "is_correct": False},
    "175b": {"solution": "He has 3 and 4, so 7.\nA: 7.", "is_correct": True},
    "175b_v": {"solution": "3 * 4 = <<3*4=12>>12\nA: 12", "is_correct": False},
}
Q2 = {  # all wrong: scoring rows, no pairs
    "question": "A shirt costs $1,000 and is 50% off. What does it cost?",
    "ground_truth": "1000 / 2 = <<1000/2=500>>500\nA: 500",
    "6b": {"solution": "It costs $1,000.\nA: $1,000", "is_correct": False},
    "6b_v": {"solution": "No idea.", "is_correct": False},
}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A: 1,000", "1000"), ("#### $5", "5"), ("A: 18.", "18"), ("A: 2.50", "2.5"), ("A: -3", "-3"),
        ("A: 3/4", "0.75"), ("A: $ 1,234.0", "1234"), ("A: 5 apples", None), ("no final line", None),
        ("A: 3\nthen\n#### 4", "4"),
    ],
)
def test_final_answer_parses_and_normalises(text, expected):
    assert final_answer(text) == expected


def test_normalize_answer_rejects_non_numbers():
    assert normalize_answer("1.5/2") is None and normalize_answer("") is None and normalize_answer("12") == "12"


def test_pairs_every_correct_times_incorrect_of_a_question(tmp_path):
    data = write_jsonl(tmp_path / "sol.jsonl", [Q1, Q2])
    summary = convert_solutions(data, str(tmp_path / "out"), eval_fraction=0.0)
    pairs = read_jsonl(tmp_path / "out" / "train_pairs.jsonl")
    got = {(p["chosen_model"], p["rejected_model"]) for p in pairs}
    assert got == {("6b", "6b_v"), ("6b", "175b_v"), ("175b", "6b_v"), ("175b", "175b_v")}
    assert all(p["prompt"] == prompt_for(Q1["question"]) and p["question_id"] == question_id(Q1["question"]) for p in pairs)
    assert all(p["chosen"] != Q1["ground_truth"] for p in pairs)  # the reference is never chosen by default
    assert summary["pairs"] == {"train": 4, "eval": 0} and summary["questions"] == {"train": 2, "eval": 0}
    assert not (tmp_path / "out" / "train_pairs_reference.jsonl").exists()
    # the core reader takes the pair file as it is
    read = read_pairs(tmp_path / "out" / "train_pairs.jsonl")
    assert [(r.chosen, r.rejected) for r in read] == [(p["chosen"], p["rejected"]) for p in pairs]


def test_scoring_rows_hold_every_solution_with_answer_and_label(tmp_path):
    data = write_jsonl(tmp_path / "sol.jsonl", [Q1, Q2])
    convert_solutions(data, str(tmp_path / "out"), eval_fraction=0.0)
    rows = read_jsonl(tmp_path / "out" / "train_scoring.jsonl")
    assert [(r["model"], r["answer"], r["is_correct"]) for r in rows] == [
        ("6b", "7", True), ("6b_v", "8", False), ("175b", "7", True), ("175b_v", "12", False),
        ("6b", "1000", False), ("6b_v", None, False),
    ]
    assert [r["reference_answer"] for r in rows] == ["7"] * 4 + ["500"] * 2
    assert rows[0]["completion"] == Q1["6b"]["solution"] and rows[0]["prompt"] == prompt_for(Q1["question"])
    assert read_jsonl(tmp_path / "out" / "eval_scoring.jsonl") == []


def test_reference_chosen_is_a_separate_labelled_output(tmp_path):
    data = write_jsonl(tmp_path / "sol.jsonl", [Q1, Q2])
    summary = convert_solutions(data, str(tmp_path / "out"), eval_fraction=0.0, reference_chosen=True)
    ref = read_jsonl(tmp_path / "out" / "train_pairs_reference.jsonl")
    assert {p["chosen_model"] for p in ref} == {"ground_truth"}
    assert [(p["chosen"], p["rejected_model"]) for p in ref] == [
        (Q1["ground_truth"], "6b_v"), (Q1["ground_truth"], "175b_v"), (Q2["ground_truth"], "6b"), (Q2["ground_truth"], "6b_v"),
    ]
    assert summary["pairs_reference"] == {"train": 4, "eval": 0} and summary["pairs"]["train"] == 4
    no_ref = {k: v for k, v in Q1.items() if k != "ground_truth"}
    with pytest.raises(BadRowError, match=r"sol2.jsonl:1: field 'ground_truth': missing"):
        convert_solutions(write_jsonl(tmp_path / "sol2.jsonl", [no_ref]), str(tmp_path / "o2"), reference_chosen=True)


def _questions(n):
    return [
        {"question": f"Question number {i}: what is {i} + 1?",
         "a": {"solution": f"A: {i + 1}", "is_correct": True}, "b": {"solution": f"A: {i}", "is_correct": False}}
        for i in range(n)
    ]


def test_split_is_by_question_deterministic_and_seeded(tmp_path):
    data = write_jsonl(tmp_path / "sol.jsonl", _questions(400) + _questions(50))  # 50 questions appear twice

    def eval_ids(seed, name):
        convert_solutions(data, str(tmp_path / name), seed=seed, eval_fraction=0.25)
        train = {r["question_id"] for r in read_jsonl(tmp_path / name / "train_scoring.jsonl")}
        ev = {r["question_id"] for r in read_jsonl(tmp_path / name / "eval_scoring.jsonl")}
        pairs_ev = {r["question_id"] for r in read_jsonl(tmp_path / name / "eval_pairs.jsonl")}
        assert not train & ev and pairs_ev == ev and len(train | ev) == 400
        return ev

    first, again, other = eval_ids(0, "a"), eval_ids(0, "b"), eval_ids(1, "c")
    assert first == again and first != other
    assert 70 <= len(first) <= 130  # about a quarter of 400


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({**Q1, "6b": {"solution": "A: 7"}}, "6b.is_correct", "missing"),
        ({**Q1, "6b": {"solution": "A: 7", "is_correct": "yes"}}, "6b.is_correct", "must be true or false"),
        ({**Q1, "6b": {"solution": 7, "is_correct": True}}, "6b.solution", "must be a non-empty string"),
        ({k: v for k, v in Q1.items() if k != "question"}, "question", "missing"),
        ({"question": "Q?", "ground_truth": "A: 1"}, None, "no model solutions"),
        ("{not json", None, "malformed JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, reason):
    data = write_jsonl(tmp_path / "sol.jsonl", [Q2, row])
    with pytest.raises(BadRowError) as err:
        convert_solutions(data, str(tmp_path / "out"))
    assert (err.value.path, err.value.line, err.value.field) == (data, 2, field) and reason in err.value.reason
    summary = convert_solutions(data, str(tmp_path / "out"), on_bad_row="skip", eval_fraction=0.0)
    assert summary["bad_rows_skipped"] == 1 and summary["questions"]["train"] == 1


def test_cli_writes_the_folder_and_reports_bad_rows(tmp_path, capsys):
    data = write_jsonl(tmp_path / "sol.jsonl", [Q1, Q2])
    out = tmp_path / "out"
    assert main(["data", "gsm8k-solutions", "--input", data, "--output-dir", str(out), "--reference-chosen"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["scoring_rows"]["train"] + json.loads(printed.out)["scoring_rows"]["eval"] == 6
    assert "style" in printed.err
    names = {"train_pairs.jsonl", "eval_pairs.jsonl", "train_scoring.jsonl", "eval_scoring.jsonl",
             "train_pairs_reference.jsonl", "eval_pairs_reference.jsonl", "summary.json"}
    assert {p.name for p in out.iterdir()} == names
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "m": {"solution": "A: 1", "is_correct": 1}}])
    assert main(["data", "gsm8k-solutions", "--input", bad, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"goalrm: error: {bad}:1: field 'm.is_correct'" in err and "Traceback" not in err
