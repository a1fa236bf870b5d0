"""The brain study's protocol: regimes at equal optimiser steps by default (`protocol=equal_steps`), the study's
equal epochs as a named option (`protocol=equal_epochs`); and the data-efficiency sweep (real training slices x
regimes x seeds) with its plot. Real multiruns at scale=ci on a small BraTS-layout folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_synthmed
from test_brats_discovery import write_small_cohort

from synthmed.augment.gan import generator_trainer_config
from synthmed.report import collect_jobs, efficiency_points, paired_differences, summarise
from synthmed.utils import compose_config

CI = ["experiment=brats_seg", "scale=ci", "logger=csv", "threads=1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Five subjects: three train (18 tumour slices), one validates, one tests."""
    root = tmp_path_factory.mktemp("protocol") / "brats"
    write_small_cohort(root)
    return root


def jobs_of(sweep: Path) -> list[tuple[dict, dict]]:
    """(overrides, metrics.json) of every job of a multirun."""
    out = []
    for metrics in sorted(sweep.glob("*/metrics.json")):
        overrides = yaml.safe_load((metrics.parent / ".hydra" / "overrides.yaml").read_text())
        out.append((dict(o.split("=", 1) for o in overrides), json.loads(metrics.read_text())))
    return out


def test_the_protocol_sets_the_length_of_brats_seg_only():
    steps = compose_config(["experiment=brats_seg", "scale=cpu"])
    assert steps.protocol.name == "equal_steps"  # the default
    assert steps.trainer.max_steps == steps.scale.brats.max_steps == 370
    assert steps.trainer.max_epochs >= steps.trainer.max_steps  # never binds: the step budget ends training
    epochs = compose_config(["experiment=brats_seg", "scale=cpu", "protocol=equal_epochs"])
    assert epochs.protocol.name == "equal_epochs"
    assert epochs.trainer.max_epochs == epochs.scale.brats.max_epochs == 10 and epochs.trainer.max_steps == -1
    for experiment in ("colon_cls", "colon_seg", "brats_pix2pix", "brats_dcgan", "brats_embed"):
        cfg = compose_config([f"experiment={experiment}", "scale=cpu"])
        assert "protocol" not in cfg and "max_steps" not in cfg.trainer, experiment


def test_generators_keep_their_epochs_under_a_step_budget():
    """aug=gan trains its generators with the job's trainer: the U-Net's step budget must not cut them short."""
    cfg = compose_config(["experiment=brats_seg", "scale=cpu", "aug=gan"])
    generator = generator_trainer_config(cfg.aug.pairs.trainer, 200)
    assert generator["max_epochs"] == 200 and generator.get("max_steps", -1) == -1


def test_equal_steps_gives_every_regime_the_same_number_of_steps(tmp_path, cohort):
    """At equal steps, real only (12 slices: 3 batches an epoch) and real + 8 transformed slices (5 batches) both take
    scale.brats.max_steps optimiser steps; at equal epochs (one, at scale=ci) they take 3 and 5."""
    sweep = tmp_path / "sweep"
    run_synthmed(["-m", *CI, f"paths.root_dir={tmp_path}", f"data.root={cohort}", "data.num_train_slices=12",
                  "aug=none,transform", "protocol=equal_steps,equal_epochs", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    budget = compose_config(["experiment=brats_seg", "scale=ci"]).scale.brats.max_steps
    steps = {(o["aug"], o["protocol"]): m["steps"] for o, m in jobs_of(sweep)}
    assert steps == {("none", "equal_steps"): budget, ("transform", "equal_steps"): budget,
                     ("none", "equal_epochs"): 3, ("transform", "equal_epochs"): 5}
    config = yaml.safe_load((sweep / "0" / ".hydra" / "config.yaml").read_text())
    assert config["protocol"]["name"] in ("equal_steps", "equal_epochs")  # the run records its protocol
    rows = {(r["aug"], r["protocol"]): r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert rows[("transform", "equal_steps")]["steps"] == str(budget) and rows[("none", "equal_epochs")]["steps"] == "3"
    assert "steps" in (sweep / "summary.md").read_text()


def test_data_efficiency_sweep_draws_a_point_per_real_set_and_regime(tmp_path, cohort):
    sweep = tmp_path / "sweep"
    run_synthmed(["-m", *CI, f"paths.root_dir={tmp_path}", f"data.root={cohort}", "aug=none,transform",
                  "data.num_train_slices=4,12", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted((r["aug"], r["data.num_train_slices"], r["n"]) for r in rows) == [
        ("none", "12", "2"), ("none", "4", "2"), ("transform", "12", "2"), ("transform", "4", "2")]
    budget = compose_config(["experiment=brats_seg", "scale=ci"]).scale.brats.max_steps
    assert {r["steps"] for r in rows} == {str(budget)}  # 4 real slices or 12: the same training
    transform = [r for r in rows if r["aug"] == "transform"]  # paired with real only of the same seed and slices
    assert all(r["test/iou_wt pairs"] == "2" and r["test/loss pairs"] == "2" for r in transform)
    assert all(float(r["test/loss diff ci95 low"]) <= float(r["test/loss diff"]) for r in transform)
    assert (sweep / "summary_data_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    jobs = collect_jobs(sweep)
    keys, metrics, summary = summarise(jobs)
    points = efficiency_points(summary, keys, "data.num_train_slices", "test/iou_wt",
                               paired_differences(jobs, keys, metrics))
    assert {line: [p["x"] for p in pts] for line, pts in points["values"].items()} == {
        "aug=none": [4, 12], "aug=transform": [4, 12]}
    assert [p["x"] for p in points["diffs"]["aug=transform"]] == [4, 12]
