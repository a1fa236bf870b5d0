"""Can colour alone tell lesion frames from normal ones? A colour-shortcut check for rendered datasets.

Each frame becomes its per-channel (R, G, B) colour histogram over the pixels inside the endoscope's field of
view (exactly-black pixels, the border outside it, are not colour information and are left out), each channel
normalised to sum 1. A logistic regression on standardised histograms is fitted on the train split that the
colon data module makes for the same dataset and seed (`synthmed.data.colon.split_frames` over
`read_frame_index`: by sequence when the manifest has a `sequence` column) and tested on its
test split, so its test frames are exactly the CNN's. A test accuracy near the chance level (the majority
class's share) says the lesion classifier must look at shape and texture; one near 1 says colour gives the
label away.

    python -m synthmed.analysis.shortcut <dataset dir> [--seed 0] [--bins 16] [--C 1.0] [--out DIR]

prints one JSON line (the content of `shortcut.json`). In a run, `ColourShortcut(...)(datamodule, output_dir)`
writes `shortcut.json` and `shortcut_predictions.csv` (same columns as `test_predictions.csv`) into the job
dir and, when the CNN's `test_predictions.csv` is there, breaks both down side by side by lesion size and type
(`synthmed.analysis.errors`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthmed.analysis.errors import compare_breakdowns, error_breakdown, to_markdown_side_by_side
from synthmed.data.colon import read_frame_index, split_frames
from synthmed.utils import atomic_write_json, atomic_write_text, strict_json

PREDICTIONS = "shortcut_predictions.csv"
RESULT = "shortcut.json"
COLOUR_ONLY, CNN = "colour_only", "cnn"


def colour_histogram(image: np.ndarray, bins: int) -> np.ndarray:
    """Per-channel histograms (3 * `bins` values) of an RGB uint8 image (H, W, 3) over its field of view:
    pixels that are not exactly black. Each channel sums to 1 (all zeros if the frame holds no such pixel)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    inside = image[image.any(axis=2)]  # (pixels, 3): the border outside the scope is exactly (0, 0, 0)
    features = np.zeros((3, bins))
    if len(inside):
        index = inside.astype(np.int64) * bins // 256  # bin of each value, bins of equal width over 0..255
        for channel in range(3):
            features[channel] = np.bincount(index[:, channel], minlength=bins) / len(inside)
    return features.ravel()


def _frames(root: Path) -> list[dict[str, Any]]:
    """The rendered dataset's frames, in the order the data module reads them."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist (a rendered dataset dir holding manifest.csv)")
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: the colour-shortcut check needs a rendered dataset "
                                f"(`python -m synthmed experiment=colon_render` writes one under data/colon/)")
    return read_frame_index(root, "rendered")[1]


def _features(rows: list[dict[str, Any]], bins: int) -> np.ndarray:
    features = np.empty((len(rows), 3 * bins))
    for i, row in enumerate(rows):
        try:
            with Image.open(row["image"]) as im:
                features[i] = colour_histogram(np.asarray(im.convert("RGB")), bins)
        except OSError as err:
            raise ValueError(f"cannot read frame {row['id']} ({row['image']}): {err}") from err
    return features


def colour_shortcut(root: str | Path, seed: int | None, val_fraction: float, test_fraction: float, bins: int,
                    C: float, max_iter: int) -> dict[str, Any]:
    """Fit the colour-only classifier on the data module's train split of `root` for `seed` (None -> 0, as
    `data.split_seed`) and test it on its test split. Returns the numbers (`test_accuracy`, `test_auroc`,
    `chance_accuracy`, `train_accuracy`, split sizes, settings) and, under `predictions`, one row a test frame
    (id, label, predicted, score = P(lesion))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bins, C, max_iter = int(bins), float(C), int(max_iter)
    if not 2 <= bins <= 256:
        raise ValueError(f"bins={bins}: give 2 to 256 histogram bins per channel")
    if C <= 0:
        raise ValueError(f"C={C}: the inverse regularisation strength must be positive")
    root, seed = Path(root), 0 if seed is None else int(seed)
    rows = _frames(root)
    labels = np.array([r["label"] for r in rows])
    train, val, test = split_frames(rows, labels, float(val_fraction), float(test_fraction), seed)
    for name, idx in (("train", train), ("test", test)):
        if len(np.unique(labels[idx])) < (2 if name == "train" else 1):
            raise ValueError(f"the {name} split of {root} (seed {seed}) holds {len(idx)} frames of "
                             f"{len(np.unique(labels[idx]))} class(es): the dataset is too small")
    features = _features(rows, bins)
    # lbfgs on a fixed problem is deterministic; random_state only pins solvers that shuffle
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(features[train], labels[train])
    score = model.predict_proba(features[test])[:, 1]
    predicted = (score >= 0.5).astype(int)
    truth = labels[test]
    lesion_share = float(truth.mean())
    return {
        "dataset": str(root),
        "seed": seed,
        "frames": {"train": len(train), "val": len(val), "test": len(test),
                   "test_lesion": int(truth.sum()), "test_normal": int(len(truth) - truth.sum())},
        "features": f"R, G, B histograms, {bins} bins each, over non-black pixels (the field of view)",
        "bins": bins,
        "C": C,
        "test_accuracy": float((predicted == truth).mean()),
        "test_auroc": float(roc_auc_score(truth, score)) if len(np.unique(truth)) == 2 else float("nan"),
        "chance_accuracy": max(lesion_share, 1 - lesion_share),
        "train_accuracy": float(model.score(features[train], labels[train])),
        "predictions": [{"id": rows[i]["id"], "label": int(labels[i]), "predicted": int(p), "score": float(s)}
                        for i, p, s in zip(test, predicted, score, strict=True)],
    }


def _predictions_csv(predictions: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "label", "predicted", "score"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**p, "score": f"{p['score']:.6f}"} for p in predictions)
    return buffer.getvalue()


def write_colour_shortcut(root: str | Path, output_dir: str | Path, seed: int | None, val_fraction: float,
                          test_fraction: float, bins: int, C: float, max_iter: int,
                          cnn_predictions: str | Path | None = None) -> dict[str, Any]:
    """Run `colour_shortcut` and write `shortcut_predictions.csv` and `shortcut.json` into `output_dir`.
    `shortcut.json` holds the numbers and `breakdown`: the `analysis.errors` breakdown (by visible lesion
    pixels, lesion type, scene) of the colour-only predictions and, if `cnn_predictions` (a run's
    `test_predictions.csv`) is given, of the CNN's beside them; the two must cover the same test frames.
    Returns what `shortcut.json` holds (undefined numbers as None)."""
    root, output_dir = Path(root), Path(output_dir)
    result = colour_shortcut(root, seed, val_fraction, test_fraction, bins, C, max_iter)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = output_dir / PREDICTIONS
    atomic_write_text(predictions_path, _predictions_csv(result.pop("predictions")))
    manifest = root / "manifest.csv"
    if cnn_predictions is not None:
        breakdown = compare_breakdowns({CNN: Path(cnn_predictions), COLOUR_ONLY: predictions_path}, manifest)
        result["breakdown_table"] = to_markdown_side_by_side(breakdown)
    else:
        breakdown = {COLOUR_ONLY: error_breakdown(predictions_path, manifest)}
    result["breakdown"] = breakdown
    result = strict_json(result)  # an empty group's rate is undefined: null, in the file and here alike
    atomic_write_json(output_dir / RESULT, result)
    return result


class ColourShortcut:
    """The check as a run's analysis: called with the colon data module and the job dir, after the CNN's test
    (its `test_predictions.csv`, when present, is broken down beside the colour-only classifier). Uses the data
    module's root, fractions and split seed, so both classifiers see the same test frames. Returns the numbers
    for the run's loggers."""

    def __init__(self, bins: int, C: float, max_iter: int) -> None:
        self.bins, self.C, self.max_iter = int(bins), float(C), int(max_iter)

    def __call__(self, datamodule: Any, output_dir: str | Path) -> dict[str, float]:
        if getattr(datamodule, "root", None) is None:
            raise ValueError("the colour-shortcut check needs data.root (a rendered dataset dir)")
        cnn = Path(output_dir) / "test_predictions.csv"
        val_fraction, test_fraction = datamodule.fractions
        result = write_colour_shortcut(datamodule.root, output_dir, datamodule.split_seed, val_fraction,
                                       test_fraction, self.bins, self.C, self.max_iter,
                                       cnn_predictions=cnn if cnn.is_file() else None)
        return {f"shortcut/{key}": float("nan") if result[key] is None else result[key]
                for key in ("test_accuracy", "test_auroc", "chance_accuracy", "train_accuracy")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset_dir", type=Path, help="a rendered dataset (holds manifest.csv and images/)")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed (data.split_seed): which split")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="data.val_fraction of the run")
    ap.add_argument("--test-fraction", type=float, default=0.1, help="data.test_fraction of the run")
    ap.add_argument("--bins", type=int, default=16, help="histogram bins per colour channel")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    ap.add_argument("--max-iter", type=int, default=1000, help="lbfgs iterations at most")
    ap.add_argument("--cnn", type=Path, default=None,
                    help="a run's test_predictions.csv (or its run dir), broken down beside the colour-only one")
    ap.add_argument("--out", type=Path, default=None,
                    help="write shortcut.json and shortcut_predictions.csv here as well")
    args = ap.parse_args(argv)
    settings = (args.seed, args.val_fraction, args.test_fraction, args.bins, args.C, args.max_iter)
    cnn = args.cnn / "test_predictions.csv" if args.cnn is not None and args.cnn.is_dir() else args.cnn
    try:
        if args.out is not None:
            result = write_colour_shortcut(args.dataset_dir, args.out, *settings, cnn_predictions=cnn)
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                result = write_colour_shortcut(args.dataset_dir, tmp, *settings, cnn_predictions=cnn)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    print(json.dumps(strict_json(result), sort_keys=True, allow_nan=False))


if __name__ == "__main__":
    main()
