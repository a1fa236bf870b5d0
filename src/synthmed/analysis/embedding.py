"""Is synthetic data like real data? Embeddings, a two-sample test, a Fréchet distance, diversity, the stripe
amplitude, and for a route that paints into real slices (`aug=gan_inpaint`) the same inside the painted region.

Used by `experiment=brats_embed`: real training slices vs the synthetic pairs of the job's `aug` (one synthesis
route a job: `aug=gan`, `aug=gan_spade`, `aug=gan_inpaint`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from synthmed.data.brats.labels import TUMOUR_INDICES, colourise
from synthmed.visual import figure_to_array

log = logging.getLogger(__name__)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples):
    |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr((C_a C_b)^1/2) = sum of the square roots of the eigenvalues of C_a C_b, which are those of the
    # symmetric PSD S C_b S with S = C_a^1/2: eigvalsh of a symmetric matrix, no (removed) sqrtm(disp=False)
    values, vectors = linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    product = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def label_diversity(labels: np.ndarray, pairs: int = 500, seed: int = 0) -> float:
    """Mean (1 - Dice) of the tumour masks of random pairs of label maps: 0 = all identical."""
    rng = np.random.default_rng(seed)
    masks = labels.reshape(len(labels), -1) > 0
    i, j = rng.integers(len(masks), size=(2, pairs))
    keep = i != j
    inter = (masks[i[keep]] & masks[j[keep]]).sum(1)
    total = masks[i[keep]].sum(1) + masks[j[keep]].sum(1)
    return float(np.mean(1 - 2 * inter / np.maximum(total, 1)))


def label_map_stats(labels: np.ndarray, brains: np.ndarray) -> dict[str, float]:
    """What tumour label maps look like, for comparing generated maps with real ones: over the maps that
    hold tumour, the median and 95th percentile of connected tumour pieces (8-connectivity; speckle from an
    unconverged generator has dozens), the median share of the brain the tumour covers, and the share of
    each region (NCR/NET, ED, ET = labels 1, 2, 3) among all tumour pixels. `labels` (N, H, W) in 0..3,
    `brains` (N, H, W) brain masks. All NaN when no map holds tumour."""
    from synthmed.augment.gan import tumour_pieces

    labels, brains = np.asarray(labels), np.asarray(brains) > 0
    tumour = labels > 0
    keep = tumour.reshape(len(labels), -1).any(1)
    if not keep.any():
        return dict.fromkeys(("pieces_median", "pieces_p95", "tumour_share_median", "ncr_share", "ed_share",
                              "et_share"), float("nan"))
    labels, tumour, brains = labels[keep], tumour[keep], brains[keep]
    pieces = np.array([tumour_pieces(m) for m in labels])
    share = tumour.reshape(len(tumour), -1).sum(1) / np.maximum(brains.reshape(len(brains), -1).sum(1), 1)
    regions = np.array([(labels == c).sum() for c in TUMOUR_INDICES], dtype=float) / tumour.sum()
    return {"pieces_median": float(np.median(pieces)), "pieces_p95": float(np.percentile(pieces, 95)),
            "tumour_share_median": float(np.median(share)), "ncr_share": float(regions[0]),
            "ed_share": float(regions[1]), "et_share": float(regions[2])}


def stripe_amplitudes(images: np.ndarray, masks: np.ndarray, period: int = 4,
                      min_lines: int = 8) -> dict[str, np.ndarray]:
    """Per slice and channel, the amplitude of a period-`period` oscillation of the row means and of the
    column means inside the mask: `{"rows": (N, M), "columns": (N, M)}`, NaN where the mask spans fewer than
    `min_lines` rows (columns). See `stripe_amplitude` for the definition; `images` (N, M, H, W) or
    (N, H, W), `masks` (N, H, W) or (N, 1, H, W), nonzero = inside."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"stripe_amplitudes: images must be (N, M, H, W) or (N, H, W), got {images.shape}")
    masks = np.asarray(masks).reshape(len(images), *images.shape[-2:]) > 0
    return {"rows": _line_amplitudes(images, masks, period, min_lines),
            "columns": _line_amplitudes(images.swapaxes(-1, -2), masks.swapaxes(-1, -2), period, min_lines)}


def _line_amplitudes(images: np.ndarray, masks: np.ndarray, period: int, min_lines: int) -> np.ndarray:
    """`stripe_amplitudes` along the rows (axis -2) of (N, M, H, W) images and (N, H, W) masks."""
    count = masks.sum(-1)  # (N, H): mask pixels in each row
    valid = count > 0
    profile = (images * masks[:, None]).sum(-1) / np.maximum(count, 1)[:, None]  # (N, M, H): row means inside
    lines = np.arange(images.shape[-2])
    first = np.where(valid.any(1), valid.argmax(1), 0)
    last = np.where(valid.any(1), images.shape[-2] - 1 - valid[:, ::-1].argmax(1), -1)
    span = (last - first + 1)[:, None]
    inside = (lines >= first[:, None]) & (lines <= last[:, None])
    # a Hann window over the mask's rows: no leakage from the slow profile across the brain and its cut-off ends
    window = np.where(inside & valid, np.sin(np.pi * (lines - first[:, None] + 0.5) / np.maximum(span, 1)) ** 2, 0.0)
    total = window.sum(1)[:, None]  # (N, 1)
    mean = (window[:, None] * profile).sum(-1) / np.maximum(total, 1e-12)
    wave = np.exp(-2j * np.pi * lines / period)
    spectrum = (window[:, None] * (profile - mean[..., None]) * wave).sum(-1)
    amplitude = 2 * np.abs(spectrum) / np.maximum(total, 1e-12)  # a sinusoid of amplitude a gives a
    return np.where(valid.sum(1)[:, None] >= min_lines, amplitude, np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0 or either is not finite."""
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator == 0:
        return float("nan")
    return float(numerator / denominator)


def stripe_amplitude(images: np.ndarray, masks: np.ndarray, period: int = 4, min_lines: int = 8) -> dict[str, float]:
    """How strongly intensities oscillate with a period of `period` pixels (4: the checkerboard of two
    stride-2 transposed convolutions) across rows (`"rows"`, horizontal stripes) and across columns
    (`"columns"`, vertical stripes), in the images' own intensity units (z-scored for BraTS slices).

    For one slice, one channel, along rows: f(r) = the mean of the pixels of row r inside the mask, for the
    rows r = a..b that hold mask pixels (rows of the span without any are left out); w(r) = the Hann window
    sin^2(pi (r - a + 1/2) / (b - a + 1)) over that span (0 on left-out rows), which keeps the slow
    profile across the brain and its cut-off ends out of the period-4 bin; m = sum w f / sum w; then

        amplitude = 2 |sum_r w(r) (f(r) - m) exp(-2 pi i r / period)| / sum_r w(r),

    the Fourier amplitude at frequency 1/period cycles per pixel (H/4 cycles per H rows for period 4),
    normalised so that a stripe a cos(2 pi r / period + phase) added inside the mask gives a, whatever the
    image size or the mask's extent (the hand measurement of docs/gan.md, an unnormalised FFT of 128 rows,
    is about (rows in the brain) / 2 times this number). Columns: the same on column means. A slice whose
    mask spans fewer than `min_lines` rows (columns) gives no number. Returned: the means over slices and
    channels (NaN when no slice gives a number). Smooth real-like slices give a few thousandths, pixel noise
    of sd s about 2 s / sqrt(pixels in the mask) per slice."""
    found = stripe_amplitudes(images, masks, period, min_lines)
    return {direction: _nanmean(values) for direction, values in found.items()}


def dilate(masks: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation of (N, H, W) masks by `pixels` with a square ((2 pixels + 1)^2) neighbourhood."""
    masks = torch.as_tensor(np.asarray(masks) > 0, dtype=torch.float32)[:, None]
    if pixels > 0:
        masks = F.max_pool2d(masks, 2 * pixels + 1, stride=1, padding=pixels)
    return masks[:, 0].numpy() > 0


def real_regions(seg: np.ndarray, brain: np.ndarray, dilation: int) -> np.ndarray:
    """The real counterpart of a painted region: the tumour (seg > 0) dilated by `dilation` pixels, inside the
    brain. `seg` and `brain` (N, H, W) (or (N, 1, H, W) brains); returns (N, H, W) bool."""
    seg = np.asarray(seg)
    brain = np.asarray(brain).reshape(seg.shape) > 0
    return dilate(seg > 0, dilation) & brain


def region_box(region: np.ndarray, margin: int) -> tuple[int, int, int]:
    """The square crop around a (H, W) region: `(top, left, side)`. Its side is the longer side of the region's
    bounding box plus `margin` pixels each way (at most the image's shorter side); it is centred on the box and
    shifted to lie inside the image, so it always holds the whole region (when it fits)."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if not rows.size:
        raise ValueError("region_box: the region is empty")
    height, width = region.shape
    side = min(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) + 2 * int(margin), height, width)
    top = min(max((rows[0] + rows[-1] + 1 - side) // 2, 0), height - side)
    left = min(max((cols[0] + cols[-1] + 1 - side) // 2, 0), width - side)
    return int(top), int(left), int(side)


def region_crops(images: np.ndarray, seg: np.ndarray, regions: np.ndarray, size: int,
                 margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The `region_box` crop of every slice, resized to `size` x `size`: images (N, M, H, W) bilinear with
    antialiasing -> (N, M, size, size) float32, label maps (N, H, W) nearest -> (N, size, size). Every region
    must be non-empty."""
    images, seg = np.asarray(images, dtype=np.float32), np.asarray(seg)
    out_images, out_seg = [], []
    for image, labels, region in zip(images, seg, np.asarray(regions) > 0, strict=True):
        top, left, side = region_box(region, margin)
        box = (slice(top, top + side), slice(left, left + side))
        crop = torch.from_numpy(np.ascontiguousarray(image[(..., *box)]))[None]
        out_images.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=True)[0].numpy())
        labels = torch.from_numpy(np.ascontiguousarray(labels[box], dtype=np.float32))[None, None]
        out_seg.append(F.interpolate(labels, size=(size, size), mode="nearest")[0, 0].numpy())
    channels = images.shape[1] if images.ndim == 4 else 1
    return (np.stack(out_images) if out_images else np.zeros((0, channels, size, size), np.float32),
            np.stack(out_seg) if out_seg else np.zeros((0, size, size), np.float32))


def painted_regions(augmenter, count: int, shape: tuple[int, int]) -> np.ndarray | None:
    """The regions a route painted into real slices: the `region` array of the augmenter's pairs file
    (`augmenter.pairs`, as `aug=gan_inpaint` writes it: (N, 1, H, W) 0/1, in the order of its synthetic
    slices), as (count, H, W) bool. None for a route without one: no augmenter, no `pairs` attribute, a pairs
    file without `region` (whole-slice routes: `aug=gan`, `aug=gan_spade`), or a combined route (`.parts`,
    e.g. `aug=gan_transform`), which is skipped with a log line."""
    if augmenter is None:
        return None
    if hasattr(augmenter, "parts"):
        log.info("brats_embed: aug=%s combines several routes (%s): no region-only numbers",
                 getattr(augmenter, "name", "?"), ", ".join(augmenter.parts))
        return None
    path = getattr(augmenter, "pairs", None)
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aug.pairs={path} does not exist")
    with np.load(path) as pairs:
        if "region" not in pairs.files:
            return None
        region = pairs["region"]
    expected = (count, 1, *shape)
    if region.shape not in (expected, (count, *shape)):
        raise ValueError(f"aug.pairs={path}: region has shape {region.shape}, expected {expected} (one a "
                         f"synthetic slice, at the slices' size)")
    return region.reshape(count, *shape) > 0.5


def two_sample_accuracy(features: np.ndarray, is_synth: np.ndarray, folds: int) -> float:
    """Mean `folds`-fold (stratified, unshuffled) accuracy of a logistic regression telling synthetic from real
    rows of `features`: 0.5 = indistinguishable, 1 = always told apart."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(LogisticRegression(max_iter=2000), features, is_synth, cv=folds,
                                 scoring="accuracy").mean())


def real_vs_synthetic_grid(real: list[dict], synthetic: list[dict], path: Path, n: int = 6, seed: int = 0,
                           channel: int = 0, regions: np.ndarray | None = None) -> Path:
    """Rows: real label maps, their slices, synthetic label maps, their slices (modality `channel`,
    each slice windowed at its own 1st-99th brain percentiles). Real slices drawn among those with tumour.
    `regions` ((len(synthetic), H, W), a route that paints into real slices): the painted region's outline is
    drawn in yellow on the synthetic slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rng = np.random.default_rng(seed)
    with_tumour = [it for it in real if torch.as_tensor(it["seg"]).any()] or real
    n = min(n, len(with_tumour), len(synthetic))
    chosen = sorted(rng.choice(len(with_tumour), n, replace=False))
    synthetic_chosen = sorted(rng.choice(len(synthetic), n, replace=False))
    picks = {"real": [(with_tumour[i], None) for i in chosen],
             "synthetic": [(synthetic[i], None if regions is None else regions[i]) for i in synthetic_chosen]}
    fig, axes = plt.subplots(4, n, figsize=(1.6 * n, 6.8), dpi=100, squeeze=False)
    for block, (name, items) in enumerate(picks.items()):
        for col, (it, region) in enumerate(items):
            image = torch.as_tensor(it["image"])[channel].numpy()
            inside = torch.as_tensor(it["brain"])[0].numpy() > 0
            lo, hi = np.percentile(image[inside], [1, 99]) if inside.any() else (image.min(), image.max())
            axes[2 * block, col].imshow(colourise(torch.as_tensor(it["seg"]).numpy()))
            axes[2 * block + 1, col].imshow(np.clip(image, lo, hi), cmap="gray", vmin=lo, vmax=hi)
            if region is not None and region.any():  # where the generator painted; outside it the slice is real
                axes[2 * block + 1, col].contour(region.astype(float), levels=[0.5], colors="#ffd400",
                                                 linewidths=0.9)
        label = f"{name}\nslice" if regions is None or name == "real" else f"{name} slice\n(painted in yellow)"
        axes[2 * block, 0].set_ylabel(f"{name}\nlabels", fontsize=9)
        axes[2 * block + 1, 0].set_ylabel(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(figure_to_array(fig)).save(path)
    return path


def _seg_and_brain(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    seg = np.stack([torch.as_tensor(it["seg"]).numpy() for it in items])
    brain = np.stack([torch.as_tensor(it["brain"]).numpy().reshape(seg.shape[1:]) for it in items])
    return seg, brain


class _FeatureNet(nn.Module):
    """A small CNN trained here (no downloaded weights) to tell tumour size bins apart on real slices;
    its penultimate layer gives the features for the Fréchet distance."""

    def __init__(self, in_channels: int, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EmbeddingAnalysis:
    """Called by the runner with the datamodule and the job dir; returns the numbers for metrics.json.

    Real training slices (`datamodule.real_train`) vs the synthetic slices of the job's route (training items
    with subject "synthetic"), whole slices compared at `size` px:
    `test/c2st_accuracy` (classifier two-sample test: logistic regression on PCA(50), `cv_folds`-fold; 0.5 =
    indistinguishable), `test/frechet_distance` (features of a small CNN trained here on the real slices),
    `test/label_diversity_*`, `test/labels_*` (label-map statistics), `test/num_real`, `test/num_synthetic`;
    at the slices' own size, brain masks: `test/stripe_amplitude_{real,synthetic}` (period-`stripe_period`
    oscillation of the row means, `stripe_amplitude`'s "rows"), `test/stripe_amplitude_columns_{real,synthetic}`
    (of the column means) and `test/stripe_ratio` (rows, synthetic / real).

    A route that paints into real slices (its pairs file holds `region`, see `painted_regions`: `aug=gan_inpaint`)
    also gets the same numbers inside the painted region alone. Its whole-slice two-sample accuracy and Fréchet
    distance are naturally low: most of each synthetic slice is a real slice, pixel for pixel; the region numbers
    are the honest ones. Synthetic crops: `region_box` (the region's bounding box, square, `region_margin` pixels
    of context each way) around each painted region; real crops: the same around each real tumour dilated by
    `region_dilation` pixels inside the brain (`real_regions`; set it to the route's own dilation); both resized
    to `region_crop_size` px. Keys: `test/region_c2st_accuracy`, `test/region_frechet_distance` (a feature CNN
    trained on the real crops), `test/region_stripe_amplitude_{real,synthetic}` and `test/region_stripe_ratio`
    (row means inside the regions, full size), `test/region_num_real`, `test/region_num_synthetic`. Routes
    without a region (`aug=gan`, `aug=gan_spade`, combined routes such as `aug=gan_transform`) have none of the
    `test/region_*` keys.
    """

    def __init__(self, size: int, tsne_perplexity: float, feature_epochs: int, cv_folds: int, seed: int,
                 stripe_period: int, region_crop_size: int, region_dilation: int, region_margin: int) -> None:
        self.size, self.perplexity, self.feature_epochs = int(size), float(tsne_perplexity), int(feature_epochs)
        self.cv_folds, self.seed = int(cv_folds), int(seed)
        self.stripe_period = int(stripe_period)
        self.crop_size, self.dilation, self.margin = int(region_crop_size), int(region_dilation), int(region_margin)
        for key, value in (("stripe_period", self.stripe_period), ("region_crop_size", self.crop_size)):
            if value < 2:
                raise ValueError(f"analysis.{key}={value} must be >= 2")
        for key, value in (("region_dilation", self.dilation), ("region_margin", self.margin)):
            if value < 0:
                raise ValueError(f"analysis.{key}={value} must be >= 0")

    def _arrays(self, datamodule) -> tuple[tuple[np.ndarray, ...], tuple[list[dict], list[dict]]]:
        datamodule.setup("fit")
        train = datamodule.datasets["train"]
        items = [train[i] for i in range(len(train))]
        synthetic = [it for it in items if it["subject"] == "synthetic"]
        # the real slices the generators learnt from (also under aug=synthetic_only, where train holds none)
        real_set = getattr(datamodule, "real_train", None) or train
        real = [it for it in (real_set[i] for i in range(len(real_set))) if it["subject"] != "synthetic"]
        if not synthetic:
            raise ValueError("brats_embed needs synthetic slices: run it with a synthesis route such as aug=gan "
                             "(aug.extra > 0)")

        def stack(group, key):
            x = torch.stack([torch.as_tensor(it[key]) for it in group]).float()
            if x.ndim == 3:
                x = x[:, None]
            mode = "nearest" if key == "seg" else "area"
            return F.interpolate(x, size=(self.size, self.size), mode=mode).numpy()

        arrays = stack(real, "image"), stack(synthetic, "image"), stack(real, "seg")[:, 0], stack(synthetic, "seg")[:, 0]
        return arrays, (real, synthetic)  # the items at full size, for the picture

    def _features(self, real: np.ndarray, synthetic: np.ndarray, real_seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch.manual_seed(self.seed)
        area = (real_seg > 0).reshape(len(real_seg), -1).mean(1)
        bins = np.digitize(area, np.quantile(area, [1 / 3, 2 / 3]))
        net = _FeatureNet(real.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = torch.from_numpy(real), torch.from_numpy(bins).long()
        for _ in range(self.feature_epochs):
            for idx in torch.randperm(len(x)).split(32):
                opt.zero_grad()
                F.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            return net.features(x).numpy(), net.features(torch.from_numpy(synthetic)).numpy()

    def _folds(self, n_real: int, n_synthetic: int) -> int:
        return max(2, min(self.cv_folds, int(min(n_real, n_synthetic))))

    def _stripes(self, items: list[dict], masks: list[np.ndarray] | None = None) -> dict[str, float]:
        """`stripe_amplitude` of full-size items (brain masks unless `masks`), 64 slices at a time."""
        found: dict[str, list[np.ndarray]] = {"rows": [], "columns": []}
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            images = np.stack([torch.as_tensor(it["image"]).float().numpy() for it in chunk])
            inside = (np.stack(masks[start:start + 64]) if masks is not None else
                      np.stack([torch.as_tensor(it["brain"]).numpy().reshape(images.shape[-2:]) for it in chunk]))
            for direction, values in stripe_amplitudes(images, inside, self.stripe_period).items():
                found[direction].append(values)
        return {direction: _nanmean(np.concatenate(values)) if values else float("nan")
                for direction, values in found.items()}

    def region_numbers(self, real: list[dict], synthetic: list[dict], regions: np.ndarray) -> dict[str, float]:
        """The `test/region_*` numbers (see the class): full-size real items, synthetic items and their painted
        regions (len(synthetic), H, W). NaN accuracy and distance when either side has fewer than 2 crops."""
        seg_real, brain_real = _seg_and_brain(real)
        real_region = real_regions(seg_real, brain_real, self.dilation)
        keep_real = np.flatnonzero(real_region.any((1, 2)))
        keep_synth = np.flatnonzero(regions.any((1, 2)))
        crops = {}
        for name, group, region, keep in (("real", real, real_region, keep_real),
                                          ("synthetic", synthetic, regions, keep_synth)):
            images = np.stack([torch.as_tensor(group[i]["image"]).float().numpy() for i in keep]) if keep.size else \
                np.zeros((0, 1, *regions.shape[1:]), np.float32)
            seg = np.stack([torch.as_tensor(group[i]["seg"]).numpy() for i in keep]) if keep.size else \
                np.zeros((0, *regions.shape[1:]), np.int64)
            crops[name] = region_crops(images, seg, region[keep], self.crop_size, self.margin)
        stripes_real = self._stripes([real[i] for i in keep_real], list(real_region[keep_real]))
        stripes_synth = self._stripes([synthetic[i] for i in keep_synth], list(regions[keep_synth]))
        results = {"test/region_c2st_accuracy": float("nan"), "test/region_frechet_distance": float("nan")}
        (real_crops, real_seg), (synth_crops, _) = crops["real"], crops["synthetic"]
        if min(len(real_crops), len(synth_crops)) >= 2:
            flat = np.concatenate([real_crops, synth_crops]).reshape(len(real_crops) + len(synth_crops), -1)
            is_synth = np.r_[np.zeros(len(real_crops)), np.ones(len(synth_crops))]
            from sklearn.decomposition import PCA

            n_comp = min(50, len(flat) - 1, flat.shape[1])
            reduced = PCA(n_components=n_comp, random_state=self.seed).fit_transform(flat)
            results["test/region_c2st_accuracy"] = two_sample_accuracy(
                reduced, is_synth, self._folds(len(real_crops), len(synth_crops)))
            results["test/region_frechet_distance"] = frechet_distance(*self._features(real_crops, synth_crops, real_seg))
        else:
            log.warning("brats_embed: %d real and %d synthetic region crops: too few for the region two-sample test "
                        "and Fréchet distance (NaN)", len(real_crops), len(synth_crops))
        results.update({
            "test/region_stripe_amplitude_real": stripes_real["rows"],
            "test/region_stripe_amplitude_synthetic": stripes_synth["rows"],
            "test/region_stripe_ratio": _ratio(stripes_synth["rows"], stripes_real["rows"]),
            "test/region_num_real": float(len(real_crops)),
            "test/region_num_synthetic": float(len(synth_crops)),
        })
        return results

    def __call__(self, datamodule, output_dir: str | Path) -> dict[str, float]:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        (real, synthetic, real_seg, synth_seg), items = self._arrays(datamodule)
        # the route's augmenter as the datamodule builds it (an instance, or its config instantiated)
        augmenter = datamodule._augmenter() if hasattr(datamodule, "_augmenter") else getattr(datamodule, "aug", None)
        regions = painted_regions(augmenter, len(items[1]), tuple(torch.as_tensor(items[1][0]["image"]).shape[-2:]))
        flat = np.concatenate([real, synthetic]).reshape(len(real) + len(synthetic), -1)
        is_synth = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
        has_tumour = np.r_[(real_seg > 0).any((1, 2)), (synth_seg > 0).any((1, 2))]
        n_comp = min(50, len(flat) - 1, flat.shape[1])
        pca50 = PCA(n_components=n_comp, random_state=self.seed).fit_transform(flat)
        perplexity = min(self.perplexity, (len(flat) - 1) / 3)
        views = {
            "PCA": pca50[:, :2],
            "t-SNE": TSNE(perplexity=perplexity, random_state=self.seed, init="pca").fit_transform(flat),
            "PCA(50) → t-SNE": TSNE(perplexity=perplexity, random_state=self.seed, init="pca").fit_transform(pca50),
        }
        self._plot(views, is_synth, has_tumour, Path(output_dir) / "images" / "embeddings.png")
        real_vs_synthetic_grid(*items, Path(output_dir) / "images" / "real_vs_synthetic.png",
                               seed=self.seed, regions=regions)
        c2st = two_sample_accuracy(pca50, is_synth, self._folds(len(real), len(synthetic)))
        feats_real, feats_synth = self._features(real, synthetic, real_seg)
        stripes = {name: self._stripes(group) for name, group in zip(("real", "synthetic"), items, strict=True)}
        results = {
            "test/c2st_accuracy": c2st,
            "test/frechet_distance": frechet_distance(feats_real, feats_synth),
            "test/label_diversity_synthetic": label_diversity(synth_seg, seed=self.seed),
            "test/label_diversity_real": label_diversity(real_seg, seed=self.seed),
            **{f"test/labels_{key}_{name}": value for name, group in zip(("real", "synthetic"), items, strict=True)
               for key, value in label_map_stats(*_seg_and_brain(group)).items()},
            "test/num_real": float(len(real)),
            "test/num_synthetic": float(len(synthetic)),
            "test/stripe_amplitude_real": stripes["real"]["rows"],
            "test/stripe_amplitude_synthetic": stripes["synthetic"]["rows"],
            "test/stripe_amplitude_columns_real": stripes["real"]["columns"],
            "test/stripe_amplitude_columns_synthetic": stripes["synthetic"]["columns"],
            "test/stripe_ratio": _ratio(stripes["synthetic"]["rows"], stripes["real"]["rows"]),
        }
        if regions is not None:
            results.update(self.region_numbers(*items, regions))
        log.info("brats_embed: %s", results)
        return results

    @staticmethod
    def _plot(views: dict[str, np.ndarray], is_synth: np.ndarray, has_tumour: np.ndarray, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image

        fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 4), dpi=100)
        for ax, (title, xy) in zip(axes, views.items(), strict=True):
            for synth, colour in ((0, "#1f77b4"), (1, "#d62728")):
                for tumour, marker in ((True, "o"), (False, "x")):
                    sel = (is_synth == synth) & (has_tumour == tumour)
                    if sel.any():
                        ax.scatter(*xy[sel].T, s=10, c=colour, marker=marker, alpha=0.7,
                                   label=f"{'synthetic' if synth else 'real'}{'' if tumour else ', no tumour'}")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(figure_to_array(fig)).save(path)
