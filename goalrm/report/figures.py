"""The report's plots, each rendered to PNG bytes; a bare Figure draws with Agg, needing no display or pyplot state."""

import io

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

CHOSEN, REJECTED, ERROR = "#1a9850", "#d73027", "#404040"
PREFIX_KEY = "eval_prefix_auroc_"  # metrics.jsonl: eval_prefix_auroc_<fraction>


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def q_colormap() -> ListedColormap:
    """Red (away from the goal) to green (toward it), lightened so black token text stays readable."""
    base = matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, 256))
    base[:, :3] = 0.6 * base[:, :3] + 0.4
    return ListedColormap(base)


def colorbar(vmax: float) -> bytes:
    fig = Figure(figsize=(5, 0.55))
    ax = fig.add_axes((0.05, 0.5, 0.9, 0.35))
    fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), q_colormap()), cax=ax, orientation="horizontal")
    ax.set_title("Q-value = cos(h_t, goal)", fontsize=9)
    ax.tick_params(labelsize=8)
    return _png(fig)


def training_curves(rows: list[dict]) -> bytes:
    """Losses per report; eval accuracy, AUROC and prefix AUROC per eval, from metrics.jsonl rows."""
    fig = Figure(figsize=(10, 3.6))
    loss_ax, eval_ax = fig.subplots(1, 2)
    for key, label in (("loss", "total"), ("bt_loss", "Bradley-Terry"), ("contrastive_loss", "contrastive")):
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if pts:
            loss_ax.plot(*zip(*pts), label=label)
    loss_ax.set(title="training loss", xlabel="step")
    evals = [r for r in rows if "eval_accuracy" in r]
    for key, label in (("eval_accuracy", "pairwise accuracy"), ("eval_auroc", "AUROC (reward)")):
        eval_ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", ms=3, label=label)
    prefixes = sorted({k[len(PREFIX_KEY) :] for r in evals for k in r if k.startswith(PREFIX_KEY)}, key=float)
    for i, frac in enumerate(prefixes):
        pts = [(r["step"], r[PREFIX_KEY + frac]) for r in evals if PREFIX_KEY + frac in r]
        colour = matplotlib.colormaps["Greens"](0.4 + 0.6 * (i + 1) / len(prefixes))
        eval_ax.plot(*zip(*pts), ls="--", color=colour, label=f"AUROC (mean Q, first {float(frac):.0%})")
    eval_ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    eval_ax.set(title="held-out evaluation", xlabel="step", ylim=(0.4, 1.0))
    for ax in (loss_ax, eval_ax):
        ax.grid(alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize=8, loc="best")
    if evals:  # beside the axes: the curves fill the plot wherever they end up
        eval_ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _png(fig)


def prefix_auroc_curve(prefix_auroc: dict, reward_auroc: float) -> bytes:
    fracs = sorted(prefix_auroc, key=float)
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot([100 * float(f) for f in fracs], [prefix_auroc[f] for f in fracs], marker="o", color=CHOSEN, label="mean Q over the prefix")
    ax.axhline(reward_auroc, color="#4575b4", ls="--", label=f"reward of the whole completion ({reward_auroc:.3f})")
    ax.axhline(0.5, color="#999", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="prefix of the completion (%)", ylabel="AUROC, chosen vs rejected", ylim=(0.4, 1.0), xlim=(0, 105))
    ax.set_title("telling chosen from rejected from a partial completion", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def error_localization(q_chosen: list, q_rejected: list, first_error: list, threshold: float, max_k: int = 32) -> bytes:
    """Mean Q around the first wrong token (rejected) and at the same offsets (chosen); and the share of
    rejected completions the 5%-false-alarm threshold has cut, k tokens after the first error."""
    from goalrm.localization import cut_at, detection_curve

    known = [(e, c, r) for e, c, r in zip(first_error, q_chosen, q_rejected) if e is not None and e < len(r)]
    fig = Figure(figsize=(10, 3.4))
    around_ax, detect_ax = fig.subplots(1, 2)
    offsets = range(-8, 17)
    for which, name, colour in ((1, "chosen", CHOSEN), (2, "rejected", REJECTED)):
        means = []
        for d in offsets:  # the completions that have a token d after (or before) their first error
            vals = [row[which][row[0] + d] for row in known if 0 <= row[0] + d < len(row[which])]
            means.append(np.mean(vals) if vals else np.nan)
        around_ax.plot(list(offsets), means, marker="o", ms=3, color=colour, label=name)
    around_ax.axvline(0, color=ERROR, lw=0.8, ls="--", label="first wrong token")
    around_ax.axhline(threshold, color="#999", lw=0.8, ls=":", label=f"threshold ({threshold:+.2f})")
    around_ax.set(xlabel="tokens from the first error", ylabel="mean Q")
    around_ax.set_title("Q around the first error", fontsize=10)
    curve = detection_curve([cut_at(r, threshold) for _, _, r in known], [e for e, _, _ in known], max_k)
    detect_ax.plot(range(1, max_k + 1), curve, color=REJECTED)
    detect_ax.set(xlabel="k: tokens after the first error", ylabel="rejected completions cut", ylim=(0, 1))
    detect_ax.set_title("detection at 5% false alarms on chosen", fontsize=10)
    for ax in (around_ax, detect_ax):
        ax.grid(alpha=0.3)
    around_ax.legend(fontsize=8)
    return _png(fig)


def reward_histograms(r_chosen: list, r_rejected: list) -> bytes:
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    bins = np.histogram_bin_edges(np.concatenate([r_chosen, r_rejected]), bins=30)
    ax.hist(r_chosen, bins=bins, alpha=0.6, color=CHOSEN, label=f"chosen (mean {np.mean(r_chosen):+.2f})")
    ax.hist(r_rejected, bins=bins, alpha=0.6, color=REJECTED, label=f"rejected (mean {np.mean(r_rejected):+.2f})")
    ax.set(xlabel="reward", ylabel="completions")
    ax.set_title("rewards of chosen and rejected completions", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def q_trace(q_chosen: list, q_rejected: list, first_error: int | None) -> bytes:
    """Q along each completion, token by token; `first_error` indexes into the rejected completion."""
    fig = Figure(figsize=(5.5, 2.4))
    ax = fig.subplots()
    ax.plot(q_chosen, color=CHOSEN, marker=".", label="chosen")
    ax.plot(q_rejected, color=REJECTED, marker=".", label="rejected")
    if first_error is not None:
        ax.axvline(first_error, color=ERROR, ls="--", lw=1, label="first wrong token")
    ax.set(xlabel="completion token", ylabel="Q")
    ax.grid(alpha=0.3)
    ax.set_title("Q along the completions", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    return _png(fig)
