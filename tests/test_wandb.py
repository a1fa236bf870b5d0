"""What reaches W&B: the offline run files, read back record by record (tests/wandb_records.py)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_synthmed
from wandb_records import read_records, run_info

OFFLINE = {"WANDB_MODE": "offline"}


def _run_file(job_dir: Path) -> Path:
    return next(job_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _table(run_file: Path, key: str) -> tuple[dict, int]:
    """A logged W&B table as W&B will upload it (the run's `run_table` artefact: the table's JSON with image
    references, and the images), and how many images go with it."""
    for record in read_records(run_file):
        if record.WhichOneof("record_type") != "artifact" or record.artifact.type != "run_table":
            continue
        files = {c.path: c.local_path for c in record.artifact.manifest.contents}
        if f"{key}.table.json" in files:
            images = [path for path in files if path.endswith(".png")]
            return json.loads(Path(files[f"{key}.table.json"]).read_text()), len(images)
    raise AssertionError(f"no table {key} in {run_file}")


def test_classifier_predictions_table_joins_the_manifest(frames_dir, tmp_path):
    run_synthmed(["experiment=colon_cls", "scale=ci", f"data.root={frames_dir}", "model.lr=3e-4"], cwd=tmp_path,
                 env=OFFLINE)
    job = next(tmp_path.glob("outputs/runs/*/*"))
    run_file = _run_file(job)
    table, n_images = _table(run_file, "test/predictions")
    columns = table["columns"]
    assert columns[:5] == ["id", "label", "predicted", "score", "correct"] and columns[-1] == "frame"
    assert {"lesion_radius", "visible_pixels", "seed"} <= set(columns)  # the manifest's parameters, joined
    predictions = (job / "test_predictions.csv").read_text().splitlines()[1:]
    assert len(table["data"]) == len(predictions) > 0
    manifest = {line.split(",")[0]: line.split(",") for line in (frames_dir / "manifest.csv").read_text().splitlines()[1:]}
    for row in table["data"]:
        assert str(row[columns.index("visible_pixels")]) == manifest[row[0]][4]
        assert row[columns.index("frame")]["_type"] == "image-file"
    assert n_images == len(table["data"])  # every frame's picture goes with the table (<= model.table_images)
    info = run_info(run_file)
    assert "model.lr=3e-4" in _tags(run_file) and info["group"] == ""
    summaries = {r.metric.name or r.metric.glob_name: r.metric.summary for r in read_records(run_file)
                 if r.WhichOneof("record_type") == "metric"}
    assert summaries["val/loss"].min and summaries["test/*"].last  # best validation loss, final test metrics


def _tags(run_file: Path) -> list[str]:
    return next(list(r.run.tags) for r in read_records(run_file) if r.WhichOneof("record_type") == "run")


def _artifacts(run_file: Path) -> list[tuple[str, str]]:
    """The artefacts a run logged as its outputs (W&B's own table artefacts left out)."""
    return [(r.artifact.name, r.artifact.type) for r in read_records(run_file)
            if r.WhichOneof("record_type") == "artifact" and r.artifact.type != "run_table"]


def test_rendered_dataset_and_checkpoint_are_artifacts_of_the_run_that_made_them(tmp_path):
    run_synthmed(["experiment=colon_cls", "scale=ci"], cwd=tmp_path, env=OFFLINE)
    run_synthmed(["experiment=colon_cls", "scale=ci", "seed=1"], cwd=tmp_path, env=OFFLINE)
    first, second = sorted(tmp_path.glob("outputs/runs/*/*"))
    dataset = next(tmp_path.glob("data/colon/frames_*"))
    made = _artifacts(_run_file(first))
    assert (f"colon_render-{dataset.name}", "dataset") in made
    assert any(name.startswith("colon_cls-best-") and kind == "model" for name, kind in made)
    # the second run found the dataset: it declares it as used (config), and logs only its own checkpoint
    used = run_info(_run_file(second))["config"]["artifacts"]
    assert used == [{"key": "data.root", "name": f"colon_render-{dataset.name}", "type": "dataset",
                     "path": str(Path("data/colon") / dataset.name), "hash": dataset.name, "made_by_this_run": False}]
    assert [kind for _, kind in _artifacts(_run_file(second))] == ["model"]


def test_dashboard_layout_builds_offline_and_names_every_panel(tmp_path, monkeypatch):
    """No network: the layout is written to a file, built with wandb-workspaces, and --apply is refused."""
    from synthmed import dashboard

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "dashboard.json"
    assert dashboard.main(["synthmed", "--metric", "test/iou_wt", "--out", str(out)]) == 0
    spec = json.loads(out.read_text())
    titles = dashboard.panel_titles(spec)
    assert {"summary", "paired_differences", "seeds", "failed_jobs", "test/predictions", "test/volume_metrics"} <= set(titles)
    assert "test/iou_wt per aug.name (mean, std over seeds)" in titles and "val/loss" in titles
    workspace = dashboard.build_workspace(spec)
    assert [s.name for s in workspace.sections] == [s["name"] for s in spec["sections"]]
    assert sum(len(s.panels) for s in workspace.sections) == len(titles)
    assert dashboard.main(["synthmed", "--out", str(out), "--apply", "--entity", "me"]) == 2
