"""From a config's data spec ("synthetic" or a file) to tokenized pairs."""

import logging

from goalrm.data.errors import BadRows
from goalrm.data.formats import file_records, pairs_from_records, read_pairs, synthetic_preference_pairs
from goalrm.data.paths import expand
from goalrm.data.tokenize import TokenizedPair, TruncationStats, tokenize_pairs

log = logging.getLogger("goalrm.data")
SYNTHETIC = "synthetic"


def load_tokenized(spec: str, split: str, data_cfg, tokenizer) -> tuple[list[TokenizedPair], TruncationStats, BadRows]:
    bad_rows = BadRows()
    if spec == SYNTHETIC:
        size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_eval_size
        pairs = synthetic_preference_pairs(size, seed=data_cfg.synthetic_seed, split=split, task=data_cfg.synthetic_task)
    else:
        pairs = read_pairs(spec, tokenizer=tokenizer, on_bad_row=data_cfg.on_bad_row, bad_rows=bad_rows)
    tokenized, stats = tokenize_pairs(
        pairs,
        tokenizer,
        data_cfg.max_length,
        min_prompt_tokens=data_cfg.min_prompt_tokens,
        on_bad_row=data_cfg.on_bad_row,
        bad_rows=bad_rows,
    )
    if not tokenized:
        raise ValueError(f"{spec}: no usable preference pairs ({bad_rows.count} bad rows skipped)")
    if bad_rows.count:
        log.warning("%s: %s", spec, bad_rows.summary())
    return tokenized, stats, bad_rows


def load_goal_pairs(spec: str, n: int, data_cfg, tokenizer) -> list[TokenizedPair]:
    """The pairs the exported goal state averages: the first `n` usable pairs of the training data in
    file order (n = 0: all), read no further than needed. The run's export and `goalrm export` of its
    checkpoint both take these, whichever loader trained."""
    if spec == SYNTHETIC:
        size = min(n or data_cfg.synthetic_train_size, data_cfg.synthetic_train_size)
        raw = synthetic_preference_pairs(size, seed=data_cfg.synthetic_seed, split="train", task=data_cfg.synthetic_task)
    else:
        raw = _pairs_in_order(spec, tokenizer, data_cfg.on_bad_row)
    out, bad_rows = [], BadRows()
    for pair in raw:
        out += tokenize_pairs([pair], tokenizer, data_cfg.max_length, data_cfg.min_prompt_tokens, data_cfg.on_bad_row, bad_rows)[0]
        if n and len(out) >= n:
            break
    if not out:
        raise ValueError(f"{spec}: no usable preference pairs for the goal state")
    return out


def _pairs_in_order(spec: str, tokenizer, on_bad_row: str):
    files = expand(spec)
    bad_rows = BadRows()
    for path in files.paths:
        for line, row in file_records(files, path):
            yield from pairs_from_records([(line, row)], files.name(path), tokenizer, on_bad_row, bad_rows)
