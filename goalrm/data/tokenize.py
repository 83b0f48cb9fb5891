"""Tokenize a pair exactly as plain transformers sees `prompt + completion`, find the completion span, truncate."""

from dataclasses import asdict, dataclass
from typing import NamedTuple

from goalrm.data.errors import BadRowError, BadRows, check_on_bad_row, handle


@dataclass(frozen=True)
class TokenizedPair:
    chosen_ids: list[int]
    chosen_start: int  # first completion token; the completion runs to the end, trailing EOS included
    rejected_ids: list[int]
    rejected_start: int
    rejected_first_error: int | None  # token holding the first wrong character; None if unknown or truncated away
    source: str = ""


@dataclass
class TruncationStats:
    prompt_truncated: int = 0
    completion_truncated: int = 0
    sequences: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def merge(self, other: "TruncationStats") -> "TruncationStats":
        for k, v in other.as_dict().items():
            setattr(self, k, getattr(self, k) + v)
        return self


def _where(source: str, index: int) -> tuple[str, int]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else ("<memory>", index + 1)


def _encode(tokenizer, prompt: str, completion: str, first_error_char: int | None, where):
    """Token ids with [lead specials | prompt | completion | trail specials] boundaries, and the first-error token."""
    enc = tokenizer(prompt + completion, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    special = set(tokenizer.all_special_ids)
    lead = 0
    while lead < len(ids) and ids[lead] in special and tuple(offsets[lead]) == (0, 0):
        lead += 1
    trail = len(ids)
    while trail > lead and ids[trail - 1] in special:
        trail -= 1
    start = next((i for i in range(lead, trail) if offsets[i][1] > len(prompt)), trail)
    if start == trail:
        raise BadRowError(*where, "completion has no tokens of its own")
    error_token = None
    if first_error_char is not None:
        char = len(prompt) + first_error_char
        error_token = next((i for i in range(start, trail) if offsets[i][1] > char), None)
    return ids, lead, start, trail, error_token


def _truncate(ids, lead, start, trail, error_token, max_length, min_prompt_tokens, stats, where):
    """Drop prompt tokens from the left (keeping a floor), then completion tokens from the right; keep specials."""
    prompt_len, trail_len = start - lead, len(ids) - trail
    excess = max(len(ids) - max_length, 0)
    drop = min(excess, prompt_len - min(min_prompt_tokens, prompt_len))
    room = max_length - lead - (prompt_len - drop) - trail_len
    if room < 1:
        path, line, _ = where
        raise BadRowError(path, line, "prompt", f"prompt leaves no room for the completion within max_length={max_length}")
    completion = ids[start:trail][:room]
    stats.sequences += 1
    stats.prompt_truncated += int(drop > 0)
    stats.completion_truncated += int(len(completion) < trail - start)
    new_start = start - drop
    if error_token is not None:
        error_token -= drop
        if error_token >= new_start + len(completion):
            error_token = None
    return ids[:lead] + ids[lead + drop : start] + completion + ids[trail:], new_start, error_token


def tokenize_pair(pair, tokenizer, max_length: int, min_prompt_tokens: int = 16, stats=None, index: int = 0) -> TokenizedPair:
    """`index` is the pair's position, for error messages when `pair.source` is empty (in-memory pairs)."""
    path, line = _where(pair.source, index)
    local = TruncationStats()  # merged only if the whole pair is usable, so skipped rows are not counted
    out = []
    for name, completion, first_error in (("chosen", pair.chosen, None), ("rejected", pair.rejected, pair.rejected_first_error)):
        where = (path, line, name)
        spans = _encode(tokenizer, pair.prompt, completion, first_error, where)
        out.append(_truncate(*spans, max_length, min_prompt_tokens, local, where))
    (c_ids, c_start, _), (r_ids, r_start, r_error) = out
    if c_ids == r_ids:
        raise BadRowError(path, line, "rejected", f"identical to 'chosen' after truncation to max_length={max_length}")
    if stats is not None:
        stats.merge(local)
    return TokenizedPair(c_ids, c_start, r_ids, r_start, r_error, pair.source)


class TokenizedCompletion(NamedTuple):
    ids: list[int]
    start: int  # first completion token
    first_error: int | None  # token holding `first_error_char`; None if not given or truncated away


def tokenize_completion(
    prompt: str, completion: str, tokenizer, max_length: int, min_prompt_tokens: int = 16, where=("<memory>", 1, "completion"),
    stats=None, first_error_char: int | None = None,
) -> TokenizedCompletion:
    """One `prompt + completion` under the same rules as a pair."""
    local = TruncationStats()
    spans = _encode(tokenizer, prompt, completion, first_error_char, where)
    out = TokenizedCompletion(*_truncate(*spans, max_length, min_prompt_tokens, local, where))
    if stats is not None:
        stats.merge(local)
    return out


def tokenize_pairs(
    pairs, tokenizer, max_length: int, min_prompt_tokens: int = 16, on_bad_row: str = "error", bad_rows: BadRows | None = None
) -> tuple[list[TokenizedPair], TruncationStats]:
    check_on_bad_row(on_bad_row)
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    stats, out = TruncationStats(), []
    for i, pair in enumerate(pairs):
        try:
            out.append(tokenize_pair(pair, tokenizer, max_length, min_prompt_tokens, stats, i))
        except BadRowError as err:
            handle(err, on_bad_row, bad_rows)
    return out, stats
