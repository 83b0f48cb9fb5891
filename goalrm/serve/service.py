"""What one replica does, no Ray: requests to checked token sequences, sequences to scores with
`goalrm score`'s scorer, scores to answers. app.py puts Ray Serve's batching and HTTP around it."""

import hmac
from dataclasses import dataclass

import numpy as np
import torch

from goalrm.config import ConfigError
from goalrm.score.scorer import score_sequences
from goalrm.serve import schema
from goalrm.serve.batching import Chunk, chunks
from goalrm.serve.config import ServeConfig
from goalrm.serve.model import load_served_model
from goalrm.serve.schema import GET_REWARD, Q_VALUES, REWARD, RequestError
from goalrm.serve.tokens import special_affixes, tokenize_items


@dataclass(frozen=True)
class Prepared:
    endpoint: str
    seqs: list  # (ids, completion start) per item
    truncated: list[int]
    threshold: float | None = None


def read_api_key(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path) as f:
        key = f.read().strip()
    if not key:
        raise ConfigError(f"--api-key-file {path} is empty")
    return key


class RewardService:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.served = load_served_model(cfg.model, cfg.goal, cfg.device, cfg.dtype, cfg.attn_implementation)
        self.tokenizer = self.served.tokenizer
        self.affixes = special_affixes(self.tokenizer)
        self.api_key = read_api_key(cfg.api_key_file)

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        # constant time, so the key cannot be guessed a character at a time
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def prepare(self, endpoint: str, raw: bytes) -> Prepared:
        """Everything that can reject a request, before it joins a batch: one bad item fails its
        own request only."""
        cfg = self.cfg
        body = schema.parse_body(raw, cfg.max_request_bytes)
        if endpoint == GET_REWARD:
            items = schema.query_items(body, cfg.max_items_per_request, *self.affixes)
        else:
            if endpoint == Q_VALUES and self.served.goal is None:
                raise RequestError(404, "this model has no goal state, so no Q-values: serve a goalrm export or set `goal` in the serve config")
            items = schema.pair_items(body, endpoint, cfg.max_items_per_request)
        threshold = schema.threshold(body, cfg.threshold) if endpoint == Q_VALUES else None
        seqs, truncated = tokenize_items(items, self.tokenizer, cfg.max_tokens_per_item, cfg.min_prompt_tokens, cfg.truncate, endpoint)
        return Prepared(endpoint, seqs, truncated, threshold)

    def chunks(self, prepared: Prepared) -> list[Chunk]:
        return chunks(prepared.seqs, self.cfg.max_batch_tokens, q_values=prepared.endpoint == Q_VALUES)

    def score(self, seqs: list, q_values: bool = True):
        """Rewards, and Q-values when asked for and a goal state is there (else None each), of a
        whole batch, in length-sorted micro-batches of at most micro_batch_tokens token slots (packed:
        real tokens; padded: rows times the longest)."""
        m = self.served
        goal = m.goal if q_values else None
        rewards, qs = score_sequences(m.model, goal, seqs, self.tokenizer.pad_token_id, self.cfg.micro_batch_tokens, self.cfg.device, m.packing)
        return list(rewards), qs

    def answer(self, prepared: Prepared, rewards, qs) -> dict:
        rewards = np.asarray(rewards, dtype=np.float32)
        if prepared.endpoint == REWARD:
            return schema.reward_answer(rewards, prepared.truncated)
        if prepared.endpoint == GET_REWARD:
            return schema.get_reward_answer(rewards, prepared.truncated)
        return schema.q_values_answer(rewards, qs, prepared.threshold, prepared.truncated)

    def info(self) -> dict:
        c = self.cfg
        limits = {k: getattr(c, k) for k in ("max_items_per_request", "max_tokens_per_item", "truncate", "max_batch_tokens", "threshold")}
        endpoints = ["/reward", "/get_reward", *(["/q_values"] if self.served.goal is not None else []), "/health", "/info"]
        return {**self.served.info, **limits, "torch_threads": torch.get_num_threads(), "endpoints": endpoints}
