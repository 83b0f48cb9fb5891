"""`goalrm report`: score a run's exported model on preference data and write one self-contained HTML page."""

import json
import os
import time
from html import escape

from matplotlib.colors import Normalize, to_hex

from goalrm.atomic import write_text
from goalrm.config import ConfigError
from goalrm.data.errors import BadRowError
from goalrm.eval_cli import eval_rows, evaluate_data
from goalrm.evaluate import summarize, token_q_values
from goalrm.report import figures
from goalrm.report.html import img, metrics_table, page, section, token_heatmap

# a training output dir, as goalrm train lays it out (imported from goalrm.train it would pull in Ray)
MODEL_DIR, METRICS_FILE = "model", "metrics.jsonl"


def read_metrics(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BadRowError(path, line, None, f"malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
                raise BadRowError(path, line, "step", "expected an object with a numeric 'step'")
            rows.append(row)
    return rows


def _sample(i, pair, qs, rewards, tokenizer, colour) -> str:
    """Prompt, then chosen and rejected completions as Q heatmaps, and their Q traces."""
    q_chosen, q_rejected = qs[0][pair.chosen_start :], qs[1][pair.rejected_start :]
    error = None if pair.rejected_first_error is None else pair.rejected_first_error - pair.rejected_start
    chosen_marks, rejected_marks = {}, {}
    if error is not None:
        rejected_marks[error] = ("first-error", "first wrong token")
        if pair.chosen_start == pair.rejected_start:  # same prompt tokens: the positions line up
            chosen_marks[error] = ("same-position", "same position as the first wrong token of the rejected")
    verdict = "ranked right" if rewards[0] > rewards[1] else "ranked wrong"
    head = f'pair {i + 1} <span class="note">{verdict}, reward margin {rewards[0] - rewards[1]:+.3f}</span>'
    parts = [f'<div class="sample"><div class="label">{head}</div><div class="row"><div class="texts">']
    parts.append(f'<div class="prompt">{escape(tokenizer.decode(pair.chosen_ids[: pair.chosen_start], skip_special_tokens=True))}</div>')
    for name, ids, start, q, marks, reward in (
        ("chosen", pair.chosen_ids, pair.chosen_start, q_chosen, chosen_marks, rewards[0]),
        ("rejected", pair.rejected_ids, pair.rejected_start, q_rejected, rejected_marks, rewards[1]),
    ):
        tokens = [tokenizer.decode([t]) for t in ids[start:]]
        parts.append(f'<div class="label">{name} <span class="note">reward {reward:+.3f}</span></div>')
        parts.append(token_heatmap(tokens, q, [colour(v) for v in q], marks))
    parts.append("</div>" + img(figures.q_trace(q_chosen, q_rejected, error), f"Q along the completions of pair {i + 1}"))
    return "".join(parts) + "</div></div>"


def _localization_section(scores, metrics: dict) -> list[str]:
    """Only when the data says where rejected completions first go wrong (rejected_first_error)."""
    loc = metrics.get("localization", {})
    if not loc.get("n_with_first_error"):
        return []
    rows = [r for r in eval_rows(metrics) if r[0].startswith(("threshold", "rejected tokens", "AUROC (Q at", "detected", "cut before", "mean detection"))]
    figure = figures.error_localization(scores.q_chosen, scores.q_rejected, scores.first_error, loc["false_alarm_threshold"])
    note = (f'<p class="note">{loc["n_with_first_error"]} rejected completions with a known first wrong token. The threshold '
            "cuts at most 5% of the chosen completions; a cut is where goalrm score would stop the completion.</p>")
    return [section("Error localization", metrics_table(rows) + note + img(figure, "error localization"), "localization")]


def build_report(
    run_dir: str, data: str, output: str, samples: int = 4, batch_size: int = 32, max_length: int = 1024, device="cpu"
) -> dict:
    """Writes the report to `output` atomically; returns the evaluation metrics."""
    if samples < 1:
        raise ConfigError(f"report: samples must be >= 1, got {samples}")
    model_dir = os.path.join(run_dir, MODEL_DIR)
    scored = evaluate_data(model_dir, data, batch_size, max_length, device)
    if scored.goal is None:
        raise FileNotFoundError(f"{model_dir} has no goal_state.safetensors: the report's Q-values need one")
    metrics = summarize(scored.scores)
    shown = scored.pairs[:samples]
    qs = token_q_values(scored.model, shown, scored.tokenizer.pad_token_id, scored.goal, batch_size, device)
    rewards = list(zip(scored.scores.r_chosen, scored.scores.r_rejected))
    vmax = max(1e-6, *(abs(v) for p, (qc, qr) in zip(shown, qs) for v in qc[p.chosen_start :] + qr[p.rejected_start :]))
    norm, cmap = Normalize(-vmax, vmax), figures.q_colormap()

    metrics_path = os.path.join(run_dir, METRICS_FILE)
    if os.path.exists(metrics_path):
        curves = img(figures.training_curves(read_metrics(metrics_path)), "training curves")
    else:
        curves = f'<p class="note">No {METRICS_FILE} in {escape(run_dir)}.</p>'
    bad = f'<p class="note">{scored.bad_rows.count} bad rows skipped.</p>' if scored.bad_rows.count else ""
    sections = [
        section("Held-out evaluation", metrics_table(eval_rows(metrics)) + bad, "summary"),
        section("Training curves", curves, "training"),
        section(
            "AUROC against prefix, and rewards",
            '<div class="row">'
            + img(figures.prefix_auroc_curve(metrics["prefix_auroc"], metrics["auroc"]), "AUROC against prefix")
            + img(figures.reward_histograms(scored.scores.r_chosen, scored.scores.r_rejected), "reward histograms")
            + "</div>",
            "auroc",
        ),
        *_localization_section(scored.scores, metrics),
        section(
            "Token-level Q-values",
            img(figures.colorbar(vmax), "Q-value colour scale")
            + '<p class="note">Each completion token on a background coloured by its Q-value toward the goal state '
            "(hover for the value). A solid box marks the rejected completion's first wrong token, a dashed box the "
            "same position in the chosen one.</p>"
            + "".join(_sample(i, p, q, rewards[i], scored.tokenizer, lambda v: to_hex(cmap(norm(v)))) for i, (p, q) in enumerate(zip(shown, qs))),
            "qvalues",
        ),
    ]
    meta = f"run {escape(run_dir)} · data {escape(data)} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    html = page("goalrm report", meta, sections)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_text(output, html)
    return metrics
