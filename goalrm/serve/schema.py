"""The HTTP contract, no Ray and no model: request bodies to checked (prompt, completion) items,
scores to JSON answers. Every bad input is a RequestError naming the field and the index."""

import json
import math
from dataclasses import dataclass

import numpy as np

from goalrm.data.errors import BadRowError
from goalrm.data.formats import completions_from_row
from goalrm.score.filtering import filter_row

REWARD, GET_REWARD, Q_VALUES = "reward", "get_reward", "q_values"
FIELDS = {  # the keys each endpoint reads; /get_reward also takes (and ignores) the rest of OpenRLHF's payload ("labels")
    REWARD: {"prompts", "completions"},
    Q_VALUES: {"prompts", "completions", "threshold"},
    GET_REWARD: None,
}
# where an item's 'prompt' and 'completion' came from, per endpoint, for error messages
SOURCES = {
    REWARD: {"prompt": "prompts", "completion": "completions"},
    Q_VALUES: {"prompt": "prompts", "completion": "completions"},
    GET_REWARD: {"prompt": "prompts", "completion": "query"},
}


class RequestError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.index = status, message, field, index

    def body(self) -> dict:
        return {"error": self.message, "field": self.field, "index": self.index}


@dataclass(frozen=True)
class Item:
    prompt: str
    completion: str


def parse_body(raw: bytes, max_bytes: int) -> dict:
    if len(raw) > max_bytes:
        raise RequestError(413, f"the body has {len(raw)} bytes, over max_request_bytes={max_bytes}")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # NaN or Infinity
        raise RequestError(400, f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the body must be a JSON object, got {_kind(body)}")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def check_fields(body: dict, endpoint: str) -> None:
    known = FIELDS[endpoint]
    for key in body if known is not None else ():
        if key not in known:
            raise RequestError(422, f"unknown field {key!r}; /{endpoint} takes {', '.join(sorted(known))}", key)


def string_list(body: dict, key: str, max_items: int, required: bool = True) -> list[str] | None:
    value = body.get(key)
    if value is None:
        if required:
            raise RequestError(422, f"missing field {key!r}", key)
        return None
    if not isinstance(value, list):
        raise RequestError(422, f"{key!r} must be a list of strings, got {_kind(value)}", key)
    if len(value) > max_items:
        raise RequestError(413, f"{key!r} has {len(value)} items, over max_items_per_request={max_items}", key)
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise RequestError(422, f"{key}[{i}] must be a string, got {_kind(v)}", key, i)
    return value


def same_length(a: list, b: list, a_key: str, b_key: str) -> None:
    if len(a) != len(b):
        raise RequestError(422, f"{b_key!r} has {len(b)} items but {a_key!r} has {len(a)}", b_key)


def pair_items(body: dict, endpoint: str, max_items: int) -> list[Item]:
    """/reward and /q_values: prompts[i] + completions[i]."""
    check_fields(body, endpoint)
    prompts = string_list(body, "prompts", max_items)
    completions = string_list(body, "completions", max_items)
    same_length(prompts, completions, "prompts", "completions")
    return [checked_item(p, c, i, endpoint) for i, (p, c) in enumerate(zip(prompts, completions))]


def query_items(body: dict, max_items: int, lead: str, trail: str) -> list[Item]:
    """/get_reward, OpenRLHF's contract: each query is a full text (prompt + response, decoded with
    its special tokens). The special tokens the tokenizer adds itself (LEAD, TRAIL) are cut off, so
    they are not doubled; the query is split after prompts[i] when it starts with it."""
    queries = string_list(body, "query", max_items)
    prompts = string_list(body, "prompts", max_items, required=False)
    if prompts is not None:
        same_length(queries, prompts, "query", "prompts")
    items = []
    for i, q in enumerate(queries):
        text = _strip(q, lead, trail)
        prompt = _strip(prompts[i], lead, "") if prompts is not None else ""
        if not text.startswith(prompt):
            prompt = ""  # the whole query is scored; only truncation would differ
        items.append(checked_item(prompt, text[len(prompt):], i, GET_REWARD))
    return items


def _strip(text: str, lead: str, trail: str) -> str:
    if lead and text.startswith(lead):
        text = text[len(lead):]
    if trail and text.endswith(trail):
        text = text[: -len(trail)]
    return text


def checked_item(prompt: str, completion: str, index: int, endpoint: str) -> Item:
    """The checks `goalrm score` runs on a prompt/completion row."""
    try:
        (c,) = completions_from_row({"prompt": prompt, "completion": completion}, "<request>", index)
    except BadRowError as err:
        raise request_error(err, endpoint) from None
    return Item(c.prompt, c.completion)


def request_error(err: BadRowError, endpoint: str, status: int = 422) -> RequestError:
    """A BadRowError raised for item `err.line` of a request, in the request's terms."""
    field = SOURCES[endpoint].get(err.field, err.field)
    return RequestError(status, f"{field}[{err.line}]: {err.reason}", field, err.line)


def threshold(body: dict, default: float) -> float:
    value = body.get("threshold", default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(422, f"'threshold' must be a finite number, got {value!r}", "threshold")
    return float(value)


def reward_answer(rewards: np.ndarray, truncated: list[int]) -> dict:
    return {"rewards": rewards.tolist(), **_truncated(truncated)}


def get_reward_answer(rewards: np.ndarray, truncated: list[int]) -> dict:
    """OpenRLHF reads "rewards" and, when present, "scores"."""
    r = rewards.tolist()
    return {"rewards": r, "scores": r, **_truncated(truncated)}


def q_values_answer(rewards: np.ndarray, qs: list[np.ndarray], threshold_: float, truncated: list[int]) -> dict:
    """The columns `goalrm score` writes, one object per completion."""
    results = []
    for r, q in zip(rewards.tolist(), qs):
        f = filter_row(q, threshold_)
        results.append({"reward": r, "q_values": q.tolist(), "min_q": f.min_q, "first_below": f.first_below, "keep": f.keep})
    return {"results": results, "threshold": threshold_, **_truncated(truncated)}


def _truncated(indices: list[int]) -> dict:
    return {"truncated": indices} if indices else {}


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
