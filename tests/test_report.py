"""Sweep report statistics on a sweep laid out on disk as Hydra and the runner write it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from synthmed.report import write_summary

REPORT = {"baseline": {"aug": "none"},
          "reference": {"by": "aug", "metric": "test/iou", "values": {"none": 0.589, "gan": 0.6323}}}
IOU = {("none", 0): 0.50, ("none", 1): 0.52, ("none", 2): 0.54,
       ("gan", 0): 0.56, ("gan", 1): 0.57, ("gan", 2): 0.61}


def write_job(sweep: Path, num: int, aug: str, seed: int, iou: float | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"aug={aug}", f"seed={seed}"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": "test/iou", "report": REPORT}))
    if iou is None:
        (job / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")
        return
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "seed": seed, "test": {"test/iou": iou}}))
    (job / "csv").mkdir()
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "val/loss"])
        writer.writeheader()
        for epoch in range(3):
            writer.writerow({"epoch": epoch, "step": epoch * 10, "val/loss": 1.0 / (epoch + 1) + iou})


def test_table_paired_differences_reference_and_curves(tmp_path):
    for num, ((aug, seed), iou) in enumerate(IOU.items()):
        write_job(tmp_path, num, aug, seed, iou)
    write_job(tmp_path, 6, "gan", 3, None)
    paths = write_summary(tmp_path)
    rows = {r["aug"]: r for r in csv.DictReader(paths["csv"].open())}
    assert rows["none"]["n"] == "3" and rows["gan"]["n"] == "3" and rows["gan"]["failed"] == "1"
    assert float(rows["gan"]["test/iou mean"]) == pytest.approx((0.56 + 0.57 + 0.61) / 3)
    assert float(rows["none"]["test/iou std"]) == pytest.approx(0.02)
    md = paths["md"].read_text()
    diffs = [IOU[("gan", s)] - IOU[("none", s)] for s in range(3)]
    p = stats.ttest_rel([IOU[("gan", s)] for s in range(3)], [IOU[("none", s)] for s in range(3)]).pvalue
    # the 95% interval of the mean paired difference: mean ± t(0.975, n-1) * sd / sqrt(n)
    mean, sd = sum(diffs) / 3, stats.tstd(diffs)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}] (n=3, p={p:.3g})" in md
    assert "| gan | 0.6323 |" in md and "| none | 0.5890 |" in md
    assert "RuntimeError: out of memory" in md
    for key in ("png", "curves"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(p)
