"""The Fréchet distance between two sets of features, against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.analysis.embedding import frechet_distance


def _gaussians(mean_a, cov_a, mean_b, cov_b):
    """The closed form for two Gaussians: |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)."""
    values, vectors = np.linalg.eigh(cov_a)
    root_a = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    inner_values = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * np.sqrt(inner_values.clip(0)).sum())


def test_identical_sets_are_at_distance_zero():
    features = np.random.default_rng(0).normal(size=(400, 6))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_a_shift_adds_its_squared_length():
    features = np.random.default_rng(1).normal(size=(500, 5))
    shift = np.array([3.0, 0.0, -1.0, 0.5, 2.0])
    assert frechet_distance(features, features + shift) == pytest.approx(float((shift**2).sum()), rel=1e-9)


def test_scaled_and_shifted_set_matches_the_closed_form():
    """b = 0.5 a + 3: C_b = C_a / 4, so the trace term is tr(C_a) (1 + 1/4 - 2 / 2) = tr(C_a) / 4."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 4))
    b = 0.5 * a + 3.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = _gaussians(a.mean(0), cov_a, b.mean(0), cov_b)
    shift = ((0.5 * a.mean(0) + 3.0 - a.mean(0)) ** 2).sum()
    assert expected == pytest.approx(shift + np.trace(cov_a) / 4, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_rank_deficient_covariances_give_a_finite_distance():
    """Fewer samples than features (a singular covariance): still finite and non-negative, no warning."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) + 1.0
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0


# --- the stripe amplitude -------------------------------------------------------------------------------------

def _brain(size: int, seed: int = 0, noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A real-like slice: an elliptic brain with a smooth intensity profile and a little pixel noise, (1, H, W),
    and its mask (H, W)."""
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    mask = (rows / 0.85) ** 2 + (cols / 0.7) ** 2 < 1
    smooth = 0.8 + 0.5 * np.cos(2.5 * rows) * np.cos(1.5 * cols) + 0.3 * rows
    image = np.where(mask, smooth + np.random.default_rng(seed).normal(0, noise, mask.shape), -1.0)
    return image[None].astype(np.float32), mask


def _stack(size: int, n: int = 6, stripe_rows: float = 0.0, stripe_cols: float = 0.0, period: int = 4):
    images, masks = [], []
    for i in range(n):
        image, mask = _brain(size, seed=i)
        lines = np.arange(size)
        image = image + mask * (stripe_rows * np.cos(2 * np.pi * lines / period + i)[:, None]
                                + stripe_cols * np.cos(2 * np.pi * lines / period - i)[None, :])
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def test_a_row_stripe_of_period_4_shows_in_the_row_amplitude_only():
    from synthmed.analysis.embedding import stripe_amplitude

    clean = stripe_amplitude(*_stack(128))
    striped = stripe_amplitude(*_stack(128, stripe_rows=0.2))
    assert clean["rows"] < 0.01 and clean["columns"] < 0.01  # smooth real-like slices: small numbers
    assert striped["rows"] == pytest.approx(0.2, rel=0.05)  # the stripe's own amplitude, in intensity units
    assert striped["rows"] > 20 * clean["rows"]
    assert striped["columns"] == pytest.approx(clean["columns"], abs=0.005)  # rows' stripes are not columns'


def test_a_column_stripe_shows_in_the_column_amplitude_only():
    from synthmed.analysis.embedding import stripe_amplitude

    clean = stripe_amplitude(*_stack(128))
    striped = stripe_amplitude(*_stack(128, stripe_cols=0.15))
    assert striped["columns"] == pytest.approx(0.15, rel=0.05) and striped["columns"] > 15 * clean["columns"]
    assert striped["rows"] == pytest.approx(clean["rows"], abs=0.005)


def test_stripe_amplitude_does_not_depend_on_the_image_size_or_other_periods():
    from synthmed.analysis.embedding import stripe_amplitude, stripe_amplitudes

    for size in (64, 128, 240):
        assert stripe_amplitude(*_stack(size, n=3, stripe_rows=0.1))["rows"] == pytest.approx(0.1, rel=0.08)
    period_8 = stripe_amplitude(*_stack(128, n=3, stripe_rows=0.3, period=8))["rows"]
    assert period_8 < 0.01  # a period-8 stripe is not a period-4 one
    assert stripe_amplitude(*_stack(128, n=3, stripe_rows=0.3, period=8), period=8)["rows"] == pytest.approx(0.3, rel=0.05)
    # a mask of fewer than min_lines rows gives no number; a stack of only those gives NaN, not a warning
    image = np.ones((2, 1, 16, 16), np.float32)
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:9, 2:14] = True  # 5 rows, 12 columns
    per_slice = stripe_amplitudes(image, mask)
    assert np.isnan(per_slice["rows"]).all() and np.isfinite(per_slice["columns"]).all()
    assert np.isnan(stripe_amplitude(image, mask)["rows"])
    # (N, M, H, W): every channel counts, the number is their mean over slices and channels
    two = np.concatenate([_stack(64, n=2, stripe_rows=0.2)[0], _stack(64, n=2)[0]], axis=1)
    assert stripe_amplitude(two, _stack(64, n=2)[1])["rows"] == pytest.approx(0.1, rel=0.1)


# --- region crops and numbers (the inpainting route) ----------------------------------------------------------

def test_real_regions_are_dilated_tumours_inside_the_brain_and_crops_come_from_there():
    from synthmed.analysis.embedding import dilate, real_regions, region_box, region_crops

    seg = np.zeros((1, 40, 40), np.int64)
    seg[0, 10:14, 20:26] = 2  # 4 x 6 tumour
    brain = np.zeros((1, 40, 40), np.float32)
    brain[0, :, :24] = 1  # the brain stops at column 24
    assert dilate(seg > 0, 0).sum() == 24 and dilate(seg > 0, 2).sum() == 8 * 10
    region = real_regions(seg, brain, 2)
    assert region.sum() == 8 * 6 and region[0, 8:16, 18:24].all()  # rows 8..15, columns 18..23
    assert region_box(region[0], margin=0) == (8, 17, 8)  # square side 8, centred on columns 18..23
    assert region_box(region[0], margin=3) == (5, 14, 14)
    corner = np.zeros((40, 40), bool)
    corner[0:3, 37:40] = True
    assert region_box(corner, margin=4) == (0, 29, 11)  # shifted inside the image, still holding the region
    assert region_box(np.ones((40, 40), bool), margin=4) == (0, 0, 40)  # never larger than the image
    with pytest.raises(ValueError, match="empty"):
        region_box(np.zeros((40, 40), bool), margin=0)
    # the crop at its own size is the image's pixels there, for every channel, and the label map's
    image = np.arange(2 * 40 * 40, dtype=np.float32).reshape(1, 2, 40, 40)
    crops, crop_seg = region_crops(image, seg, region, size=8, margin=0)
    assert crops.shape == (1, 2, 8, 8) and np.array_equal(crops[0], image[0, :, 8:16, 17:25])
    assert np.array_equal(crop_seg[0], seg[0, 8:16, 17:25])
    small, small_seg = region_crops(image, seg, region, size=4, margin=0)  # resized (antialiased): the same pixels
    window = image[0, :, 8:16, 17:25]
    assert small.shape == (1, 2, 4, 4) and small[0].mean((1, 2)) == pytest.approx(window.mean((1, 2)), rel=1e-3)
    assert (small[0] >= window.min((1, 2))[:, None, None]).all() and (small[0] <= window.max((1, 2))[:, None, None]).all()
    assert small_seg.shape == (1, 4, 4) and set(np.unique(small_seg)) <= {0, 2}


class _Route:
    """What brats_embed reads of a route's augmenter: its pairs file (and `parts` for a combined route)."""

    def __init__(self, pairs=None, parts=None, name="gan_inpaint"):
        self.name = name
        if pairs is not None:
            self.pairs = pairs
        if parts is not None:
            self.parts = parts


def _items(n: int, size: int = 32, seed: int = 0) -> list[dict]:
    """Real-like BraTS items with a tumour in a varying place: image (2, H, W), seg (H, W), brain (1, H, W)."""
    import torch

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, mask = _brain(size, seed=seed * 1000 + i, noise=0.1)
        seg = np.zeros((size, size), np.int64)
        top, left = rng.integers(8, size - 14, size=2)
        seg[top:top + 4 + i % 3, left:left + 5] = 2
        seg[top + 1, left + 1] = 1
        seg &= -mask.astype(np.int64)  # inside the brain
        tumour = np.where(seg > 0, 1.5, 0.0)
        image = np.concatenate([image + tumour, 0.5 * image - tumour]).astype(np.float32)
        out.append({"image": torch.from_numpy(image), "seg": torch.from_numpy(seg),
                    "brain": torch.from_numpy(mask[None].astype(np.float32)), "subject": f"s{i % 4}", "slice": i})
    return out


def _analysis(**kw):
    from synthmed.analysis.embedding import EmbeddingAnalysis

    knobs = dict(size=16, tsne_perplexity=5.0, feature_epochs=1, cv_folds=2, seed=0, stripe_period=4,
                 region_crop_size=12, region_dilation=2, region_margin=2)
    return EmbeddingAnalysis(**{**knobs, **kw})


def _write_pairs(path, items, regions=None):
    import torch

    arrays = {key: np.stack([torch.as_tensor(it[key]).numpy() for it in items]) for key in ("image", "seg", "brain")}
    if regions is not None:
        arrays["region"] = regions.astype(np.float32)[:, None]
    np.savez(path, **arrays)
    return path


def test_the_region_is_read_from_the_routes_pairs_file(tmp_path, caplog):
    from synthmed.analysis.embedding import painted_regions, real_regions

    items = _items(5)
    seg = np.stack([it["seg"].numpy() for it in items])
    regions = real_regions(seg, np.stack([it["brain"].numpy() for it in items]), 2)
    with_region = _write_pairs(tmp_path / "inpaint.npz", items, regions)
    found = painted_regions(_Route(with_region), 5, (32, 32))
    assert found.dtype == bool and np.array_equal(found, regions)
    # whole-slice routes: no region in the file, no augmenter, no pairs attribute -> no region numbers
    assert painted_regions(_Route(_write_pairs(tmp_path / "gan.npz", items)), 5, (32, 32)) is None
    assert painted_regions(None, 5, (32, 32)) is None and painted_regions(_Route(), 5, (32, 32)) is None
    with caplog.at_level("INFO", logger="synthmed.analysis.embedding"):  # a combined route is skipped, said so
        assert painted_regions(_Route(with_region, parts={"gan": 1, "transform": 2}, name="gan_transform"),
                               5, (32, 32)) is None
    assert "aug=gan_transform combines several routes (gan, transform)" in caplog.text
    with pytest.raises(ValueError, match=r"aug.pairs=.*inpaint.npz: region has shape \(5, 1, 32, 32\)"):
        painted_regions(_Route(with_region), 4, (32, 32))  # not one region a synthetic slice
    with pytest.raises(FileNotFoundError, match="aug.pairs="):
        painted_regions(_Route(tmp_path / "missing.npz"), 5, (32, 32))


def test_identical_real_and_painted_regions_are_indistinguishable():
    """Synthetic slices that are the real ones, painted regions that are the real tumours' regions: the region
    two-sample accuracy is 0.5, the Fréchet distance 0, the stripe ratio 1."""
    from synthmed.analysis.embedding import real_regions

    real = _items(12)
    synthetic = [{**it, "subject": "synthetic"} for it in real]
    regions = real_regions(np.stack([it["seg"].numpy() for it in real]),
                           np.stack([it["brain"].numpy() for it in real]), 2)
    numbers = _analysis().region_numbers(real, synthetic, regions)
    assert numbers["test/region_num_real"] == numbers["test/region_num_synthetic"] == 12
    assert numbers["test/region_c2st_accuracy"] == pytest.approx(0.5)
    assert numbers["test/region_frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert numbers["test/region_stripe_ratio"] == pytest.approx(1.0)
    # painted regions brighter and with period-4 stripes: the region stripe amplitude sees the stripes (a uniform
    # offset of the region moves all its row means alike: not a stripe), the crops are told apart
    striped = []
    for it, region in zip(real, regions, strict=True):
        stripe = (1.0 + 0.8 * np.cos(np.pi * np.arange(32) / 2)[:, None]) * region
        striped.append({**it, "image": it["image"] + np.float32(stripe), "subject": "synthetic"})
    numbers = _analysis(feature_epochs=3).region_numbers(real, striped, regions)
    assert _analysis(feature_epochs=3).region_numbers(real, striped, regions) == numbers  # same knobs + seed
    assert numbers["test/region_stripe_ratio"] > 4  # small regions: the real tumour edges give some too
    assert numbers["test/region_c2st_accuracy"] > 0.9 and numbers["test/region_frechet_distance"] > 0
    # too few crops on a side: no accuracy or distance (NaN, null in metrics.json), the counts say why
    empty = np.zeros_like(regions)
    empty[0] = regions[0]
    numbers = _analysis().region_numbers(real, synthetic, empty)
    assert numbers["test/region_num_synthetic"] == 1 and np.isnan(numbers["test/region_c2st_accuracy"])


class _DataModule:
    """The parts of BratsSliceDataModule brats_embed reads: setup, the training set, the real training slices
    and the route's augmenter (`aug`)."""

    def __init__(self, real: list[dict], synthetic: list[dict], aug):
        self.real_train, self.aug = real, aug
        self.datasets = {"train": real + synthetic}

    def setup(self, stage=None):
        pass


def test_brats_embed_reports_region_numbers_only_for_a_painting_route(tmp_path):
    from PIL import Image

    from synthmed.analysis.embedding import real_regions

    real, donors = _items(16, seed=0), _items(10, seed=1)
    regions = real_regions(np.stack([it["seg"].numpy() for it in donors]),
                           np.stack([it["brain"].numpy() for it in donors]), 2)
    synthetic = [{**it, "subject": "synthetic"} for it in donors]
    painted = _DataModule(real, synthetic, _Route(_write_pairs(tmp_path / "inpaint.npz", synthetic, regions)))
    whole = _DataModule(real, synthetic, _Route(_write_pairs(tmp_path / "gan.npz", synthetic), name="gan"))
    numbers = {name: _analysis()(dm, tmp_path / name) for name, dm in (("inpaint", painted), ("gan", whole))}
    stripe_keys = {f"test/stripe_amplitude_{s}" for s in ("real", "synthetic", "columns_real", "columns_synthetic")}
    region_keys = {"test/region_c2st_accuracy", "test/region_frechet_distance", "test/region_num_real",
                   "test/region_num_synthetic", "test/region_stripe_amplitude_real",
                   "test/region_stripe_amplitude_synthetic", "test/region_stripe_ratio"}
    for found in numbers.values():
        assert stripe_keys | {"test/stripe_ratio", "test/c2st_accuracy"} <= set(found)
        assert all(np.isfinite(found[key]) and found[key] < 0.05 for key in stripe_keys)  # no stripes drawn
    assert region_keys <= set(numbers["inpaint"]) and not region_keys & set(numbers["gan"])
    assert numbers["inpaint"]["test/region_num_synthetic"] == 10
    assert numbers["inpaint"]["test/region_num_real"] == 16
    # two runs, the same whole-slice numbers (the same slices: only the pairs file differs)
    assert numbers["gan"] == {k: v for k, v in numbers["inpaint"].items() if not k.startswith("test/region_")}
    for name in ("inpaint", "gan"):  # the picture keeps its size with the outlines drawn in
        grid = np.asarray(Image.open(tmp_path / name / "images" / "real_vs_synthetic.png").convert("RGB"))
        assert grid.shape == (680, 960, 3)
    outlined = np.asarray(Image.open(tmp_path / "inpaint" / "images" / "real_vs_synthetic.png").convert("RGB"))
    yellow = (outlined[..., 0] > 200) & (outlined[..., 1] > 180) & (outlined[..., 2] < 80)
    assert yellow[510:].sum() > 20 and yellow[:510].sum() == 0  # only on the synthetic slices' row (the last)


def test_brats_embed_knobs_are_checked():
    with pytest.raises(ValueError, match="analysis.region_dilation=-1"):
        _analysis(region_dilation=-1)
    with pytest.raises(ValueError, match="analysis.stripe_period=1"):
        _analysis(stripe_period=1)
