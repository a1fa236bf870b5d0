"""Draw what the study dashboard shows, from a sweep dir on disk (no W&B account or network needed): the
summary table, the metric per regime with one point a seed, the paired differences against the baseline with
their 95% intervals, and the validation-loss curves. The same numbers the sweep's W&B summary run holds
(`summary`, `seeds`, `paired_differences`, `val_loss_curves`), laid out as `synthmed dashboard` lays them out.

    python scripts/make_dashboard_figure.py <sweep dir> [--metric test/iou_wt] [--out docs/figures/dashboard.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from synthmed.report import SEED_KEYS, collect_jobs, paired_differences, summarise, write_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="test/iou_wt")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/dashboard.png"))
    args = parser.parse_args()
    paths = write_summary(args.sweep_dir)
    jobs = collect_jobs(args.sweep_dir)
    keys, metrics, rows = summarise(jobs)
    if args.metric not in metrics:
        raise SystemExit(f"--metric {args.metric} is not among the sweep's test metrics {metrics}")
    label = [" ".join(f"{k}={row[k]}" for k in keys) for row in rows]

    fig = plt.figure(figsize=(12, 6.4), dpi=100)
    grid = fig.add_gridspec(2, 3, height_ratios=[0.6, 1.4])
    fig.suptitle(f"study dashboard: {args.sweep_dir.name} ({sum(j['status'] == 'ok' for j in jobs)} of "
                 f"{len(jobs)} jobs finished)", fontsize=11)

    ax = fig.add_subplot(grid[0, :])  # the summary table
    ax.axis("off")
    shown = [args.metric, *(m for m in metrics if m != args.metric)][:6]  # the study's metric first; room for 6
    cells = [[*(str(row[k]) for k in keys), str(row["n"]), str(row["failed"]),
              *(_cell(row[f"{m} mean"], row[f"{m} std"]) for m in shown)] for row in rows]
    table = ax.table(cellText=cells, colLabels=[*keys, "n", "failed", *(m.removeprefix("test/") for m in shown)],
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    ax.set_title("summary (mean ± std over seeds)", fontsize=9)

    ax = fig.add_subplot(grid[1, 0])  # the metric per regime, one point a seed
    for x, row in enumerate(rows):
        points = [(j["overrides"].get("seed"), float(j["test"][args.metric])) for j in jobs
                  if j["status"] == "ok" and j["test"].get(args.metric) is not None
                  and all(str(j["overrides"].get(k, "")) == str(row[k]) for k in keys if k not in SEED_KEYS)]
        ax.bar(x, row[f"{args.metric} mean"], color="#c8553d", alpha=0.7)
        ax.scatter([x] * len(points), [p for _, p in points], color="black", s=14, zorder=3)
    ax.set_xticks(range(len(rows)), label, rotation=20, ha="right", fontsize=8)
    ax.set_title(f"{args.metric}: one point a seed", fontsize=9)

    ax = fig.add_subplot(grid[1, 1])  # paired differences with 95% intervals
    diffs = [d for d in paired_differences(jobs, keys, metrics) if args.metric in d]
    for y, d in enumerate(diffs):
        entry = d[args.metric]
        low, high = entry["ci95"]
        if not math.isnan(low):
            ax.plot([low, high], [y, y], color="black")
        ax.scatter([entry["diff"]], [y], color="#c8553d", zorder=3)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(diffs)), [" ".join(f"{k}={d[k]}" for k in keys) for d in diffs], fontsize=8)
    ax.set_title(f"{args.metric} − baseline, same seed (95% CI)", fontsize=9)

    ax = fig.add_subplot(grid[1, 2])  # validation loss
    if paths["curves"].exists():
        ax.imshow(Image.open(paths["curves"]))
    ax.axis("off")
    ax.set_title("validation loss per epoch", fontsize=9)

    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


def _cell(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


if __name__ == "__main__":
    main()
