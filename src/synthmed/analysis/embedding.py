"""Is synthetic data like real data? Embeddings, a two-sample test, a Fréchet distance, diversity.

Used by `experiment=brats_embed`: real training slices vs the synthetic pairs that `aug=gan` adds.
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


def real_vs_synthetic_grid(real: list[dict], synthetic: list[dict], path: Path, n: int = 6, seed: int = 0,
                           channel: int = 0) -> Path:
    """Rows: real label maps, their slices, synthetic label maps, their slices (modality `channel`,
    each slice windowed at its own 1st-99th brain percentiles). Real slices drawn among those with tumour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rng = np.random.default_rng(seed)
    with_tumour = [it for it in real if torch.as_tensor(it["seg"]).any()] or real
    n = min(n, len(with_tumour), len(synthetic))
    picks = {"real": [with_tumour[i] for i in sorted(rng.choice(len(with_tumour), n, replace=False))],
             "synthetic": [synthetic[i] for i in sorted(rng.choice(len(synthetic), n, replace=False))]}
    fig, axes = plt.subplots(4, n, figsize=(1.6 * n, 6.8), dpi=100, squeeze=False)
    for block, (name, items) in enumerate(picks.items()):
        for col, it in enumerate(items):
            image = torch.as_tensor(it["image"])[channel].numpy()
            inside = torch.as_tensor(it["brain"])[0].numpy() > 0
            lo, hi = np.percentile(image[inside], [1, 99]) if inside.any() else (image.min(), image.max())
            axes[2 * block, col].imshow(colourise(torch.as_tensor(it["seg"]).numpy()))
            axes[2 * block + 1, col].imshow(np.clip(image, lo, hi), cmap="gray", vmin=lo, vmax=hi)
        axes[2 * block, 0].set_ylabel(f"{name}\nlabels", fontsize=9)
        axes[2 * block + 1, 0].set_ylabel(f"{name}\nslice", fontsize=9)
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
    """Called by the runner with the datamodule and the job dir; returns the numbers for metrics.json."""

    def __init__(self, size: int, tsne_perplexity: float, feature_epochs: int, cv_folds: int, seed: int) -> None:
        self.size, self.perplexity, self.feature_epochs = int(size), float(tsne_perplexity), int(feature_epochs)
        self.cv_folds, self.seed = int(cv_folds), int(seed)

    def _arrays(self, datamodule) -> tuple[tuple[np.ndarray, ...], tuple[list[dict], list[dict]]]:
        datamodule.setup("fit")
        train = datamodule.datasets["train"]
        items = [train[i] for i in range(len(train))]
        synthetic = [it for it in items if it["subject"] == "synthetic"]
        # the real slices the generators learnt from (also under aug=synthetic_only, where train holds none)
        real_set = getattr(datamodule, "real_train", None) or train
        real = [it for it in (real_set[i] for i in range(len(real_set))) if it["subject"] != "synthetic"]
        if not synthetic:
            raise ValueError("brats_embed needs synthetic slices: run it with aug=gan (aug.extra > 0)")

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

    def __call__(self, datamodule, output_dir: str | Path) -> dict[str, float]:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.manifold import TSNE
        from sklearn.model_selection import cross_val_score

        (real, synthetic, real_seg, synth_seg), items = self._arrays(datamodule)
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
                               seed=self.seed)
        folds = max(2, min(self.cv_folds, int(min(len(real), len(synthetic)))))
        c2st = cross_val_score(LogisticRegression(max_iter=2000), pca50, is_synth, cv=folds, scoring="accuracy")
        feats_real, feats_synth = self._features(real, synthetic, real_seg)
        results = {
            "test/c2st_accuracy": float(c2st.mean()),
            "test/frechet_distance": frechet_distance(feats_real, feats_synth),
            "test/label_diversity_synthetic": label_diversity(synth_seg, seed=self.seed),
            "test/label_diversity_real": label_diversity(real_seg, seed=self.seed),
            **{f"test/labels_{key}_{name}": value for name, group in zip(("real", "synthetic"), items, strict=True)
               for key, value in label_map_stats(*_seg_and_brain(group)).items()},
            "test/num_real": float(len(real)),
            "test/num_synthetic": float(len(synthetic)),
        }
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
