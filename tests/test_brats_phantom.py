"""Phantom cohort: contents of a subject, determinism, resumable writes, and an end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_synthmed

from synthmed.data.brats.discovery import discover_subjects, validate_subjects
from synthmed.data.brats.phantom import PhantomConfig, generate_cohort, make_subject, subject_files


def test_phantom_config_rejects_unknown_key():
    with pytest.raises(ValueError, match="nosie"):
        PhantomConfig.from_mapping({"nosie": 0.1})


def phantom_knobs() -> dict:
    """data.root.phantom of the real config: the one home of the phantom's knobs."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module("synthmed.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=brats_phantom", "scale=ci"])
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
    cfg = PhantomConfig.from_mapping({**phantom_knobs(), "num_subjects": 1, "workers": 1, "radius_mm": (12.0, 14.0)})
    out = generate_cohort(cfg, tmp_path, progress=False)
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
    generate_cohort(cfg, tmp_path, progress=False)
    assert {k: p.read_bytes() for k, p in files.items()} == first


@pytest.mark.slow
def test_brats_seg_runs_on_phantom(tmp_path):
    run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert "test/iou_wt" in metrics["test"]
