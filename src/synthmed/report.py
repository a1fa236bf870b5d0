"""Sweep tables: `python -m synthmed.report <sweep_dir> [<sweep_dir> ... --out DIR]` (also run by Hydra after every
job of a multirun).

Reads each job dir of a sweep (`.hydra/overrides.yaml`, `.hydra/config.yaml`, `metrics.json`, `error.txt`:
synthmed.report_jobs; several sweeps are read as one study), groups
jobs by the swept keys other than `seed`, and writes `summary.csv`, `summary.md` and `summary.png` into the sweep
dir: mean ± std and n over seeds of every test metric, the optimiser steps the jobs took and the protocol they ran
under, the paired difference of every row against the experiment's baseline (`report.baseline`, same seed and same
other keys) with its 95% interval and p-value, the reference numbers beside ours (`report.reference`), the
validation-loss curves (`summary_val_loss.png`), and, when the experiment's `report.data_efficiency.key` is swept,
`summary_data_efficiency.png` (the headline metric against that key, a line per row of the other keys).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from synthmed.report_jobs import collect_jobs, collect_sweeps, config_value, record_sweeps
from synthmed.report_plots import group_label, plot_bars, plot_curves, plot_efficiency
from synthmed.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

SEED_KEYS = ("seed",)


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


def _steps(members: list[dict[str, Any]]) -> int | str:
    """The optimiser steps the finished jobs of a row took: one number when equal, `min-max` otherwise, "" if unknown."""
    steps = sorted({int(j["metrics"]["steps"]) for j in members
                    if j["status"] == "ok" and j.get("metrics", {}).get("steps") is not None})
    if not steps:
        return ""
    return steps[0] if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"


def _seed_of(job: dict[str, Any]) -> Any:
    return job["overrides"].get("seed", job.get("metrics", {}).get("seed"))


def _one_job_a_seed(keys: list[str], values: tuple, ok: list[dict[str, Any]]) -> None:
    """A row's finished jobs must be distinct seeds: two of one seed ran under settings no override tells apart
    (two days' defaults), and pooled they would count the seed twice in the mean, the n and the paired test."""
    seen: dict[Any, str] = {}
    for job in ok:
        seed = _seed_of(job)
        if seed in seen:
            row = ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)) or "(one row)"
            raise ValueError(f"jobs {seen[seed]} and {job['job']} both give seed {seed} to the row {row}: they differ in "
                             f"something no override names (a changed default?). Report them apart")
        seen[seed] = job["job"]


def summarise(jobs: list[dict[str, Any]]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Group jobs by swept keys other than seed: `(group keys, metric names, rows)`. A row holds its keys, `n`
    (finished jobs), `failed`, `steps` (the optimiser steps they took) and `<metric> mean` / `<metric> std`.
    Two finished jobs of one seed in a row are an error (`_one_job_a_seed`)."""
    keys = [k for k in swept_keys(jobs) if k not in SEED_KEYS]
    metrics = sorted({m for job in jobs for m in job["test"]})
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(tuple(job["overrides"].get(k, "") for k in keys), []).append(job)
    rows = []
    for values, members in groups.items():
        ok = [j for j in members if j["status"] == "ok"]
        _one_job_a_seed(keys, values, ok)
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row.update(n=len(ok), failed=len(members) - len(ok), steps=_steps(members))
        if "protocol" not in keys:  # the protocol the row's jobs ran under (protocol=...), when they have one
            row["protocol"] = ", ".join(sorted({j["protocol"] for j in members if j.get("protocol")}))
        for metric in metrics:
            found = [float(j["test"][metric]) for j in ok if j["test"].get(metric) is not None]  # null: undefined
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(found) if found else (math.nan, math.nan)
        rows.append(row)
    return keys, metrics, rows


def paired_stats(differences: list[float]) -> dict[str, Any]:
    """The paired comparison of a row with its baseline from `differences` (row − baseline, one per pair, e.g. per
    seed): `diff` (their mean), `n`, `ci95` (the 95% confidence interval of the mean, t distribution with n − 1
    degrees of freedom) and `p` (two-sided paired t-test, i.e. a one-sample t-test of the differences against 0).
    `ci95` and `p` are NaN with fewer than 2 pairs or when every difference is the same (no spread to test)."""
    from scipy import stats

    n = len(differences)
    if not n:
        raise ValueError("paired_stats needs at least one difference")
    mean = sum(differences) / n
    p = low = high = math.nan
    if n > 1 and any(d != differences[0] for d in differences):
        test = stats.ttest_1samp(differences, 0.0)
        p = float(test.pvalue)
        low, high = (float(v) for v in test.confidence_interval(0.95))
    return {"diff": mean, "n": n, "p": p, "ci95": [low, high]}


def _baseline(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((j["report"].get("baseline") for j in jobs if j["report"].get("baseline")), None)


def paired_differences(jobs: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """For every row, the paired difference of each metric against the baseline (`report.baseline`, e.g.
    `{aug: none}`): each job paired with the baseline job of the same seed and the same values of the other swept
    keys (e.g. the same data.num_train_slices; not the keys under a baseline key, such as aug.pairs.tumours, which
    only the row's regime has), summarised by `paired_stats`."""
    baseline = _baseline(jobs)
    if not baseline or not all(k in keys for k in baseline):
        return []
    ok = [j for j in jobs if j["status"] == "ok"]

    def row_of(job):
        return tuple(job["overrides"].get(k, "") for k in keys)

    base_jobs = [j for j in ok if all(str(j["overrides"].get(k)) == str(v) for k, v in baseline.items())]
    # a key under a baseline key (aug.pairs.tumours under aug) is part of the row's regime, which the baseline
    # regime has no value for: it is not a setting the pair must share
    others = [k for k in keys if k not in baseline and not any(k.startswith(f"{b}.") for b in baseline)]
    out = []
    for row in dict.fromkeys(row_of(j) for j in ok):
        members = [j for j in ok if row_of(j) == row]
        if members and members[0] in base_jobs:
            continue
        entry: dict[str, Any] = dict(zip(keys, row, strict=True))
        for metric in metrics:
            pairs = []
            for job in members:
                match = [b for b in base_jobs if _seed_of(b) == _seed_of(job)
                         and all(b["overrides"].get(k) == job["overrides"].get(k) for k in others)]
                if match and job["test"].get(metric) is not None and match[0]["test"].get(metric) is not None:
                    pairs.append(float(job["test"][metric]) - float(match[0]["test"][metric]))
            if pairs:
                entry[metric] = paired_stats(pairs)
        out.append(entry)
    return out


def _fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def _headline_metric(jobs: list[dict[str, Any]], metrics: list[str]) -> str | None:
    """The metric the study is about: the reference's metric, else the experiment's optimized_metric (when measured)."""
    reference = _reference(jobs)
    if reference and reference.get("metric") in metrics:
        return reference["metric"]
    return next((j["optimized_metric"] for j in jobs if j.get("optimized_metric") in metrics), None)


def _reference(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((j["report"].get("reference") for j in jobs if j["report"].get("reference")), None)


def _comparable_reference(reference: dict[str, Any] | None, jobs: list[dict[str, Any]],
                          keys: list[str]) -> dict[str, Any] | None:
    """`reference`, or None when a key of its `when` that the sweep does not vary has another value in every job
    (e.g. a sweep at data.num_train_slices=50 alone: the study's 290-slice numbers are not comparable)."""
    if not reference:
        return None
    from omegaconf import OmegaConf

    for key, wanted in (reference.get("when") or {}).items():
        if key in keys:
            continue  # swept: judged row by row (_reference_value)
        values = {job["overrides"][key] if key in job["overrides"] else
                  config_value(OmegaConf.create(job["config"]), key) for job in jobs if job["status"] == "ok"}
        values.discard(None)  # a job config without the key: nothing to judge by
        if values and str(wanted) not in values:
            return None
    return reference


def _reference_value(reference: dict[str, Any] | None, row: dict[str, Any], keys: list[str]) -> float | None:
    """The reference number for `row`: by its `reference.by` value, only when the row has the swept keys'
    values of `reference.when` (e.g. the study's 290 real slices)."""
    if not reference or reference.get("by") not in keys:
        return None
    when = reference.get("when") or {}
    if any(key in keys and str(row[key]) != str(value) for key, value in when.items()):
        return None
    value = (reference.get("values") or {}).get(str(row[reference["by"]]))
    return None if value is None else float(value)


def _fmt_diff(d: dict[str, Any] | None, with_p: bool = True) -> str:
    if d is None:
        return "n/a"
    ci = "" if math.isnan(d["ci95"][0]) else f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
    p = "n/a" if math.isnan(d["p"]) else f"{d['p']:.3g}"
    return f"{d['diff']:+.4f}{ci} (n={d['n']}, p={p})" if with_p else f"{d['diff']:+.4f}{ci} (n={d['n']})"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _swept_efficiency(jobs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any] | None:
    """The experiment's `report.data_efficiency` entry ({key, label}; a list of them: the first) whose key the
    sweep varies, or None."""
    entries = next((j["report"].get("data_efficiency") for j in jobs if j["report"].get("data_efficiency")), None)
    entries = [entries] if isinstance(entries, dict) else list(entries or [])
    return next((e for e in entries if e.get("key") in keys), None)


def efficiency_points(rows: list[dict[str, Any]], keys: list[str], x_key: str, metric: str,
                      diffs: list[dict[str, Any]] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The points of the data-efficiency plot: one line per combination of the row keys other than `x_key` (e.g.
    one per regime), its points sorted by `x_key`'s (numeric) value. Returns `{"values": {line: [{x, mean, std, n}]},
    "diffs": {line: [{x, diff, ci95, n}]}}`; `diffs` (from `paired_differences`) pairs jobs of the same seed and
    the same `x_key` value. Rows whose `x_key` is not a number (null: all slices) or without a finished job are left out."""
    others = [k for k in keys if k != x_key]

    values: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        x, mean = _number(row[x_key]), row.get(f"{metric} mean", math.nan)
        if x is not None and row["n"] and not math.isnan(mean):
            values.setdefault(group_label(row, others), []).append({"x": x, "mean": mean, "std": row[f"{metric} std"], "n": row["n"]})
    differences: dict[str, list[dict[str, Any]]] = {}
    for entry in diffs or []:
        x = _number(entry[x_key])
        if x is not None and metric in entry:
            differences.setdefault(group_label(entry, others), []).append({"x": x, **entry[metric]})
    for points in (*values.values(), *differences.values()):
        points.sort(key=lambda p: p["x"])
    return {"values": values, "diffs": differences}


def write_summary(sweep_dir: str | Path, jobs: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write summary.csv, summary.md, summary.png and summary_val_loss.png into `sweep_dir` (and
    summary_data_efficiency.png when the experiment's `report.data_efficiency.key` is swept); returns their paths.
    `jobs`: the jobs to summarise (`collect_sweeps` of several sweeps), by default those of `sweep_dir`."""
    import csv

    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir) if jobs is None else jobs
    keys, metrics, rows = summarise(jobs)
    paths = {name: sweep_dir / f"summary.{name}" for name in ("csv", "md", "png")}
    paths["curves"] = sweep_dir / "summary_val_loss.png"
    diffs = [d for d in paired_differences(jobs, keys, metrics) if any(m in d for m in metrics)]  # rows with pairs
    diff_of = {tuple(str(d[k]) for k in keys): d for d in diffs}
    baseline = _baseline(jobs) if diffs else None
    shown_baseline = " ".join(f"{k}={v}" for k, v in (baseline or {}).items())
    protocols = sorted({j["protocol"] for j in jobs if j.get("protocol")})
    protocol_column = bool(protocols) and "protocol" not in keys

    columns = [*keys, *(["protocol"] if protocol_column else []), "n", "failed", "steps"]
    for metric in metrics:
        columns += [f"{metric} mean", f"{metric} std"]
        if diffs:
            columns += [f"{metric} diff", f"{metric} diff ci95 low", f"{metric} diff ci95 high", f"{metric} diff p",
                        f"{metric} pairs"]
    with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            out = dict(row)
            entry = diff_of.get(tuple(str(row[k]) for k in keys), {})
            for metric in metrics:
                d = entry.get(metric)
                if d is not None:
                    out.update({f"{metric} diff": d["diff"], f"{metric} diff ci95 low": d["ci95"][0],
                                f"{metric} diff ci95 high": d["ci95"][1], f"{metric} diff p": d["p"],
                                f"{metric} pairs": d["n"]})
            writer.writerow(out)

    protocol_line = ""
    if protocols:
        protocol_line = (f" Protocol: {', '.join(protocols)} (`protocol=`; steps: the optimiser steps the row's jobs "
                         "took).")
    lines = [f"# Sweep summary: {sweep_dir.name}", "",
             f"{len(jobs)} jobs, {sum(j['status'] == 'ok' for j in jobs)} finished.{protocol_line}", ""]

    headline = _headline_metric(jobs, metrics)
    reference = _comparable_reference(_reference(jobs), jobs, keys)
    if headline:
        with_reference = bool(reference) and reference.get("metric") == headline and reference.get("by") in keys
        header = [*keys, "n", "steps", f"{headline} (mean ± std)"]
        if diffs:
            header += [f"Δ vs {shown_baseline} [95% CI] (pairs)", "p"]
        if with_reference:
            header.append("reference")
        source = f" Reference: {reference.get('source', 'the study')}." if with_reference else ""
        lines += [f"## {headline}", "",
                  "Mean ± std over seeds (n = finished jobs); Δ: mean over seeds of (row − baseline) for the same seed "
                  "and the same other keys, with the 95% confidence interval of that mean (t distribution); p: "
                  f"two-sided paired t-test (n/a with fewer than 2 pairs).{source}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [str(row[k]) for k in keys] + [str(row["n"]), str(row["steps"])]
            cells.append(_fmt(row[f"{headline} mean"], row[f"{headline} std"]))
            if diffs:
                d = diff_of.get(tuple(str(row[k]) for k in keys), {}).get(headline)
                cells += ["—" if d is None else _fmt_diff(d, with_p=False),
                          "—" if d is None or math.isnan(d["p"]) else f"{d['p']:.3g}"]
            if with_reference:
                ref = _reference_value(reference, row, keys)
                cells.append("—" if ref is None else f"{ref:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    efficiency = _swept_efficiency(jobs, keys)
    if headline and efficiency:
        points = efficiency_points(rows, keys, efficiency["key"], headline, diffs)
        if any(len(p) > 1 for p in points["values"].values()):
            paths["efficiency"] = sweep_dir / "summary_data_efficiency.png"
            plot_efficiency(points, efficiency["key"], efficiency.get("label"), headline, shown_baseline,
                             paths["efficiency"])
            lines += [f"![{headline} against {efficiency['key']}](summary_data_efficiency.png)", "",
                      f"{headline} against {efficiency['key']}: mean ± std over seeds per row (left); the paired "
                      f"difference against {shown_baseline or 'the baseline'} at the same {efficiency['key']}, with "
                      "its 95% confidence interval (right).", ""]

    header = [*keys, "n", "steps", *metrics]
    lines += ["## All test metrics", "", "Mean ± std over seeds (n = finished jobs in the row).", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[k]) for k in keys] + [str(row["n"]), str(row["steps"])]
        cells += [_fmt(row[f"{m} mean"], row[f"{m} std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if diffs:
        lines += ["", f"## Paired difference against {shown_baseline}", "",
                  "Mean over seeds of (row − baseline) for the same seed and the same other keys, [its 95% confidence "
                  "interval]; p: two-sided paired t-test across seeds (n/a with fewer than 2 pairs).", "",
                  "| " + " | ".join([*keys, *metrics]) + " |", "|" + "---|" * (len(keys) + len(metrics))]
        for entry in diffs:
            cells = [str(entry[k]) for k in keys] + [_fmt_diff(entry.get(metric)) for metric in metrics]
            lines.append("| " + " | ".join(cells) + " |")
    failed = [j for j in jobs if j["status"] != "ok"]
    if failed:
        lines += ["", "## Failed jobs", ""]
        for job in failed:
            shown = " ".join(f"{k}={v}" for k, v in job["overrides"].items())
            lines.append(f"- job {job['job']} ({shown}): {job['status']}: {job.get('error', '')}")
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    plot_bars(rows, keys, metrics, jobs, paths["png"])
    plot_curves(jobs, keys, paths["curves"])
    return paths


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
        for key, name in (("summary_chart", "summary.png"), ("val_loss_curves", "summary_val_loss.png"),
                          ("data_efficiency", "summary_data_efficiency.png")):
            if (sweep_dir / name).exists():
                logged[key] = wandb.Image(str(sweep_dir / name))
        jobs = collect_jobs(sweep_dir)
        keys, metrics, _ = summarise(jobs)
        failed = [j for j in jobs if j["status"] != "ok"]
        logged["failed_jobs"] = wandb.Table(columns=["job", "overrides", "status", "error"], data=[
            [j["job"], " ".join(f"{k}={v}" for k, v in j["overrides"].items()), j["status"], j.get("error", "")] for j in failed])
        # one row a finished job: a W&B chart of a metric per regime with one point per seed
        logged["seeds"] = wandb.Table(columns=["job", *keys, "seed", *metrics], data=[
            [j["job"], *(j["overrides"].get(k, "") for k in keys), _seed_of(j),
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
    parser.add_argument("sweep_dir", type=Path, nargs="+",
                        help="a multirun dir (holds one numbered dir a job); several are read as one study")
    parser.add_argument("--out", type=Path, help="where the summary of several sweeps goes (needed with several)")
    parser.add_argument("--ignore", nargs="*", default=[], metavar="KEY",
                        help="override keys that do not change the numbers (e.g. logger): not grouped by")
    parser.add_argument("--record", type=Path, metavar="DIR",
                        help="also copy what the report reads of each job (~10 kB a job) into DIR/<sweep name>/: "
                        "a record to keep (e.g. in docs/studies/) and to report again later")
    parser.add_argument("--wandb-project", help="also log the summary to a W&B run of this project "
                        "(grouped by the sweep's name; mode from WANDB_MODE, offline by default)")
    parser.add_argument("--name", help="the W&B run's name (default: '<sweep dir name> summary')")
    args = parser.parse_args(argv)
    if len(args.sweep_dir) > 1 and args.out is None:
        parser.error("several sweep dirs: say where their summary goes with --out DIR")
    out = args.out or args.sweep_dir[0]
    try:
        for sweep_dir in args.sweep_dir:
            if not collect_jobs(sweep_dir):
                raise FileNotFoundError(f"{sweep_dir} holds no job dirs (*/.hydra/overrides.yaml)")
        out.mkdir(parents=True, exist_ok=True)
        paths = write_summary(out, collect_sweeps(args.sweep_dir, tuple(args.ignore)))
        if args.record:
            for target in record_sweeps(args.sweep_dir, args.record):
                print(f"recorded {target}")
        if args.wandb_project:
            if len(args.sweep_dir) > 1:
                raise ValueError("--wandb-project logs one sweep's summary: give one sweep dir")
            log_summary_to_wandb(out, args.wandb_project, args.name or f"{out.name} summary")
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
