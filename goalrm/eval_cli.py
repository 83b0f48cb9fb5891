"""`goalrm eval`: score an exported model on preference pairs, no Ray needed."""

import json
import os

import torch

from goalrm.config import DataConfig
from goalrm.data.load import load_tokenized
from goalrm.evaluate import score_pairs, summarize
from goalrm.model import load_reward_model


def run_eval(model_dir: str, data: str, output_json: str | None = None, batch_size: int = 32, max_length: int = 1024) -> dict:
    model, tokenizer, goal, _ = load_reward_model(model_dir)
    pairs, _, bad = load_tokenized(data, "eval", DataConfig(max_length=max_length), tokenizer)
    with torch.inference_mode():
        metrics = summarize(score_pairs(model, pairs, tokenizer.pad_token_id, batch_size, goal))
    metrics["bad_rows"] = bad.count
    if output_json:
        os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
        tmp = output_json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(tmp, output_json)
    return metrics
