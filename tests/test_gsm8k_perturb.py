"""`goalrm data gsm8k-perturb` on small inline samples: one calculation wrong, the error carried forward."""

import json
import random
from fractions import Fraction

import pytest

from goalrm.cli import main
from goalrm.data import BadRowError, read_pairs, tokenize_pairs
from goalrm.data.gsm8k import final_answer
from goalrm.data.gsm8k_perturb import ANNOTATION, convert_perturbed, evaluate, perturb, perturbed_pair
from goalrm.tiny import tiny_tokenizer

JANET_Q = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. "
    "She sells the rest for $2 per egg. How much does she make every day?"
)
JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18"
)
PAY_Q = "Adam earns $40 a day and pays 10% tax. How much does he keep in 30 days?"
PAY = (
    "The tax is $40 / 10 = $<<40/10=4>>4.\nHe keeps $40 - $4 = $<<40-4=36>>36 a day.\n"
    "In 30 days he keeps $36 * 30 = $<<36*30=1080>>1080.\n#### 1,080"
)


def test_evaluate_only_plain_arithmetic():
    assert evaluate("2*(3+4)/7") == 2 and evaluate("12/60") == Fraction(1, 5) and evaluate(".10*180") == 18
    assert evaluate("2**100") is None and evaluate("__import__('os')") is None and evaluate("1/0") is None
    assert evaluate("3 x 4") is None


def test_error_is_carried_forward_to_the_final_answer():
    rejected, first_error = perturb(JANET_Q, JANET, 0, Fraction(10))
    assert rejected == (
        "Janet sells 16 - 3 - 4 = <<16-3-4=10>>10 duck eggs a day.\n"
        "She makes 10 * 2 = $<<10*2=20>>20 every day at the farmer's market.\n#### 20"
    )
    assert first_error == JANET.index("9>>9") and JANET[:first_error] == rejected[:first_error]


def test_a_later_step_changes_only_what_follows_it():
    rejected, first_error = perturb(PAY_Q, PAY, 1, Fraction(37))
    assert rejected == PAY.replace("=36>>36", "=37>>37").replace("$36 * 30 = $<<36*30=1080>>1080", "$37 * 30 = $<<37*30=1110>>1110").replace("1,080", "1,110")
    assert rejected[first_error:].startswith("37>>37") and PAY[:first_error] == rejected[:first_error]


@pytest.mark.parametrize(
    "question, solution, step, why",
    [
        # the result 9 is also a given quantity: later 9s could be either
        (JANET_Q + " She has 9 hens.", JANET, 0, "ambiguous"),
        # the annotation's own arithmetic is wrong
        (JANET_Q, JANET.replace("<<16-3-4=9>>", "<<16-3-5=9>>"), 0, "bad arithmetic"),
        # 10 * 5 / 3 is not a whole number of dollars
        (JANET_Q, JANET.replace("9 * 2 = $<<9*2=18>>18", "9 * 5 / 3 = $<<9*5/3=15>>15").replace("#### 18", "#### 15"), 0, "fraction"),
        # 11 * 0.25 = 2.75 cannot be written as the later `2.5`
        ("Ten pens at a quarter each.", "He has 7 + 3 = <<7+3=10>>10 pens.\nThey cost 10*0.25 = <<10*0.25=2.50>>2.50.\n#### 2.5", 0, "decimals"),
        # the shown result does not follow the annotation
        (JANET_Q, JANET.replace("<<16-3-4=9>>9", "<<16-3-4=9>> nine"), 0, "no shown result"),
    ],
)
def test_unclean_perturbations_are_refused(question, solution, step, why):
    new = Fraction(11) if why == "decimals" else Fraction(10)
    assert perturb(question, solution, step, new) is None, why


def test_perturbed_pair_is_deterministic_and_consistent():
    rows = [perturbed_pair(PAY_Q, PAY, random.Random(f"0:{i}"))[0] for i in range(30)]
    assert rows[0] == perturbed_pair(PAY_Q, PAY, random.Random("0:0"))[0]
    assert len({(r["perturbed_step"], r["delta"]) for r in rows}) > 3  # the seed picks among the clean options
    for r in rows:
        assert r["chosen"] == PAY and final_answer(r["rejected"]) != final_answer(PAY)
        anns = list(ANNOTATION.finditer(r["rejected"]))
        wrong = [i for i, m in enumerate(anns) if evaluate(m.group(1)) != Fraction(m.group(2))]
        assert wrong == [r["perturbed_step"]]  # every other calculation agrees with the wrong value
        assert anns[r["perturbed_step"]].start(2) == r["rejected_first_error"]


def test_skips_are_counted_and_pairs_load_with_the_first_error(tmp_path):
    rows = [
        {"question": JANET_Q, "answer": JANET},
        {"question": "Say hi.", "answer": "Hi!\n#### 1"},  # no calculator annotations
        {"question": JANET_Q + " She has 9 hens and 18 cows.", "answer": JANET},  # every step ambiguous
        {"question": PAY_Q, "answer": PAY},
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = convert_perturbed(str(data), str(tmp_path / "out"), eval_fraction=0.0)
    assert summary["pairs"] == {"train": 2, "eval": 0}
    assert summary["solutions_skipped"] == {"no calculator annotations": 1, "no clean perturbation": 1}
    pairs = read_pairs(tmp_path / "out" / "train_pairs.jsonl")
    assert [p.chosen for p in pairs] == [JANET, PAY] and all(p.rejected_first_error is not None for p in pairs)
    tok = tiny_tokenizer()
    tokenized, _ = tokenize_pairs(pairs, tok, max_length=512)
    for p, t in zip(pairs, tokenized):  # the first-error token is where the wrong number starts
        start = len(tok(p.prompt)["input_ids"])
        assert t.rejected_ids[: t.rejected_first_error] == t.chosen_ids[: t.rejected_first_error]
        e = t.rejected_first_error
        assert t.rejected_ids[e : e + 4] != t.chosen_ids[e : e + 4]  # the wrong number: 36 -> 37 shares its "3"
        assert t.rejected_first_error >= start


def test_bad_rows_error_or_skip(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": JANET_Q, "answer": JANET}) + "\n" + json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(BadRowError, match=r"train.jsonl:2: field 'answer': missing"):
        convert_perturbed(str(data), str(tmp_path / "out"))
    assert convert_perturbed(str(data), str(tmp_path / "out"), on_bad_row="skip")["bad_rows_skipped"] == 1
    assert main(["data", "gsm8k-perturb", "--input", str(data), "--output-dir", str(tmp_path / "o")]) == 2
    assert "field 'answer': missing" in capsys.readouterr().err
    args = ["data", "gsm8k-perturb", "--input", str(data), "--output-dir", str(tmp_path / "o"), "--on-bad-row", "skip", "--seed", "3"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 3
