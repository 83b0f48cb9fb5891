"""`goalrm serve` without Ray: request checks, token budgets, the serve config, and the replica's
service on a tiny export and on a plain HF reward model (milliseconds to a second each)."""

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from transformers import LlamaForSequenceClassification

from goalrm.config import ConfigError
from goalrm.score.scorer import load_scorer, score_sequences
from goalrm.serve.batching import Chunk, chunk_tokens, chunks
from goalrm.serve.config import ServeConfig, load_serve_config
from goalrm.serve.model import check_model_dir
from goalrm.serve.schema import GET_REWARD, Q_VALUES, REWARD, RequestError, pair_items, parse_body, query_items
from goalrm.serve.service import RewardService
from goalrm.serve.tokens import special_affixes, tokenize_items
from goalrm.tiny import tiny_config, tiny_tokenizer

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_rm_dir(tmp_path_factory):
    """A plain HF reward model, no goalrm files: Llama with a one-label score head."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("hf_rm")
    LlamaForSequenceClassification(tiny_config(num_labels=1)).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


def _error(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args)
    return e.value


# ---------------------------------------------------------------- request bodies


@pytest.mark.parametrize(
    "raw, status, text",
    [
        (b'{"prompts": [', 400, "malformed JSON"),
        (b"\xff\xfe", 400, "not valid UTF-8"),
        (b'{"threshold": NaN}', 400, "NaN is not a JSON number"),
        (b"[1, 2]", 400, "must be a JSON object, got a list"),
        (b"x" * 101, 413, "over max_request_bytes=100"),
    ],
)
def test_parse_body_rejects(raw, status, text):
    e = _error(parse_body, raw, 100)
    assert e.status == status and text in e.message and e.field is None


@pytest.mark.parametrize(
    "body, status, field, index, text",
    [
        ({"completions": ["a"]}, 422, "prompts", None, "missing field 'prompts'"),
        ({"prompts": "p", "completions": ["a"]}, 422, "prompts", None, "must be a list of strings, got a string"),
        ({"prompts": ["p", "q"], "completions": ["a"]}, 422, "completions", None, "has 1 items but 'prompts' has 2"),
        ({"prompts": ["p", "q"], "completions": ["a", 7]}, 422, "completions", 1, "completions[1] must be a string, got a number"),
        ({"prompts": ["p", None], "completions": ["a", "b"]}, 422, "prompts", 1, "got null"),
        ({"prompts": ["p", "q"], "completions": ["a", "  "]}, 422, "completions", 1, "completions[1]: empty completion"),
        ({"prompts": ["p"] * 4, "completions": ["a"] * 4}, 413, "prompts", None, "4 items, over max_items_per_request=3"),
        ({"prompts": ["p"], "completions": ["a"], "completion": ["b"]}, 422, "completion", None, "unknown field 'completion'"),
    ],
)
def test_pair_items_name_field_and_index(body, status, field, index, text):
    e = _error(pair_items, body, REWARD, 3)
    assert (e.status, e.field, e.index) == (status, field, index) and text in e.message
    assert e.body() == {"error": e.message, "field": field, "index": index}


def test_query_items_strip_added_specials_and_split_at_the_prompt():
    body = {"query": ["<bos>Q: 2+2=4<eos>", "free text", "<bos>Q: x"], "prompts": ["<bos>Q: 2+2=", "other", "<bos>Q: "], "labels": [None] * 3}
    items = query_items(body, 8, "<bos>", "<eos>")
    assert [(i.prompt, i.completion) for i in items] == [("Q: 2+2=", "4"), ("", "free text"), ("Q: ", "x")]
    e = _error(query_items, {"query": ["<bos>Q: <eos>"], "prompts": ["Q: "]}, 8, "<bos>", "<eos>")
    assert (e.status, e.field, e.index) == (422, "query", 0) and "empty completion" in e.message
    e = _error(query_items, {"query": ["a", "b"], "prompts": ["a"]}, 8, "", "")
    assert (e.status, e.field) == (422, "prompts")


# ---------------------------------------------------------------- token budgets


def test_chunks_keep_order_and_fit_the_budget():
    seqs = [([0] * n, 1) for n in (5, 3, 9, 2, 2, 7)]
    out = chunks(seqs, 10)
    assert [[len(s[0]) for s in c.seqs] for c in out] == [[5, 3], [9], [2, 2], [7]]
    assert [c.tokens for c in out] == [8, 9, 4, 7]
    assert [s for c in out for s in c.seqs] == seqs
    assert chunk_tokens(out) == 28 and chunk_tokens([Chunk([], 0)]) == 0


# ---------------------------------------------------------------- tokens


def test_special_affixes_of_the_tiny_tokenizer():
    assert special_affixes(tiny_tokenizer()) == ("<bos>", "<eos>")


def test_tokenize_items_413_or_truncated_and_reported():
    tok = tiny_tokenizer()
    items = pair_items({"prompts": ["P" * 30, "p"], "completions": ["c" * 30, "ok"]}, REWARD, 8)
    e = _error(tokenize_items, items, tok, 40, 4, False, REWARD)
    assert (e.status, e.field, e.index) == (413, "completions", 0) and "62 tokens, over max_tokens_per_item=40" in e.message
    seqs, truncated = tokenize_items(items, tok, 40, 4, True, REWARD)
    assert truncated == [0] and len(seqs[0][0]) == 40 and seqs[1] == (tok("pok")["input_ids"], 2)
    e = _error(tokenize_items, items[:1], tok, 10, 16, True, REWARD)  # the prompt's floor leaves no room
    assert (e.status, e.field, e.index) == (422, "prompts", 0)


# ---------------------------------------------------------------- the serve config


def test_serve_config_checks_and_reads_the_ray_serve_file(tmp_path):
    with pytest.raises(ConfigError, match="max_tokens_per_item .* must be <= max_batch_tokens"):
        load_serve_config(None, {"model": "m", "max_tokens_per_item": 9000})
    with pytest.raises(ConfigError, match="not both"):
        load_serve_config(None, {"model": "m", "num_replicas": 2, "autoscaling_config": {"max_replicas": 2}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_serve_config(None, {"model": "m", "max_batch_token": 5})
    with pytest.raises(ConfigError, match="no model"):
        load_serve_config(None)
    cfg = load_serve_config(str(ROOT / "serve_configs" / "reward.yaml"), {"model": "elsewhere", "api_key_file": None})
    app = yaml.safe_load(open(ROOT / "serve_configs" / "reward.yaml"))["applications"][0]
    assert cfg.model == "elsewhere" and cfg.max_batch_tokens == app["args"]["max_batch_tokens"]
    assert cfg.deployment_options() == {"max_ongoing_requests": 128, "ray_actor_options": {"num_cpus": 1, "num_gpus": 0}, "num_replicas": 1}
    gpu = ServeConfig(model="m", ray_actor_options={"num_gpus": 1}, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
    assert gpu.device == "cuda" and gpu.deployment_options()["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4}
    flat = tmp_path / "s.yaml"
    flat.write_text("model: m\ntruncate: true\n")
    assert load_serve_config(str(flat)).truncate


def test_ray_serve_file_passes_ray_serves_schema():
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(open(ROOT / "serve_configs" / "reward.yaml")))
    assert schema.http_options.host == "127.0.0.1" and schema.applications[0].import_path == "goalrm.serve.app:build_app"


def test_check_model_dir(tmp_path, tiny_export):
    check_model_dir(tiny_export, None)
    with pytest.raises(FileNotFoundError):
        check_model_dir(str(tmp_path / "nope"), None)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no \\*.safetensors weights"):
        check_model_dir(str(tmp_path), None)
    save_file({"goal": torch.ones(7)}, str(tmp_path / "g.safetensors"))
    with pytest.raises(ConfigError, match="has shape \\[7\\], but the model's representations have size 128"):
        check_model_dir(tiny_export, str(tmp_path / "g.safetensors"))


# ---------------------------------------------------------------- the replica's service, no Ray

ROWS = [("Q: 2+3=? ", "Work: 2+3=5 so 5"), ("Q: 7-4=? ", "It is 3"), ("Say hi. ", "hi there, how are you today?")]


def test_service_matches_score_sequences_and_reports_truncation(tiny_export, one_torch_thread):
    svc = RewardService(ServeConfig(model=tiny_export, max_batch_tokens=64, max_tokens_per_item=40, truncate=True))
    assert (svc.served.packing, svc.info()["attention"], svc.info()["packed"]) == ("flat", "sdpa_varlen", True)  # auto on the CPU
    body = {"prompts": [p for p, _ in ROWS], "completions": [c for _, c in ROWS], "threshold": 0.01}
    prep = svc.prepare(Q_VALUES, _raw(body))
    assert prep.truncated == []
    parts = [svc.score(c.seqs) for c in svc.chunks(prep)]
    assert len(parts) == 2  # 27 + 18 tokens fit 64; the third item's 38 start a second chunk
    ans = svc.answer(prep, [r for p in parts for r in p[0]], [q for p in parts for q in p[1]])
    model, tok, goal, _ = load_scorer(tiny_export)
    rewards, qs = score_sequences(model, goal, prep.seqs, tok.pad_token_id, 1)  # one sequence a forward, unpacked
    for res, r, q in zip(ans["results"], rewards, qs):
        assert res["reward"] == pytest.approx(float(r), abs=1e-5)
        np.testing.assert_allclose(res["q_values"], q, atol=1e-5)
        first = next((i for i, v in enumerate(q) if v < 0.01), None)
        assert (res["first_below"], res["keep"], res["min_q"]) == (first, first is None, pytest.approx(float(q.min()), abs=1e-5))
    assert all(c.q_values for c in svc.chunks(prep))
    plain = svc.prepare(REWARD, _raw({k: body[k] for k in ("prompts", "completions")}))
    assert not any(c.q_values for c in svc.chunks(plain))
    r_only, q_none = svc.score(plain.seqs, q_values=False)  # a batch without /q_values requests skips them
    assert q_none == [None] * len(ROWS)
    np.testing.assert_allclose(r_only, rewards, atol=1e-5)
    long = svc.prepare(REWARD, _raw({"prompts": ["p"], "completions": ["x" * 60]}))
    assert long.truncated == [0] and len(long.seqs[0][0]) == 40
    assert svc.answer(long, *svc.score(long.seqs))["truncated"] == [0]


def test_service_auth_and_info(tiny_export, tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    svc = RewardService(ServeConfig(model=tiny_export, api_key_file=str(key)))
    assert svc.authorized("Bearer s3cret") and svc.authorized("bearer s3cret")
    assert not svc.authorized(None) and not svc.authorized("Bearer s3cre") and not svc.authorized("s3cret")
    info = svc.info()
    assert (info["kind"], info["goal_state"], info["goal_dim"], info["device"]) == ("goalrm", True, 128, "cpu")
    assert "/q_values" in info["endpoints"]


def test_plain_hf_reward_model_rewards_without_q_values(hf_rm_dir, one_torch_thread):
    check_model_dir(hf_rm_dir, None)
    svc = RewardService(ServeConfig(model=hf_rm_dir))
    assert svc.info()["kind"] == "hf" and "/q_values" not in svc.info()["endpoints"]
    assert svc.served.packing == "flat"  # a Llama packs; compared below with plain transformers, one text at a time
    e = _error(svc.prepare, Q_VALUES, _raw({"prompts": ["p"], "completions": ["c"]}))
    assert e.status == 404 and "no goal state" in e.message
    prep = svc.prepare(GET_REWARD, _raw({"query": [p + c for p, c in ROWS]}))
    rewards = svc.answer(prep, *svc.score(prep.seqs))["rewards"]
    hf = LlamaForSequenceClassification.from_pretrained(hf_rm_dir).eval()
    tok = tiny_tokenizer()
    with torch.no_grad():  # plain transformers, one text at a time
        expected = [float(hf(**tok(p + c, return_tensors="pt")).logits[0, 0]) for p, c in ROWS]
    np.testing.assert_allclose(rewards, expected, atol=1e-5)
    assert len(set(np.round(expected, 4))) == len(ROWS)  # distinct rewards: a swapped answer would show


def test_serving_attention_packs_without_compiling(monkeypatch):
    from goalrm import attention
    from goalrm.serve.model import serving_attention

    assert serving_attention("auto", "cpu", "float32") == "sdpa_varlen"
    # FlexAttention would compile for every new batch shape at request time: auto serves padded SDPA instead
    monkeypatch.setattr(attention, "flash_attn_available", lambda: False)
    assert serving_attention("auto", "cuda", "bfloat16") == "sdpa"
    assert serving_attention("flex_attention", "cuda", "bfloat16") == "flex_attention"  # asked for by name
    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    assert serving_attention("auto", "cuda", "bfloat16") == "flash_attention_2"
    assert serving_attention("auto", "cuda", "float32") == "sdpa"
    with pytest.raises(ConfigError, match=r"attn_implementation: flash_attention_2 needs a CUDA GPU \(ray_actor_options: \{num_gpus: 1\}\)"):
        load_serve_config(None, {"model": "m", "attn_implementation": "flash_attention_2"})
    with pytest.raises(ConfigError, match="in bf16 only; set dtype: bfloat16"):
        load_serve_config(None, {"model": "m", "attn_implementation": "flash_attention_2", "ray_actor_options": {"num_gpus": 1}})
    with pytest.raises(ConfigError, match="attn_implementation must be one of"):
        load_serve_config(None, {"model": "m", "attn_implementation": "flash"})


def test_hf_model_with_two_labels_is_refused(tmp_path):
    LlamaForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="num_labels=2"):
        check_model_dir(str(tmp_path), None)


# ---------------------------------------------------------------- the command line, before Ray


def test_cli_errors_before_ray(tmp_path, tiny_export, capsys, monkeypatch):
    import runpy
    import sys

    from goalrm.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "no model: pass --model DIR" in capsys.readouterr().err
    (tmp_path / "key").write_text("\n")
    assert main(["serve", "--model", tiny_export, "--api-key-file", str(tmp_path / "key")]) == 2
    assert "is empty" in capsys.readouterr().err
    # the Ray Jobs entrypoint takes the same flags and fails the same way, before joining a cluster
    monkeypatch.setattr(sys, "argv", ["serve.py", "--model", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "ray_jobs" / "serve.py"), run_name="__main__")
    assert e.value.code == 2 and "no such folder" in capsys.readouterr().err


def test_readme_serve_flags_match_help():
    import re

    from goalrm.cli import build_parser

    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("goalrm serve --model"))
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    flags = {s for a in serve._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert set(re.findall(r"--[a-z-]+", line)) == flags


def test_build_app_checks_ray_options(tiny_export):
    from goalrm.serve.app import build_app

    app = build_app({"model": tiny_export, "autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 16}})
    assert type(app).__name__ == "Application"
    # what `serve run serve_configs/reward.yaml` does: import the import_path, call it with the args
    spec = yaml.safe_load(open(ROOT / "serve_configs" / "reward.yaml"))["applications"][0]
    module, _, attr = spec["import_path"].partition(":")
    assert type(getattr(__import__(module, fromlist=[attr]), attr)({**spec["args"], "model": tiny_export})).__name__ == "Application"
    for bad, text in [({"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}}, "must be greater than or equal to min_replicas"),
                      ({"autoscaling_config": {"max_replica": 3}}, "unknown key(s) max_replica"),
                      ({"ray_actor_options": {"num_cpus": 1, "gpus": 1}}, "Specifying 'gpus' in ray_actor_options is not allowed")]:  # fmt: skip
        with pytest.raises(ConfigError) as e:
            build_app({"model": tiny_export, **bad})
        assert text in str(e.value)
