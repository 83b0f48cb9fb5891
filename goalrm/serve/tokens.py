"""Checked items to token sequences under the serve limits, as `goalrm score` tokenizes them. No Ray."""

import sys

from goalrm.data.errors import BadRowError
from goalrm.data.tokenize import tokenize_completion
from goalrm.serve.schema import SOURCES, Item, RequestError, request_error


def special_affixes(tokenizer) -> tuple[str, str]:
    """The text of the special tokens the tokenizer adds before and after any text by itself."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
    lead, trail = full[:start], full[start + len(plain):]
    return tokenizer.decode(lead) if lead else "", tokenizer.decode(trail) if trail else ""


def tokenize_items(items: list[Item], tokenizer, max_tokens: int, min_prompt_tokens: int, truncate: bool, endpoint: str):
    """(ids, completion start) per item and the indices of truncated items. An item over MAX_TOKENS
    is a 413, or is truncated by `goalrm score`'s rule (prompt from the left, then the completion)."""
    seqs, truncated = [], []
    for i, item in enumerate(items):
        where = ("<request>", i, "completion")
        try:
            ids, start, _ = tokenize_completion(item.prompt, item.completion, tokenizer, sys.maxsize, min_prompt_tokens, where)
            if len(ids) > max_tokens:
                if not truncate:
                    field = SOURCES[endpoint]["completion"]
                    raise RequestError(413, f"{field}[{i}]: {len(ids)} tokens, over max_tokens_per_item={max_tokens}", field, i)
                ids, start, _ = tokenize_completion(item.prompt, item.completion, tokenizer, max_tokens, min_prompt_tokens, where)
                truncated.append(i)
        except BadRowError as err:
            raise request_error(err, endpoint) from None
        seqs.append((ids, start))
    return seqs, truncated
