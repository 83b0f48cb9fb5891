"""Collation: chosen rows then rejected rows; spans and first error index the same tokens under either padding."""

import pytest
import torch

from goalrm.data import PreferencePair, TokenizedPair, collate_pairs, tokenize_pairs
from goalrm.tiny import tiny_tokenizer

PAD = 0


@pytest.fixture(scope="module")
def pairs():
    tok = tiny_tokenizer()
    raw = [
        PreferencePair("1+1=", "2", "3", rejected_first_error=0),
        PreferencePair("long prompt here ", "the answer", "an answer!", rejected_first_error=1),
        PreferencePair("q", "yes", "no"),
    ]
    return tokenize_pairs(raw, tok, max_length=64)[0]


def spans(batch):
    return [
        batch["input_ids"][i, s:e].tolist()
        for i, (s, e) in enumerate(zip(batch["completion_start"].tolist(), batch["completion_end"].tolist()))
    ]


def test_right_padding_layout(pairs):
    batch = collate_pairs(pairs, PAD)
    b, width = len(pairs), max(len(p.rejected_ids) for p in pairs)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2 * b, width)
    assert batch["attention_mask"].dtype == torch.long
    rows = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    for i, ids in enumerate(rows):
        assert batch["input_ids"][i, : len(ids)].tolist() == ids
        assert batch["attention_mask"][i].sum() == len(ids)
        assert (batch["input_ids"][i, len(ids) :] == PAD).all()
    assert spans(batch) == [p.chosen_ids[p.chosen_start :] for p in pairs] + [p.rejected_ids[p.rejected_start :] for p in pairs]
    assert batch["first_error"].tolist() == [pairs[0].rejected_first_error, pairs[1].rejected_first_error, -1]


def test_bad_arguments():
    tp = TokenizedPair([1, 5, 2], 1, [1, 6, 2], 1, None)
    with pytest.raises(ValueError, match="at least one"):
        collate_pairs([], PAD)


def test_rejected_divergence_is_where_the_rejected_stops_copying_the_chosen():
    tok = tiny_tokenizer()
    raw = [
        PreferencePair("Q: ", "12+3=15. So 15", "12+3=16. So 16"),  # byte tokens: differ at "6", offset 6
        PreferencePair("Q: ", "yes", "no"),  # no shared prefix: the completion's start
        PreferencePair("Q: ", "abc", "ab"),  # a prefix of the chosen: differs at its trailing <eos>
    ]
    tp = tokenize_pairs(raw, tok, max_length=64)[0]
    b = collate_pairs(tp, PAD)
    rows = b["input_ids"][3:]
    div = b["rejected_divergence"]
    assert div[0] - b["completion_start"][3] == 6 and tok.decode(rows[0, div[0]]) == "6"
    assert div[1] == b["completion_start"][4]
    assert tok.decode(rows[2, div[2]]) == "<eos>"
