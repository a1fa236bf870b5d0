"""BraTS-conformant evaluation: our scores against an independent implementation, the BraTS rules for empty
masks, lesion-wise scores, predictions written in the input's own label convention, and the test-only job
`experiment=brats_eval` (a brats_seg checkpoint tested on every subject of another BraTS folder)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_synthmed
from hydra.errors import InstantiationException
from scipy import ndimage as ndi
from test_brats_discovery import write_small_cohort, write_subject
from test_colon_eval import run_in_process

from synthmed.data.brats import labels
from synthmed.data.brats.metrics import brats_scores, lesion_scores, region_scores
from synthmed.data.brats.slices import BratsSliceDataModule
from synthmed.utils import compose_config

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
                  "data.target=et", "optimized_metric=test/iou_et", "protocol=equal_epochs", "trainer.max_epochs=15",
                  "data.num_train_slices=null", "model.lr=1e-2", "model.net.base_channels=8"], cwd=tmp_path)
    metrics_file = next((tmp_path / "outputs").rglob("metrics.json"))
    text = metrics_file.read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    vol = {k: v for k, v in metrics["test"].items() if k.startswith("test/vol_")}
    assert {"test/vol_dice_et", "test/vol_hd95_et", "test/vol_lesion_dice_et", "test/vol_lesion_hd95_et"} <= set(vol)
    assert all(v is not None and math.isfinite(v) for v in vol.values())
    volumes = metrics_file.parent / "volumes"
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


# ---- experiment=brats_eval: test only ------------------------------------------------------------------------
CI = ["scale=ci", "logger=csv"]
EVAL_SHAPE = (56, 48, 9)  # another dataset: not the training volumes' shape


@pytest.fixture(scope="module")
def brats_work(tmp_path_factory) -> Path:
    """One folder for this module's runs; paths.root_dir points here, so slice caches stay inside it."""
    return tmp_path_factory.mktemp("brats_eval")


@pytest.fixture(scope="module")
def trained_run(brats_work) -> Path:
    """A real brats_seg run (scale=ci: one epoch of a tiny U-Net) on four 2021-layout subjects: its run dir."""
    root = brats_work / "train_brats"
    write_small_cohort(root, 4)
    out = brats_work / "seg_run"
    run_synthmed(["experiment=brats_seg", *CI, f"paths.root_dir={brats_work}", f"data.root={root}",
                  "data.num_train_slices=null", f"hydra.run.dir={out}"], cwd=brats_work)
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / ".hydra" / "config.yaml").is_file()
    return out


def affine_of(index: int) -> np.ndarray:
    """An oblique, anisotropic, shifted voxel-to-world matrix, different per subject."""
    angle = 0.1 * (index + 1)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.9, 1.1, 2.5])
    affine[:3, 3] = [90.0 + index, -120.0, -60.0 + 3 * index]
    return affine


@pytest.fixture(scope="module")
def eval_root(brats_work) -> Path:
    """Another BraTS folder: the 2023 layout (ET labelled 3), another volume shape, its own affines."""
    root = brats_work / "other_brats"
    for i in range(3):
        folder = write_subject(root, f"BraTS-GLI-{i:05d}-000", layout="2023", seed=10 + i, shape=EVAL_SHAPE,
                               tumour_slices=(2, 7))
        for path in folder.glob("*.nii.gz"):
            data = np.asarray(nib.load(str(path)).dataobj)
            nib.save(nib.Nifti1Image(data, affine_of(i)), str(path))
    return root


def checkpoint_files(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").glob("*.ckpt")}


@pytest.fixture(scope="module")
def eval_run(trained_run, eval_root, brats_work) -> Path:
    """The job of `python -m synthmed experiment=brats_eval ckpt=<best.ckpt> data.root=<folder>`: its run dir."""
    before = checkpoint_files(trained_run)
    out = brats_work / "eval_run"
    run_in_process(["experiment=brats_eval", *CI, f"paths.root_dir={brats_work}",
                    f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"data.root={eval_root}"], out)
    assert checkpoint_files(trained_run) == before  # the tested checkpoint is read, never rewritten
    return out


def test_brats_eval_tests_every_subject_without_training(eval_run, trained_run, eval_root):
    metrics = json.loads((eval_run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["experiment"] == "brats_eval"
    assert metrics["checkpoint"] == str(trained_run / "checkpoints" / "best.ckpt")
    # nothing fitted: no checkpoint written, no training record, no training or validation subject
    assert not (eval_run / "checkpoints").exists() and not list(eval_run.rglob("*.ckpt"))
    assert "best_val" not in metrics and "steps" not in metrics
    assert metrics["data"]["splits"] == {"train": 0, "val": 0, "test": 3}
    assert metrics["data"]["slices"]["train"] == 0 and metrics["data"]["slices"]["test"] > 0

    ids = sorted(p.name for p in eval_root.iterdir())
    volumes = eval_run / "volumes"
    assert sorted(p.name for p in volumes.glob("*.nii.gz")) == [f"{sid}.nii.gz" for sid in ids]
    for i, sid in enumerate(ids):
        pred = nib.load(str(volumes / f"{sid}.nii.gz"))
        ref = nib.load(str(eval_root / sid / f"{sid}-t2f.nii.gz"))
        assert pred.shape == ref.shape == EVAL_SHAPE
        assert np.allclose(pred.affine, ref.affine) and np.allclose(pred.affine, affine_of(i))
        assert np.allclose(pred.header.get_zooms(), ref.header.get_zooms())
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 2}  # WT written as ED (2023: still 2)

    with (volumes / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["subject"] for r in rows] == ids and {r["region"] for r in rows} == {"wt"}  # one row a subject
    dice = [float(r["dice"]) for r in rows]
    assert all(math.isfinite(d) and 0.0 <= d <= 1.0 for d in dice)
    assert all(math.isfinite(float(r["hd95"])) for r in rows)
    assert metrics["test"]["test/vol_dice_wt"] == pytest.approx(np.mean(dice), abs=1e-5)


def test_brats_eval_errors_name_the_key(trained_run, eval_root, brats_work, tmp_path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"

    def evaluate(*overrides: str) -> None:
        run_in_process(["experiment=brats_eval", *CI, f"paths.root_dir={brats_work}", *overrides], tmp_path / "eval")

    with pytest.raises(ValueError, match=r"brats_eval needs a value for ckpt, data.root: .* ckpt=\.\.\."):
        evaluate()
    with pytest.raises(ValueError, match=r"brats_eval needs a value for ckpt: .* ckpt=\.\.\."):
        evaluate(f"data.root={eval_root}")
    with pytest.raises(ValueError, match=r"needs a value for data.root"):
        evaluate(f"ckpt={ckpt}")
    missing = tmp_path / "no_such.ckpt"
    with pytest.raises(FileNotFoundError, match=f"ckpt={missing} does not exist"):
        evaluate(f"ckpt={missing}", f"data.root={eval_root}")
    with pytest.raises(ValueError, match="ckpt=https://example.org/best.ckpt is a URL"):
        evaluate("ckpt=https://example.org/best.ckpt", f"data.root={eval_root}")
    not_weights = tmp_path / "notes.ckpt"
    not_weights.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"ckpt={not_weights} does not load as a checkpoint"):
        evaluate(f"ckpt={not_weights}", f"data.root={eval_root}")

    # trained with other settings than this job's: one error naming every differing key, before any data is read
    with pytest.raises(ValueError, match=r"was trained .* with data.modalities=\['flair', 't1', 't1ce', 't2'\], but "
                                         r"this job has data.modalities=\['flair', 't2'\]: set "
                                         r"data.modalities=\[flair,t1,t1ce,t2\]$"):
        evaluate(f"ckpt={ckpt}", f"data.root={eval_root}", "data.modalities=[flair,t2]")
    with pytest.raises(ValueError, match=r"with data.target=wt, data.image_size=64, but this job has "
                                         r"data.target=et, data.image_size=32: set data.target=wt data.image_size=64"):
        evaluate(f"ckpt={ckpt}", f"data.root={eval_root}", "data.target=et", "data.image_size=32")
    with pytest.raises(ValueError, match=r"this job has data.image_size=128: set data.image_size=64 \(it ran at "
                                         r"scale=ci: scale=ci gives its sizes\)"):
        run_in_process(["experiment=brats_eval", "scale=cpu", "logger=csv", f"paths.root_dir={brats_work}",
                        f"ckpt={ckpt}", f"data.root={eval_root}"], tmp_path / "eval")
    # moved away from its run, the checkpoint still cannot be tested with inputs its weights do not take
    moved = tmp_path / "moved.ckpt"
    shutil.copy(ckpt, moved)
    with pytest.raises(ValueError, match=f"ckpt={moved} does not fit model SegmentationModule"):
        evaluate(f"ckpt={moved}", f"data.root={eval_root}", "data.modalities=[flair,t2]")

    # a folder without subjects, or none at all
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"data.root: no BraTS subject .* under {empty}"):
        evaluate(f"ckpt={ckpt}", f"data.root={empty}")
    with pytest.raises(FileNotFoundError, match=f"data.root: BraTS folder not found: {tmp_path / 'gone'}"):
        evaluate(f"ckpt={ckpt}", f"data.root={tmp_path / 'gone'}")
    # every subject a test subject leaves none to validate on, nor (in a training job) to train on
    with pytest.raises(InstantiationException, match=r"data.test_fraction=1 makes every subject a test subject, so "
                                         r"data.val_fraction=0.2 has none to take"):
        evaluate(f"ckpt={ckpt}", f"data.root={eval_root}", "data.val_fraction=0.2")
    with pytest.raises(ValueError, match=r"data.test_fraction=1 makes every subject a test subject: nothing to train"):
        run_in_process(["experiment=brats_seg", *CI, f"paths.root_dir={brats_work}", f"data.root={eval_root}",
                        "data.val_fraction=0", "data.test_fraction=1"], tmp_path / "seg")


@pytest.mark.parametrize(("val", "test", "key"), [(0.0, 1.5, "data.test_fraction=1.5"),
                                                  (-0.1, 0.2, "data.val_fraction=-0.1"),
                                                  (0.5, 0.5, "leave no subject for training")])
def test_split_fractions_that_make_no_sense_name_the_key(val, test, key):
    cfg = compose_config(["experiment=brats_seg", "scale=ci", "data.root=/nowhere", "data.cache=/nowhere"])
    with pytest.raises(ValueError, match=key):
        BratsSliceDataModule(**{**{k: cfg.data[k] for k in cfg.data if k not in ("_target_", "aug")}, "aug": None,
                                "val_fraction": val, "test_fraction": test})
