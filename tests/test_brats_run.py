"""`python -m synthmed experiment=brats_seg` end to end on a small BraTS-layout folder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_synthmed
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError
from test_brats_discovery import write_small_cohort

from synthmed.utils import compose_config


def compose_brats(overrides: list[str]):
    return compose_config(["scale=ci", *overrides])


def test_channels_follow_the_modalities():
    """`data.modalities=[flair,t2]` alone gives a 2-channel U-Net input and a 2-channel pix2pix output."""
    cfg = compose_brats(["experiment=brats_seg", "aug=gan", "data.modalities=[flair,t2]"])
    assert cfg.model.net.in_channels == 2 and cfg.aug.pairs.pix2pix.out_channels == 2
    net = instantiate(cfg.model).net
    assert net.down[0][0].in_channels == 2  # the first convolution
    assert net(torch.zeros(1, 2, 64, 64)).shape == (1, 2, 64, 64)
    translator = instantiate(cfg.aug.pairs.pix2pix)
    assert translator.translate(torch.zeros(1, 64, 64, dtype=torch.long), torch.ones(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    assert compose_brats(["experiment=brats_seg"]).model.net.in_channels == 4  # all four by default
    assert compose_brats(["experiment=brats_pix2pix", "data.modalities=[t1]"]).model.out_channels == 1
    assert compose_brats(["experiment=brats_seg", "aug=gan_transform", "data.modalities=[t1,t2,flair]"]
                         ).aug.parts.gan.pairs.pix2pix.out_channels == 3
    bad = compose_brats(["experiment=brats_seg", "data.modalities=flair"])  # a string, not a list
    with pytest.raises(InterpolationResolutionError, match=r"needs a list(.|\n)*model.net.in_channels"):
        OmegaConf.to_container(bad.model, resolve=True)


def test_brats_seg_experiment_runs(tmp_path):
    root = tmp_path / "brats"
    write_small_cohort(root)
    run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}",
                  f"data.root={root}", "aug=transform", "data.num_train_slices=12"], cwd=tmp_path)  # of 18
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
    assert rows and set(rows[0]) == {"subject", "region", "dice", "iou", "hd95", "lesion_dice", "lesion_hd95",
                                     "lesions", "fp_lesions"}
    assert "test/vol_dice_wt" in metrics["test"]
    pred = nib.load(str(run_dir / "volumes" / f"{rows[0]['subject']}.nii.gz"))
    ref = nib.load(str(root / rows[0]["subject"] / f"{rows[0]['subject']}_flair.nii.gz"))
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 2}


def test_more_real_slices_than_the_training_split_holds_is_an_error(tmp_path):
    """A data-efficiency point must train on the real slices it is labelled with: asking for more than the
    training subjects hold is one error naming the key, not a warning and a smaller set."""
    root = tmp_path / "brats"
    write_small_cohort(root)  # three training subjects, 6 tumour slices each
    proc = run_synthmed(["experiment=brats_seg", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}",
                         f"data.root={root}", "data.num_train_slices=50"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "data.num_train_slices=50: the train split" in proc.stderr and "only 18 slices" in proc.stderr
    assert not list((tmp_path / "outputs").rglob("metrics.json"))
