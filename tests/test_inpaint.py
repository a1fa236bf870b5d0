"""aug=gan_inpaint: tumours painted into real slices, the rest of each slice staying real (real parts, no mocks)."""
# Slices are 32 px in the stage tests (the smallest the 70x70 PatchGAN accepts), 64 at scale=ci.

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_aug_gan import DCGAN, TRAINER, compose_ci, data_config, folders
from test_brats_slices import DM_ARGS, TRANSFORM, make_dm, root  # noqa: F401  (root is a fixture)

from synthmed import artifacts
from synthmed.augment.gan import CombinedAugmenter, GanAugmenter
from synthmed.augment.inpaint import RealTumours, centred, inpaint_pairs, place_inside
from synthmed.models.inpaint import TumourInpainter, crop, disc, window_corners

_CFG = compose_ci(["aug=gan_inpaint"])
INPAINT = {**OmegaConf.to_container(_CFG.aug.pairs.inpaint, resolve=True), "image_size": 32}
ITEM_KEYS = {"image", "seg", "brain", "subject", "slice"}
DEFORM = OmegaConf.to_container(_CFG.aug.pairs.deform)


def painter(**kw) -> TumourInpainter:
    torch.manual_seed(0)
    return instantiate({**INPAINT, **kw})


def blob_slices(n: int = 6, size: int = 32) -> list[dict]:
    """Slices with a brain disc and one tumour blob each (NCR core in oedema), random intensities."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    brain = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2).float()[None]
    items = []
    for i in range(n):
        cy, cx = 12 + i % 3 * 3, 12 + i % 4 * 2
        dist = (yy - cy) ** 2 + (xx - cx) ** 2
        seg = torch.where(dist < 4, 1, torch.where(dist < 16, 2, 0)).long()
        image = torch.randn(4, size, size, generator=g) * brain
        items.append({"image": image, "seg": seg, "brain": brain.clone()})
    return items


def batch_of(items: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in ("image", "seg", "brain")}


def assert_outside_is_real(painted: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> None:
    outside = (region == 0).expand_as(real)
    assert outside.any() and torch.equal(painted[outside], real[outside])  # bit for bit


def test_painting_leaves_every_pixel_outside_the_region_real(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    items = blob_slices()
    batch = batch_of(items)
    module = painter()
    region = module.region(batch["seg"], batch["brain"])
    painted = module.paint(batch["image"], batch["seg"], batch["brain"], region)
    assert painted.shape == batch["image"].shape and painted.dtype == torch.float32
    assert_outside_is_real(painted, batch["image"], region)
    assert not torch.equal(painted, batch["image"])  # something was painted inside
    assert torch.equal(painted, module.paint(batch["image"], batch["seg"], batch["brain"], region))  # deterministic
    # even a non-finite generator output cannot leak outside the region
    assert torch.equal(TumourInpainter.composite(torch.full_like(painted, float("nan")), batch["image"], region)
                       [(region == 0).expand_as(painted)], batch["image"][(region == 0).expand_as(painted)])
    # trained for a few steps (both optimisers move): still exactly real outside, train mode restored
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(items, batch_size=3, shuffle=True))
    assert any(not torch.equal(before[k], v) for k, v in module.generator.state_dict().items())
    module.train()
    painted = module.paint(batch["image"], batch["seg"], batch["brain"], region)
    assert module.generator.training
    assert_outside_is_real(painted, batch["image"], region)
    # the per-epoch sample grid of the fixed first batch
    assert list((tmp_path / "images").glob("samples_inpaint_grid_*.png"))
    # a region elsewhere (a placed synthetic tumour): still real outside it
    other = torch.zeros_like(region)
    other[:, :, 18:26, 8:14] = 1
    assert_outside_is_real(module.paint(batch["image"], batch["seg"], batch["brain"], other), batch["image"], other)


def test_window_trains_and_paints_on_a_crop_around_each_region(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    items = blob_slices(size=64)  # tumours within 3 px of their centre, dilated by 4: 15 px boxes
    batch = batch_of(items)
    module = painter(image_size=64, window=32)
    seen = []
    module.generator.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    region = module.region(batch["seg"], batch["brain"])
    corners = window_corners(region, 32)
    assert (corners >= 0).all() and (corners <= 32).all()
    # each window holds its whole region
    assert torch.equal(crop(region, corners, 32).sum((1, 2, 3)), region.sum((1, 2, 3)))
    painted = module.paint(batch["image"], batch["seg"], batch["brain"], region)
    assert seen == [(32, 32)]
    assert_outside_is_real(painted, batch["image"], region)
    assert not torch.equal(painted, batch["image"])
    # the window painted is the generator's output on the cropped condition, composited there
    module.generator.eval()
    with torch.no_grad():
        parts = [crop(t, corners, 32) for t in (batch["image"], batch["seg"], batch["brain"], region)]
        expected = module.composite(module.generator(module.condition(*parts)), parts[0], parts[3])
    assert torch.equal(crop(painted, corners, 32), expected)
    # a region larger than the window: that slice is painted whole, the others in their windows
    big = region.clone()
    big[0, 0, 8:56, 8:56] = batch["brain"][0, 0, 8:56, 8:56]
    assert window_corners(big, 32)[0].tolist() == [-1, -1]
    seen.clear()
    repainted = module.paint(batch["image"], batch["seg"], batch["brain"], big)
    assert sorted(seen) == [(32, 32), (64, 64)]
    assert_outside_is_real(repainted, batch["image"], big)
    assert torch.equal(repainted[1:], painted[1:]) and not torch.equal(repainted[0], painted[0])
    # training: every generator step sees the windows
    seen.clear()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(items, batch_size=3, shuffle=True))
    assert set(seen) == {(32, 32)} and len(seen) >= 2
    with pytest.raises(ValueError, match="model.window=64"):
        TumourInpainter(**{**{k: v for k, v in INPAINT.items() if k != "_target_"}, "window": 64})  # > 32 px


def test_region_is_the_dilated_tumour_inside_the_brain():
    module = painter(dilate=3)
    seg = torch.zeros(1, 32, 32, dtype=torch.long)
    seg[0, 10, 10] = 2
    brain = torch.zeros(1, 1, 32, 32)
    brain[..., :, :12] = 1  # the brain ends two pixels right of the tumour
    region = module.region(seg, brain)
    expected = torch.zeros(32, 32)
    expected[7:14, 7:14] = disc(3)
    expected[:, 12:] = 0
    assert torch.equal(region[0, 0], expected) and set(region.unique().tolist()) == {0.0, 1.0}
    assert module.region(torch.zeros_like(seg), brain).sum() == 0  # no tumour, nothing to paint
    with pytest.raises(ValueError, match="model.dilate=-1"):
        TumourInpainter(**{**{k: v for k, v in INPAINT.items() if k != "_target_"}, "dilate": -1})
    with pytest.raises(ValueError, match="image must be"):
        module.paint(torch.zeros(1, 2, 32, 32), seg, brain, region)


def test_placement_keeps_the_whole_tumour_in_the_brain():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    brain = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).float()
    label = torch.zeros(32, 32, dtype=torch.long)
    label[0:4, 0:3], label[1, 1] = 2, 1  # in the corner, outside the brain
    placed = [place_inside(label, brain, torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3)]
    for p in placed:
        assert (p > 0).sum() == (label > 0).sum() and (p == 1).sum() == 1  # moved whole, not cut
        assert not (p > 0)[brain == 0].any()
    assert torch.equal(placed[0], placed[1])  # the same seeded generator, the same shift
    assert len({tuple(torch.nonzero(p)[0].tolist()) for p in placed}) > 1  # shifts vary
    big = torch.full((32, 32), 2, dtype=torch.long)  # fits nowhere: cut to the brain
    assert torch.equal(place_inside(big, brain, torch.Generator().manual_seed(0)) > 0, brain > 0)


def make_inpaint_pairs(brats_root, tmp_path, data_dir=None, data=None, **kw):
    args = dict(dcgan=DCGAN, inpaint=INPAINT, dcgan_epochs=1, inpaint_epochs=1, batch_size=4, trainer=TRAINER,
                generators=None, extra=5, source="any", min_tumour_pixels=0, max_tumour_fraction=1.0,
                max_components=None, max_tries=20, data_dir=str(data_dir or tmp_path), tumours="dcgan",
                map_upsample="bilinear", deform=None)  # the DCGAN route unless a test says otherwise
    args.update(kw)
    return inpaint_pairs(data or data_config(brats_root, tmp_path), **args)


def test_inpaint_pairs_keep_the_real_slice_outside_the_region(root, tmp_path):  # noqa: F811
    path = make_inpaint_pairs(root, tmp_path)
    pairs = dict(np.load(path))
    assert set(pairs) == {"image", "seg", "brain", "region", "source"}
    n = 5
    assert pairs["image"].shape == (n, 4, 32, 32) and pairs["image"].dtype == np.float32
    assert pairs["seg"].shape == (n, 32, 32) and pairs["seg"].dtype == np.int64
    assert pairs["brain"].shape == pairs["region"].shape == (n, 1, 32, 32) and pairs["region"].dtype == np.float32
    assert set(np.unique(pairs["region"]).tolist()) <= {0.0, 1.0}
    base = make_dm(root, tmp_path, image_size=32)
    real = [base.real_train[int(i)] for i in pairs["source"]]
    module = painter()
    for i, item in enumerate(real):
        region = pairs["region"][i, 0] > 0
        assert not region[pairs["brain"][i, 0] == 0].any()  # the region lies inside the brain
        assert np.array_equal(pairs["brain"][i], item["brain"].numpy())
        assert np.array_equal(pairs["seg"][i][~region], item["seg"].numpy()[~region])  # label outside: real
        assert np.array_equal(pairs["image"][i][:, ~region], item["image"].numpy()[:, ~region])  # image: real
        # the region is the painter's rule applied to the synthetic tumour (the new label inside it)
        synthetic = torch.from_numpy(pairs["seg"][i] * region)[None]
        assert torch.equal(module.region(synthetic, item["brain"][None])[0, 0], torch.from_numpy(region).float())
    meta = artifacts.read_metadata(path.parent)
    assert meta["stage"] == "brats_inpaint_pairs" and meta["counts"]["kept"] == n
    assert (path.parent / "pairs.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in folders(tmp_path / "gan" / "generators")} == {"dcgan", "inpaint"}
    # determinism: a fresh data dir draws the same pairs
    again = dict(np.load(make_inpaint_pairs(root, tmp_path, data_dir=tmp_path / "again")))
    assert all(np.array_equal(pairs[k], again[k]) for k in pairs)
    # the augmenter loads them like aug=gan's pairs: items with the usual keys, the region left in the file
    aug = GanAugmenter(extra=n, pairs=str(path), name="gan_inpaint", replace_real=False, generators=None)
    assert aug.pairs == path
    items = aug.extra_samples(base.real_train)
    assert len(items) == n and all(set(item) == ITEM_KEYS for item in items)
    dm = make_dm(root, tmp_path, image_size=32, aug=aug)
    assert dm.describe()["train_items"] == {"real": len(base.real_train), "extra": n}
    # and combines with another regime
    combined = CombinedAugmenter(parts={"gan_inpaint": aug, "transform": {**TRANSFORM, "extra": 2}},
                                 name="gan_inpaint_transform", replace_real=False)
    assert make_dm(root, tmp_path, image_size=32, aug=combined).describe()["train_items"]["extra"] == n + 2


def test_tumour_free_source(root, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="aug.pairs.source=tumour_free: .*data.empty_fraction"):
        make_inpaint_pairs(root, tmp_path, source="tumour_free")  # the split keeps no slice without tumour
    with pytest.raises(ValueError, match="aug.pairs.source='nowhere'"):
        make_inpaint_pairs(root, tmp_path, source="nowhere")
    assert not list(tmp_path.glob("gan/**/artifact.yaml"))  # nothing made, nothing trained
    data = {**data_config(root, tmp_path), "empty_fraction": 0.3}
    pairs = dict(np.load(make_inpaint_pairs(root, tmp_path, data=data, source="tumour_free", extra=3)))
    outside = np.broadcast_to(pairs["region"][:, 0] == 0, pairs["seg"].shape)
    assert not pairs["seg"][outside].any()  # painted into slices without tumour: all tumour is synthetic


def test_real_tumours_are_moved_and_painted_without_a_tumour_generator(root, tmp_path):  # noqa: F811
    """aug.pairs.tumours=real: the tumours painted are the real training split's own maps, moved inside another
    brain; no DCGAN is trained; outside the region the slice stays real."""
    with pytest.raises(ValueError, match="aug.pairs.tumours='drawn'"):
        make_inpaint_pairs(root, tmp_path, tumours="drawn")
    pairs = dict(np.load(make_inpaint_pairs(root, tmp_path, tumours="real", extra=6)))
    assert {p.name for p in folders(tmp_path / "gan" / "generators")} == {"inpaint"}
    base = make_dm(root, tmp_path, image_size=32)
    real = [base.real_train[i] for i in range(len(base.real_train))]

    def shape_of(labels: np.ndarray) -> bytes:  # a tumour's map cut to its bounding box: the same wherever it lies
        rows, cols = np.flatnonzero(labels.any(1)), np.flatnonzero(labels.any(0))
        return labels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.int64).tobytes()

    real_shapes = {shape_of(item["seg"].numpy()) for item in real if item["seg"].any()}
    for i, source in enumerate(pairs["source"]):
        region = pairs["region"][i, 0] > 0
        painted = np.where(region, pairs["seg"][i], 0)
        assert painted.any() and shape_of(painted) in real_shapes, i  # a real tumour, whole (it fit the brain)
        assert np.array_equal(pairs["image"][i][:, ~region], real[int(source)]["image"].numpy()[:, ~region])
    # deformed real tumours: new shapes (turned, scaled, warped), the same painter, still no DCGAN
    with pytest.raises(ValueError, match=r"aug.generators.dcgan: aug.pairs.tumours=deformed paints no DCGAN maps"):
        make_inpaint_pairs(root, tmp_path, tumours="deformed", deform=DEFORM, generators={"dcgan": str(tmp_path)})
    with pytest.raises(ValueError, match="aug.pairs.tumours=deformed needs aug.pairs.deform"):
        make_inpaint_pairs(root, tmp_path, tumours="deformed", extra=6)
    with pytest.raises(ValueError, match="aug.pairs.map_upsample='bicubic'"):  # a typo fails on every route
        make_inpaint_pairs(root, tmp_path, tumours="deformed", deform=DEFORM, map_upsample="bicubic")
    deformed = dict(np.load(make_inpaint_pairs(root, tmp_path, tumours="deformed", deform=DEFORM, extra=6)))
    assert {p.name for p in folders(tmp_path / "gan" / "generators")} == {"inpaint"}
    shapes = [shape_of(np.where(deformed["region"][i, 0] > 0, deformed["seg"][i], 0)) for i in range(6)]
    assert sum(shape not in real_shapes for shape in shapes) >= 3
    for i, source in enumerate(deformed["source"]):
        region = deformed["region"][i, 0] > 0
        assert np.array_equal(deformed["image"][i][:, ~region], real[int(source)]["image"].numpy()[:, ~region])
    # the DCGAN route's pairs are another artefact
    make_inpaint_pairs(root, tmp_path, extra=6)
    assert len(folders(tmp_path / "gan" / "inpaint_pairs")) == 3


def test_deformed_tumours_are_new_shapes_of_the_real_labels_and_repeat_with_the_seed():
    """RealTumours with aug.pairs.deform: labels stay labels, the map is turned / scaled / warped (a new shape of
    about the real size, the region nesting kept), and the seeded generator gives the same maps."""
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ellipse = ((yy - 24) / 6.0) ** 2 + ((xx - 36) / 16.0) ** 2  # a long tumour off the middle: turns show
    seg = torch.where(ellipse < 0.25, 1, torch.where(ellipse < 1, 2, 0)).long()[None].repeat(3, 1, 1)
    tumours = RealTumours(seg, DEFORM)
    a = tumours.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(a, tumours.sample(8, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, tumours.sample(8, torch.Generator().manual_seed(1)))
    assert a.shape == (8, size, size) and set(a.unique().tolist()) == {0, 1, 2}
    area = int((seg[0] > 0).sum())
    for label_map in a:
        assert 0.4 * area < int((label_map > 0).sum()) < 2.0 * area
        assert not torch.equal(centred(label_map), centred(seg[0]))
        core = (label_map == 1).float()[None, None]  # NCR stays inside oedema: its 1-px ring is tumour
        ring = (F.max_pool2d(core, 3, 1, 1)[0, 0] > 0) & (label_map == 0)
        assert int(ring.sum()) <= 2
    with pytest.raises(ValueError, match=r"aug.pairs.deform.scale"):
        RealTumours(seg, {**DEFORM, "scale": [1.2, 0.9]})
    with pytest.raises(ValueError, match=r"aug.pairs.tumours=deformed: the real maps are 64 px, not 32"):
        tumours.sample(2, size=32)
    with pytest.raises(ValueError, match=r"aug.pairs.tumours=real: the real training split holds no slice"):
        RealTumours(torch.zeros_like(seg))


def test_gan_then_gan_inpaint_train_the_tumour_generator_once(root, tmp_path):  # noqa: F811
    """aug=gan and aug=gan_inpaint aug.pairs.tumours=dcgan of one seed, in one data dir (real configs at scale=ci):
    one DCGAN artefact, trained by the first and found by the second; gan_inpaint also resolves as a part of a
    combined regime."""
    from test_aug_gan import ci_datamodule

    gan, _ = ci_datamodule(root, tmp_path, "gan")
    (dcgan,) = folders(tmp_path / "gan" / "generators" / "dcgan")
    stamp = (dcgan / "artifact.yaml").stat().st_mtime_ns
    inpaint, cfg = ci_datamodule(root, tmp_path, "gan_inpaint", "aug.pairs.tumours=dcgan")
    assert folders(tmp_path / "gan" / "generators" / "dcgan") == [dcgan]
    assert (dcgan / "artifact.yaml").stat().st_mtime_ns == stamp  # found, not retrained
    assert len(folders(tmp_path / "gan" / "generators" / "inpaint")) == 1
    n, n_real = int(cfg.aug.extra), len(inpaint.real_train)
    assert cfg.aug.name == "gan_inpaint" and inpaint.describe()["train_items"] == {"real": n_real, "extra": n}
    train = inpaint.datasets["train"]
    assert all(train[n_real + i]["image"].shape == (4, 64, 64) for i in range(n))
    (pairs,) = folders(tmp_path / "gan" / "inpaint_pairs")
    assert np.load(pairs / "pairs.npz")["region"].shape == (n, 1, 64, 64)
    # as a part of a combined regime (aug=gan_inpaint_transform): its stage node resolves where it sits, and finds
    # the same pairs; the transformed copies come on top
    combined = compose_ci(["aug=gan_inpaint_transform", f"data.root={root}", f"paths.data_dir={tmp_path}",
                           "data.num_train_slices=null", "aug.parts.gan_inpaint.pairs.tumours=dcgan"])
    assert "aug.parts.gan_inpaint.pairs" in artifacts.resolve(combined, context={"loggers": []})
    assert combined.aug.parts.gan_inpaint.pairs == str(pairs / "pairs.npz")
    dm = instantiate(combined.data)
    dm.setup("fit")
    assert dm.describe()["train_items"]["extra"] == n + int(combined.aug.parts.transform.extra)
    assert combined.aug.name == "gan_inpaint_transform"


def test_brats_seg_with_gan_inpaint_end_to_end(tmp_path):
    """`python -m synthmed experiment=brats_seg aug=gan_inpaint scale=ci logger=csv`: by default deformed real tumour
    maps (no DCGAN is trained), pairs with regions, the painter's losses in the run's CSV log, metrics.json."""
    import json

    import yaml
    from conftest import run_synthmed
    from test_brats_discovery import write_small_cohort

    folder = tmp_path / "brats"  # a small cohort on disk: quicker than the phantom's
    write_small_cohort(folder)
    run_synthmed(["experiment=brats_seg", "aug=gan_inpaint", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}",
                  f"data.root={folder}", "data.num_train_slices=null"], cwd=tmp_path)
    (pairs,) = folders(tmp_path / "data" / "gan" / "inpaint_pairs")
    arrays = dict(np.load(pairs / "pairs.npz"))
    assert {"image", "seg", "brain", "region"} <= set(arrays) and arrays["region"].shape[1] == 1
    assert not (arrays["region"] > arrays["brain"]).any()
    assert {p.name for p in folders(tmp_path / "data" / "gan" / "generators")} == {"inpaint"}
    assert yaml.safe_load((pairs / "artifact.yaml").read_text())["config"]["tumours"] == "deformed"
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert "test/iou_wt" in json.dumps(metrics)
    headers = [set(f.read_text().splitlines()[0].split(",")) for f in (tmp_path / "outputs").rglob("metrics.csv")]
    assert any({"gan/inpaint/train/g_l1", "train/loss_epoch"} <= h for h in headers)
    assert not any("gan/dcgan/train/d_loss" in h for h in headers)
