"""aug=gan: generators trained on the training split, synthetic pairs counted in the training set, caches."""
# Slices are 32 px: the smallest size the 70x70 PatchGAN of pix2pix accepts.

from __future__ import annotations

import pytest
import torch
from test_brats_slices import make_dm, root  # noqa: F401  (root is a fixture)

from synthmed.augment.gan import GanAugmenter

DCGAN = {"_target_": "synthmed.models.dcgan.TumourLabelGAN", "image_size": 32, "g_channels": 8, "d_channels": 8}
PIX2PIX = {"_target_": "synthmed.models.pix2pix.BrainSliceTranslator", "image_size": 32, "out_channels": 4,
           "g_channels": 4, "d_channels": 4}


def gan_aug(tmp_path, **kw):
    args = dict(_target_="synthmed.augment.gan.GanAugmenter", _recursive_=False, extra=5, dcgan=DCGAN,
                pix2pix=PIX2PIX, dcgan_epochs=1, pix2pix_epochs=1, batch_size=4, cache_dir=str(tmp_path / "gan"),
                min_tumour_pixels=0, max_tumour_fraction=1.0)
    args.update(kw)
    return args


def test_gan_pairs_are_added_and_cached(root, tmp_path):  # noqa: F811
    base = make_dm(root, tmp_path, image_size=32)
    dm = make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path))
    train = dm.datasets["train"]
    assert len(train) == len(base.datasets["train"]) + 5
    synthetic = [train[i] for i in range(len(base.datasets["train"]), len(train))]
    for item in synthetic:
        assert item["subject"] == "synthetic"
        assert item["image"].shape == (4, 32, 32) and torch.isfinite(item["image"]).all()
        assert set(item["seg"].unique().tolist()) <= {0, 1, 2, 3}
        assert torch.equal(item["label"], (item["seg"] > 0).long())
        assert not (item["seg"] > 0)[item["brain"][0] == 0].any()  # tumour only inside the brain
        assert (item["image"][:, item["brain"][0] == 0] == 0).all()
    folders = list((tmp_path / "gan").iterdir())
    assert len(folders) == 1
    files = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir() if p.is_file()}
    assert {"dcgan.pt", "pix2pix.pt"} <= set(files) and any(n.endswith(".npz") for n in files)
    again = make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path))  # same data + config: everything reused
    assert {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir() if p.is_file()} == files
    assert torch.equal(again.datasets["train"][len(train) - 1]["image"], train[len(train) - 1]["image"])


def test_degenerate_samples_are_dropped_with_a_clear_error(root, tmp_path):  # noqa: F811
    with pytest.raises(RuntimeError, match="passed the degeneracy rule"):
        make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path, min_tumour_pixels=10**6, max_tries=2))


def test_given_generators_must_exist(root, tmp_path):  # noqa: F811
    aug = GanAugmenter(extra=2, dcgan=DCGAN, pix2pix=PIX2PIX, dcgan_epochs=1, pix2pix_epochs=1,
                       cache_dir=str(tmp_path / "gan"), generators={"dcgan": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match="aug.generators.dcgan="):
        make_dm(root, tmp_path, image_size=32, aug=aug)
