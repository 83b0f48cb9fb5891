"""From a config's data spec ("synthetic" or a file) to tokenized pairs."""

import logging

from goalrm.data.errors import BadRows
from goalrm.data.formats import read_pairs, synthetic_preference_pairs
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
