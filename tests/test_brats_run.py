"""`python -m synthmed experiment=brats_seg` end to end on a small BraTS-layout folder."""

from __future__ import annotations

import json

import torch
from conftest import run_synthmed
from test_brats_discovery import write_subject


def test_brats_seg_experiment_runs(tmp_path):
    root = tmp_path / "brats"
    for i in range(5):
        write_subject(root, f"BraTS2021_{i:05d}", seed=i, shape=(64, 64, 10), tumour_slices=(2, 8))
    run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}",
                  f"data.root={root}", "aug=transform"], cwd=tmp_path)
    metrics_file = next((tmp_path / "outputs").rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "ok" and 0.0 <= metrics["test"]["test/iou_wt"] <= 1.0
    assert {"test/dice_wt", "test/loss"} <= set(metrics["test"])
    run_dir = metrics_file.parent
    assert list(run_dir.rglob("test_overlay.png"))
    torch.load(metrics["best_checkpoint"], weights_only=True)
    # volume evaluation: one NIfTI per test subject with the input affine, per-subject CSV
    import csv

    import nibabel as nib
    import numpy as np

    rows = list(csv.DictReader(open(run_dir / "volumes" / "metrics.csv")))
    assert rows and set(rows[0]) == {"subject", "region", "dice", "iou", "hd95"}
    assert "test/vol_dice_wt" in metrics["test"]
    pred = nib.load(str(run_dir / "volumes" / f"{rows[0]['subject']}_pred.nii.gz"))
    ref = nib.load(str(root / rows[0]["subject"] / f"{rows[0]['subject']}_flair.nii.gz"))
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 2}
