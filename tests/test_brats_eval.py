"""BraTS-conformant evaluation: our scores against an independent implementation, the BraTS rules for empty
masks, lesion-wise scores, and predictions written in the input's own label convention."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from conftest import run_synthmed
from scipy import ndimage as ndi
from test_brats_discovery import write_subject

from synthmed.data.brats import labels
from synthmed.data.brats.metrics import brats_scores, lesion_scores, region_scores

MAX = labels.MAX_HD95


def reference_hd95(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """HD95 written independently: surface voxels (mask minus its erosion), directed distances from one
    surface to the other with scipy's exact EDT, the 95th percentile of each direction, the larger one."""

    def directed(x, y):
        sx = x & ~ndi.binary_erosion(x)
        sy = y & ~ndi.binary_erosion(y)
        return np.percentile(ndi.distance_transform_edt(~sy, sampling=spacing)[sx], 95)

    return float(max(directed(a, b), directed(b, a)))


def cube(shape=(40, 40, 40), lo=(10, 10, 10), size=(12, 12, 12)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, a + n) for a, n in zip(lo, size, strict=True))] = True
    return mask


def test_identical_and_empty_masks_follow_the_brats_rules():
    a, empty = cube(), np.zeros((40, 40, 40), bool)
    assert region_scores(a, a) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    assert region_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}  # both empty
    assert region_scores(empty, a) == {"dice": 0.0, "iou": 0.0, "hd95": MAX}  # missed tumour
    assert region_scores(a, empty) == {"dice": 0.0, "iou": 0.0, "hd95": MAX}  # tumour where there is none
    assert lesion_scores(empty, empty) == {"lesion_dice": 1.0, "lesion_hd95": 0.0, "lesions": 0, "fp_lesions": 0}
    assert lesion_scores(empty, a)["lesion_dice"] == 0.0 and lesion_scores(empty, a)["lesion_hd95"] == MAX
    for pred, truth in ((empty, empty), (empty, a), (a, empty)):
        assert all(math.isfinite(v) for v in brats_scores(pred, truth).values())


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_shifted_by_k_voxels_has_hd95_k(k):
    a = cube()
    b = np.roll(a, k, axis=0)
    assert region_scores(b, a)["hd95"] == pytest.approx(k)
    assert reference_hd95(b, a) == pytest.approx(k)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.5, 2.0)])
def test_hd95_and_dice_match_an_independent_implementation(spacing):
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    truth = ((x - 20) ** 2 + (y - 18) ** 2 + (z - 20) ** 2) < 81
    pred = ndi.binary_dilation(truth, iterations=2) & (rng.random(truth.shape) < 0.9)
    pred |= cube(lo=(2, 2, 30), size=(4, 4, 4))  # a stray blob: the directed distances differ a lot
    ours = region_scores(pred, truth, spacing)
    assert ours["hd95"] == pytest.approx(reference_hd95(pred, truth, spacing), rel=1e-5)  # MONAI: float32
    # the max of the directed 95th percentiles, not the 95th percentile of the pooled distances
    sp, st = pred & ~ndi.binary_erosion(pred), truth & ~ndi.binary_erosion(truth)
    pooled = np.percentile(np.concatenate([ndi.distance_transform_edt(~st, sampling=spacing)[sp],
                                           ndi.distance_transform_edt(~sp, sampling=spacing)[st]]), 95)
    assert abs(ours["hd95"] - pooled) > 0.1
    inter = (pred & truth).sum()
    assert ours["dice"] == pytest.approx(2 * inter / (pred.sum() + truth.sum()), abs=1e-6)  # MONAI: float32
    assert ours["iou"] == pytest.approx(inter / (pred | truth).sum(), abs=1e-6)


def test_disjoint_masks():
    a, b = cube(lo=(2, 2, 2), size=(6, 6, 6)), cube(lo=(25, 25, 25), size=(6, 6, 6))
    ours = region_scores(a, b)
    assert ours["dice"] == 0.0 and ours["iou"] == 0.0
    assert ours["hd95"] == pytest.approx(reference_hd95(a, b))


def test_lesion_wise_scores_count_missed_lesions_and_false_positives():
    big, small = cube(lo=(5, 5, 5), size=(10, 10, 10)), cube(lo=(28, 28, 28), size=(4, 4, 4))
    truth = big | small
    shifted = np.roll(big, 1, axis=0)  # the big lesion found, one voxel off; the small one missed
    stray = cube(lo=(2, 30, 30), size=(3, 3, 3))  # a false-positive component far from every lesion
    s = lesion_scores(shifted | stray, truth)
    assert s["lesions"] == 2 and s["fp_lesions"] == 1
    found = region_scores(shifted, big)
    assert s["lesion_dice"] == pytest.approx((found["dice"] + 0 + 0) / 3)
    assert s["lesion_hd95"] == pytest.approx((found["hd95"] + MAX + MAX) / 3)
    # a predicted component within 3 voxels of a lesion (after dilation) is matched to it, not a false positive
    near = cube(lo=(28, 28, 33), size=(4, 4, 2))  # 1 voxel gap from the small lesion
    assert lesion_scores(big | near, truth)["fp_lesions"] == 0
    far = cube(lo=(28, 28, 36), size=(4, 4, 2))  # 4 voxels away
    assert lesion_scores(big | far, truth)["fp_lesions"] == 1
    # diagonal neighbours are one lesion (26-connectivity)
    diag = np.zeros((10, 10, 10), bool)
    diag[2, 2, 2] = diag[3, 3, 3] = True
    assert lesion_scores(diag, diag)["lesions"] == 1


def test_labels_are_written_in_the_inputs_convention():
    indices = np.array([0, 1, 2, 3])
    assert labels.from_index(indices, labels.CLASSIC).tolist() == [0, 1, 2, 4]
    assert labels.from_index(indices, labels.BRATS_2023).tolist() == [0, 1, 2, 3]
    assert labels.region_label("et", labels.BRATS_2023) == 3 and labels.region_label("et") == 4
    assert labels.region_label("wt", labels.BRATS_2023) == 2
    assert labels.convention_of("2023") == labels.BRATS_2023 and labels.convention_of("2018/2019") == labels.CLASSIC


def test_brats_seg_on_a_2023_cohort_writes_brats_predictions(tmp_path):
    """`brats_seg` on a BraTS 2023-layout folder (ET labelled 3): `<id>.nii.gz` with the input's affine and
    header, ET written as 3, per-subject scores with lesion-wise ones, strict JSON metrics without NaN."""
    root = tmp_path / "brats2023"
    for i in range(5):
        write_subject(root, f"BraTS-GLI-{i:05d}-000", layout="2023", seed=i, shape=(64, 64, 10), tumour_slices=(2, 8))
    run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}", f"data.root={root}",
                  "data.target=et", "optimized_metric=test/iou_et", "trainer.max_epochs=15", "model.lr=1e-2", "model.net.base_channels=8"], cwd=tmp_path)
    metrics_file = next((tmp_path / "outputs").rglob("metrics.json"))
    text = metrics_file.read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    vol = {k: v for k, v in metrics["test"].items() if k.startswith("test/vol_")}
    assert {"test/vol_dice_et", "test/vol_hd95_et", "test/vol_lesion_dice_et", "test/vol_lesion_hd95_et"} <= set(vol)
    assert all(v is not None and math.isfinite(v) for v in vol.values())
    volumes = metrics_file.parent / "volumes"
    import csv

    rows = list(csv.DictReader(open(volumes / "metrics.csv")))
    assert rows and list(rows[0]) == ["subject", "region", "dice", "iou", "hd95", "lesion_dice", "lesion_hd95",
                                      "lesions", "fp_lesions"]
    written = sorted(p.name for p in volumes.glob("*.nii.gz"))
    assert written == sorted(f"{r['subject']}.nii.gz" for r in rows)  # BraTS names: <id>.nii.gz
    values = set()
    for row in rows:
        pred = nib.load(str(volumes / f"{row['subject']}.nii.gz"))
        ref = nib.load(str(root / row["subject"] / f"{row['subject']}-t2f.nii.gz"))
        assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
        assert pred.header.get_zooms() == ref.header.get_zooms()
        values |= set(np.unique(np.asarray(pred.dataobj)).tolist())
    assert values == {0, 3}  # enhancing tumour predicted, and written as BraTS 2023's 3
