"""Sweep report statistics on a sweep laid out on disk as Hydra and the runner write it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from synthmed.report import (
    collect_jobs,
    collect_sweeps,
    efficiency_points,
    main,
    paired_differences,
    paired_stats,
    summarise,
    write_summary,
)

REPORT = {"baseline": {"aug": "none"},
          "reference": {"by": "aug", "metric": "test/iou", "values": {"none": 0.589, "gan": 0.6323},
                        "when": {"data.num_train_slices": 290}},
          "data_efficiency": {"key": "data.num_train_slices", "label": "real training slices"}}
IOU = {("none", 0): 0.50, ("none", 1): 0.52, ("none", 2): 0.54,
       ("gan", 0): 0.56, ("gan", 1): 0.57, ("gan", 2): 0.61}


def write_job(sweep: Path, num: int, overrides: dict, iou: float | None, steps: int = 370,
              protocol: str = "equal_steps", extra_config: dict | None = None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    config = {"optimized_metric": "test/iou", "report": REPORT,
              "protocol": {"name": protocol, "compare_at": "step" if protocol == "equal_steps" else "epoch"},
              **(extra_config or {})}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if iou is None:
        (job / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")
        return
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "seed": overrides["seed"], "steps": steps,
                                                  "test": {"test/iou": iou}}))
    (job / "csv").mkdir()
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "val/loss"])
        writer.writeheader()
        for epoch in range(3):
            writer.writerow({"epoch": epoch, "step": epoch * 10, "val/loss": 1.0 / (epoch + 1) + iou})


def test_paired_stats_on_hand_made_differences():
    """Mean, 95% interval (t with n - 1 degrees of freedom) and two-sided p of three paired differences, against
    numbers worked out by hand: mean 0.06, sd 0.01, t = 0.06 / (0.01 / sqrt 3) = 10.392, t(0.975, 2) = 4.3027."""
    d = paired_stats([0.06, 0.05, 0.07])
    assert d["diff"] == pytest.approx(0.06) and d["n"] == 3
    assert d["ci95"] == pytest.approx([0.06 - 4.302653 * 0.01 / math.sqrt(3), 0.06 + 4.302653 * 0.01 / math.sqrt(3)])
    assert d["ci95"] == pytest.approx([0.035159, 0.084841], abs=1e-6)
    assert d["p"] == pytest.approx(0.009133, abs=1e-6)
    assert d["p"] == pytest.approx(stats.ttest_rel([0.56, 0.57, 0.61], [0.50, 0.52, 0.54]).pvalue)
    one = paired_stats([0.1])  # one pair: a difference, no interval, no test
    assert one["diff"] == 0.1 and math.isnan(one["p"]) and all(math.isnan(v) for v in one["ci95"])
    assert math.isnan(paired_stats([0.02, 0.02])["p"])  # no spread: nothing to test


def test_a_regimes_own_sub_key_still_pairs_with_the_baseline():
    """aug=gan_inpaint aug.pairs.tumours=deformed against aug=none (which has no aug.pairs): paired by seed."""
    jobs = [{"status": "ok", "overrides": {"aug": aug, "seed": seed, **({"aug.pairs.tumours": "deformed"} if aug != "none" else {})},
             "test": {"test/iou": iou}, "report": REPORT} for (aug, seed), iou in IOU.items()]
    (row,) = paired_differences(jobs, ["aug", "aug.pairs.tumours"], ["test/iou"])
    assert row["aug"] == "gan" and row["aug.pairs.tumours"] == "deformed"
    assert row["test/iou"]["n"] == 3 and row["test/iou"]["diff"] == pytest.approx(0.06)


def test_table_paired_differences_reference_and_curves(tmp_path):
    for num, ((aug, seed), iou) in enumerate(IOU.items()):
        write_job(tmp_path, num, {"aug": aug, "seed": seed}, iou)
    write_job(tmp_path, 6, {"aug": "gan", "seed": 3}, None)
    paths = write_summary(tmp_path)
    rows = {r["aug"]: r for r in csv.DictReader(paths["csv"].open())}
    assert rows["none"]["n"] == "3" and rows["gan"]["n"] == "3" and rows["gan"]["failed"] == "1"
    assert rows["gan"]["steps"] == "370" and rows["gan"]["protocol"] == "equal_steps"
    assert float(rows["gan"]["test/iou mean"]) == pytest.approx((0.56 + 0.57 + 0.61) / 3)
    assert float(rows["none"]["test/iou std"]) == pytest.approx(0.02)
    diffs = [IOU[("gan", s)] - IOU[("none", s)] for s in range(3)]  # 0.06, 0.05, 0.07: as above
    expected = paired_stats(diffs)
    assert float(rows["gan"]["test/iou diff"]) == pytest.approx(0.06)
    assert float(rows["gan"]["test/iou diff ci95 low"]) == pytest.approx(0.035159, abs=1e-6)
    assert float(rows["gan"]["test/iou diff ci95 high"]) == pytest.approx(0.084841, abs=1e-6)
    assert float(rows["gan"]["test/iou diff p"]) == pytest.approx(0.009133, abs=1e-6)
    assert rows["gan"]["test/iou pairs"] == "3" and rows["none"]["test/iou diff"] == ""  # the baseline itself
    md = paths["md"].read_text()
    mean, (low, high), p = expected["diff"], expected["ci95"], expected["p"]
    assert f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] (n=3, p={p:.3g})" in md  # all metrics' paired table
    # the headline table: mean ± std, paired difference with its interval and p, the study's number beside ours
    assert (f"| gan | 3 | 370 | 0.5800 ± 0.0265 | {mean:+.4f} [{low:+.4f}, {high:+.4f}] (n=3) | {p:.3g} | 0.6323 |"
            in md)
    assert "| none | 3 | 370 | 0.5200 ± 0.0200 | — | — | 0.5890 |" in md
    assert "Protocol: equal_steps" in md and "RuntimeError: out of memory" in md
    for key in ("png", "curves"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
    assert "efficiency" not in paths  # data.num_train_slices was not swept


# test IoU by (aug, real slices, seed). gan beats none by 0.10 at 50 slices and 0.01 at 290, seed by seed; pairing
# across slice counts (the wrong pairs) would give other numbers.
CURVE = {("none", 50, 0): 0.30, ("none", 50, 1): 0.34, ("gan", 50, 0): 0.41, ("gan", 50, 1): 0.43,
         ("none", 290, 0): 0.70, ("none", 290, 1): 0.74, ("gan", 290, 0): 0.705, ("gan", 290, 1): 0.755,
         ("transform", 50, 0): 0.35, ("transform", 50, 1): 0.37, ("transform", 290, 0): 0.72, ("transform", 290, 1): 0.76}


def test_data_efficiency_pairs_within_the_same_real_slices(tmp_path):
    for num, ((aug, slices, seed), iou) in enumerate(CURVE.items()):
        write_job(tmp_path, num, {"aug": aug, "data.num_train_slices": slices, "seed": seed}, iou)
    paths = write_summary(tmp_path)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert sorted((r["aug"], r["data.num_train_slices"]) for r in rows) == sorted(
        {(a, str(s)) for a, s, _ in CURVE})  # one row per (regime, real slices)
    by = {(r["aug"], r["data.num_train_slices"]): r for r in rows}
    assert float(by[("gan", "50")]["test/iou diff"]) == pytest.approx(0.10)  # (0.11 + 0.09) / 2
    assert float(by[("gan", "290")]["test/iou diff"]) == pytest.approx(0.01)  # (0.005 + 0.015) / 2
    assert by[("gan", "290")]["test/iou pairs"] == "2"
    md = paths["md"].read_text()
    assert "summary_data_efficiency.png" in md
    assert "| gan | 290 |" in md and "| gan | 50 |" in md
    # the study's reference only beside the rows with its 290 real slices
    head = md.split("## All test metrics")[0]
    assert any(line.startswith("| gan | 290 |") and line.endswith("| 0.6323 |") for line in head.splitlines())
    assert any(line.startswith("| gan | 50 |") and line.endswith("| — |") for line in head.splitlines())
    assert paths["efficiency"].name == "summary_data_efficiency.png"
    assert paths["efficiency"].read_bytes()[:4] == b"\x89PNG"
    jobs = collect_jobs(tmp_path)
    keys, metrics, summary = summarise(jobs)
    points = efficiency_points(summary, keys, "data.num_train_slices", "test/iou", paired_differences(jobs, keys, metrics))
    assert {line: [p["x"] for p in pts] for line, pts in points["values"].items()} == {
        "aug=none": [50, 290], "aug=gan": [50, 290], "aug=transform": [50, 290]}
    assert points["values"]["aug=gan"][0]["mean"] == pytest.approx(0.42)
    assert set(points["diffs"]) == {"aug=gan", "aug=transform"}  # the baseline has no difference with itself
    assert [p["diff"] for p in points["diffs"]["aug=transform"]] == pytest.approx([0.04, 0.02])
    # a regime's own sub-key (only gan sets aug.pairs.tumours): the other lines are not labelled with it, empty
    for job in jobs:
        if job["overrides"]["aug"] == "gan":
            job["overrides"]["aug.pairs.tumours"] = "deformed"
    keys, metrics, summary = summarise(jobs)
    points = efficiency_points(summary, keys, "data.num_train_slices", "test/iou", paired_differences(jobs, keys, metrics))
    assert set(points["values"]) == {"aug=none", "aug=gan aug.pairs.tumours=deformed", "aug=transform"}


def test_the_curve_follows_whichever_listed_key_is_swept(tmp_path):
    """report.data_efficiency as a list (brats_seg: slices, then subjects): the plot is drawn against the one the
    sweep varies, with its label."""
    report = {**REPORT, "data_efficiency": [{"key": "data.num_train_slices", "label": "real training slices"},
                                            {"key": "data.num_train_subjects", "label": "real training subjects"}]}
    for num, ((aug, subjects, seed), iou) in enumerate(CURVE.items()):
        write_job(tmp_path, num, {"aug": aug, "data.num_train_subjects": {50: 2, 290: 18}[subjects], "seed": seed},
                  iou, extra_config={"report": report})
    paths = write_summary(tmp_path)
    assert paths["efficiency"].read_bytes()[:4] == b"\x89PNG"
    assert "test/iou against data.num_train_subjects" in paths["md"].read_text()


def test_the_reference_stays_off_a_sweep_run_elsewhere_on_its_when_key(tmp_path):
    """reference.when on a key the sweep does not vary: the study's numbers sit beside rows at 290 real slices
    (here through the config's interpolation) and not beside a sweep run at 50 alone."""
    config = {"data": {"num_train_slices": "${scale.brats.num_train_slices}"},
              "scale": {"brats": {"num_train_slices": 290}}}
    for name, slices in (("at290", None), ("at50", 50)):
        for num, ((aug, seed), iou) in enumerate(IOU.items()):
            overrides = {"aug": aug, "seed": seed, **({} if slices is None else {"data.num_train_slices": slices})}
            write_job(tmp_path / name, num, overrides, iou, extra_config=config)
        text = write_summary(tmp_path / name)["md"].read_text()
        assert ("| reference |" in text) == (slices is None), name


def test_a_recorded_study_reports_as_the_sweeps_did(tmp_path, capsys):
    """--record keeps the small files the report reads (no checkpoints): reading the record gives the same table;
    a record is written once."""
    sweeps = {name: tmp_path / "runs" / name for name in ("study", "later")}
    for (aug, slices, seed), iou in CURVE.items():
        sweep = sweeps["study" if slices == 290 else "later"]
        num = len(list(sweep.glob("*"))) if sweep.exists() else 0
        write_job(sweep, num, {"aug": aug, "data.num_train_slices": slices, "seed": seed}, iou)
    log = sweeps["study"] / "0" / "csv" / "metrics.csv"  # the generators' per-step losses are left out
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0] + ",gan/dcgan/train/d_loss", *(f"{line}," for line in lines[1:]),
                               *(f",{i},,0.5" for i in range(100))]) + "\n")
    (sweeps["study"] / "0" / "checkpoints").mkdir()
    (sweeps["study"] / "0" / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    record = tmp_path / "docs" / "studies"
    args = [str(sweeps["study"]), str(sweeps["later"]), "--out", str(tmp_path / "a"), "--record", str(record)]
    assert main(args) == 0
    assert {p.name for p in record.iterdir()} == {"study", "later"}
    job = record / "study" / "0"
    assert {p.relative_to(job).as_posix() for p in job.rglob("*") if p.is_file()} == {
        ".hydra/overrides.yaml", ".hydra/config.yaml", "metrics.json", "csv/metrics.csv"}
    kept = (job / "csv" / "metrics.csv").read_text().splitlines()
    assert kept[0] == "epoch,step,val/loss" and len(kept) == 4
    assert main([str(record / "study"), str(record / "later"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "summary.csv").read_text() == (tmp_path / "a" / "summary.csv").read_text()
    capsys.readouterr()
    assert main(args) == 2  # written once
    assert f"{record / 'study'} exists" in capsys.readouterr().err


def test_several_sweeps_read_as_one_study(tmp_path, capsys):
    """A study at the default 290 real slices (no override: the value comes from each job's config, through its
    interpolation) and a later sweep at 50 read as one: the same rows, pairs and curve as one sweep of both."""
    study, later, out = tmp_path / "study", tmp_path / "later", tmp_path / "both"
    config = {"data": {"num_train_slices": "${scale.brats.num_train_slices}"},
              "scale": {"brats": {"num_train_slices": 290}}}
    n = {"study": 0, "later": 0}
    for (aug, slices, seed), iou in CURVE.items():
        if slices == 290:
            write_job(study, n["study"], {"aug": aug, "seed": seed}, iou, extra_config=config)
            n["study"] += 1
        else:
            write_job(later, n["later"], {"aug": aug, "data.num_train_slices": slices, "seed": seed, "logger": "csv"},
                      iou)
            n["later"] += 1
    jobs = collect_sweeps([study, later], ignore=("logger",))
    assert {j["job"] for j in jobs} >= {"study/0", "later/0"}
    assert {j["overrides"]["data.num_train_slices"] for j in jobs} == {"290", "50"}
    assert "logger" in collect_sweeps([study, later])[-1]["overrides"]  # set by one sweep only: it would split rows
    assert main([str(study), str(later), "--out", str(out), "--ignore", "logger"]) == 0
    rows = {(r["aug"], r["data.num_train_slices"]): r for r in csv.DictReader((out / "summary.csv").open())}
    assert len(rows) == 6
    assert float(rows[("gan", "50")]["test/iou diff"]) == pytest.approx(0.10)
    assert float(rows[("gan", "290")]["test/iou diff"]) == pytest.approx(0.01)
    assert (out / "summary_data_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert not (study / "summary.csv").exists()  # the sweeps themselves are left as they were
    with pytest.raises(SystemExit) as err:  # several sweeps and nowhere to write
        main([str(study), str(later)])
    assert err.value.code == 2 and "--out" in capsys.readouterr().err


def test_two_sweeps_of_one_seed_in_a_row_are_an_error_not_a_pool(tmp_path, capsys):
    """Two sweeps of the same regime and seeds whose settings differ only in a default (no override names it):
    pooled they would count each seed twice; the report refuses, naming the jobs and the row."""
    before, after, out = tmp_path / "before", tmp_path / "after", tmp_path / "both"
    for sweep, shift in ((before, 0.0), (after, 0.02)):
        for num, ((aug, seed), iou) in enumerate(IOU.items()):
            write_job(sweep, num, {"aug": aug, "seed": seed}, iou + shift)
    assert main([str(before), str(after), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "jobs before/0 and after/0 both give seed 0 to the row aug=none" in err
    assert not (out / "summary.csv").exists()
    assert main([str(before), "--out", str(out)]) == 0  # each alone reports as before
