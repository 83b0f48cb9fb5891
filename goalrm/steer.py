"""Guided decoding: grow a completion chunk by chunk, keeping the sampled chunk whose text has the
highest Q-value toward the goal state. Greedy and plain sampling run through the same loop."""

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from goalrm.backbones import resolve
from goalrm.config import ConfigError
from goalrm.model import load_tokenizer
from goalrm.qvalues import final_token_reps, q_values
from goalrm.tiny import TINY_NAME, tiny_config

MODES = ("steer", "sample", "greedy")


@dataclass(frozen=True)
class SteerSettings:
    candidates: int = 8  # K chunks sampled per step in "steer" mode
    step_tokens: int = 8  # N policy tokens per chunk
    max_new_tokens: int = 128
    seed: int = 0

    def __post_init__(self):
        for name in ("candidates", "step_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"steer: {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Decoded:
    prompt: str
    mode: str
    text: str
    final_q: float
    q_trace: list  # Q of prompt + text so far, after each step
    new_tokens: int
    stopped: str  # "eos" | "length"


@torch.no_grad()
def final_q(rm, tokenizer, goal: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Q-value of each text's last token toward `goal`, all texts in one forward: [len(texts)].

    Texts are tokenized as training tokenizes prompt + completion (the tokenizer's own special
    tokens), so the last token is the one the goal state was taken from."""
    enc = tokenizer(texts, padding=True, padding_side="right", return_tensors="pt").to(goal.device)
    out = rm(enc["input_ids"], enc["attention_mask"], with_reps=True)
    return q_values(final_token_reps(out.reps, out.last_index).unsqueeze(1), goal)[:, 0]


def load_policy(name_or_path: str, trust_remote_code: bool = False, device="cpu"):
    """(causal LM on `device`, tokenizer). `tiny` is the tiny preset with fixed random weights: a smoke-test policy."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    if name_or_path == TINY_NAME:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config())
    else:
        model = AutoModelForCausalLM.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    # a tokenizer that appends EOS (the tiny one does) would otherwise tell the policy it is done
    ids = tokenizer(prompt)["input_ids"]
    while ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def _until_eos(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i], True
    return ids, False


def _eos_ids(policy, tokenizer) -> set[int]:
    eos = policy.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    return (eos | {tokenizer.eos_token_id}) - {None}


@torch.no_grad()
def decode(policy, tokenizer, q_of, prompt: str, mode: str, settings: SteerSettings) -> Decoded:
    """`q_of(texts) -> [len(texts)]` Q-values, e.g. `final_q` bound to a reward model and goal.

    Candidates are scored as text, so policy and reward model may use different tokenizers."""
    if mode not in MODES:
        raise ConfigError(f"steer: mode must be one of {', '.join(MODES)}, got {mode!r}")
    k = settings.candidates if mode == "steer" else 1
    eos = _eos_ids(policy, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
    start = prompt_ids(tokenizer, prompt)
    new, trace, stopped = [], [], "length"
    while len(new) < settings.max_new_tokens:
        ids = torch.tensor([start + new], device=policy.device)
        out = policy.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=mode != "greedy",
            max_new_tokens=min(settings.step_tokens, settings.max_new_tokens - len(new)),
            num_return_sequences=k,
            pad_token_id=pad,
        )
        chunks = [_until_eos(row, eos) for row in out[:, ids.shape[1] :].tolist()]  # one host copy
        q = q_of([prompt + tokenizer.decode(new + c, skip_special_tokens=True) for c, _ in chunks])
        best = int(q.argmax())
        chunk, ended = chunks[best]
        new += chunk
        trace.append(float(q[best]))
        if ended:
            stopped = "eos"
            break
    text = tokenizer.decode(new, skip_special_tokens=True)
    return Decoded(prompt, mode, text, trace[-1], trace, len(new), stopped)


def decode_all(policy, tokenizer, q_of, prompts: list[str], modes, settings: SteerSettings):
    """Every prompt in every mode; the RNG is reset from the seed and the prompt's index before each mode,
    so a result does not depend on the other prompts or on which modes run."""
    for i, prompt in enumerate(prompts):
        for mode in modes:
            torch.manual_seed(settings.seed * 1_000_003 + i)
            yield decode(policy, tokenizer, q_of, prompt, mode, settings)
