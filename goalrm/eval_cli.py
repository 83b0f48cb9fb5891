"""`goalrm eval`: score an exported model on preference pairs, no Ray needed."""

import json
import os
from dataclasses import dataclass

import torch

from goalrm.config import DataConfig
from goalrm.data.errors import BadRows
from goalrm.data.load import load_tokenized
from goalrm.evaluate import PairScores, evaluate_pairs, summarize
from goalrm.localization import DETECT_WITHIN
from goalrm.atomic import write_text
from goalrm.export import load_reward_model


@dataclass
class Evaluated:
    model: torch.nn.Module
    tokenizer: object
    goal: torch.Tensor | None
    pairs: list  # TokenizedPair, in data order
    scores: PairScores
    bad_rows: BadRows


def evaluate_data(model_dir: str, data: str, batch_size: int = 32, max_length: int = 1024, device="cpu", dtype: str = "float32") -> Evaluated:
    model, tokenizer, goal, _ = load_reward_model(model_dir, device=device, dtype=dtype)
    pairs, _, bad = load_tokenized(data, "eval", DataConfig(max_length=max_length), tokenizer)
    with torch.inference_mode():
        scores = evaluate_pairs(model, pairs, tokenizer.pad_token_id, batch_size, goal, device)
    return Evaluated(model, tokenizer, goal, pairs, scores, bad)


def run_eval(
    model_dir: str, data: str, output_json: str | None = None, batch_size: int = 32, max_length: int = 1024,
    device="cpu", dtype: str = "float32",
) -> dict:
    scored = evaluate_data(model_dir, data, batch_size, max_length, device, dtype)
    metrics = summarize(scored.scores)
    metrics["bad_rows"] = scored.bad_rows.count
    if output_json:
        os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
        write_text(output_json, json.dumps(metrics, indent=2))
    return metrics


def eval_rows(m: dict) -> list[tuple[str, str]]:
    """The metrics as (label, value) rows, for the console and the report."""
    rows = [("pairs", f"{m['n_pairs']}"), ("accuracy", f"{m['accuracy']:.3f}"), ("AUROC (reward)", f"{m['auroc']:.3f}")]
    for frac, v in m.get("prefix_auroc", {}).items():
        rows.append((f"AUROC (mean Q, first {float(frac):.0%})", f"{v:.3f}"))
    if "q_before_error" in m:
        rows.append(("rejected: mean Q before first wrong token", f"{m['q_before_error']:+.3f}"))
        rows.append(("rejected: mean Q after first wrong token", f"{m['q_after_error']:+.3f}"))
        rows.append(("chosen: mean Q over the same positions", f"{m['q_after_error_chosen']:+.3f}"))
    loc = m.get("localization", {})
    if loc:
        rows.append(("threshold at 5% false alarms on chosen", f"{loc['false_alarm_threshold']:+.3f}"))
        rows.append(("rejected tokens saved at that threshold", f"{loc['tokens_saved_at_5pct']:.1%}"))
    if loc.get("n_with_first_error"):
        if "auroc" in loc:
            rows.append(("AUROC (Q at and after the first error)", f"{loc['auroc']:.3f}"))
        for k in DETECT_WITHIN:
            rows.append((f"detected within {k} token{'s' if k > 1 else ''} of the error", f"{loc[f'detect_at_{k}']:.1%}"))
        rows.append(("cut before the error (early alarm)", f"{loc['early_alarm']:.1%}"))
        delay = loc["detection_delay"]
        rows.append(("mean detection delay", "n/a" if delay is None else f"{delay:.1f} tokens"))
    return rows
