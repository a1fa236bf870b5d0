"""What the brain-MRI jobs show in W&B, read back from their offline run files (tests/wandb_records.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_synthmed
from test_brats_discovery import write_small_cohort
from test_wandb import OFFLINE, _run_file, _table
from wandb_records import logged_history, read_records, run_info

from synthmed.data.brats import labels


def _history_keys(run_file: Path) -> set[str]:
    return {key for row in logged_history(run_file) for key in row}


def _image_rows(run_file: Path, key: str) -> list[dict]:
    """The logged values of image key `key` (one W&B images record per log call)."""
    out = []
    for record in read_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item}
        if f"{key}/_type" in items or key in items:
            value = json.loads(items[key]) if key in items else {
                k.split("/")[-1]: json.loads(v) for k, v in items.items() if k.startswith(f"{key}/")}
            out.append(value)
    return out


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """One `brats_seg aug=gan` run at scale=ci (a segmenter and its generators), read by the tests below."""
    tmp_path = tmp_path_factory.mktemp("gan_run")  # the phantom stage's cohort: its artefact is in the lineage
    run_synthmed(["experiment=brats_seg", "scale=ci", "aug=gan", f"paths.root_dir={tmp_path}"], cwd=tmp_path,
                 env=OFFLINE)
    return tmp_path


def test_brats_seg_shows_mask_layers_and_the_per_subject_table(gan_run):
    job = next(gan_run.glob("outputs/runs/*/*"))
    run_file = _run_file(job)
    # overlays as images with two mask layers, toggleable in the UI, classes named by labels.py
    for key in ("test/masks", "val/masks"):
        (value,) = _image_rows(run_file, key)[-1:]
        assert value["_type"] == "images/separated" and value["count"] >= 1
        layers = value["all_masks"][0]
        assert set(layers) == {"ground_truth", "prediction"}
        assert all(layer["_type"] == "mask" for layer in layers.values())
    assert labels.class_labels("wt") == {0: "background", 1: "WT"}  # the names the layers carry
    # the per-subject volume metrics, as a table beside the CSV
    table, _ = _table(run_file, "test/volume_metrics")
    assert table["columns"] == ["subject", "region", "dice", "iou", "hd95", "lesion_dice", "lesion_hd95", "lesions",
                                "fp_lesions"]
    csv_rows = (job / "volumes" / "metrics.csv").read_text().splitlines()[1:]
    assert len(table["data"]) == len(csv_rows) > 0
    assert all(row[1] == "wt" and 0.0 <= row[2] <= 1.0 and row[4] >= 0.0 for row in table["data"])
    assert {"test/vol_dice_wt", "test/vol_hd95_wt", "test/vol_lesion_dice_wt"} <= _history_keys(run_file)


def test_brats_seg_with_gan_pairs_shows_the_generators(gan_run):
    tmp_path = gan_run
    job = next(tmp_path.glob("outputs/runs/*/*"))
    run_file = _run_file(job)
    keys = _history_keys(run_file)
    # the generators' losses, under their prefixes, beside the U-Net's
    assert {"gan/dcgan/train/d_loss", "gan/dcgan/train/g_loss", "gan/pix2pix/train/g_l1"} <= keys
    assert "train/loss_epoch" in keys and "train/d_loss" not in keys
    history = [row for row in logged_history(run_file) if "gan/dcgan/train/d_loss" in row]
    assert len(history) >= 2  # every step, not once
    # sample grids of every epoch (fixed noise; a fixed batch for pix2pix) and the pairs picture
    for key in ("gan/dcgan/samples/tumour_maps", "gan/pix2pix/samples/pix2pix_grid", "aug/pairs"):
        assert _image_rows(run_file, key), key
    # one artefact per generator: data/gan/generators/<kind>/<hash>/
    dcgan = next(p for p in tmp_path.glob("data/gan/generators/dcgan/*") if p.is_dir())
    pix2pix = next(p for p in tmp_path.glob("data/gan/generators/pix2pix/*") if p.is_dir())
    assert list((dcgan / "images").glob("samples_tumour_maps_*.png"))  # also kept on disk
    # the artefacts it used: the pair set and each generator, in the config and as artefact records
    pairs = next(p for p in tmp_path.glob("data/gan/pairs/*") if p.is_dir())
    used = {a["key"]: a for a in run_info(run_file)["config"]["artifacts"]}
    assert used["aug.pairs"]["name"] == f"brats_gan_pairs-{pairs.name}" and used["aug.pairs"]["type"] == "dataset"
    for kind, folder in (("dcgan", dcgan), ("pix2pix", pix2pix)):
        assert used[f"aug.pairs.generators.{kind}"]["name"] == f"brats_{kind}_generator-{folder.name}"
        assert used[f"aug.pairs.generators.{kind}"]["type"] == "model"
    assert {"data.root", "data.cache"} <= set(used)
    logged = {(r.artifact.name, r.artifact.type) for r in read_records(run_file)
              if r.WhichOneof("record_type") == "artifact"}
    assert {(f"brats_gan_pairs-{pairs.name}", "dataset"), (f"brats_dcgan_generator-{dcgan.name}", "model"),
            (f"brats_pix2pix_generator-{pix2pix.name}", "model")} <= logged


def test_brats_dcgan_logs_losses_and_samples(tmp_path):
    root = tmp_path / "brats"  # five small subjects of a user's folder: no phantom cohort to make first
    write_small_cohort(root)
    run_synthmed(["experiment=brats_dcgan", "scale=ci", f"paths.root_dir={tmp_path}", f"data.root={root}",
                  "data.num_train_slices=12"], cwd=tmp_path, env=OFFLINE)
    job = next(tmp_path.glob("outputs/runs/*/*"))
    run_file = _run_file(job)
    assert {"train/d_loss", "train/g_loss"} <= _history_keys(run_file)
    assert _image_rows(run_file, "samples/tumour_maps")
    assert list((job / "images").glob("samples_tumour_maps_*.png"))  # saved in the run dir too
