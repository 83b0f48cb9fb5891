"""Readers: JSONL or Parquet preference data in the three layouts users have, to PreferencePair."""

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jinja2 import TemplateError

from goalrm.data.errors import BadRowError, BadRows, check_on_bad_row, handle
from goalrm.data.paths import DataFiles, expand, is_parquet
from goalrm.data.synthetic import synthetic_pairs

ASSISTANT = "\n\nAssistant:"
LAYOUTS = (
    "'prompt'/'chosen'/'rejected' (strings or chat messages), "
    "HH-RLHF 'chosen'/'rejected' transcripts, or 'question'/'correct'/'incorrect'"
)


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str  # completion text only
    rejected: str
    source: str = ""  # "path:line", for error messages downstream
    rejected_first_error: int | None = None  # char offset into `rejected` of the first wrong character


def parse_json_line(raw: bytes, path: str, line: int):
    """One JSONL line to a row, or the BadRowError it is."""
    try:
        return json.loads(raw.decode("utf-8"))  # JSON Lines is UTF-8; json.loads(bytes) would guess UTF-16/32
    except json.JSONDecodeError as e:
        return BadRowError(path, line, None, f"malformed JSON ({e.msg} at column {e.colno})")
    except UnicodeDecodeError:
        return BadRowError(path, line, None, "not valid UTF-8")


def json_lines(stream, chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line; bytes, so one undecodable line is one bad row."""
    number, rest = 0, b""
    while True:
        chunk = stream.read(chunk_bytes)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop() if chunk else b""
        for raw in lines:
            number += 1
            if raw.strip():
                yield number, raw
        if not chunk:
            return


def parquet_rows(file, batch_rows: int = 4096) -> Iterator[tuple[int, dict]]:
    """(row number, row) from a seekable Parquet file, one record batch at a time."""
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def file_records(files: DataFiles, path: str) -> Iterator[tuple[int, object]]:
    if is_parquet(path):
        with files.filesystem.open_input_file(path) as f:
            yield from parquet_rows(f)
        return
    name = files.name(path)
    with files.filesystem.open_input_stream(path, compression="detect") as f:
        for number, raw in json_lines(f):
            yield number, parse_json_line(raw, name, number)


def records(spec) -> Iterator[tuple[int, object]]:
    """(line or row number, row) of every file a data spec names; a bad line comes as its BadRowError."""
    files = expand(os.fspath(spec))
    for path in files.paths:
        yield from file_records(files, path)


def read_pairs(spec, tokenizer=None, on_bad_row: str = "error", bad_rows: BadRows | None = None) -> list[PreferencePair]:
    """All pairs from a file, folder, glob or URI, files in sorted order."""
    check_on_bad_row(on_bad_row)
    files = expand(os.fspath(spec))
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    out = []
    for path in files.paths:
        out.extend(pairs_from_records(file_records(files, path), files.name(path), tokenizer, on_bad_row, bad_rows))
    return out


def pairs_from_records(
    records: Iterable[tuple[int, object]], path: str, tokenizer=None, on_bad_row="error", bad_rows: BadRows | None = None
) -> list[PreferencePair]:
    """Rows as (line or row number, parsed row) to pairs; a row may be a BadRowError from the reader."""
    check_on_bad_row(on_bad_row)
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    out = []
    for line, row in records:
        try:
            if isinstance(row, BadRowError):
                raise row
            out.extend(_pairs_from_row(row, path, line, tokenizer))
        except BadRowError as err:
            handle(err, on_bad_row, bad_rows)
    return out


@dataclass(frozen=True)
class Completion:
    """One text to score: `prompt + completion`, and which side of a pair it was (None for a prompt/completion row)."""

    prompt: str
    completion: str
    role: str | None = None
    first_error_char: int | None = None  # a rejected completion's first wrong character, when the row says


def completions_from_row(row, path: str, line: int, tokenizer=None) -> list[Completion]:
    """A 'prompt'/'completion' row gives one completion; a training-layout row gives each distinct
    chosen and rejected completion once, validated exactly as for training."""
    if isinstance(row, dict) and not {"completion", "chosen", "rejected", "question", "correct", "incorrect"} & set(row):
        raise BadRowError(path, line, None, f"unknown layout with keys {sorted(row)}; expected 'prompt'/'completion' or {LAYOUTS}")
    if isinstance(row, dict) and "completion" in row:
        prompt, completion = row.get("prompt"), row["completion"]
        for key, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise BadRowError(path, line, key, "missing" if value is None else f"must be a string, got {type(value).__name__}")
        if not completion.strip():
            raise BadRowError(path, line, "completion", "empty completion")
        return [Completion(prompt, completion)]
    out = []
    for pair in _pairs_from_row(row, path, line, tokenizer):
        rejected = Completion(pair.prompt, pair.rejected, "rejected", pair.rejected_first_error)
        for c in (Completion(pair.prompt, pair.chosen, "chosen"), rejected):
            if c not in out:
                out.append(c)
    return out


def _pairs_from_row(row, path, line, tokenizer) -> list[PreferencePair]:
    def bad(field, reason):
        return BadRowError(path, line, field, reason)

    if not isinstance(row, dict):
        raise bad(None, f"expected a JSON object, got {type(row).__name__}")
    # Parquet fills columns a row does not use with null: treat null as absent
    row = {k: v for k, v in row.items() if v is not None}
    source = f"{path}:{line}"
    if "question" in row or "correct" in row or "incorrect" in row:
        return _math_pairs(row, source, bad)
    if "chosen" not in row and "rejected" not in row:
        raise bad(None, f"unknown layout with keys {sorted(row)}; expected {LAYOUTS}")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise bad(key, "missing")
    if "prompt" not in row and isinstance(row["chosen"], str):
        prompt, chosen, rejected = _split_transcripts(row, bad)
    elif isinstance(row["chosen"], list) or isinstance(row.get("prompt"), list):
        prompt, chosen, rejected = _render_messages(row, tokenizer, bad)
    else:
        prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
        if not isinstance(prompt, str):
            raise bad("prompt", "missing" if prompt is None else f"must be a string, got {type(prompt).__name__}")
    pair = _checked(prompt, chosen, rejected, source, bad)
    first_error = row.get("rejected_first_error")
    if first_error is None:
        return [pair]
    if isinstance(first_error, bool) or not isinstance(first_error, int) or not 0 <= first_error < len(rejected):
        raise bad("rejected_first_error", f"must be a character offset into 'rejected', got {first_error!r}")
    return [PreferencePair(prompt, chosen, rejected, source, first_error)]


def _checked(prompt, chosen, rejected, source, bad, names=("chosen", "rejected")) -> PreferencePair:
    for key, value in zip(names, (chosen, rejected)):
        if not isinstance(value, str):
            raise bad(key, f"must be a string, got {type(value).__name__}")
        if not value.strip():
            raise bad(key, "empty completion")
    if chosen == rejected:
        raise bad(names[1], f"identical to '{names[0]}'")
    return PreferencePair(prompt, chosen, rejected, source)


def _split_transcripts(row, bad):
    parts = []
    for key in ("chosen", "rejected"):
        text = row[key]
        if not isinstance(text, str):
            raise bad(key, f"must be a string, got {type(text).__name__}")
        cut = text.rfind(ASSISTANT)
        if cut < 0:
            raise bad(key, f"no '{ASSISTANT.strip()}' turn in the transcript (and no 'prompt' field)")
        cut += len(ASSISTANT)
        parts.append((text[:cut], text[cut:]))
    if parts[0][0] != parts[1][0]:
        raise bad("rejected", "the dialogue before the last Assistant turn differs from 'chosen'")
    return parts[0][0], parts[0][1], parts[1][1]


def _is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)


def _render_messages(row, tokenizer, bad):
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise bad("chosen", "chat messages need a tokenizer with a chat template (tokenizer.chat_template) to render them")
    prompt_msgs, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if prompt_msgs is None:  # whole conversations sharing all but the last message
        if not _is_messages(chosen) or not _is_messages(rejected) or chosen[:-1] != rejected[:-1]:
            raise bad("rejected", "without 'prompt', chosen and rejected must be conversations sharing all but the last message")
        prompt_msgs, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
    for key, msgs in (("prompt", prompt_msgs), ("chosen", chosen), ("rejected", rejected)):
        if not _is_messages(msgs):
            raise bad(key, "must be a non-empty list of {'role', 'content'} messages")
    try:
        prompt = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
        fulls = [tokenizer.apply_chat_template(prompt_msgs + reply, tokenize=False) for reply in (chosen, rejected)]
    except (TemplateError, ValueError) as e:
        raise bad("chosen", f"chat template failed: {e}") from e
    for key, full in zip(("chosen", "rejected"), fulls):
        if not full.startswith(prompt):
            raise bad(key, "the chat template does not render the conversation as prompt + reply")
    return prompt, fulls[0][len(prompt) :], fulls[1][len(prompt) :]


def _math_pairs(row, source, bad) -> list[PreferencePair]:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("question", "missing" if question is None else "must be a non-empty string")
    # the model sees prompt + completion verbatim: keep the solution off the question's line
    prompt = question if question[-1].isspace() else question + "\n"
    solutions = {}
    for key in ("correct", "incorrect"):
        value = row.get(key)
        if value is None:
            raise bad(key, "missing")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise bad(key, "must be a string or a non-empty list of strings")
        solutions[key] = values
    return [
        _checked(prompt, c, r, source, bad, names=("correct", "incorrect"))
        for c in solutions["correct"]
        for r in solutions["incorrect"]
    ]


def synthetic_preference_pairs(n: int, seed: int = 0, split: str = "train") -> list[PreferencePair]:
    return [
        PreferencePair(p.prompt, p.chosen, p.rejected, f"synthetic:{split}:{i + 1}", p.first_error_char)
        for i, p in enumerate(synthetic_pairs(n, seed=seed, split=split))
    ]
