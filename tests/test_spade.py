"""The SPADE brain generator: networks, the LightningModule, its place in aug=gan (aug=gan_spade)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from test_gan_models import all_changed, assert_checkpoint_round_trip, loader, snapshot
from torch import nn
from torch.nn.utils import parametrize

from synthmed.models.nets.spade import (
    SpadeGenerator,
    SpatialModulation,
    spade_levels,
)
from synthmed.models.spade import SpadeTranslator
from synthmed.utils import compose_config


def spade(scale: str = "ci", **kw) -> SpadeTranslator:
    """The brain generator of aug=gan_spade at `scale`, from the real config, `kw` overriding its arguments."""
    from omegaconf import OmegaConf

    cfg = compose_config(["experiment=brats_seg", "aug=gan_spade", f"scale={scale}"])
    args = OmegaConf.to_container(cfg.aug.pairs.pix2pix, resolve=True)
    assert args.pop("_target_") == "synthmed.models.spade.SpadeTranslator"
    # the mask-only generator unless a test asks for the tissue classes (aug=gan_spade's default, which needs the
    # real slice to translate)
    return SpadeTranslator(**{**args, "anatomy": "mask", **kw})  # called directly: a bad value raises its own error


def small(**kw) -> SpadeTranslator:
    return spade(**{"g_channels": 4, "d_channels": 4, "max_channels": 16, **kw})


def maps(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps with one square tumour (ED around ET around NCR) inside a disc-shaped brain."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    brain = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2).float()
    labels = torch.zeros(n, size, size, dtype=torch.long)
    q = size // 8
    labels[:, 3 * q : 5 * q, 3 * q : 5 * q] = 2
    labels[:, 3 * q + 2 : 5 * q - 2, 3 * q + 2 : 5 * q - 2] = 3
    labels[:, 4 * q - 1 : 4 * q + 1, 4 * q - 1 : 4 * q + 1] = 1
    return labels, brain.expand(n, 1, size, size).clone()


def trainer(tmp_path: Path, steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
                      num_sanity_val_steps=0, **kw)


# --- networks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "out_channels", "binary"), [(32, 4, False), (48, 2, False), (64, 1, True),
                                                               (128, 4, False), (240, 4, False)])
def test_shapes_for_sizes_and_channels(size, out_channels, binary):
    model = small(image_size=size, out_channels=out_channels, binary=binary)
    stages, start = spade_levels(size)
    assert start * 2**stages >= size and start * 2 ** (stages - 1) < size  # the smallest padded side
    labels, brain = maps(2, size)
    if binary:
        labels = (labels > 0).long()
    cond = model.condition(labels, brain)
    assert cond.shape == (2, 2 if binary else 4, size, size)
    out = model.translate(labels, brain, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, out_channels, size, size) and out.dtype == torch.float32 and torch.isfinite(out).all()
    judged = model.discriminator(torch.cat([cond, out], 1))
    assert len(judged) == model.hparams.d_scales
    for scale, outputs in enumerate(judged):  # features of every layer, the 1-channel logits last
        assert len(outputs) == model.hparams.d_downs + 2 and outputs[-1].shape[1] == 1
        assert outputs[0].shape[-1] == math.ceil(math.ceil(size / 2**scale) / 2)


def test_no_transposed_convs_and_spectral_norm_on_the_convs():
    model = small(image_size=64)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    modulations = {id(c) for m in model.generator.modules() if isinstance(m, SpatialModulation) for c in m.modules()}
    layers = [m for m in model.generator.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    main = [m for m in layers if id(m) not in modulations]
    assert len(main) == 1 + 2 * len(model.generator.blocks) + sum(  # z -> grid, 2 convs a block, shortcuts, to image
        isinstance(b.shortcut, nn.Conv2d) for b in model.generator.blocks) + 1
    assert all(parametrize.is_parametrized(m, "weight") for m in main)
    d_convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert d_convs and all(parametrize.is_parametrized(m, "weight") for m in d_convs)
    # every decoder block is modulated by the conditioning (parameter-free norm, gamma/beta from convs)
    for block in model.generator.blocks:
        for mod in (block.mod_0, block.mod_1):
            assert isinstance(mod, SpatialModulation) and not mod.norm.affine


def test_bad_sizes_name_the_key():
    with pytest.raises(ValueError, match="model.image_size must be >= 8"):
        small(image_size=4)
    with pytest.raises(ValueError, match="model.d_scales=3 .*model.image_size=16"):
        small(image_size=16, d_scales=3)
    with pytest.raises(ValueError, match="model.norm must be 'batch' or 'instance'"):
        small(norm="layer")
    model = small(image_size=32)
    with pytest.raises(ValueError, match="model.latent_dim"):
        model.generator(torch.zeros(2, 4, 32, 32), torch.zeros(2, 3))


def test_the_conditioning_shapes_the_output():
    """Moving the tumour or changing the brain mask changes the image, more where the change is."""
    torch.manual_seed(0)
    net = SpadeGenerator(64, 4, 2, 8, 4, 16, "instance").eval()
    model = small(image_size=64)
    labels, brain = maps(1, 64)
    z = torch.randn(1, 8)
    with torch.no_grad():
        base = net(model.condition(labels, brain), z)
        moved = net(model.condition(torch.roll(labels, 20, dims=-1), brain), z)
        half = brain.clone()
        half[..., :, 32:] = 0
        masked = net(model.condition(labels * half[:, 0].long(), half), z)
    assert not torch.allclose(base, moved) and not torch.allclose(base, masked)
    change = (base - masked).abs().mean(1)[0]
    # most in the right half, where the mask changed (not only there: the coarse layers see the whole slice)
    assert change[:, 40:].mean() > change[:, :24].mean()


# --- translating ---------------------------------------------------------------------------------
def test_translate_is_seeded_by_its_generator_and_restores_the_mode():
    model = small(image_size=32)
    labels, brain = maps(3, 32)
    a = model.translate(labels, brain, generator=torch.Generator().manual_seed(1))
    b = model.translate(labels, brain, generator=torch.Generator().manual_seed(1))
    c = model.translate(labels, brain, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)  # one map, many brains: z matters
    assert not torch.allclose(a[0], a[1])  # one z per slice
    torch.manual_seed(5)
    d = model.translate(labels, brain)  # generator=None: the global RNG
    torch.manual_seed(5)
    assert torch.equal(d, model.translate(labels, brain))
    assert model.generator.training  # the previous mode is restored
    # eval mode: a slice does not depend on its batch-mates (same z rows, another second slice)
    other_labels, other_brain = labels.clone(), brain.clone()
    other_labels[1], other_brain[1] = 0, 1
    e = model.translate(other_labels, other_brain, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], e[0]) and not torch.equal(a[1], e[1])


# --- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """ci-scale SPADE (64 px) from aug=gan_spade's config, 3 batches (6 optimiser steps) + validation."""
    tmp = tmp_path_factory.mktemp("spade")
    torch.manual_seed(0)
    model = spade()
    before_g, before_d = snapshot(model.generator), snapshot(model.discriminator)
    t = trainer(tmp, steps=6, limit_val_batches=1, log_every_n_steps=1)
    t.fit(model, loader(64, n=6, batch_size=2), loader(64, n=2, batch_size=2))
    return model, t, tmp, before_g, before_d


def test_training_steps_both_networks_and_logs_every_loss(fitted):
    model, t, tmp, before_g, before_d = fitted
    assert t.global_step == 6  # manual optimisation counts each optimiser step
    assert all_changed(model.generator, before_g)
    # every D weight moved; the logits' biases need not: while every logit is inside the hinge's margin, the
    # real and fake terms pull a shared bias by exactly -1 and +1 (an equal number of real and fake logits)
    moved = {name: not torch.equal(a, p.detach())
             for (name, p), a in zip(model.discriminator.named_parameters(), before_d, strict=True)}
    assert all(moved[name] for name in moved if not name.endswith(f"layers.{model.hparams.d_downs + 1}.bias"))
    for key in ("d_loss", "g_loss", "g_adv", "g_fm", "g_l1", "d_real", "d_fake"):
        for suffix in ("_step", "_epoch"):
            value = float(t.callback_metrics[f"train/{key}{suffix}"])
            assert math.isfinite(value), key
    assert float(t.callback_metrics["train/d_real_epoch"]) >= 0 and math.isfinite(float(t.callback_metrics["val/l1"]))
    assert (tmp / "images" / "val_spade_grid_0000.png").is_file()


def test_sample_grid_without_validation(tmp_path):
    """Inside aug=gan there is no validation: the epoch's grid translates the first training batch, twice."""
    from PIL import Image

    model = small(image_size=32)
    t = trainer(tmp_path, steps=2, limit_val_batches=0)
    t.fit(model, loader(32, n=4, batch_size=4))
    grid = np.asarray(Image.open(tmp_path / "images" / "samples_spade_grid_0000.png"))
    # 4 rows; label map | 4 real | 4 synthetic (z_1) | 4 synthetic (z_2), 32 px tiles with 2 px gutters
    assert grid.shape == (4 * 34 - 2, 13 * 34 - 2, 3)


def test_tissue_conditioning_modulates_every_layer_and_needs_the_real_slice(tmp_path):
    """anatomy=tissue (as pix2pix's): the conditioning adds the tissue classes of the slice the mask comes from
    (t1's), every modulation sees them and learns from them, the grid draws them, and without that slice the
    generator refuses; a bad modality index names its key."""
    from PIL import Image

    from synthmed.models.pix2pix import tissue_classes

    model = small(image_size=32, anatomy="tissue")
    assert model.hparams.anatomy_modality == 1  # t1 in data.modalities [flair, t1, t1ce, t2]
    batch = next(iter(loader(32)))
    cond = model.condition(batch["seg"], batch["brain"], batch["image"])
    assert cond.shape == (4, 7, 32, 32)
    assert torch.equal(cond[:, 4:], tissue_classes(batch["image"][:, 1], batch["brain"], batch["seg"], 3))
    mods = [m for m in model.generator.modules() if isinstance(m, SpatialModulation)]
    assert mods and all(m.shared[0].in_channels == 7 for m in mods)
    with pytest.raises(ValueError, match="model.anatomy=tissue reads the tissue classes from a real slice"):
        model.translate(batch["seg"], batch["brain"])
    rng = torch.Generator().manual_seed(0)
    out = model.translate(batch["seg"], batch["brain"], generator=rng, image=batch["image"], batch_stats=True)
    assert out.shape == (4, 4, 32, 32) and torch.isfinite(out).all()
    tissue_weights = mods[0].shared[0].weight[:, 4:].detach().clone()
    trainer(tmp_path, steps=2, limit_val_batches=0).fit(model, loader(32))
    assert not torch.equal(mods[0].shared[0].weight[:, 4:].detach(), tissue_weights)
    assert np.asarray(Image.open(tmp_path / "images" / "samples_spade_grid_0000.png")).shape == (4 * 34 - 2,
                                                                                               13 * 34 - 2, 3)
    with pytest.raises(ValueError, match="model.anatomy_modality=4, which must index one of the 4 modalities"):
        small(image_size=32, anatomy="tissue", anatomy_modality=4)


def test_feature_matching_gradients_pull_the_fakes_towards_real():
    """With the discriminator fixed, a few generator steps on the feature-matching loss alone reduce it."""
    torch.manual_seed(0)
    model = small(image_size=32)
    batch = next(iter(loader(32, n=2, batch_size=2)))
    cond, real = model._unpack(batch)
    z = model.noise(2)
    optimiser = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        fm = model._feature_matching(model._judge(cond, model.generator(cond, z)), model._judge(cond, real))
        optimiser.zero_grad()
        fm.backward()
        optimiser.step()
        losses.append(float(fm))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.generator.parameters())


def test_the_same_seed_trains_the_same_weights(tmp_path):
    def run():
        pl.seed_everything(3, verbose=False)
        model = small(image_size=32)
        trainer(tmp_path, steps=2, limit_val_batches=0).fit(model, loader(32, n=2, batch_size=2))
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_finite_loss_stops_training(tmp_path):
    class Poisoned(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            item = loader(32, n=2).dataset[i]
            return {**item, "image": torch.full_like(item["image"], float("nan"))}

    model = small(image_size=32)
    with pytest.raises(FloatingPointError, match=r"train/d_loss is nan .*model.lr_g"):
        trainer(tmp_path, steps=2, limit_val_batches=0).fit(model, torch.utils.data.DataLoader(Poisoned(), batch_size=2))


def test_checkpoint_and_state_dict_load_weights_only(fitted, tmp_path):
    model, t, tmp, *_ = fitted
    restored = assert_checkpoint_round_trip(t, model, tmp)
    labels, brain = maps(2, 64)
    same = [m.translate(labels, brain, generator=torch.Generator().manual_seed(9)) for m in (model, restored)]
    assert torch.equal(*same)
    # as aug=gan stores a generator: the state dict alone, loaded into a fresh module from the config
    torch.save(model.state_dict(), tmp_path / "pix2pix.pt")
    fresh = spade()
    fresh.load_state_dict(torch.load(tmp_path / "pix2pix.pt", weights_only=True))
    assert torch.equal(fresh.translate(labels, brain, generator=torch.Generator().manual_seed(9)), same[0])


# --- configs and the aug=gan slot ----------------------------------------------------------------
def test_configs_put_spade_in_the_brain_generator_slot():
    from omegaconf import OmegaConf

    for scale, size in (("ci", 64), ("cpu", 128), ("paper", 240)):
        cfg = compose_config(["experiment=brats_seg", "aug=gan_spade", f"scale={scale}"])
        node = OmegaConf.to_container(cfg.aug, resolve=True)
        generator = node["pairs"]["pix2pix"]
        assert node["name"] == "gan_spade" and generator["_target_"] == "synthmed.models.spade.SpadeTranslator"
        assert generator["image_size"] == size and generator["g_channels"] == cfg.scale.gan.spade_channels
        assert node["pairs"]["pix2pix_epochs"] == cfg.scale.gan.spade_epochs
        # the measured schedule (docs/gan.md): the tissue classes, a firm L1, each batch's statistics at synthesis
        assert (generator["anatomy"], generator["l1_weight"], node["pairs"]["translate_norm"]) == ("tissue", 100.0,
                                                                                                   "batch")
        assert node["pairs"]["dcgan"] == OmegaConf.to_container(
            compose_config(["experiment=brats_seg", "aug=gan", f"scale={scale}"]).aug.pairs.dcgan, resolve=True)
    # the same generator by one override of aug=gan (sized as pix2pix there), and in brats_embed
    override = compose_config(["experiment=brats_seg", "aug=gan", "model@aug.pairs.pix2pix=spade", "scale=ci"])
    assert override.aug.pairs.pix2pix._target_ == "synthmed.models.spade.SpadeTranslator"
    embed = compose_config(["experiment=brats_embed", "aug=gan_spade", "scale=ci"])
    assert embed.aug.pairs.pix2pix._target_ == "synthmed.models.spade.SpadeTranslator"
    # pix2pix draws with the resize decoder by default (no stripes, docs/gan.md)
    assert compose_config(["experiment=brats_seg", "aug=gan", "scale=ci"]).aug.pairs.pix2pix.upsample == "resize"


def test_brats_seg_with_gan_spade_end_to_end(tmp_path):
    """`python -m synthmed experiment=brats_seg aug=gan_spade scale=ci logger=csv`: the SPADE generator trained
    in the pairs stage, its losses in the run's CSV log, its sample grid, the pairs, metrics.json."""
    from conftest import run_synthmed
    from test_brats_discovery import write_small_cohort

    root = tmp_path / "brats"
    write_small_cohort(root)
    run_synthmed(["experiment=brats_seg", "aug=gan_spade", "scale=ci", "logger=csv", f"paths.root_dir={tmp_path}",
                  f"data.root={root}", "data.num_train_slices=12"], cwd=tmp_path)
    (pairs,) = [p for p in (tmp_path / "data" / "gan" / "pairs").iterdir() if p.is_dir()]
    arrays = dict(np.load(pairs / "pairs.npz"))
    assert arrays["image"].shape == (8, 4, 64, 64) and np.isfinite(arrays["image"]).all()
    (weights,) = (tmp_path / "data" / "gan" / "generators").rglob("pix2pix.pt")  # the brain generator's artefact
    assert list(weights.parent.rglob("samples_spade_grid_*.png"))  # its sample grid, per epoch
    state = torch.load(weights, weights_only=True)
    assert any(key.startswith("generator.blocks.") for key in state)  # the SPADE generator, not pix2pix
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["status"] == "ok" and "test/iou_wt" in json.dumps(metrics)
    header = next((tmp_path / "outputs").rglob("csv/metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"gan/pix2pix/train/g_fm_step", "gan/pix2pix/train/d_real_epoch", "gan/dcgan/train/d_loss"} <= set(header)
