"""The colour-shortcut check (synthmed.analysis.shortcut): a colour-only classifier on the CNN's split."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.analysis.errors import compare_breakdowns
from synthmed.analysis.errors import main as errors_main
from synthmed.analysis.shortcut import (
    ColourShortcut,
    colour_histogram,
    colour_shortcut,
    main,
    write_colour_shortcut,
)
from synthmed.data.colon import ColonFramesDataModule

SIZE = 32
FIT = {"C": 1.0, "max_iter": 1000}  # conf/experiment/colon_cls.yaml's analysis.shortcut
FRACTIONS = {"val_fraction": 0.1, "test_fraction": 0.25}


def _scope(image: np.ndarray, radius: float) -> np.ndarray:
    """Black out what lies outside the endoscope's round field of view."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image[(xx - SIZE / 2 + 0.5) ** 2 + (yy - SIZE / 2 + 0.5) ** 2 > radius**2] = 0
    return image


def write_dataset(root: Path, giveaway: str, n: int = 160, seed: int = 0, sequences: bool = False) -> Path:
    """A rendered-layout dataset of `n` frames (every second one a lesion frame) inside a round black border.

    giveaway="colour": lesion frames hold a red blob that no normal frame has.
    giveaway="shape": a lesion frame is a normal-like frame whose own pixels are rearranged so that its darkest
    ones form a disc; its colour histogram is exactly that of the frame before, so colour carries no label. The
    lesion frames also have a smaller field of view (a wider black border), which must not count as colour.
    sequences=True adds a `sequence` column (runs of 6 frames; the data module then splits by sequence).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rows = []
    for i in range(n):
        label = i % 2
        base = np.array([200.0, 120.0, 110.0]) + rng.normal(0, 15, 3)
        image = np.clip(base + rng.normal(0, 18, (SIZE, SIZE, 3)), 20, 255).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        if label:
            cx, cy = rng.integers(11, 21, 2)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= int(rng.integers(3, 7)) ** 2
            if giveaway == "colour":
                image[mask] = np.clip([150, 30, 35] + rng.normal(0, 8, (int(mask.sum()), 3)), 0, 255)
            else:
                pixels = image.reshape(-1, 3)
                order = np.argsort(pixels.sum(1), kind="stable")
                flat_mask = mask.ravel()
                rearranged = np.empty_like(pixels)
                rearranged[flat_mask] = pixels[order[: flat_mask.sum()]]
                rearranged[~flat_mask] = pixels[rng.permutation(order[flat_mask.sum():])]
                image = rearranged.reshape(SIZE, SIZE, 3)
        radius = 12.0 if (label and giveaway == "shape") else 15.0
        image = _scope(image, radius)
        mask &= image.any(axis=2)
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{i:04d}.png")
        rows.append({"id": f"{i:04d}", "index": i, "seed": i, "label": label, "visible_pixels": int(mask.sum()),
                     "lesion.placed": label, "lesion.type": ("flat", "sessile")[i // 2 % 2]})
        if sequences:
            rows[-1]["sequence"] = f"seq{i // 6:03d}"
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("colour") / "set", "colour")


@pytest.fixture(scope="module")
def shape_set(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("shape") / "set", "shape")


def test_histogram_ignores_the_black_border():
    rng = np.random.default_rng(1)
    image = rng.integers(1, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    wide, narrow = _scope(image.copy(), 15.0), _scope(image.copy(), 9.0)
    features = colour_histogram(wide, bins=8)
    assert features.shape == (24,)
    np.testing.assert_allclose(features.reshape(3, 8).sum(1), 1.0)
    assert features.reshape(3, 8)[:, 0].max() < 0.2  # the ~30% black border is not counted in the lowest bin
    # the same scene seen through the same field of view in a larger border: the same features
    padded = np.zeros((2 * SIZE, 2 * SIZE, 3), dtype=np.uint8)
    padded[:SIZE, :SIZE] = wide
    np.testing.assert_allclose(colour_histogram(padded, bins=8), features)
    # a narrower field of view: fewer pixels, still a distribution over them (the border never counts)
    np.testing.assert_allclose(colour_histogram(narrow, bins=8).reshape(3, 8).sum(1), 1.0)
    assert colour_histogram(np.zeros((4, 4, 3), dtype=np.uint8), bins=8).sum() == 0
    with pytest.raises(ValueError, match="RGB uint8"):
        colour_histogram(np.zeros((4, 4), dtype=np.uint8), bins=8)


def test_colour_giveaway_is_found(colour_set):
    result = colour_shortcut(colour_set, seed=0, bins=16, **FRACTIONS, **FIT)
    assert result["frames"]["test"] == 40 and result["chance_accuracy"] == pytest.approx(0.5)
    assert result["test_accuracy"] >= 0.95
    assert result["test_auroc"] >= 0.98


def test_shape_only_lesions_stay_near_chance(shape_set):
    result = colour_shortcut(shape_set, seed=0, bins=16, **FRACTIONS, **FIT)
    # lesion frames have a wider black border too: were it counted as colour, this would be easy
    assert result["test_accuracy"] <= result["chance_accuracy"] + 0.2
    assert abs(result["test_auroc"] - 0.5) < 0.25


@pytest.mark.parametrize("sequences", [False, True])
def test_test_split_is_the_data_modules(colour_set, tmp_path, sequences):
    root = write_dataset(tmp_path / "set", "colour", n=96, sequences=True) if sequences else colour_set
    module = ColonFramesDataModule(root=str(root), task="classification", layout="auto", image_size=16,
                                   batch_size=8, split_seed=3, num_workers=0, flips=False, **FRACTIONS)
    module.setup()
    result = colour_shortcut(root, seed=3, bins=8, **FRACTIONS, **FIT)
    assert [p["id"] for p in result["predictions"]] == module.splits["test"].ids
    if sequences:  # whole sequences of 6 frames in the test split
        test_sequences = {int(p["id"]) // 6 for p in result["predictions"]}
        assert len(result["predictions"]) == 6 * len(test_sequences)
    assert result["frames"]["train"] == len(module.splits["train"])
    assert result["frames"]["val"] == len(module.splits["val"])


def test_outputs_and_side_by_side_breakdown(colour_set, tmp_path, capsys):
    first = write_colour_shortcut(colour_set, tmp_path / "a", seed=0, bins=16, C=0.5, max_iter=500, **FRACTIONS)
    saved = json.loads((tmp_path / "a" / "shortcut.json").read_text())
    assert saved == json.loads(json.dumps(first))
    for key in ("test_accuracy", "test_auroc", "chance_accuracy", "train_accuracy", "frames", "bins", "C",
                "seed", "dataset", "breakdown"):
        assert key in saved, key
    assert saved["C"] == 0.5 and saved["bins"] == 16
    colour_only = saved["breakdown"]["colour_only"]
    assert set(colour_only["lesion_recall_by_type"]) == {"flat", "sessile"}
    assert colour_only["lesion_recall_by_visible_pixels"]
    assert colour_only["accuracy"]["rate"] == pytest.approx(saved["test_accuracy"])
    with (tmp_path / "a" / "shortcut_predictions.csv").open(newline="") as f:
        predictions = list(csv.DictReader(f))
    assert list(predictions[0]) == ["id", "label", "predicted", "score"] and len(predictions) == 40

    # a CNN's test_predictions.csv of the same frames goes beside it, group by group
    run = tmp_path / "run"
    run.mkdir()
    cnn = run / "test_predictions.csv"
    with cnn.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "predicted", "score"])
        writer.writeheader()
        writer.writerows({**p, "predicted": p["label"]} for p in predictions)  # a perfect CNN
    both = write_colour_shortcut(colour_set, tmp_path / "b", seed=0, bins=16, cnn_predictions=cnn, **FRACTIONS, **FIT)
    assert set(both["breakdown"]) == {"cnn", "colour_only"}
    assert both["breakdown"]["cnn"]["accuracy"]["rate"] == 1.0
    assert both["breakdown"]["cnn"]["lesion_recall_by_type"]["flat"]["n"] == \
        both["breakdown"]["colour_only"]["lesion_recall_by_type"]["flat"]["n"]
    assert "| group | frames | cnn | colour_only |" in both["breakdown_table"]
    assert "| lesion, flat |" in both["breakdown_table"]

    errors_main([str(run), str(colour_set), "--compare", f"colour={tmp_path / 'b' / 'shortcut_predictions.csv'}"])
    table = capsys.readouterr().out
    accuracy = both["test_accuracy"]
    assert "| group | frames | run | colour |" in table
    assert f"| all test frames (accuracy) | 40 | 1.000 | {accuracy:.3f} |" in table

    # predictions of another split are refused, naming the file
    cnn.write_text("id,label,predicted,score\n0000,0,0,0.1\n")
    with pytest.raises(ValueError, match="test_predictions.csv .*different frames"):
        compare_breakdowns({"cnn": cnn, "colour_only": tmp_path / "b" / "shortcut_predictions.csv"},
                           colour_set / "manifest.csv")


def test_same_seed_same_numbers_other_seed_other_split(colour_set, tmp_path):
    a = write_colour_shortcut(colour_set, tmp_path / "a", seed=0, bins=16, **FRACTIONS, **FIT)
    b = write_colour_shortcut(colour_set, tmp_path / "b", seed=0, bins=16, **FRACTIONS, **FIT)
    assert a == b
    assert (tmp_path / "a" / "shortcut_predictions.csv").read_bytes() == \
        (tmp_path / "b" / "shortcut_predictions.csv").read_bytes()
    other = colour_shortcut(colour_set, seed=1, bins=16, **FRACTIONS, **FIT)
    assert [p["id"] for p in other["predictions"]] != \
        [r["id"] for r in csv.DictReader((tmp_path / "a" / "shortcut_predictions.csv").open())]


def test_run_analysis_uses_the_data_modules_split(colour_set, tmp_path):
    module = ColonFramesDataModule(root=str(colour_set), task="classification", layout="auto", image_size=16,
                                   batch_size=8, split_seed=None, num_workers=0, flips=False, **FRACTIONS)
    numbers = ColourShortcut(bins=16, C=1.0, max_iter=1000)(module, tmp_path)
    assert set(numbers) == {"shortcut/test_accuracy", "shortcut/test_auroc", "shortcut/chance_accuracy",
                            "shortcut/train_accuracy"}
    assert numbers["shortcut/test_accuracy"] == colour_shortcut(colour_set, 0, bins=16, **FRACTIONS, **FIT)["test_accuracy"]
    assert (tmp_path / "shortcut.json").is_file() and (tmp_path / "shortcut_predictions.csv").is_file()


def test_cli_prints_one_json_line(colour_set, tmp_path, capsys):
    main([str(colour_set), "--seed", "0", "--bins", "16", "--test-fraction", "0.25", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed["test_accuracy"] == json.loads((tmp_path / "shortcut.json").read_text())["test_accuracy"]
    assert printed["seed"] == 0 and printed["bins"] == 16


def test_missing_manifest_names_the_path(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "manifest.csv"))):
        colour_shortcut(tmp_path, 0, 0.1, 0.1, bins=8, **FIT)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        colour_shortcut(tmp_path / "nowhere", 0, 0.1, 0.1, bins=8, **FIT)
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "manifest.csv"))):
        main([str(tmp_path)])
    with pytest.raises(ValueError, match="bins=1"):
        colour_shortcut(tmp_path, 0, 0.1, 0.1, bins=1, **FIT)
