"""BraTS discovery and validation on small nibabel fixtures of each layout."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.brats.discovery import (
    check_subject,
    discover_subjects,
    read_volume,
    summarize,
    to_brats_labels,
    validate_subjects,
)

SHAPE = (32, 32, 12)
CLASSIC = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}
NAMES_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}


def volumes(seed: int, shape=SHAPE, et_label: int = 4, tumour_slices=(4, 8)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cx, cy = shape[0] / 2, shape[1] / 2
    brain = ((x - cx) ** 2 + (y - cy) ** 2) < (0.4 * shape[0]) ** 2
    seg = np.zeros(shape, np.uint8)
    r2 = (x - cx - 3) ** 2 + (y - cy) ** 2
    zin = (z >= tumour_slices[0]) & (z < tumour_slices[1])
    seg[(r2 < 36) & zin] = 2
    seg[(r2 < 16) & zin] = et_label
    seg[(r2 < 4) & zin] = 1
    out = {}
    for i, m in enumerate(("flair", "t1", "t1ce", "t2")):
        v = (100 + 20 * i + rng.normal(0, 5, shape)) * brain + 50 * (seg > 0) * (i + 1)
        out[m] = np.where(brain, np.clip(v, 1, None), 0).astype(np.int16)
    out["seg"] = seg
    return out


def write_subject(folder: Path, sid: str, layout: str = "2021", seed: int = 0, ext: str = ".nii.gz",
                  skip: tuple[str, ...] = (), shape=SHAPE, **kw) -> Path:
    names = NAMES_2023 if layout == "2023" else CLASSIC
    sep = "-" if layout == "2023" else "_"
    vols = volumes(seed, shape=shape, et_label=3 if layout == "2023" else 4, **kw)
    d = folder / sid
    d.mkdir(parents=True, exist_ok=True)
    for kind, data in vols.items():
        if kind in skip:
            continue
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(d / f"{sid}{sep}{names[kind]}{ext}"))
    return d


def write_small_cohort(root: Path, n: int = 5) -> Path:
    """n small BraTS 2021 subjects (64 x 64 x 10, tumour on slices 2-8): the folder a test's end-to-end run trains
    on as `data.root` (no phantom cohort to make first)."""
    for i in range(n):
        write_subject(root, f"BraTS2021_{i:05d}", seed=i, shape=(64, 64, 10), tumour_slices=(2, 8))
    return root


def make_root(tmp_path: Path, layout: str, n: int = 3, **kw) -> Path:
    root = tmp_path / f"brats{layout}"
    for i in range(n):
        if layout == "2019":
            grade = "HGG" if i % 2 == 0 else "LGG"
            write_subject(root / grade, f"BraTS19_X_{i:03d}_1", seed=i, **kw)
        elif layout == "2023":
            write_subject(root, f"BraTS-GLI-{i:05d}-000", layout="2023", seed=i, **kw)
        else:
            write_subject(root, f"BraTS2021_{i:05d}", seed=i, ext=".nii" if i == 0 else ".nii.gz", **kw)
    return root


@pytest.mark.parametrize("layout", ["2019", "2021", "2023"])
def test_discovery_each_layout(tmp_path, layout):
    subjects = discover_subjects(make_root(tmp_path, layout))
    assert len(subjects) == 3 and all(not s.missing for s in subjects)
    summary = summarize(subjects)
    if layout == "2019":
        assert summary["grade"] == {"HGG": 2, "LGG": 1} and summary["source"] == {"2018/2019": 3}
    elif layout == "2023":
        assert summary["source"] == {"2023": 3}
    else:
        assert summary["source"] == {"2020/2021": 3}
        assert subjects[0].files["t1"].name.endswith(".nii")
    assert validate_subjects(subjects) == subjects


def test_2023_labels_map_to_classic(tmp_path):
    s = discover_subjects(make_root(tmp_path, "2023", n=1))[0]
    seg = to_brats_labels(read_volume(s.files["seg"]), s)
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        discover_subjects(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no BraTS subject"):
        discover_subjects(tmp_path / "empty")


def test_missing_modality(tmp_path):
    write_subject(tmp_path, "S1", skip=("t1ce",))
    s = discover_subjects(tmp_path)[0]
    with pytest.raises(FileNotFoundError, match="S1.*t1ce"):
        check_subject(s)


def test_shape_mismatch_names_file(tmp_path):
    d = write_subject(tmp_path, "S1")
    nib.save(nib.Nifti1Image(np.zeros((32, 30, 12), np.int16), np.eye(4)), str(d / "S1_t2.nii.gz"))
    with pytest.raises(ValueError, match="S1_t2.nii.gz"):
        check_subject(discover_subjects(tmp_path)[0])


def test_unknown_label_names_file(tmp_path):
    d = write_subject(tmp_path, "S1")
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 3  # 3 is not a classic BraTS label
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(d / "S1_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"unknown label values \[3\].*S1_seg.nii.gz"):
        check_subject(discover_subjects(tmp_path)[0])


def test_corrupt_file_names_file(tmp_path):
    d = write_subject(tmp_path, "S1")
    (d / "S1_flair.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 10))
    with pytest.raises(ValueError, match="S1_flair.nii.gz"):
        check_subject(discover_subjects(tmp_path)[0])


def test_skip_invalid_warns_with_subjects(tmp_path):
    write_subject(tmp_path, "good")
    write_subject(tmp_path, "bad", skip=("seg",))
    subjects = discover_subjects(tmp_path)
    with pytest.raises(FileNotFoundError, match="bad"):
        validate_subjects(subjects)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        valid = validate_subjects(subjects, skip_invalid=True)
    assert [s.id for s in valid] == ["good"]
    assert any("bad" in str(w.message) for w in caught)


def test_region_scores():
    from synthmed.data.brats.evaluate import region_scores

    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b = np.zeros_like(a)
    b[5:10, 5:10, 7:12] = True
    s = region_scores(a, a)
    assert s == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    s = region_scores(a, b)
    assert abs(s["iou"] - 75 / 175) < 1e-6 and abs(s["dice"] - 150 / 250) < 1e-6 and s["hd95"] > 0
    assert region_scores(np.zeros_like(a), np.zeros_like(a))["dice"] == 1.0
