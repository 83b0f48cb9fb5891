import json

import pytest

from goalrm.cli import main
from goalrm.eval_cli import run_eval
from goalrm.export import save_reward_model
from goalrm.model import build_model
from goalrm.tiny import tiny_tokenizer


@pytest.fixture
def model_dir(tmp_path):
    import torch

    tok = tiny_tokenizer()
    model = build_model("tiny", tokenizer=tok)
    save_reward_model(model, tok, str(tmp_path / "model"), goal_state=torch.randn(128))
    return str(tmp_path / "model")


def test_data_synthetic_then_eval_writes_metrics(tmp_path, model_dir, capsys):
    data = str(tmp_path / "pairs.jsonl")
    assert main(["data", "synthetic", "--output", data, "--n", "24"]) == 0
    rows = [json.loads(l) for l in open(data)]
    assert len(rows) == 24 and {"prompt", "chosen", "rejected", "rejected_first_error"} <= set(rows[0])
    out_json = str(tmp_path / "eval.json")
    assert main(["eval", "--model", model_dir, "--data", data, "--output-json", out_json]) == 0
    metrics = json.load(open(out_json))
    assert metrics["n_pairs"] == 24
    assert metrics == json.loads(json.dumps(run_eval(model_dir, data)))  # the CLI writes what the function computes
    assert set(metrics["prefix_auroc"]) == {"0.25", "0.5", "0.75", "1.0"}
    assert "q_after_error_chosen" in metrics
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "AUROC (mean Q, first 25%)" in printed


def test_eval_bad_data_names_file_and_line(tmp_path, model_dir, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "", "rejected": "c"}\n')
    assert main(["eval", "--model", model_dir, "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: field 'chosen'" in err and "Traceback" not in err


def test_train_bad_config_fails_before_starting_ray(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  zero_stage: 5\n")
    assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    assert "zero_stage must be 0, 1, 2 or 3" in capsys.readouterr().err
