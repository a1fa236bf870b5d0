"""aug=gan: generators trained on the training split, synthetic pairs counted in the training set, caches."""
# Slices are 32 px: the smallest size the 70x70 PatchGAN of pix2pix accepts.

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from test_brats_slices import make_dm, root  # noqa: F401  (root is a fixture)

from synthmed.augment.gan import CombinedAugmenter, GanAugmenter

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


def test_speckle_maps_fail_the_component_rule(root, tmp_path):  # noqa: F811
    from synthmed.augment.gan import tumour_pieces

    blobs = np.zeros((32, 32), np.int64)
    blobs[4:9, 4:9], blobs[20:24, 18:25], blobs[6, 8] = 2, 1, 3  # two pieces (the lone pixel touches the first)
    speckle = np.zeros((32, 32), np.int64)
    speckle[::3, ::3] = 2  # 121 isolated pixels: what an unconverged DCGAN draws
    assert tumour_pieces(blobs) == 2 and tumour_pieces(speckle) == 121
    # min 1 tumour pixel and at most 0 pieces: no map can pass, and the error names the knob
    with pytest.raises(RuntimeError, match="aug.max_components"):
        make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path, min_tumour_pixels=1, max_components=0, max_tries=2))


def test_given_generators_must_exist(root, tmp_path):  # noqa: F811
    aug = GanAugmenter(extra=2, dcgan=DCGAN, pix2pix=PIX2PIX, dcgan_epochs=1, pix2pix_epochs=1,
                       cache_dir=str(tmp_path / "gan"), generators={"dcgan": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match="aug.generators.dcgan="):
        make_dm(root, tmp_path, image_size=32, aug=aug)


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

    dm = make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path, extra=8))
    results = EmbeddingAnalysis(size=32, feature_epochs=1, cv_folds=2)(dm, tmp_path / "job")
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
        EmbeddingAnalysis()(make_dm(root, tmp_path, image_size=32), tmp_path / "job2")


def test_gan_transform_adds_both_kinds(root, tmp_path):  # noqa: F811
    base = make_dm(root, tmp_path, image_size=32)
    aug = {"_target_": "synthmed.augment.gan.CombinedAugmenter", "_recursive_": False, "name": "gan_transform",
           "parts": {"gan": gan_aug(tmp_path, extra=4),
                     "transform": {"_target_": "synthmed.augment.TransformAugmenter", "extra": 3}}}
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
        make_dm(root, tmp_path, image_size=32, aug=gan_aug(tmp_path, extra=3))
        got = draw()
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_generators_depend_on_their_cache_key_not_on_the_callers_rng(root, tmp_path):  # noqa: F811
    """Two fresh caches, different global RNG states before: the same generators and pairs."""
    trained = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        cache = tmp_path / f"cache{caller_seed}"
        dm = make_dm(root, tmp_path, image_size=32, aug=gan_aug(cache, extra=3))
        (folder,) = (cache / "gan").iterdir()
        trained.append((torch.load(folder / "dcgan.pt", weights_only=True), dm.datasets["train"]))
    (first, train_a), (second, train_b) = trained
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert all(torch.equal(train_a[len(train_a) - i]["image"], train_b[len(train_b) - i]["image"]) for i in (1, 2, 3))


def ci_datamodule(brats_root, data_dir, aug: str):
    """The brats_seg experiment's datamodule at scale=ci, composed from the real configs."""
    overrides = ["experiment=brats_seg", "scale=ci", f"aug={aug}", f"data.root={brats_root}",
                 f"paths.data_dir={data_dir}"]
    if aug != "none":  # one-epoch generators on the tiny fixture: relax the degeneracy rule (as the notebook does)
        overrides += ["aug.min_tumour_pixels=0", "aug.max_tumour_fraction=1.0"]
    GlobalHydra.instance().clear()
    with initialize_config_module("synthmed.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
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
    assert len(list((tmp_path / "gan").iterdir())) == 1
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
        GanAugmenter(extra=0, dcgan=DCGAN, pix2pix=PIX2PIX, dcgan_epochs=1, pix2pix_epochs=1, replace_real=True)
    part = {"_target_": "synthmed.augment.TransformAugmenter", "extra": 2, "replace_real": True}
    with pytest.raises(ValueError, match="aug.parts.transform.replace_real=true"):
        CombinedAugmenter(parts={"transform": part})


def test_brats_embed_experiment_reports_numbers_and_pictures(tmp_path):
    """`experiment=brats_embed` end to end: metrics.json, the pictures, and the same numbers in its W&B run."""
    import json

    from conftest import run_synthmed
    from test_brats_discovery import write_subject
    from wandb_records import logged_history, run_info

    folder = tmp_path / "brats"
    for i in range(5):
        write_subject(folder, f"BraTS2021_{i:05d}", seed=i, shape=(64, 64, 10), tumour_slices=(2, 8))
    run_synthmed(["experiment=brats_embed", "scale=ci", f"paths.root_dir={tmp_path}", f"data.root={folder}",
                  "analysis.feature_epochs=1", "analysis.cv_folds=2"], cwd=tmp_path, env={"WANDB_MODE": "offline"})
    metrics_file = next((tmp_path / "outputs").rglob("metrics.json"))
    numbers = json.loads(metrics_file.read_text())["test"]
    assert 0.0 <= numbers["test/c2st_accuracy"] <= 1.0 and numbers["test/num_synthetic"] > 0
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
