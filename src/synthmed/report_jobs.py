"""The jobs of a sweep as the sweep report reads them (synthmed.report): one record a job dir, from its
`.hydra/overrides.yaml`, `.hydra/config.yaml`, `metrics.json` or `error.txt` and CSV log; and several sweeps read
as one study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

# what the report reads of a job dir, and its per-subject table: a sweep's record (`record_sweeps`)
RECORD_FILES = (".hydra/overrides.yaml", ".hydra/config.yaml", "metrics.json", "error.txt", "csv/metrics.csv",
                "volumes/metrics.csv")


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
        record["config"] = config or {}
        record["optimized_metric"] = (config or {}).get("optimized_metric")
        record["report"] = (config or {}).get("report") or {}
        protocol = (config or {}).get("protocol") or {}
        record["protocol"] = protocol.get("name")
        record["compare_at"] = protocol.get("compare_at")
        record["curve"] = _val_curve(job_dir / "csv" / "metrics.csv")
        jobs.append(record)
    jobs.sort(key=lambda r: int(r["job"]) if r["job"].isdigit() else r["job"])
    return jobs


def collect_sweeps(sweep_dirs: list[str | Path], ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The jobs of one sweep (`collect_jobs`), or of several read as one study: a job is then named
    `<sweep dir name>/<job>`, and an override key that some sweeps set and others do not (e.g.
    `data.num_train_slices=50` swept later beside a study at the default 290) takes, in the jobs that did not set
    it, the job's own value from its config, so rows and pairs line up across the sweeps. `ignore`: override keys
    that do not change the numbers (e.g. `logger`, set on one sweep's command line only), dropped before grouping."""
    if len(sweep_dirs) == 1:
        jobs = collect_jobs(sweep_dirs[0])
    else:
        jobs = [{**job, "job": f"{Path(sweep_dir).name}/{job['job']}"}
                for sweep_dir in sweep_dirs for job in collect_jobs(sweep_dir)]
    for job in jobs:
        for key in ignore:
            job["overrides"].pop(key, None)
    if len(sweep_dirs) == 1:
        return jobs
    from omegaconf import OmegaConf

    keys = {key for job in jobs for key in job["overrides"]}
    for job in jobs:
        missing = sorted(keys - set(job["overrides"]))
        config = OmegaConf.create(job["config"]) if missing else None  # built once a job, only when needed
        for key in missing:
            value = config_value(config, key)
            if value is not None:
                job["overrides"][key] = value
    return jobs


def config_value(config: Any, key: str) -> str | None:
    """A job config's (an OmegaConf node) value of a dotted key as an override would spell it; None unless it is a
    plain value."""
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    except Exception:  # a key the config cannot reach (a group name, a broken node): not comparable
        return None
    if value is None or not isinstance(value, (str, int, float, bool)):
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def _val_curve(csv_file: Path, key: str = "val/loss") -> list[dict[str, float]]:
    """{"epoch", "step", "value"} of each validation of a job, from its CSV log; empty when there is none."""
    import csv

    if not csv_file.exists():
        return []
    with csv_file.open(newline="") as f:
        return [{"epoch": int(float(r["epoch"])), "step": int(float(r.get("step") or 0)), "value": float(r[key])}
                for r in csv.DictReader(f) if r.get(key) and r.get("epoch")]


def _copy_log_without_generators(source: Path, target: Path) -> None:
    """The CSV log minus the `gan/*` columns (the generators log every step: ~300 kB a job) and the rows left empty."""
    import csv

    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = [k for k in reader.fieldnames or [] if not k.startswith("gan/")]
        values = [k for k in fields if k not in ("epoch", "step")]
        rows = [{k: row[k] for k in fields} for row in reader if any(row.get(k) for k in values)]
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def record_sweeps(sweep_dirs: list[str | Path], dest: str | Path) -> list[Path]:
    """Copy of each sweep the few small files a report reads (`RECORD_FILES`, ~10 kB a job; no checkpoints,
    predictions or W&B runs; the CSV log without the generators' per-step `gan/*` columns) into
    `dest/<sweep dir name>/<job>/`: a record small enough to keep with the docs,
    which `python -m synthmed.report` reads again as the sweep itself, alone or beside later sweeps. Two sweeps of
    one name, or a record that already exists, are errors naming it: a record is written once, never merged."""
    dest = Path(dest)
    names = [Path(s).resolve().name for s in sweep_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"--record: sweep dirs of the same name {names}: their records would collide")
    written = []
    for sweep_dir, name in zip(sweep_dirs, names, strict=True):
        target = dest / name
        if target.exists():
            raise FileExistsError(f"--record: {target} exists; a record is written once")
        tmp = dest / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for job in collect_jobs(sweep_dir):
            for rel in RECORD_FILES:
                source = Path(job["dir"]) / rel
                if source.is_file():
                    (tmp / job["job"] / rel).parent.mkdir(parents=True, exist_ok=True)
                    if rel == "csv/metrics.csv":
                        _copy_log_without_generators(source, tmp / job["job"] / rel)
                    else:
                        shutil.copy2(source, tmp / job["job"] / rel)
        tmp.rename(target)  # whole or not at all
        written.append(target)
    return written
