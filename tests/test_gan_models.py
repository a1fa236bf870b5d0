"""The GAN models of the brain study: DCGAN tumour generator and pix2pix brain generator."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import hydra
import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from synthmed.models.nets.dcgan import TumourLabelDiscriminator
from synthmed.models.nets.pix2pix import BrainUNetGenerator, PatchDiscriminator
from synthmed.models.pix2pix import tissue_classes
from synthmed.utils import compose_config


class RandomSlices(Dataset):
    """Slices in the BraTS slice datamodule's dict format, random but fixed per index."""

    def __init__(self, n: int, size: int, modalities: int = 4) -> None:
        self.n, self.size, self.modalities = n, size, modalities

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        s = self.size
        seg = torch.randint(0, 4, (s, s), generator=g)
        return {
            "image": torch.randn(self.modalities, s, s, generator=g),
            "label": (seg > 0).long(),
            "seg": seg,
            "brain": torch.ones(1, s, s),
            "subject": f"sub-{i:03d}",
            "slice": torch.tensor(70 + i),
        }


def loader(size: int, n: int = 4, batch_size: int = 4, modalities: int = 4) -> DataLoader:
    return DataLoader(RandomSlices(n, size, modalities), batch_size=batch_size)


def trainer(tmp_path: Path, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **kw,
    )


def from_config(name: str, scale: str = "ci", **kw):
    """Compose the real Hydra config of the generator's experiment (`experiment=brats_<name> scale=<scale>`,
    where its sizes are stated) and instantiate the model, with `kw` overriding its arguments."""
    cfg = compose_config([f"experiment=brats_{name}", f"scale={scale}"])
    return hydra.utils.instantiate(cfg.model, **kw)


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def all_changed(module: nn.Module, before: list[torch.Tensor]) -> bool:
    """Every parameter tensor of `module` moved (Adam moves each one with a nonzero gradient)."""
    return all(not torch.equal(a, p.detach()) for a, p in zip(before, module.parameters(), strict=True))


def assert_plain(value) -> None:
    if isinstance(value, dict):
        for v in value.values():
            assert_plain(v)
    elif isinstance(value, list | tuple):
        for v in value:
            assert_plain(v)
    else:
        assert value is None or type(value) in (int, float, str, bool), f"not plain: {type(value)}"


def assert_checkpoint_round_trip(trainer_: pl.Trainer, model: pl.LightningModule, tmp_path: Path):
    path = tmp_path / "model.ckpt"
    trainer_.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert_plain(dict(ckpt["hyper_parameters"]))
    restored = type(model).load_from_checkpoint(path, map_location="cpu", weights_only=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    return restored


# --- DCGAN ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_dcgan(tmp_path_factory):
    """ci-scale DCGAN (32x32) from its config, trained 1 batch (2 optimiser steps) on 48x48 slices."""
    tmp = tmp_path_factory.mktemp("dcgan")
    model = from_config("dcgan")
    before_g, before_d = snapshot(model.generator), snapshot(model.discriminator)
    t = trainer(tmp)
    t.fit(model, loader(48))
    return model, t, tmp, before_g, before_d


def test_dcgan_config_resolves_scale_and_hparams_plain():
    model = from_config("dcgan", scale="paper")
    assert model.hparams.image_size == 128 and model.hparams.latent_dim == 100
    assert model.hparams.betas == (0.5, 0.999) and type(model.hparams.betas) is tuple
    assert_plain(dict(model.hparams))
    assert model.generator(torch.randn(1, 100)).shape == (1, 3, 128, 128)


def test_dcgan_both_optimisers_step(fitted_dcgan):
    model, t, tmp, before_g, before_d = fitted_dcgan
    assert t.global_step == 2  # manual optimisation counts each optimiser step
    assert all_changed(model.generator, before_g)
    assert all_changed(model.discriminator, before_d)
    for key in ("train/d_loss", "train/g_loss"):
        assert math.isfinite(float(t.callback_metrics[key])), key
    assert (tmp / "images" / "samples_tumour_maps_0000.png").is_file()


def test_dcgan_sample_labels_and_determinism(fitted_dcgan):
    model = fitted_dcgan[0]
    model.train()
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3), batch_size=2)
    c = model.sample(5, generator=torch.Generator().manual_seed(4))
    assert a.shape == (5, 32, 32) and a.dtype == torch.long
    assert set(a.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.generator.training  # mode restored


def test_dcgan_samples_at_a_larger_size_resize_the_probabilities_not_the_labels(fitted_dcgan):
    """sample(size=2S): the class probabilities are resized bilinearly, then the argmax: the same maps as resizing
    the labels (nearest) away from the edges, but the edges are drawn at the new size, not in 2x2 blocks."""
    model = fitted_dcgan[0]
    small = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.sample(6, generator=torch.Generator().manual_seed(3), size=32), small)
    large = model.sample(6, generator=torch.Generator().manual_seed(3), size=64)
    assert large.shape == (6, 64, 64) and set(large.unique().tolist()) <= {0, 1, 2, 3}
    blocks = small.repeat_interleave(2, 1).repeat_interleave(2, 2)
    # a pixel whose 3x3 neighbourhood holds one label blends only probability vectors with that argmax: it keeps it
    spread = F.max_pool2d(small[:, None].float(), 3, 1, 1) + F.max_pool2d(-small[:, None].float(), 3, 1, 1)
    interior = (spread[:, 0] == 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert interior.any() and torch.equal(large[interior], blocks[interior])
    quads = large.unfold(1, 2, 2).unfold(2, 2, 2).reshape(6, 32, 32, 4)
    assert (quads != quads[..., :1]).any()  # some 2x2 block holds two labels: an edge finer than the DCGAN's pixel


def test_dcgan_stabilisers_train_and_anneal(tmp_path):
    """instance noise (annealed to 0 over the epochs), one-sided label smoothing and the minibatch-std
    channel: both optimisers still step, losses stay finite, the noise follows its schedule."""
    model = from_config("dcgan", image_size=32, g_channels=8, d_channels=8, max_channels=32,
                           instance_noise=0.2, real_label=0.9, minibatch_std=True)
    seen = []

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer_, module):
            seen.append(round(module.noise_std(), 6))

    before_g, before_d = snapshot(model.generator), snapshot(model.discriminator)
    t = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[Watch()])
    t.fit(model, loader(48))
    assert seen == [0.2, 0.1]
    assert all_changed(model.generator, before_g) and all_changed(model.discriminator, before_d)
    for key in ("train/d_loss", "train/g_loss"):
        assert math.isfinite(float(t.callback_metrics[key])), key


def test_a_long_schedule_draws_at_most_max_epoch_grids(tmp_path, monkeypatch):
    """A generator trained many short epochs (a small real set: generator_epochs) draws a sample grid every k-th
    epoch, at most `MAX_EPOCH_GRIDS` of them and always the last; the weights are those of drawing every epoch."""
    import synthmed.visual

    weights = {}
    for cap in (5, 2):
        monkeypatch.setattr(synthmed.visual, "MAX_EPOCH_GRIDS", cap)
        pl.seed_everything(0, verbose=False)
        model = from_config("dcgan", image_size=32, g_channels=8, d_channels=8, max_channels=32)
        root = tmp_path / str(cap)
        t = pl.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, accelerator="cpu", default_root_dir=root, deterministic=True)
        pl.seed_everything(1, verbose=False)
        t.fit(model, loader(48))
        drawn = sorted(int(p.stem.rsplit("_", 1)[1]) for p in (root / "images").glob("samples_tumour_maps_*.png"))
        assert drawn == ([0, 1, 2, 3, 4] if cap == 5 else [0, 3, 4]), cap  # every ceil(5 / 2) = 3rd, and the last
        weights[cap] = model.generator.state_dict()
    for key, value in weights[5].items():
        assert torch.equal(value, weights[2][key]), key


def test_minibatch_std_makes_the_logit_depend_on_the_batch():
    torch.manual_seed(0)
    maps = torch.rand(2, 3, 32, 32)
    for mbstd in (False, True):
        d = TumourLabelDiscriminator(3, 32, 8, 32, minibatch_std=mbstd).eval()
        with torch.no_grad():
            alone_in_copies = d(maps[[0, 0]])[0]
            with_another = d(maps)[0]
        # eval-mode batch norm: without the channel a map's logit ignores its batch-mates
        assert torch.allclose(alone_in_copies, with_another) is (not mbstd)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_sizes_and_binary(size):
    model = from_config("dcgan", image_size=size, g_channels=4, d_channels=4, max_channels=16)
    maps = model(torch.randn(2, 100))
    assert maps.shape == (2, 3, size, size)
    assert torch.all(maps >= 0) and torch.all(maps.sum(1) <= 1 + 1e-5)  # softmax minus background
    assert model.discriminator(maps).shape == (2,)
    binary = from_config("dcgan", image_size=size, g_channels=4, d_channels=4, max_channels=16, binary=True)
    labels = binary.sample(3, torch.Generator().manual_seed(0))
    assert labels.shape == (3, size, size) and set(labels.unique().tolist()) <= {0, 1}


def test_dcgan_real_maps_resize_and_reject_bad_labels():
    model = from_config("dcgan", image_size=32, g_channels=4, d_channels=4)
    seg = torch.zeros(1, 240, 240, dtype=torch.long)
    seg[0, 60:180, 60:180] = 2
    seg[0, 90:150, 90:150] = 3
    maps = model.real_maps(seg)
    assert maps.shape == (1, 3, 32, 32)
    assert torch.equal(
        model.maps_to_labels(maps)[0, 16], torch.tensor([0] * 8 + [2] * 4 + [3] * 8 + [2] * 4 + [0] * 8)
    )
    with pytest.raises(ValueError, match="seg"):
        model.real_maps(torch.full((1, 32, 32), 4))


@pytest.mark.parametrize("binary", [False, True])
def test_dcgan_straight_through_fakes_are_hard_with_gradients(binary):
    model = from_config("dcgan", image_size=32, g_channels=4, d_channels=4, binary=binary, straight_through=True)
    fake = model.fake_maps(torch.randn(2, 100))
    hard = fake.detach().round()  # hard + soft - soft.detach() is exact up to float rounding
    torch.testing.assert_close(fake.detach(), hard)
    assert set(hard.unique().tolist()) <= {0.0, 1.0} and torch.all(
        hard.sum(1) <= 1
    )  # at most one region per pixel
    fake.sum().backward()  # the softmax/sigmoid's gradient reaches the generator
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())


def test_dcgan_weight_init():
    model = from_config("dcgan", image_size=64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    w = torch.cat([m.weight.flatten() for m in convs])
    g = torch.cat([m.weight.flatten() for m in norms])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    assert abs(g.mean() - 1) < 5e-3 and abs(g.std() - 0.02) < 5e-3
    assert all(torch.all(m.bias == 0) for m in norms)


def test_dcgan_checkpoint_weights_only(fitted_dcgan):
    model, t, tmp, *_ = fitted_dcgan
    restored = assert_checkpoint_round_trip(t, model, tmp)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.sample(4, torch.Generator().manual_seed(7)), restored.sample(4, g))


# --- pix2pix -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_pix2pix(tmp_path_factory):
    """ci-scale pix2pix (64x64 slices) from its config, one train batch (2 optimiser steps) + validation."""
    tmp = tmp_path_factory.mktemp("pix2pix")
    model = from_config("pix2pix")
    before_g, before_d = snapshot(model.generator), snapshot(model.discriminator)
    t = trainer(tmp, limit_val_batches=1)
    t.fit(model, loader(64, n=2, batch_size=2), loader(64, n=2, batch_size=2))
    return model, t, tmp, before_g, before_d


def test_pix2pix_both_optimisers_step(fitted_pix2pix):
    model, t, tmp, before_g, before_d = fitted_pix2pix
    assert model.hparams.image_size == 64 and model.generator.num_downs == 6
    assert t.global_step == 2
    assert all_changed(model.generator, before_g)
    assert all_changed(model.discriminator, before_d)
    for key in ("train/d_loss", "train/g_loss", "train/g_l1", "val/l1"):
        assert math.isfinite(float(t.callback_metrics[key])), key
    assert (tmp / "images" / "val_pix2pix_grid_0000.png").is_file()


@pytest.mark.parametrize("size", [240, 64])
def test_pix2pix_translate_shape(size):
    model = from_config("pix2pix", image_size=size, g_channels=4, d_channels=4, max_channels=32)
    assert model.generator.num_downs == (8 if size == 240 else 6)
    labels = torch.randint(0, 4, (2, size, size))
    brain = torch.ones(2, 1, size, size)
    out = model.translate(labels, brain)
    assert out.shape == (2, 4, size, size) and torch.isfinite(out).all()
    assert torch.equal(out, model.translate(labels, brain))  # eval mode: dropout off
    assert model.generator.training


def test_pix2pix_resize_upsampling():
    """upsample='resize': no transposed convolutions left, same shapes, trains (gradients reach the decoder)."""
    model = from_config("pix2pix", image_size=64, g_channels=4, d_channels=4, max_channels=32, upsample="resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.generator.modules())
    assert sum(isinstance(m, nn.Upsample) for m in model.generator.modules()) == model.generator.num_downs
    labels, brain = torch.randint(0, 4, (2, 64, 64)), torch.ones(2, 1, 64, 64)
    out = model.generator(model.condition(labels, brain))
    assert out.shape == (2, 4, 64, 64)
    out.abs().mean().backward()
    assert model.generator.up[0][1][1].weight.grad.abs().sum() > 0  # the last 3x3 conv after the upsampling
    with pytest.raises(ValueError, match="upsample must be 'transpose' or 'resize'"):
        BrainUNetGenerator(4, 4, num_downs=3, upsample="bilinear")


def test_pix2pix_pads_to_power_of_two_and_crops_centre():
    net = BrainUNetGenerator(4, 2, num_downs=8, base_channels=4, max_channels=16).eval()
    seen = []
    net.down[0].register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    x = torch.rand(1, 4, 240, 240)
    with torch.no_grad():
        out = net(x)
        padded = net(torch.nn.functional.pad(x, (8, 8, 8, 8)))
    assert seen == [(256, 256), (256, 256)]
    assert out.shape == (1, 2, 240, 240)
    torch.testing.assert_close(out, padded[..., 8:248, 8:248])


def test_pix2pix_conditioning_channels():
    model = from_config("pix2pix", image_size=32, g_channels=4, d_channels=4)
    labels = torch.tensor([[[0, 1], [2, 3]]])
    cond = model.condition(labels, torch.full((1, 1, 2, 2), 0.5))
    assert cond.shape == (1, 4, 2, 2)
    assert torch.equal(cond[0, :3].argmax(0) + 1, torch.tensor([[1, 1], [2, 3]]))  # NCR, ED, ET one-hot
    assert cond[0, :3, 0, 0].sum() == 0 and torch.all(cond[0, 3] == 0.5)
    with pytest.raises(ValueError, match="0..3"):
        model.condition(torch.full((1, 2, 2), 4), torch.ones(1, 1, 2, 2))


def test_tissue_classes_are_dark_to_bright_inside_the_brain_and_outside_the_tumour():
    """Three intensity bands inside a brain, a tumour across them: each band is one class, ordered by intensity
    whatever the band order, the tumour and the background in none; the same input gives the same classes."""
    size = 32
    image = torch.zeros(2, size, size)
    image[0, :, :12], image[0, :, 12:22], image[0, :, 22:] = 3.0, -1.0, 1.0  # bright, dark, middle
    image[1] = image[0].flip(-1) + 0.05 * torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    brain = torch.zeros(2, 1, size, size)
    brain[..., 2:30, 2:30] = 1
    seg = torch.zeros(2, size, size, dtype=torch.long)
    seg[:, 10:14, 10:24] = 2
    classes = tissue_classes(image, brain, seg, 3)
    assert classes.shape == (2, 3, size, size)
    inside = (brain[:, 0] > 0) & (seg == 0)
    assert torch.equal(classes.sum(1), inside.float())  # one class inside, none in the tumour or outside
    label = classes.argmax(1)
    assert (label[0, 5, 2:12] == 2).all() and (label[0, 5, 12:22] == 0).all() and (label[0, 5, 22:30] == 1).all()
    assert (label[1, 5, 20:30] == 2).all() and (label[1, 5, 10:20] == 0).all() and (label[1, 5, 2:10] == 1).all()
    assert torch.equal(classes, tissue_classes(image, brain, seg, 3))


def test_pix2pix_with_tissue_conditioning(tmp_path):
    """anatomy=tissue: the generator also sees the tissue classes of the slice its mask comes from (t1's, the
    modality the config picks), trains, and refuses to run without that slice; bad knobs name their key."""
    model = from_config("pix2pix", image_size=32, g_channels=4, d_channels=4, anatomy="tissue")
    assert model.hparams.anatomy_modality == 1  # t1 in data.modalities [flair, t1, t1ce, t2]
    batch = next(iter(loader(32)))
    cond = model.condition(batch["seg"], batch["brain"], batch["image"])
    assert cond.shape == (4, 7, 32, 32)
    assert torch.equal(cond[:, 4:], tissue_classes(batch["image"][:, 1], batch["brain"], batch["seg"], 3))
    assert model.translate(batch["seg"], batch["brain"], image=batch["image"]).shape == (4, 4, 32, 32)
    with pytest.raises(ValueError, match="model.anatomy=tissue reads the tissue classes from a real slice"):
        model.translate(batch["seg"], batch["brain"])
    first = model.generator.down[0].weight  # (out, in, k, k): the input channels 4..6 are the tissue classes
    before, tissue_weights = snapshot(model.generator), first[:, 4:].detach().clone()
    trainer(tmp_path, limit_val_batches=0).fit(model, loader(32))
    assert all_changed(model.generator, before) and not torch.equal(first[:, 4:].detach(), tissue_weights)
    hparams = dict(model.hparams)
    with pytest.raises(ValueError, match="model.anatomy='atlas' must be one of"):
        type(model)(**{**hparams, "anatomy": "atlas"})
    with pytest.raises(ValueError, match="model.anatomy_modality=-1, which must index one of the 4 modalities"):
        type(model)(**{**hparams, "anatomy_modality": -1})  # what ${index:...} gives when there is no t1
    from omegaconf import OmegaConf

    found = OmegaConf.create({"m": ["flair", "t1"], "i": "${index:${m},t1,-1}", "j": "${index:${m},t2,-1}",
                              "k": "${index:${m},t2}"})
    assert found.i == 1 and found.j == -1
    with pytest.raises(Exception, match=r"'t2' is not in \['flair', 't1'\]"):
        _ = found.k


def test_batch_statistics_normalise_with_the_batch_and_leave_the_running_averages():
    """translate(batch_stats=True): batch norm on the batch's own statistics (what a train-mode batch norm gives),
    dropout still off (the same input, the same images), running averages and every layer's mode unchanged."""
    model = from_config("pix2pix", image_size=32, g_channels=4, d_channels=4)
    for m in model.generator.modules():  # running averages far from any batch's statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
    buffers = {k: v.clone() for k, v in model.generator.named_buffers()}
    labels, brain = torch.randint(0, 4, (4, 32, 32)), torch.ones(4, 1, 32, 32)
    running = model.translate(labels, brain)
    batch = model.translate(labels, brain, batch_stats=True)
    assert not torch.allclose(running, batch)
    assert torch.equal(batch, model.translate(labels, brain, batch_stats=True))  # dropout off: deterministic
    assert all(torch.equal(v, buffers[k]) for k, v in model.generator.named_buffers())
    assert model.generator.training and all(m.training for m in model.generator.modules())
    reference = copy.deepcopy(model.generator).train()
    for m in reference.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        torch.testing.assert_close(batch, reference(model.condition(labels, brain)))
    model.eval()
    model.translate(labels, brain, batch_stats=True)
    assert not any(m.training for m in model.generator.modules())  # eval mode given back too


def test_patchgan_receptive_field_is_70():
    d = PatchDiscriminator(in_channels=2, base_channels=8)
    assert d.receptive_field() == 70  # analytic, from kernels and strides
    # empirical: gradient of one central output logit w.r.t. the input (eval: BN couples nothing)
    d.eval()
    x = torch.randn(1, 2, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    nz = x.grad.abs().sum((0, 1)) > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    strides = [m.stride[0] for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2, 1, 1]


def test_pix2pix_checkpoint_weights_only(fitted_pix2pix):
    model, t, tmp, *_ = fitted_pix2pix
    restored = assert_checkpoint_round_trip(t, model, tmp)
    labels, brain = torch.randint(0, 4, (1, 64, 64)), torch.ones(1, 1, 64, 64)
    assert torch.equal(model.translate(labels, brain), restored.translate(labels, brain))


def test_pix2pix_lsgan_step(tmp_path):
    model = from_config("pix2pix", image_size=32, g_channels=4, d_channels=4, gan_mode="lsgan", norm="instance")
    t = trainer(tmp_path, limit_val_batches=0)
    t.fit(model, loader(32, n=2, batch_size=2))
    assert math.isfinite(float(t.callback_metrics["train/g_loss"]))
    (result,) = t.test(model, loader(32, n=2, batch_size=2), verbose=False)
    assert math.isfinite(result["test/l1"])
