import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from goalrm.lora import LoraSettings
from goalrm.export import load_reward_model, save_reward_model
from goalrm.model import HeadConfig, build_model, last_token_index
from goalrm.tiny import tiny_tokenizer

TEXTS = ["Ann has 3 pens, buys 2. How many?\n3+2=5\nAnswer: 5", "Q?\n1+1=2", "Ben has 9 eggs, gives 4, gives 1. How many?\n9-4=5\n5-1=4\nAnswer: 4"]


def _rewards(model, tok, side):
    tok.padding_side = side
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(enc.input_ids, enc.attention_mask).rewards


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_reward_independent_of_padding_side():
    tok = tiny_tokenizer()
    model = build_model("tiny", tokenizer=tok).eval()
    alone = torch.stack([_rewards(model, tok, "right")[i] for i in range(len(TEXTS))])
    assert torch.allclose(_rewards(model, tok, "left"), alone, atol=1e-5)


@pytest.mark.parametrize("lora", [None, LoraSettings(rank=4, target_modules=("q_proj", "v_proj", "gate_proj"))])
def test_export_loads_in_plain_transformers_with_same_rewards(tmp_path, lora):
    tok = tiny_tokenizer()
    model = build_model("tiny", tokenizer=tok, lora=lora).eval()
    with torch.no_grad():
        model.head.weight.normal_()  # a head of zeros would make any comparison pass
        if lora is not None:  # peft starts B at zero; a trained adapter is not
            with model.backbone.disable_adapter():
                without_adapters = _rewards(model, tok, "right")
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.2)
    ours = _rewards(model, tok, "right")
    if lora is not None:  # the merge below has something to get right
        assert not torch.allclose(ours, without_adapters, atol=1e-3)
    save_reward_model(model, tok, str(tmp_path), goal_state=torch.randn(128), reward_mean=0.1, reward_std=2.0)

    plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    plain_tok = AutoTokenizer.from_pretrained(str(tmp_path))
    for i, text in enumerate(TEXTS):  # exactly as a user would: no goalrm code, one text at a time
        with torch.no_grad():
            reward = plain(**plain_tok(text, return_tensors="pt")).logits[0, 0]
        assert abs(float(reward) - float(ours[i])) < 1e-4
    # batched with padding too
    plain_tok.padding_side = "left"
    with torch.no_grad():
        batched = plain(**plain_tok(TEXTS, padding=True, return_tensors="pt")).logits[:, 0]
    assert torch.allclose(batched, ours, atol=1e-4)
    assert ours.std() > 1e-3


def test_exported_tokenizer_matches_goalrm_tokenizer(tmp_path):
    tok = tiny_tokenizer()
    model = build_model("tiny", tokenizer=tok)
    save_reward_model(model, tok, str(tmp_path))
    plain_tok = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS + ["é ünïcode\n\n  spaces"]:
        ids = plain_tok(text).input_ids
        assert ids == tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_mlp_head_and_projection_round_trip(tmp_path):
    tok = tiny_tokenizer()
    model = build_model("tiny", HeadConfig(head="mlp", mlp_hidden=32, projection_dim=16), tok).eval()
    goal = torch.randn(16)
    save_reward_model(model, tok, str(tmp_path), goal_state=goal, reward_mean=0.5, reward_std=1.5)
    loaded, loaded_tok, loaded_goal, meta = load_reward_model(str(tmp_path))
    assert torch.allclose(_rewards(loaded, loaded_tok, "right"), _rewards(model, tok, "right"), atol=1e-5)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(enc.input_ids, enc.attention_mask, with_reps=True).reps
        b = loaded(enc.input_ids, enc.attention_mask, with_reps=True).reps
    assert a.shape[-1] == 16 and torch.allclose(a, b, atol=1e-5)
    assert torch.equal(loaded_goal, goal)
    assert meta["reward_mean"] == 0.5 and meta["reward_std"] == 1.5 and meta["heads"]["head"] == "mlp"


def test_load_rejects_non_goalrm_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="goalrm.json"):
        load_reward_model(str(tmp_path))


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    """A hub-style causal-LM folder saved in bf16, as most released checkpoints are."""
    from transformers import LlamaForCausalLM

    from goalrm.tiny import tiny_config

    path = tmp_path_factory.mktemp("bf16_llama")
    LlamaForCausalLM(tiny_config()).to(torch.bfloat16).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _loss(model, tok):
    from goalrm.data.batch import collate_pairs
    from goalrm.data.tokenize import tokenize_pairs
    from goalrm.data.formats import synthetic_preference_pairs
    from goalrm.losses import LossConfig, reward_model_loss

    pairs, _ = tokenize_pairs(synthetic_preference_pairs(4, seed=0, split="train"), tok, 96)
    b = collate_pairs(pairs, tok.pad_token_id)
    out = model(b["input_ids"], b["attention_mask"], with_reps=True)
    loss, _ = reward_model_loss(
        out.rewards, out.reps, b["completion_start"], b["completion_end"], LossConfig(), torch.Generator(), b["rejected_divergence"]
    )
    return out, loss


def test_fp32_run_of_a_bf16_checkpoint_is_fp32_throughout(bf16_checkpoint):
    """precision fp32 means fp32 weights: transformers 5 would load this folder as bf16 (dtype "auto")
    under fp32 MLP and projection heads, and the first forward would fail on mixed dtypes."""
    tok = tiny_tokenizer()
    model = build_model(bf16_checkpoint, HeadConfig(head="mlp", projection_dim=16), tok)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    out, loss = _loss(model, tok)
    assert out.rewards.dtype == out.reps.dtype == loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head.parameters())


@pytest.mark.parametrize("heads_in_bf16", [True, False], ids=["zero2-cast-all", "zero3-heads-outside-init"])
def test_bf16_run_keeps_rewards_cosines_and_losses_fp32(bf16_checkpoint, heads_in_bf16):
    """precision bf16: DeepSpeed casts the module to bf16 (ZeRO-1/2), or under ZeRO-3 zero.Init makes the
    backbone bf16 while heads built outside it stay fp32. Both must run, with fp32 rewards, reps and loss."""
    tok = tiny_tokenizer()
    model = build_model(bf16_checkpoint, HeadConfig(head="mlp", projection_dim=16), tok)
    model.backbone.to(torch.bfloat16)
    if heads_in_bf16:
        model.to(torch.bfloat16)
    out, loss = _loss(model, tok)
    assert out.hidden.dtype == torch.bfloat16
    assert out.rewards.dtype == torch.float32 and loss.dtype == torch.float32
    assert out.reps.dtype == (torch.bfloat16 if heads_in_bf16 else torch.float32)  # cosines take them in fp32
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.projection.parameters())


def test_export_reads_weights_in_the_requested_dtype(tmp_path):
    tok = tiny_tokenizer()
    model = build_model("tiny", HeadConfig(head="mlp", projection_dim=16), tok).eval()
    save_reward_model(model, tok, str(tmp_path), goal_state=torch.randn(16))
    loaded, _, goal, _ = load_reward_model(str(tmp_path), dtype="bfloat16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16} and goal.dtype == torch.float32
    ref = _rewards(model, tok, "right")
    assert torch.allclose(_rewards(loaded, tok, "right"), ref, atol=0.1)  # bf16 rounding, not another model
    assert _rewards(loaded, tok, "right").dtype == torch.float32


def test_export_of_parameters_that_are_views_of_one_flat_buffer(tmp_path):
    """DeepSpeed ZeRO-1/2 keep a worker's parameters as views into one flat buffer; safetensors refuses
    to write such views, so the export must copy them (and only them)."""
    tok = tiny_tokenizer()
    model = build_model("tiny", HeadConfig(projection_dim=8), tok).eval()
    ref = _rewards(model, tok, "right")
    params = list(model.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    save_reward_model(model, tok, str(tmp_path), goal_state=torch.randn(8))
    loaded, _, _, _ = load_reward_model(str(tmp_path))
    assert torch.allclose(_rewards(loaded, tok, "right"), ref, atol=1e-6)


@pytest.fixture
def load_reports(monkeypatch):
    """The LOAD REPORT records transformers logs while goalrm loads a backbone (verbose off)."""
    import logging

    from transformers.utils import logging as hf_logging

    from goalrm.console import VERBOSE_ENV

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage()) if "LOAD REPORT" in record.getMessage() else None
    log = hf_logging.get_logger("transformers.modeling_utils")
    log.addHandler(handler)
    yield seen
    log.removeHandler(handler)


def test_a_causal_lm_checkpoint_loads_without_a_report_of_the_new_head(bf16_checkpoint, load_reports):
    """Every reward model has a new head (MISSING) and drops the LM head (UNEXPECTED): transformers'
    report of that, in every worker, is noise on the user's console."""
    build_model(bf16_checkpoint, HeadConfig(), tiny_tokenizer())
    assert load_reports == []


def test_missing_backbone_weights_still_print_the_report(tmp_path, load_reports):
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM

    from goalrm.tiny import tiny_config

    LlamaForCausalLM(tiny_config()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]  # a backbone weight that would train from random
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    build_model(str(tmp_path), HeadConfig(), tiny_tokenizer())
    assert len(load_reports) == 1 and "up_proj" in load_reports[0] and "MISSING" in load_reports[0]


@pytest.mark.parametrize("with_reps", [True, False])
def test_zero3_hooks_reach_every_tensor_of_the_output(with_reps):
    """ZeRO-3 hangs its backward hooks on each module's output tensors, found with DeepSpeed's own walker,
    which knows tuples, lists and dicts only: for another type it finds no tensor and warns in every run."""
    from goalrm.train.deepspeed_init import import_deepspeed

    apply_to_tensors_only = import_deepspeed(use_gpu=False).runtime.zero.utils.apply_to_tensors_only
    tok = tiny_tokenizer()
    model = build_model("tiny", tokenizer=tok)
    batch = tok(["Q: 2+2= 4", "Q: 3+3= 7"], return_tensors="pt", padding=True)
    out = model(batch["input_ids"], batch["attention_mask"], with_reps=with_reps)
    seen = []
    walked = apply_to_tensors_only(lambda t: seen.append(t) or t, out)
    want = [out.rewards, out.hidden, out.reps, out.last_index] if with_reps else [out.rewards, out.hidden, out.last_index]
    assert len(seen) == len(want) and all(a is b for a, b in zip(seen, want))
    assert type(walked) is type(out) and walked.reps is out.reps
