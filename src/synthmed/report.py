"""Sweep tables: `python -m synthmed.report <sweep_dir>` (also run by Hydra after every job of a multirun).

Reads each job dir of a sweep (`.hydra/overrides.yaml`, `metrics.json`, `error.txt`), groups jobs by the
swept keys other than `seed`, and writes `summary.csv`, `summary.md` and `summary.png` into the sweep dir:
mean ± std and n over seeds of every test metric, with failed jobs listed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from synthmed.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

SEED_KEYS = ("seed",)


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record a job: its number, overrides, status, test metrics, config and failure reason."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep_dir} does not exist")
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = dict(_parse_override(o) for o in (yaml.safe_load(overrides_file.read_text()) or []))
        metrics_file, error_file = job_dir / "metrics.json", job_dir / "error.txt"
        record: dict[str, Any] = {"job": job_dir.name, "dir": str(job_dir), "overrides": overrides, "test": {}}
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            record.update(status=metrics.get("status", "ok"), test=metrics.get("test", {}), metrics=metrics)
        elif error_file.exists():
            lines = [line for line in error_file.read_text().strip().splitlines() if line.strip()]
            record.update(status="failed", error=lines[-1] if lines else "unknown error")
        else:
            record.update(status="running or killed", error="no metrics.json and no error.txt")
        config_file = job_dir / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
        record["optimized_metric"] = (config or {}).get("optimized_metric")
        record["report"] = (config or {}).get("report") or {}
        record["curve"] = _val_curve(job_dir / "csv" / "metrics.csv")
        jobs.append(record)
    jobs.sort(key=lambda r: int(r["job"]) if r["job"].isdigit() else r["job"])
    return jobs


def _val_curve(csv_file: Path, key: str = "val/loss") -> list[tuple[int, float]]:
    """(epoch, value) of a job's validation loss from its CSV log; empty when there is none."""
    import csv

    if not csv_file.exists():
        return []
    with csv_file.open(newline="") as f:
        return [(int(float(r["epoch"])), float(r[key])) for r in csv.DictReader(f) if r.get(key) and r.get("epoch")]


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """The override keys whose value differs between jobs, in the order they appear."""
    keys: list[str] = []
    for job in jobs:
        for key in job["overrides"]:
            if key not in keys:
                keys.append(key)
    return [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(jobs: list[dict[str, Any]]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Group jobs by swept keys other than seed: `(group keys, metric names, rows)`."""
    keys = [k for k in swept_keys(jobs) if k not in SEED_KEYS]
    metrics = sorted({m for job in jobs for m in job["test"]})
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(tuple(job["overrides"].get(k, "") for k in keys), []).append(job)
    rows = []
    for values, members in groups.items():
        ok = [j for j in members if j["status"] == "ok"]
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row.update(n=len(ok), failed=len(members) - len(ok))
        for metric in metrics:
            found = [float(j["test"][metric]) for j in ok if j["test"].get(metric) is not None]  # null: undefined
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(found) if found else (math.nan, math.nan)
        rows.append(row)
    return keys, metrics, rows


def paired_differences(jobs: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """For every row, the paired difference of each metric against the baseline row (`report.baseline`,
    e.g. `{aug: none}`), jobs paired by seed, with a two-sided paired t-test across seeds."""
    from scipy import stats

    baseline = next((j["report"].get("baseline") for j in jobs if j["report"].get("baseline")), None)
    if not baseline or not all(k in keys for k in baseline):
        return []
    ok = [j for j in jobs if j["status"] == "ok"]

    def row_of(job):
        return tuple(job["overrides"].get(k, "") for k in keys)

    def seed_of(job):
        return job["overrides"].get("seed", job.get("metrics", {}).get("seed"))

    base_jobs = [j for j in ok if all(str(j["overrides"].get(k)) == str(v) for k, v in baseline.items())]
    others = [k for k in keys if k not in baseline]
    out = []
    for row in dict.fromkeys(row_of(j) for j in ok):
        members = [j for j in ok if row_of(j) == row]
        if members and members[0] in base_jobs:
            continue
        entry: dict[str, Any] = dict(zip(keys, row, strict=True))
        for metric in metrics:
            pairs = []
            for job in members:
                match = [b for b in base_jobs if seed_of(b) == seed_of(job)
                         and all(b["overrides"].get(k) == job["overrides"].get(k) for k in others)]
                if match and job["test"].get(metric) is not None and match[0]["test"].get(metric) is not None:
                    pairs.append(float(job["test"][metric]) - float(match[0]["test"][metric]))
            if not pairs:
                continue
            p = low = high = math.nan  # a paired t-test is a one-sample t-test of the differences
            mean = sum(pairs) / len(pairs)
            if len(pairs) > 1 and any(d != pairs[0] for d in pairs):
                test = stats.ttest_1samp(pairs, 0.0)
                p = float(test.pvalue)
                low, high = (float(v) for v in test.confidence_interval(0.95))
            entry[metric] = {"diff": mean, "n": len(pairs), "p": p, "ci95": [low, high]}
        out.append(entry)
    return out


def _fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def write_summary(sweep_dir: str | Path) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; returns their paths."""
    import csv

    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    keys, metrics, rows = summarise(jobs)
    paths = {name: sweep_dir / f"summary.{name}" for name in ("csv", "md", "png")}
    paths["curves"] = sweep_dir / "summary_val_loss.png"

    columns = [*keys, "n", "failed", *(f"{m} {s}" for m in metrics for s in ("mean", "std"))]
    with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    header = [*keys, "n", *metrics]
    lines = [f"# Sweep summary: {sweep_dir.name}", "",
             f"{len(jobs)} jobs, {sum(j['status'] == 'ok' for j in jobs)} finished. "
             "Cells: mean ± std over seeds (n = finished jobs in the row).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[k]) for k in keys] + [str(row["n"])]
        cells += [_fmt(row[f"{m} mean"], row[f"{m} std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    reference = next((j["report"].get("reference") for j in jobs if j["report"].get("reference")), None)
    if reference and reference.get("by") in keys:
        by, ref_metric = reference["by"], reference.get("metric")
        lines += ["", f"## Reference ({reference.get('source', 'the study')})", "",
                  f"| {by} | {ref_metric}: reference | {ref_metric}: here (mean ± std, n) |", "|---|---|---|"]
        for row in rows:
            ref = (reference.get("values") or {}).get(str(row[by]))
            here = _fmt(row.get(f"{ref_metric} mean", math.nan), row.get(f"{ref_metric} std", math.nan))
            lines.append(f"| {row[by]} | {'n/a' if ref is None else f'{float(ref):.4f}'} | {here} (n={row['n']}) |")
    diffs = paired_differences(jobs, keys, metrics)
    if diffs:
        baseline = next(j["report"]["baseline"] for j in jobs if j["report"].get("baseline"))
        shown = " ".join(f"{k}={v}" for k, v in baseline.items())
        lines += ["", f"## Paired difference against {shown}", "",
                  "Mean over seeds of (row − baseline) for the same seed, [its 95% confidence interval]; p: "
                  "two-sided paired t-test across seeds (n/a with fewer than 2 pairs).", "",
                  "| " + " | ".join([*keys, *metrics]) + " |", "|" + "---|" * (len(keys) + len(metrics))]
        for entry in diffs:
            cells = [str(entry[k]) for k in keys]
            for metric in metrics:
                d = entry.get(metric)
                p = "n/a" if d is None or math.isnan(d["p"]) else f"{d['p']:.3g}"
                ci = "" if d is None or math.isnan(d["ci95"][0]) else f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                cells.append("n/a" if d is None else f"{d['diff']:+.4f}{ci} (n={d['n']}, p={p})")
            lines.append("| " + " | ".join(cells) + " |")
    failed = [j for j in jobs if j["status"] != "ok"]
    if failed:
        lines += ["", "## Failed jobs", ""]
        for job in failed:
            shown = " ".join(f"{k}={v}" for k, v in job["overrides"].items())
            lines.append(f"- job {job['job']} ({shown}): {job['status']}: {job.get('error', '')}")
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    _plot(rows, keys, metrics, jobs, paths["png"])
    _plot_curves(jobs, keys, paths["curves"])
    return paths


def _plot_curves(jobs, keys, path: Path) -> None:
    """Validation loss per epoch, one line per row (mean over its seeds), as the study showed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[list[tuple[int, float]]]] = {}
    for job in jobs:
        if job["curve"]:
            label = " ".join(f"{k}={job['overrides'].get(k, '')}" for k in keys) or "all"
            groups.setdefault(label, []).append(job["curve"])
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for label, curves in groups.items():
        by_epoch: dict[int, list[float]] = {}
        for curve in curves:
            for epoch, value in curve:
                by_epoch.setdefault(epoch, []).append(value)
        epochs = sorted(by_epoch)
        ax.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], marker="o", ms=3,
                label=f"{label} (n={len(curves)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _plot(rows, keys, metrics, jobs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preferred = next((j["optimized_metric"] for j in jobs if j.get("optimized_metric") in metrics), None)
    shown = [preferred] if preferred else metrics[:4]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(1.6 + 1.4 * max(1, len(rows)) * max(1, len(shown)), 3.6),
                             dpi=110, squeeze=False)
    labels = [" ".join(f"{k}={row[k]}" for k in keys) or "all" for row in rows]
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


class SweepSummaryCallback(Callback):
    """Rewrites the sweep summary after every job and at the end of the multirun, so a failed or killed
    job never loses the others' results."""

    def _write(self, sweep_dir: str) -> None:
        try:
            paths = write_summary(sweep_dir)
            log.info("sweep summary: %s", paths["md"])
        except Exception as err:  # a broken report must never take a job down with it
            log.warning("could not write the sweep summary of %s: %s", sweep_dir, err)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hc = HydraConfig.get()
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            self._write(hc.sweep.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra skips on_multirun_end when a job failed (the sweeper re-raises the job's error after all jobs
        # ran), so the final summary is also registered to run when the process exits, whatever the outcome.
        self._finished = False
        atexit.register(self._finish, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def _finish(self, config: DictConfig) -> None:
        if getattr(self, "_finished", False):
            return
        self._finished = True
        sweep_dir = Path(config.hydra.sweep.dir)
        if not collect_jobs(sweep_dir):
            return
        self._write(str(sweep_dir))
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if not wandb_cfg:
            return
        # a fresh process: at exit this one's W&B service is already shut down
        command = [sys.executable, "-m", "synthmed.report", str(sweep_dir), "--wandb-project",
                   str(wandb_cfg.get("project", "synthmed")), "--name", f"{config.get('name', 'sweep')} summary"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:  # the files on disk are the record; W&B is a view of them
            log.warning("could not log the sweep summary to W&B: %s", proc.stderr.strip().splitlines()[-1:])


def log_summary_to_wandb(sweep_dir: Path, project: str, name: str) -> None:
    """Log the summary table (as a `wandb.Table`), the failed jobs and the pictures to a W&B run of the
    sweep's group (mode from WANDB_MODE, offline by default; nothing when it is disabled)."""
    import csv
    import os

    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled" or not (sweep_dir / "summary.csv").exists():
        return
    import wandb

    with (sweep_dir / "summary.csv").open(newline="") as f:
        table = list(csv.reader(f))
    run = wandb.init(project=project, dir=str(sweep_dir), mode=mode, group=sweep_dir.name, job_type="summary",
                     name=name)
    try:
        logged: dict[str, Any] = {"summary": wandb.Table(columns=table[0], data=table[1:])}
        for key, name in (("summary_chart", "summary.png"), ("val_loss_curves", "summary_val_loss.png")):
            if (sweep_dir / name).exists():
                logged[key] = wandb.Image(str(sweep_dir / name))
        jobs = collect_jobs(sweep_dir)
        keys, metrics, _ = summarise(jobs)
        failed = [j for j in jobs if j["status"] != "ok"]
        logged["failed_jobs"] = wandb.Table(columns=["job", "overrides", "status", "error"], data=[
            [j["job"], " ".join(f"{k}={v}" for k, v in j["overrides"].items()), j["status"], j.get("error", "")] for j in failed])
        # one row a finished job: a W&B chart of a metric per regime with one point per seed
        logged["seeds"] = wandb.Table(columns=["job", *keys, "seed", *metrics], data=[
            [j["job"], *(j["overrides"].get(k, "") for k in keys), j["overrides"].get("seed", j.get("metrics", {}).get("seed")),
             *(j["test"].get(m) for m in metrics)] for j in jobs if j["status"] == "ok"])
        diffs = paired_differences(jobs, keys, metrics)
        logged["paired_differences"] = wandb.Table(
            columns=[*keys, "metric", "diff", "ci95_low", "ci95_high", "p", "n"],
            data=[[*(d[k] for k in keys), m, d[m]["diff"], *_nullable(d[m]["ci95"]), *_nullable([d[m]["p"]]), d[m]["n"]]
                  for d in diffs for m in metrics if m in d])
        run.summary["jobs_failed"] = len(failed)
        run.summary["jobs_finished"] = len(jobs) - len(failed)
        run.log(logged)
    finally:
        run.finish()


def _nullable(values: list[float]) -> list[float | None]:
    return [None if v is None or math.isnan(v) else v for v in values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthmed.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (holds one numbered dir a job)")
    parser.add_argument("--wandb-project", help="also log the summary to a W&B run of this project "
                        "(grouped by the sweep's name; mode from WANDB_MODE, offline by default)")
    parser.add_argument("--name", help="the W&B run's name (default: '<sweep dir name> summary')")
    args = parser.parse_args(argv)
    try:
        if not collect_jobs(args.sweep_dir):
            raise FileNotFoundError(f"{args.sweep_dir} holds no job dirs (*/.hydra/overrides.yaml)")
        paths = write_summary(args.sweep_dir)
        if args.wandb_project:
            log_summary_to_wandb(args.sweep_dir, args.wandb_project, args.name or f"{args.sweep_dir.name} summary")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
