import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from goalrm.lora import LoraSettings
from goalrm.model import HeadConfig, build_model, last_token_index, load_reward_model, save_reward_model
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
