"""What a sweep leaves in its output dir: results.csv (also printed), best.yaml, summary.json, metric.png."""

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field

import yaml

from goalrm.atomic import write_text
from goalrm.config import Config, config_from_dict
from goalrm.tune.plot import finite, plot_metric

RESULTS_FILE = "results.csv"
BEST_FILE = "best.yaml"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "metric.png"
# the exception lines of Ray's wrappers; the user's own error is the line worth showing
_RAY_WRAPPERS = ("ray.", "RayTaskError", "WorkerGroupError", "ControllerError", "TrainingFailedError", "TuneError")
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b[^:\s]*: ")


@dataclass
class TrialRecord:
    trial_id: str
    values: dict  # the swept keys' values
    reports: list[dict]  # the eval reports Tune got, in order
    max_steps: int
    done: bool  # Tune is through with it: completed, stopped early or failed
    error: str | None = None

    def last_run(self) -> list[dict]:
        """The reports of the trial's last run: a trial rerun on resume starts again at a lower step."""
        start = 0
        for i in range(1, len(self.reports)):
            if self.reports[i]["step"] <= self.reports[i - 1]["step"]:
                start = i
        return self.reports[start:]

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if not self.done:
            return "unfinished"
        reports = self.last_run()
        return "stopped early" if reports and reports[-1]["step"] < self.max_steps else "finished"


@dataclass
class SweepResult:
    metric: str
    rows: list[dict]  # one per trial, best first; the columns of results.csv
    best_trial: str | None
    best_value: float | None
    best_checkpoint: str | None  # Ray Train checkpoint of the best trial's best eval (DeepSpeed state, model/ after the last step)
    best_config: Config | None
    interrupted: bool  # some trials never finished: `goalrm tune --resume` runs them
    output_dir: str
    files: dict = field(default_factory=dict)


def short_error(text: str) -> str:
    """The innermost non-Ray exception line of a Tune error trace, e.g. 'FloatingPointError: non-finite loss ...',
    else Ray's out-of-memory line, else its last exception line."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if _ERROR_LINE.match(l)]
    own = [l for l in errors if not l.startswith(_RAY_WRAPPERS)]
    oom = [l for l in lines if "running low on memory" in l]  # Ray's memory monitor killed a worker
    line = (own or oom or errors or lines or ["unknown error"])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


def trial_row(rec: TrialRecord, metric: str, mode: str) -> dict:
    reports = rec.last_run()
    scored = [r for r in reports if finite(r.get(metric))]
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda r: r[metric]) if scored else {}
    final = reports[-1] if reports else {}
    row = {"trial": rec.trial_id, "status": rec.status, **rec.values}
    row[f"best_{metric}"] = best.get(metric)
    row["best_step"] = best.get("step")
    row[f"final_{metric}"] = final.get(metric)
    if metric != "eval_accuracy":
        row["final_eval_accuracy"] = final.get("eval_accuracy")
    row["steps"] = final.get("step", 0)
    row["error"] = short_error(rec.error) if rec.error else ""
    # checkpoints are saved every train.checkpoint_every steps, so the best eval may have none (Tune's
    # frame then holds NaN): the trial's checkpoint is its best-scoring eval that saved one
    saved = [r for r in scored if isinstance(r.get("checkpoint_path"), str) and r["checkpoint_path"]]
    kept = pick(saved, key=lambda r: r[metric]) if saved else {}
    row["checkpoint"] = kept.get("checkpoint_path", "")
    row["checkpoint_step"] = kept.get("step", "")
    return row


def sort_rows(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """Best first by each trial's best metric; failed trials and trials without a metric last."""
    sign = -1 if mode == "max" else 1

    def key(row):
        value = row[f"best_{metric}"]
        usable = row["status"] != "failed" and finite(value)
        return (not usable, row["status"] == "failed", sign * value if usable else 0.0, row["trial"])

    return sorted(rows, key=key)


def best_config(base: Config, values: dict) -> Config:
    """The complete config of a trial: what `goalrm train --config best.yaml` runs."""
    from goalrm.tune.space import apply_values

    return config_from_dict(apply_values(base.to_dict(), values), "best trial")


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(rows: list[dict]) -> str:
    """The results as aligned text; the checkpoint paths are left to results.csv."""
    if not rows:
        return "(no trials)"
    cols = [c for c in rows[0] if c not in ("checkpoint", "checkpoint_step")]
    cells = [cols] + [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summarize_sweep(records: list[TrialRecord], base: Config, spec, output_dir: str) -> SweepResult:
    """Write results.csv, best.yaml, summary.json and the plot for `records`, and print the table."""
    s = spec.settings
    keys = [a.key for a in spec.axes]
    rows = sort_rows([trial_row(r, s.metric, s.mode) for r in records], s.metric, s.mode)
    files = {"results": os.path.join(output_dir, RESULTS_FILE), "summary": os.path.join(output_dir, SUMMARY_FILE), "plot": os.path.join(output_dir, PLOT_FILE)}
    write_text(files["results"], _csv(rows))
    plot_metric(rows, keys, s.metric, files["plot"])

    best = rows[0] if rows and rows[0]["status"] != "failed" and finite(rows[0][f"best_{s.metric}"]) else None
    cfg = None
    if best:
        cfg = best_config(base, {k: best[k] for k in keys})
        header = f"# best trial {best['trial']} of {spec.source}: {s.metric} {best[f'best_{s.metric}']:.4f} at step {best['best_step']}\n"
        files["best_config"] = os.path.join(output_dir, BEST_FILE)
        write_text(files["best_config"], header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    result = SweepResult(
        metric=s.metric,
        rows=rows,
        best_trial=best["trial"] if best else None,
        best_value=best[f"best_{s.metric}"] if best else None,
        best_checkpoint=(best["checkpoint"] or None) if best else None,
        best_config=cfg,
        # a trial that never finished, or one a Ctrl+C between trials kept from being created at all
        interrupted=counts.get("unfinished", 0) > 0 or len(records) < spec.total_trials(),
        output_dir=output_dir,
        files=files,
    )
    summary = {
        "metric": s.metric,
        "mode": s.mode,
        "best_trial": result.best_trial,
        "best_value": result.best_value,
        "best_step": best["best_step"] if best else None,
        "best_checkpoint": result.best_checkpoint,
        "best_values": {k: best[k] for k in keys} if best else None,
        "trials": counts,
        "interrupted": result.interrupted,
        "files": files,
    }
    write_text(files["summary"], json.dumps(summary, indent=1))
    return result
