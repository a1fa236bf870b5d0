"""Phantom cohort: contents of a subject, determinism, resumable writes, and an end-to-end run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_synthmed
from processes import children, running

from synthmed.data.brats.discovery import discover_subjects, validate_subjects
from synthmed.data.brats.phantom import PhantomConfig, make_subject, phantom_cohort, subject_files


def test_phantom_config_rejects_unknown_key():
    with pytest.raises(ValueError, match="nosie"):
        PhantomConfig.from_mapping({"nosie": 0.1})


def phantom_knobs() -> dict:
    """data.root.phantom of the real config: the one home of the phantom's knobs."""
    from omegaconf import OmegaConf

    from synthmed.utils import compose_config

    cfg = compose_config(["experiment=brats_phantom", "scale=ci"])
    return OmegaConf.to_container(cfg.data.root.phantom, resolve=True)


def test_phantom_config_needs_every_knob():
    knobs = phantom_knobs()
    del knobs["noise"]
    with pytest.raises(ValueError, match=r"data.root.phantom is missing \['noise'\]"):
        PhantomConfig.from_mapping({**knobs, "num_subjects": 1})


def test_phantom_stage_holds_exactly_the_subjects_asked_for(tmp_path):
    from synthmed import artifacts

    knobs = {**phantom_knobs(), "workers": 1, "radius_mm": [12.0, 14.0]}
    one = artifacts.brats_phantom(phantom=knobs, num_subjects=1, data_dir=str(tmp_path))
    assert [s.id for s in discover_subjects(one)] == ["BraTSPhantom_00000"]
    meta = artifacts.read_metadata(one)
    assert meta["stage"] == "brats_phantom" and meta["config"]["num_subjects"] == 1 and meta["hash"] == one.name
    assert meta["subjects"] == ["BraTSPhantom_00000"] and meta["labels"]["labels"] == [0, 1, 2, 4]
    assert meta["labels"]["regions"] == {"wt": [1, 2, 4], "tc": [1, 4], "et": [4]} and "torch" in meta["versions"]
    assert artifacts.brats_phantom(phantom=knobs, num_subjects=1, data_dir=str(tmp_path)) == one  # found
    # subject i is the same bytes in a larger cohort (its own folder)
    files = subject_files(one, 0)
    cfg = PhantomConfig.from_mapping({**knobs, "num_subjects": 1})
    np.testing.assert_array_equal(np.asarray(__import__("nibabel").load(str(files["seg"])).dataobj),
                                  make_subject(cfg, 0)["seg"])


def test_phantom_subject_deterministic_and_valid(tmp_path):
    knobs = {**phantom_knobs(), "workers": 1, "radius_mm": (12.0, 14.0)}
    cfg = PhantomConfig.from_mapping({**knobs, "num_subjects": 1})
    out = phantom_cohort(knobs, 1, tmp_path, progress=False)
    files = subject_files(out, 0)
    first = {k: p.read_bytes() for k, p in files.items()}
    subjects = discover_subjects(out)
    assert [s.id for s in subjects] == ["BraTSPhantom_00000"] and subjects[0].source == "2020/2021"
    validate_subjects(subjects)  # all modalities, equal shapes, known labels
    # determinism: regenerate in memory and compare with the bytes on disk
    again = make_subject(cfg, 0)
    import nibabel as nib

    for kind, path in files.items():
        img = nib.load(str(path))
        assert img.shape == (240, 240, 155)
        np.testing.assert_array_equal(np.asarray(img.dataobj), again[kind])
    seg = again["seg"]
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4} and (seg == 2).any() and (seg == 1).any()
    assert again["t1"].dtype == np.int16
    # resumable: finished subjects are not rewritten
    assert phantom_cohort(knobs, 1, tmp_path, progress=False) == out
    assert {k: p.read_bytes() for k, p in files.items()} == first


@pytest.mark.slow
def test_brats_seg_runs_on_phantom(tmp_path):
    run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert "test/iou_wt" in metrics["test"]


def _temp_files(folder: Path) -> list[Path]:
    from synthmed.cleanup import TEMP_NAME

    return [p for p in folder.rglob("*") if TEMP_NAME.match(p.name)]


def _kill_when(cmd: str, ready, timeout: float = 180) -> list[int]:
    """Run python -c `cmd`, kill -9 it once `ready()` holds; return the children it had."""
    proc = subprocess.Popen([sys.executable, "-c", cmd])
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "the job ended before it could be killed"
        time.sleep(0.1)
    kids = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_cohort_generation_leaves_no_worker_and_resumes_byte_identical(tmp_path):
    knobs = {**phantom_knobs(), "workers": 2}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = ("import json; from synthmed.data.brats.phantom import phantom_cohort; "
           f"phantom_cohort(json.loads({json.dumps(json.dumps(knobs))}), 3, {str(killed)!r}, progress=False)")
    workers = _kill_when(cmd, lambda: any(killed.rglob("*_seg.nii.gz")))
    assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    deadline = time.time() + 5
    while any(running(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if running(w)], "a worker outlived its killed parent"
    (cohort,) = [p for p in (killed / "brats_phantom").iterdir() if p.is_dir()]
    done = sorted(p.parent.name for p in cohort.rglob("*_seg.nii.gz"))
    assert 1 <= len(done) < 3
    leftover = cohort / done[0] / f".{done[0]}_t1.nii.gz.abcd_123.tmp.gz"  # as a writer killed mid-file leaves
    leftover.write_bytes(b"half a volume")
    phantom_cohort(knobs, 3, killed, progress=False)  # resumes: the missing subjects, the leftovers removed
    phantom_cohort({**knobs, "workers": 1}, 3, clean, progress=False)  # uninterrupted
    files = sorted(p.relative_to(cohort) for p in cohort.rglob("*.nii.gz") if not p.name.startswith("."))
    assert len(files) == 15
    for name in files:
        assert (cohort / name).read_bytes() == (clean / "brats_phantom" / cohort.name / name).read_bytes(), name
    assert not _temp_files(killed) and not _temp_files(clean)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_slice_extraction_resumes_without_leftovers(tmp_path):
    from test_brats_discovery import write_subject

    from synthmed.data.brats.cache import slice_cache

    root = tmp_path / "brats"
    for i in range(12):
        write_subject(root, f"BraTS2021_{i:05d}", seed=i, shape=(64, 64, 40), tumour_slices=(5, 30))
    data = tmp_path / "data"
    cmd = ("from synthmed.data.brats.cache import slice_cache; "
           f"slice_cache({str(root)!r}, {str(data)!r}, ['flair', 't1', 't1ce', 't2'], 64, False, progress=False)")
    _kill_when(cmd, lambda: any(data.rglob("done.json")))
    (folder,) = [p for p in (data / "brats_slices").iterdir() if p.is_dir()]
    assert not (folder / "artifact.yaml").exists()  # unfinished
    first = sorted(p.parent for p in folder.rglob("done.json"))[0]
    (first / ".image.npy.abcd_123.tmp.npy").write_bytes(b"half an array")  # what a kill mid-np.save leaves
    assert slice_cache(root, data, ["flair", "t1", "t1ce", "t2"], 64, False, progress=False) == folder
    assert len(list(folder.rglob("done.json"))) == 12 and not _temp_files(folder)
