"""Tokenization: the model sees plain `tokenizer(prompt + completion)`; spans, first error and truncation."""

import pytest
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

from goalrm.data import BadRowError, BadRows, PreferencePair, TruncationStats, synthetic_preference_pairs, tokenize_pairs
from goalrm.data.tokenize import tokenize_pair
from goalrm.tiny import tiny_tokenizer

BOS, EOS = 1, 2


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_ids_match_plain_transformers_and_span_is_completion_plus_eos(tok):
    pair = PreferencePair("Q: 2+2?\n", "4 é", "5", "d.jsonl:7")
    tp = tokenize_pair(pair, tok, max_length=64)
    assert tp.chosen_ids == tok(pair.prompt + pair.chosen)["input_ids"]
    assert tp.chosen_ids[0] == BOS and tp.chosen_ids[-1] == EOS
    assert tok.decode(tp.chosen_ids[tp.chosen_start :]) == "4 é<eos>"
    assert tok.decode(tp.rejected_ids[tp.rejected_start :]) == "5<eos>"
    assert tok.decode(tp.rejected_ids[: tp.rejected_start], skip_special_tokens=True) == pair.prompt
    assert tp.source == "d.jsonl:7" and tp.rejected_first_error is None


def test_first_error_maps_to_token_holding_the_wrong_char(tok):
    for p in synthetic_preference_pairs(20):
        tp = tokenize_pair(p, tok, max_length=256)
        token = tp.rejected_ids[tp.rejected_first_error]
        assert tok.decode([token]) == p.rejected[p.rejected_first_error]
        assert tp.rejected_ids[: tp.rejected_first_error] == tp.chosen_ids[: tp.rejected_first_error]


def test_first_error_on_multibyte_char(tok):
    pair = PreferencePair("p", "aaé", "aaж", rejected_first_error=2)
    tp = tokenize_pair(pair, tok, max_length=64)
    # 'ж' is two byte tokens; the error is the first of them
    assert tp.rejected_first_error == tp.rejected_start + 2
    assert tp.rejected_ids[tp.rejected_first_error] != tp.chosen_ids[tp.rejected_first_error]


def test_no_truncation_when_it_fits(tok):
    pairs = [PreferencePair("abc", "x", "y")]
    out, stats = tokenize_pairs(pairs, tok, max_length=6)  # bos + 3 + 1 + eos
    assert stats.as_dict() == {"prompt_truncated": 0, "completion_truncated": 0, "sequences": 2}
    assert out[0].chosen_ids == tok("abcx")["input_ids"]


def test_prompt_is_truncated_from_the_left_first(tok):
    pair = PreferencePair("0123456789", "ab", "cd", rejected_first_error=1)
    stats = TruncationStats()
    tp = tokenize_pair(pair, tok, max_length=8, min_prompt_tokens=2, stats=stats)
    assert tok.decode(tp.chosen_ids) == "<bos>6789ab<eos>"
    assert tok.decode(tp.rejected_ids[tp.rejected_start :]) == "cd<eos>"
    assert tp.rejected_first_error == tp.rejected_start + 1
    assert stats.as_dict() == {"prompt_truncated": 2, "completion_truncated": 0, "sequences": 2}


def test_completion_truncated_from_the_right_after_prompt_floor(tok):
    pair = PreferencePair("0123456789", "abcdef", "abxdef", rejected_first_error=2)
    stats = TruncationStats()
    tp = tokenize_pair(pair, tok, max_length=8, min_prompt_tokens=3, stats=stats)
    assert tok.decode(tp.chosen_ids) == "<bos>789abc<eos>"
    assert tok.decode(tp.rejected_ids) == "<bos>789abx<eos>"
    assert (tp.chosen_start, tp.rejected_start, tp.rejected_first_error) == (4, 4, 6)
    assert stats.as_dict() == {"prompt_truncated": 2, "completion_truncated": 2, "sequences": 2}


def test_first_error_truncated_away_is_none(tok):
    pair = PreferencePair("0123456789", "ab", "abcdef", rejected_first_error=3)
    tp = tokenize_pair(pair, tok, max_length=8, min_prompt_tokens=3)
    assert tok.decode(tp.rejected_ids) == "<bos>789abc<eos>"
    assert tp.rejected_first_error is None


def test_prompt_leaving_no_room_is_a_bad_row(tok):
    pair = PreferencePair("0123456789", "a", "b", "data/train.jsonl:12")
    with pytest.raises(BadRowError) as info:
        tokenize_pair(pair, tok, max_length=12)  # 16-token floor keeps all 10: bos + 10 + eos leaves 0
    err = info.value
    assert (err.path, err.line, err.field) == ("data/train.jsonl", 12, "prompt")
    assert str(err) == (
        "data/train.jsonl:12: field 'prompt': prompt leaves no room for the completion within max_length=12"
    )


def test_identical_after_truncation_is_a_bad_row(tok):
    pair = PreferencePair("0123456789", "abcdef", "abcdeX", "synthetic:train:3")
    with pytest.raises(BadRowError, match=r"^synthetic:train:3: field 'rejected': identical"):
        tokenize_pair(pair, tok, max_length=8, min_prompt_tokens=3)


def test_skip_mode_counts_only_usable_pairs(tok):
    pairs = [PreferencePair("p", "a", "b"), PreferencePair("0123456789", "a", "b"), PreferencePair("q", "c", "d")]
    bad_rows = BadRows()
    out, stats = tokenize_pairs(pairs, tok, max_length=12, on_bad_row="skip", bad_rows=bad_rows)
    assert [tp.chosen_ids for tp in out] == [tok("pa")["input_ids"], tok("qc")["input_ids"]]
    assert stats.sequences == 4
    assert [(e.path, e.line, e.field) for e in bad_rows.errors] == [("<memory>", 2, "prompt")]
    with pytest.raises(BadRowError, match="<memory>:2:"):
        tokenize_pairs(pairs, tok, max_length=12)


def test_stats_merge():
    a = TruncationStats(1, 2, 3).merge(TruncationStats(1, 0, 5))
    assert a.as_dict() == {"prompt_truncated": 2, "completion_truncated": 2, "sequences": 8}


def test_tokenizer_without_specials(tok):
    plain = tiny_tokenizer()
    plain.backend_tokenizer.post_processor = processors.Sequence([])
    pair = PreferencePair("0123456789", "abcdef", "abxdef", rejected_first_error=2)
    tp = tokenize_pair(pair, plain, max_length=6, min_prompt_tokens=3)
    assert plain.decode(tp.chosen_ids) == "789abc"
    assert plain.decode(tp.rejected_ids[tp.rejected_start :]) == "abx"
    assert tp.rejected_first_error == 5


def test_merged_token_across_the_boundary_starts_the_completion():
    vocab = {"<bos>": 0, "<eos>": 1, "x": 2, "a": 3, "b": 4, "c": 5, "ab": 6}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 0), ("<eos>", 1)])
    merging = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>")
    tp = tokenize_pair(PreferencePair("xa", "b", "c"), merging, max_length=16)
    assert tp.chosen_ids == [0, 2, 6, 1] and tp.chosen_start == 2  # "ab" holds the completion's first char
    assert tp.rejected_ids == [0, 2, 3, 5, 1] and tp.rejected_start == 3
