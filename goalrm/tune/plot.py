"""metric.png: each trial's best metric against λ and against every other swept key."""

import math

from goalrm.atomic import write_atomic

LAMBDA = "loss.contrastive_weight"
STYLES = {"finished": ("tab:blue", "o"), "stopped early": ("tab:orange", "v"), "unfinished": ("tab:gray", "s"), "failed": ("tab:red", "x")}


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def plot_metric(rows: list[dict], keys: list[str], metric: str, path: str) -> None:
    """The best metric of each trial against λ and against every other swept key, one panel per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [LAMBDA] + [k for k in keys if k != LAMBDA]
    scored = [r for r in rows if finite(r[f"best_{metric}"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [r.get(key) for r in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ticks = sorted({str(v) for v in values})
        for status, (color, marker) in STYLES.items():
            pts = [(v if numeric else ticks.index(str(v)), r[f"best_{metric}"]) for v, r in zip(values, scored) if r["status"] == status]
            if pts:
                ax.scatter(*zip(*pts), color=color, marker=marker, label=status)
        if not numeric:
            ax.set_xticks(range(len(ticks)), ticks)
        ax.set_xlabel("λ (loss.contrastive_weight)" if key == LAMBDA else key)
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    if scored:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
