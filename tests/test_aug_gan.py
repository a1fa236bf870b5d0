"""aug=gan: generators trained on the training split (a stage), synthetic pairs counted in the training set, caches."""
# Slices are 32 px: the smallest size the 70x70 PatchGAN of pix2pix accepts.

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_brats_slices import DM_ARGS, make_cache, make_dm, root  # noqa: F401  (root is a fixture)

from synthmed import artifacts
from synthmed.augment.gan import (
    CombinedAugmenter,
    GanAugmenter,
    gan_pairs,
    generator_epochs,
    generator_trainer_config,
)
from synthmed.utils import compose_config


def compose_ci(overrides: list[str]):
    return compose_config(["experiment=brats_seg", "scale=ci", *overrides])


_GAN = compose_ci(["aug=gan"])
# the generators of aug=gan at scale=ci, from the real config (32 px slices here, 64 at scale=ci)
DCGAN = OmegaConf.to_container(_GAN.aug.pairs.dcgan, resolve=True)
PIX2PIX = {**OmegaConf.to_container(_GAN.aug.pairs.pix2pix, resolve=True), "image_size": 32}
TRAINER = {**OmegaConf.to_container(_GAN.trainer, resolve=True), "log_every_n_steps": 1}  # a few steps: log each


def data_config(brats_root, data_dir, image_size=32):
    """A job's data config with its artefacts resolved (what the pairs stage reads as cfg.data)."""
    cache = make_cache(brats_root, data_dir, image_size=image_size)
    return {"_target_": "synthmed.data.brats.slices.BratsSliceDataModule", "root": str(brats_root), "cache": str(cache),
            **DM_ARGS, "image_size": image_size}


def make_pairs(brats_root, tmp_path, data_dir=None, loggers=None, **kw):
    args = dict(dcgan=DCGAN, pix2pix=PIX2PIX, dcgan_epochs=1, pix2pix_epochs=1, batch_size=4, trainer=TRAINER,
                generators=None, extra=5, min_tumour_pixels=0, max_tumour_fraction=1.0, max_components=None,
                max_tries=20, data_dir=str(data_dir or tmp_path), translate_norm="batch")
    args.update(kw)
    return gan_pairs(data_config(brats_root, tmp_path), **args, loggers=loggers)


def folders(path):
    """The artefact folders in `path` (their lock files lie beside them)."""
    return [p for p in path.iterdir() if p.is_dir()]


def gan_aug(pairs, extra=5, **kw):
    return GanAugmenter(extra=extra, pairs=str(pairs), name="gan", replace_real=False, generators=None, **kw)


def test_gan_pairs_are_added_and_cached(root, tmp_path):  # noqa: F811
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path / "job", name="csv", version="")
    pairs = make_pairs(root, tmp_path, loggers=[logger])
    base = make_dm(root, tmp_path, image_size=32)
    dm = make_dm(root, tmp_path, image_size=32, aug=gan_aug(pairs))
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
    # three artefacts, each with its metadata: one per generator (keyed by its own config), and the pairs
    trained = {}
    for kind in ("dcgan", "pix2pix"):
        (trained[kind],) = folders(tmp_path / "gan" / "generators" / kind)
        assert {f"{kind}.pt", "artifact.yaml"} <= {p.name for p in trained[kind].iterdir()}
        gen_meta = artifacts.read_metadata(trained[kind])
        assert gen_meta["stage"] == f"brats_{kind}_generator" and gen_meta["config"]["kind"] == kind
        assert gen_meta["config"]["epochs"] == 1 and gen_meta["config"]["config"]["_target_"].endswith(
            {"dcgan": "TumourLabelGAN", "pix2pix": "BrainSliceTranslator"}[kind])
    meta = artifacts.read_metadata(pairs.parent)
    assert meta["stage"] == "brats_gan_pairs" and meta["counts"]["kept"] == 5
    assert meta["labels"]["regions"]["tc"] == [1, 4] and (pairs.parent / "pairs.png").is_file()
    # the generators logged to the run's logger under their own prefix, beside (not in) the U-Net's keys
    logger.save()
    header = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"gan/dcgan/train/d_loss", "gan/pix2pix/train/g_l1"} <= set(header)
    assert not {"train/d_loss", "train/loss"} & set(header)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "gan").rglob("*") if p.is_file()}
    assert make_pairs(root, tmp_path) == pairs  # same data + config: everything found, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "gan").rglob("*") if p.is_file()} == files
    # aug.generators: the trained generators loaded instead of training new ones, the same pairs drawn
    given = {kind: str(trained[kind] / f"{kind}.pt") for kind in ("dcgan", "pix2pix")}
    loaded = make_pairs(root, tmp_path, data_dir=tmp_path / "other", generators=given)
    assert not (tmp_path / "other" / "gan" / "generators").exists()
    assert np.array_equal(np.load(loaded)["image"], np.load(pairs)["image"])


def test_each_generator_is_its_own_artefact(root, tmp_path):  # noqa: F811
    """A change to one generator's recipe retrains that generator alone: the other is found by its own key."""
    make_pairs(root, tmp_path, extra=2)
    (dcgan,) = folders(tmp_path / "gan" / "generators" / "dcgan")
    stamp = (dcgan / "artifact.yaml").stat().st_mtime_ns
    make_pairs(root, tmp_path, extra=2, pix2pix_epochs=2)
    assert folders(tmp_path / "gan" / "generators" / "dcgan") == [dcgan]
    assert (dcgan / "artifact.yaml").stat().st_mtime_ns == stamp  # found, not remade
    assert len(folders(tmp_path / "gan" / "generators" / "pix2pix")) == 2
    assert len(folders(tmp_path / "gan" / "pairs")) == 2


def test_tissue_conditioned_pairs_keep_the_real_slices_own_tumour(root, tmp_path):  # noqa: F811
    """aug.pairs.pix2pix.anatomy=tissue: pix2pix is given the tissue of the real slice each map is put into, so that
    slice's own tumour is in the pair too: labelled (the DCGAN's map on top) and drawn."""
    path = make_pairs(root, tmp_path, extra=4, pix2pix={**PIX2PIX, "anatomy": "tissue"})
    (pix2pix,) = folders(tmp_path / "gan" / "generators" / "pix2pix")
    assert yaml.safe_load((pix2pix / "artifact.yaml").read_text())["config"]["config"]["anatomy"] == "tissue"
    pairs = dict(np.load(path))
    real = make_dm(root, tmp_path, image_size=32).real_train
    real = [real[i] for i in range(len(real))]
    for seg, brain in zip(pairs["seg"], pairs["brain"], strict=True):
        sources = [it for it in real if np.array_equal(it["brain"].numpy(), brain)]
        assert sources and any(((it["seg"].numpy() > 0) <= (seg > 0)).all() for it in sources)
    assert any((it["seg"] > 0).any() for it in real)  # (there are real tumours to keep)
    # aug=gan_tissue: this route by name; the same tumour generator and knobs as aug=gan
    tissue, gan = compose_ci(["aug=gan_tissue"]).aug, _GAN.aug
    assert tissue.name == "gan_tissue" and tissue.pairs.pix2pix.anatomy == "tissue"
    assert tissue.pairs.pix2pix.anatomy_modality == 1 and gan.pairs.pix2pix.anatomy == "mask"
    assert tissue.pairs.dcgan == gan.pairs.dcgan and (tissue.pairs.translate_norm, gan.pairs.translate_norm) == (
        "batch", "running")


def test_translate_norm_picks_the_batch_norm_of_synthesis_and_keys_the_pairs(root, tmp_path):  # noqa: F811
    """aug.pairs.translate_norm: batch and running draw other images from the same generators (two pair artefacts,
    one pix2pix), a typo fails naming the key."""
    batch = dict(np.load(make_pairs(root, tmp_path, extra=4)))
    running = dict(np.load(make_pairs(root, tmp_path, extra=4, translate_norm="running")))
    assert len(folders(tmp_path / "gan" / "generators" / "pix2pix")) == 1
    assert len(folders(tmp_path / "gan" / "pairs")) == 2
    assert np.array_equal(batch["seg"], running["seg"]) and not np.allclose(batch["image"], running["image"])
    with pytest.raises(ValueError, match="aug.pairs.translate_norm='train' must be one of"):
        make_pairs(root, tmp_path, extra=4, translate_norm="train")
    assert len(folders(tmp_path / "gan" / "pairs")) == 2  # nothing made


def test_a_smaller_real_set_trains_the_generators_more_epochs(root, tmp_path):  # noqa: F811
    """protocol=equal_steps counts the generators' epochs at the scale's real set (`epochs_at`): a split of half
    that trains them twice the epochs, about the same optimiser steps; epochs_at=None keeps the stated epochs."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    n = len(make_dm(root, tmp_path, image_size=32).datasets["train"])
    steps = {}
    for name, at in (("stated", None), ("scaled", 2 * n)):
        logger = CSVLogger(tmp_path / name, name="csv", version="")
        make_pairs(root, tmp_path, data_dir=tmp_path / name, loggers=[logger], extra=2, epochs_at=at)
        logger.save()
        for kind in ("dcgan", "pix2pix"):
            (folder,) = folders(tmp_path / name / "gan" / "generators" / kind)
            assert artifacts.read_metadata(folder)["config"]["epochs"] == (1 if at is None else 2), (name, kind)
        with open(Path(logger.log_dir) / "metrics.csv") as f:
            steps[name] = sum(1 for row in csv.DictReader(f) if row.get("gan/dcgan/train/d_loss"))
    assert steps["stated"] > 0 and steps["scaled"] == 2 * steps["stated"]
    # at the scale's own real set (or a larger one) the stated epochs: the study's generators are unchanged
    assert generator_epochs({"dcgan": 200, "inpaint": 30}, 290, 290) == {"dcgan": 200, "inpaint": 30}
    assert generator_epochs({"dcgan": 200}, 400, 290) == {"dcgan": 200}
    assert generator_epochs({"dcgan": 200, "inpaint": 30}, 50, 290) == {"dcgan": 1160, "inpaint": 174}
    assert generator_epochs({"dcgan": 200}, 50, None) == {"dcgan": 200}
    cpu = compose_config(["experiment=brats_seg", "scale=cpu", "aug=gan_inpaint"])
    assert cpu.aug.pairs.epochs_at == cpu.data.num_train_slices == 290
    assert compose_config(["experiment=brats_seg", "scale=cpu", "aug=gan", "protocol=equal_epochs"]
                          ).aug.pairs.epochs_at is None
    # brats_embed (no protocol) judges the generators brats_seg trains: the same count, so the same artefacts
    assert compose_config(["experiment=brats_embed", "scale=cpu", "aug=gan_inpaint", "data.num_train_slices=50"]
                          ).aug.pairs.epochs_at == 290


def test_gan_augmenter_only_loads_its_pairs_file(root, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="aug.pairs must be the path of a pairs file"):
        GanAugmenter(extra=2, pairs={"_target_": "synthmed.artifacts.brats_gan_pairs"}, name="gan",
                     replace_real=False, generators=None)
    with pytest.raises(FileNotFoundError, match="aug.pairs=.*nope.npz does not exist"):
        make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path / "nope.npz", extra=2))


def test_generators_train_with_the_configured_trainer():
    """aug=gan trainer=gpu: the generators' trainer is the job's GPU trainer (checked without touching CUDA),
    for the generator epochs of the one home of that knob (scale.gan.*_epochs)."""
    cfg = compose_ci(["aug=gan", "trainer=gpu"])
    node = cfg.aug.pairs
    for kind in ("dcgan", "pix2pix"):
        kwargs = generator_trainer_config(node.trainer, node[f"{kind}_epochs"])
        assert kwargs["_target_"] == "lightning.Trainer" and kwargs["accelerator"] == "gpu"
        assert kwargs["precision"] == "16-mixed" and kwargs["max_epochs"] == cfg.scale.gan[f"{kind}_epochs"]
        assert kwargs["enable_checkpointing"] is False and kwargs["limit_val_batches"] == 0
        assert kwargs["max_steps"] == -1  # the U-Net's step budget (protocol=equal_steps) is not the generator's
    assert generator_trainer_config(compose_ci(["aug=gan"]).aug.pairs.trainer, 3)["accelerator"] == "cpu"
    ablation = compose_ci(["aug=gan_transform", "trainer=gpu"]).aug.parts.gan.pairs
    assert generator_trainer_config(ablation.trainer, 1)["accelerator"] == "gpu"


def test_gan_knobs_have_one_home():
    """The tumour generator is sized once, in its model config, for every user of it (aug=gan, aug=gan_inpaint,
    experiment=brats_dcgan); the brain generator in aug/gan.yaml; each by one scale lookup."""
    import synthmed.conf

    conf = Path(synthmed.conf.__file__).parent
    assert "image_size: ${scale.gan.dcgan_size}" in (conf / "model" / "dcgan.yaml").read_text()
    for user in ("aug/gan.yaml", "aug/gan_inpaint.yaml", "experiment/brats_dcgan.yaml"):
        text = (conf / user).read_text()
        assert "dcgan_size" not in text and "dcgan_channels" not in text and "oc.select:scale" not in text, user
    assert "g_channels: ${scale.gan.pix2pix_channels}" in (conf / "aug" / "gan.yaml").read_text()
    inpaint = compose_ci(["aug=gan_inpaint", "scale=paper"]).aug.pairs.dcgan
    assert inpaint.image_size == 128 and inpaint.g_channels == inpaint.d_channels
    cfg = compose_ci(["aug=gan", "scale=paper"])
    assert cfg.aug.pairs.dcgan.image_size == 128 and cfg.aug.pairs.pix2pix.image_size == cfg.data.image_size == 240
    assert cfg.aug.pairs.min_tumour_pixels == 20 and cfg.aug.pairs.max_components == 10


def test_degenerate_samples_are_dropped_with_a_clear_error(root, tmp_path):  # noqa: F811
    with pytest.raises(RuntimeError, match="passed the degeneracy rule"):
        make_pairs(root, tmp_path, min_tumour_pixels=10**6, max_tries=2)
    assert not list((tmp_path / "gan" / "pairs").rglob("artifact.yaml"))  # nothing half-written counts as made


def test_speckle_maps_fail_the_component_rule(root, tmp_path):  # noqa: F811
    from synthmed.augment.gan import tumour_pieces

    blobs = np.zeros((32, 32), np.int64)
    blobs[4:9, 4:9], blobs[20:24, 18:25], blobs[6, 8] = 2, 1, 3  # two pieces (the lone pixel touches the first)
    speckle = np.zeros((32, 32), np.int64)
    speckle[::3, ::3] = 2  # 121 isolated pixels: what an unconverged DCGAN draws
    assert tumour_pieces(blobs) == 2 and tumour_pieces(speckle) == 121
    # min 1 tumour pixel and at most 0 pieces: no map can pass, and the error names the knob
    with pytest.raises(RuntimeError, match="aug.pairs.max_components"):
        make_pairs(root, tmp_path, min_tumour_pixels=1, max_components=0, max_tries=2)


def test_given_generators_must_exist(root, tmp_path):  # noqa: F811
    with pytest.raises(FileNotFoundError, match="aug.generators.dcgan="):
        make_pairs(root, tmp_path, generators={"dcgan": str(tmp_path / "nope.pt")})


def test_embedding_analysis_numbers(root, tmp_path):  # noqa: F811
    import numpy as np

    from synthmed.analysis.embedding import (
        EmbeddingAnalysis,
        frechet_distance,
        label_diversity,
        label_map_stats,
    )

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(12.0, rel=0.05)  # |mean shift|^2 = 3 * 2^2
    same = np.ones((5, 8, 8), dtype=int)
    assert label_diversity(same) == pytest.approx(0.0)
    disjoint = np.zeros((2, 8, 8), dtype=int)
    disjoint[0, :4], disjoint[1, 4:] = 1, 1
    assert label_diversity(disjoint) == pytest.approx(1.0)
    # label-map statistics: two blobs (NCR core in ED) in a 100-pixel brain, and one empty map (ignored)
    maps = np.zeros((2, 10, 10), dtype=int)
    maps[0, 0:3, 0:3], maps[0, 1, 1], maps[0, 6:8, 6:8] = 2, 1, 3
    brains = np.ones((2, 10, 10))
    stats = label_map_stats(maps, brains)
    assert stats["pieces_median"] == 2 and stats["tumour_share_median"] == pytest.approx(13 / 100)
    assert (stats["ncr_share"], stats["ed_share"], stats["et_share"]) == pytest.approx((1 / 13, 8 / 13, 4 / 13))
    assert all(np.isnan(v) for v in label_map_stats(maps[1:], brains[1:]).values())

    dm = make_dm(root, tmp_path, image_size=32, aug=gan_aug(make_pairs(root, tmp_path, extra=8), extra=8))
    knobs = OmegaConf.to_container(compose_config(["experiment=brats_embed", "scale=ci"]).analysis, resolve=True)
    analysis = {**{k: v for k, v in knobs.items() if k != "_target_"},  # every knob from its one home, then small
                "size": 32, "tsne_perplexity": 20.0, "feature_epochs": 1, "cv_folds": 2, "seed": 0}
    results = EmbeddingAnalysis(**analysis)(dm, tmp_path / "job")
    assert results["test/num_synthetic"] == 8.0 and results["test/num_real"] > 0
    shares = [results[f"test/labels_{r}_share_real"] for r in ("ncr", "ed", "et")]  # the maps' statistics
    assert sum(shares) == pytest.approx(1.0) and results["test/labels_pieces_median_real"] >= 1
    assert "test/labels_tumour_share_median_synthetic" in results  # NaN when a 1-epoch DCGAN drew no tumour
    assert 0.0 <= results["test/c2st_accuracy"] <= 1.0 and results["test/frechet_distance"] >= 0
    assert (tmp_path / "job" / "images" / "embeddings.png").read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    grid = Image.open(tmp_path / "job" / "images" / "real_vs_synthetic.png")  # 4 rows x 6 slices, 1.6 in each
    assert grid.size == (960, 680)
    with pytest.raises(ValueError, match="aug=gan"):
        EmbeddingAnalysis(**analysis)(make_dm(root, tmp_path, image_size=32), tmp_path / "job2")


def test_gan_transform_adds_both_kinds(root, tmp_path):  # noqa: F811
    base = make_dm(root, tmp_path, image_size=32)
    from test_brats_slices import TRANSFORM

    aug = CombinedAugmenter(parts={"gan": gan_aug(make_pairs(root, tmp_path, extra=4), extra=4),
                                   "transform": {**TRANSFORM, "extra": 3}}, name="gan_transform", replace_real=False)
    dm = make_dm(root, tmp_path, image_size=32, aug=aug)
    train = dm.datasets["train"]
    assert len(train) == len(base.datasets["train"]) + 7
    added = [train[i]["subject"] for i in range(len(base.datasets["train"]), len(train))]
    assert added.count("synthetic") == 4


def test_generators_leave_the_global_random_stream_alone(root, tmp_path):  # noqa: F811
    """Training the generators (first run) and reading them from the cache (later runs) leave the U-Net the
    same random stream: the same config + seed give the same numbers whether or not the cache existed."""

    def draw() -> tuple:
        return torch.rand(3), np.random.rand(3), random.random()

    def seed() -> None:
        torch.manual_seed(123), np.random.seed(123), random.seed(123)

    seed()
    expected = draw()
    for _ in range(2):  # trains and caches, then reuses
        seed()
        make_dm(root, tmp_path, image_size=32, aug=gan_aug(make_pairs(root, tmp_path, extra=3), extra=3))
        got = draw()
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_generators_depend_on_their_cache_key_not_on_the_callers_rng(root, tmp_path):  # noqa: F811
    """Two fresh caches, different global RNG states before: the same generators and pairs."""
    trained = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        cache = tmp_path / f"cache{caller_seed}"
        pairs = make_pairs(root, tmp_path, data_dir=cache, extra=3)
        (folder,) = folders(cache / "gan" / "generators" / "dcgan")
        trained.append((torch.load(folder / "dcgan.pt", weights_only=True), np.load(pairs)["image"]))
    (first, images_a), (second, images_b) = trained
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert np.array_equal(images_a, images_b)


def ci_datamodule(brats_root, data_dir, aug: str, *overrides: str):
    """The brats_seg experiment's datamodule at scale=ci, composed from the real configs, its artefacts
    resolved as the runner does (the pairs stage trains the generators with the configured trainer)."""
    # all the training slices of the small test cohort (fewer than scale=ci's num_train_slices)
    cfg = compose_ci([f"aug={aug}", f"data.root={brats_root}", f"paths.data_dir={data_dir}", "data.num_train_slices=null",
                      *overrides])
    artifacts.resolve(cfg, context={"loggers": []})
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm, cfg


def test_synthetic_only_trains_on_the_gan_pairs_alone(root, tmp_path):  # noqa: F811
    real, _ = ci_datamodule(root, tmp_path, "none")
    synth, cfg = ci_datamodule(root, tmp_path, "synthetic_only")
    n, n_real = int(cfg.aug.extra), len(real.datasets["train"])
    assert cfg.aug.name == "synthetic_only" and n > 0 and n_real > 0
    train = synth.datasets["train"]
    assert len(train) == n and synth.describe()["train_items"] == {"real": 0, "extra": n}
    assert [train[i]["subject"] for i in range(n)] == ["synthetic"] * n
    assert all(train[i]["image"].shape == (4, 64, 64) for i in range(n))
    # the generators learnt from the real training split: aug=gan (real + pairs) reuses the same cache folder
    gan, _ = ci_datamodule(root, tmp_path, "gan")
    assert gan.describe()["train_items"] == {"real": n_real, "extra": n}
    assert {kind.name: len(folders(kind)) for kind in folders(tmp_path / "gan" / "generators")} == \
        {"dcgan": 1, "pix2pix": 1}
    assert len(folders(tmp_path / "gan" / "pairs")) == 1  # the same pairs too
    for i in range(n):
        assert torch.equal(train[i]["image"], gan.datasets["train"][n_real + i]["image"])
    assert len(synth.real_train) == n_real
    for split in ("val", "test"):  # validation and test stay the real slices
        a, b = real.datasets[split], synth.datasets[split]
        assert len(a) == len(b) > 0
        assert [(a[i]["subject"], a[i]["slice"]) for i in range(len(a))] == \
            [(b[i]["subject"], b[i]["slice"]) for i in range(len(b))]
        assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))


def test_replace_real_needs_samples_and_belongs_to_the_whole_regime():
    with pytest.raises(ValueError, match="aug.replace_real=true needs aug.extra > 0"):
        GanAugmenter(extra=0, pairs="pairs.npz", name="gan", replace_real=True, generators=None)
    from test_brats_slices import TRANSFORM

    part = {**TRANSFORM, "extra": 2, "replace_real": True}
    with pytest.raises(ValueError, match="aug.parts.transform.replace_real=true"):
        CombinedAugmenter(parts={"transform": part}, name="gan_transform", replace_real=False)


def test_brats_embed_experiment_reports_numbers_and_pictures(tmp_path):
    """`experiment=brats_embed` end to end: metrics.json, the pictures, and the same numbers in its W&B run."""
    import json

    from conftest import run_synthmed
    from test_brats_discovery import write_small_cohort
    from wandb_records import logged_history, run_info

    folder = tmp_path / "brats"
    write_small_cohort(folder)
    run_synthmed(["experiment=brats_embed", "scale=ci", f"paths.root_dir={tmp_path}", f"data.root={folder}",
                  "analysis.feature_epochs=1", "analysis.cv_folds=2", "data.num_train_slices=null"], cwd=tmp_path,
                 env={"WANDB_MODE": "offline"})
    metrics_file = next((tmp_path / "outputs").rglob("metrics.json"))
    numbers = json.loads(metrics_file.read_text())["test"]
    assert 0.0 <= numbers["test/c2st_accuracy"] <= 1.0 and numbers["test/num_synthetic"] > 0
    # the stripe numbers of a whole-slice route, where the sweep summary reads them; no region numbers
    for key in ("stripe_amplitude_real", "stripe_amplitude_synthetic", "stripe_amplitude_columns_real",
                "stripe_amplitude_columns_synthetic"):
        assert numbers[f"test/{key}"] >= 0, key
    assert numbers["test/stripe_ratio"] == pytest.approx(
        numbers["test/stripe_amplitude_synthetic"] / numbers["test/stripe_amplitude_real"])
    assert not [key for key in numbers if key.startswith("test/region_")]
    job = metrics_file.parent
    for picture in ("embeddings.png", "real_vs_synthetic.png"):
        assert (job / "images" / picture).read_bytes()[:4] == b"\x89PNG"
    run_file = next(job.glob("wandb/offline-run-*/run-*.wandb"))
    config = run_info(run_file)["config"]  # the job's config as the run's hyperparameters
    assert config["name"] == "brats_embed" and config["analysis"]["cv_folds"] == 2, sorted(config)
    history = logged_history(run_file)
    logged = {k: v for row in history for k, v in row.items()}
    assert logged["test/c2st_accuracy"] == pytest.approx(numbers["test/c2st_accuracy"])
    images = {key.split("/")[1] for key in logged if key.startswith("analysis/")}  # nested: <key>/filenames, ...
    assert images == {"embeddings", "real_vs_synthetic"}, sorted(logged)
