"""The sweep summary's pictures (synthmed.report): the comparison bars, the validation-loss curves and the
data-efficiency curve."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from synthmed.utils import atomic_path


def group_label(values: dict[str, Any], keys: list[str]) -> str:
    """A row's or job's name in plots: `key=value` for each of `keys` it has (aug=none has no aug.pairs.*), or "all"."""
    return " ".join(f"{k}={values[k]}" for k in keys if values.get(k, "") != "") or "all"


def plot_efficiency(points: dict[str, dict[str, list[dict[str, Any]]]], x_key: str, x_label: str | None,
                     metric: str, baseline: str, path: Path) -> None:
    """`efficiency_points` drawn: the metric against `x_key` per line (mean ± std over seeds), and beside it the
    paired differences against the baseline with their 95% confidence intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if points["diffs"] else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), dpi=110, squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {label: cycle[i % len(cycle)] for i, label in enumerate(dict.fromkeys([*points["values"], *points["diffs"]]))}
    ax = axes[0][0]
    for label, line in points["values"].items():
        ax.errorbar([p["x"] for p in line], [p["mean"] for p in line], yerr=[p["std"] for p in line], marker="o",
                    ms=4, capsize=3, color=colour[label], label=f"{label} (n={', '.join(str(p['n']) for p in line)})")
    ax.set_xlabel(x_label or x_key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0][1]
        ax.axhline(0.0, color="grey", lw=0.8)
        for label, line in points["diffs"].items():
            low = [0.0 if math.isnan(p["ci95"][0]) else p["diff"] - p["ci95"][0] for p in line]
            high = [0.0 if math.isnan(p["ci95"][1]) else p["ci95"][1] - p["diff"] for p in line]
            ax.errorbar([p["x"] for p in line], [p["diff"] for p in line], yerr=[low, high], marker="o", ms=4,
                        capsize=3, color=colour[label], label=label)
        ax.set_xlabel(x_label or x_key)
        ax.set_ylabel(f"Δ {metric}")
        ax.set_title(f"paired difference against {baseline}: mean, 95% CI", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_curves(jobs, keys, path: Path) -> None:
    """Validation loss, one line per row (mean over its seeds), as the study showed: against the optimiser step when
    the jobs ran at equal steps (their protocol's `compare_at: step`), else against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [job for job in jobs if job["curve"]]
    if not with_curves:
        return
    axis = "step" if all(job.get("compare_at") == "step" for job in with_curves) else "epoch"
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for job in with_curves:
        label = group_label(job["overrides"], keys)
        groups.setdefault(label, []).append(job["curve"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for label, curves in groups.items():
        by_x: dict[int, list[float]] = {}
        for curve in curves:
            for point in curve:
                by_x.setdefault(point[axis], []).append(point["value"])
        xs = sorted(by_x)
        ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="o", ms=3, label=f"{label} (n={len(curves)})")
    ax.set_xlabel("optimiser step" if axis == "step" else "epoch")
    ax.set_ylabel("validation loss (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_bars(rows, keys, metrics, jobs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preferred = next((j["optimized_metric"] for j in jobs if j.get("optimized_metric") in metrics), None)
    shown = [preferred] if preferred else metrics[:4]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(1.6 + 1.4 * max(1, len(rows)) * max(1, len(shown)), 3.6),
                             dpi=110, squeeze=False)
    labels = [group_label(row, keys) for row in rows]
    for ax, metric in zip(axes[0], shown or [None], strict=False):
        if metric is None:
            ax.text(0.5, 0.5, "no finished job", ha="center", va="center")
            ax.set_axis_off()
            continue
        means = [row[f"{metric} mean"] for row in rows]
        stds = [row[f"{metric} std"] for row in rows]
        ax.bar(range(len(rows)), [0 if math.isnan(m) else m for m in means],
               yerr=[0 if math.isnan(s) else s for s in stds], capsize=4, color="#c8553d", alpha=0.8)
        for x, row in enumerate(rows):  # one point a seed: the spread the mean hides
            points = [float(j["test"][metric]) for j in jobs if j["status"] == "ok" and j["test"].get(metric) is not None
                      and all(str(j["overrides"].get(k, "")) == str(row[k]) for k in keys)]
            offsets = [0.0] if len(points) == 1 else [-0.2 + 0.4 * i / (len(points) - 1) for i in range(len(points))]
            ax.scatter([x + o for o in offsets], points, s=14, color="black", zorder=3)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} (mean ± std, n = {', '.join(str(r['n']) for r in rows)})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
