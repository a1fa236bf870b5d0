"""scripts/frame_colour_stats.py: the shares of the endoscope's window that are near black and dark. A lumen the
processor's black level clamps to pure black is inside the window and must count, whether the window comes from
the rendered dataset's manifest or, for a real figure, from the lit pixels around it. No Blender needed."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.render.post import border_mask

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "frame_colour_stats.py"


def _frame(size: int = 64) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A circular window of pink wall with a pure-black lumen (a 10 x 10 hole) and a dark ring (level 20) around it."""
    inside = border_mask(size, "circle", 0.95, 0.2)
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[inside] = (200, 110, 90)
    rgb[22:42, 22:42] = (20, 12, 10)  # dark (< 32), not near black
    rgb[27:37, 27:37] = 0  # the clamped lumen
    rgb[10:12, 30:33] = 255  # two glints of 6 and 1 px
    rgb[50, 20] = (240, 235, 230)
    return rgb, inside, 100, 400 - 100


def _run(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_black_lumen_counts_in_the_window_from_the_manifest_or_the_lit_pixels(tmp_path):
    rgb, inside, hole, ring = _frame()
    field = int(inside.sum())
    root = tmp_path / "frames_x"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rgb).save(root / "images" / f"{i:06d}.png")
    # a real figure (no manifest): the window is the lit pixels and the holes among them
    alone = _run(root / "images" / "000000.png")
    assert alone["frames"] == 1
    assert alone["near_black"][1] == pytest.approx(hole / field, abs=1e-3)
    assert alone["dark"][1] == pytest.approx((hole + ring) / field, abs=1e-3)
    assert alone["glints_per_10k_px"][1] == pytest.approx(2 / field * 1e4, abs=1e-3)
    assert alone["glint_area_pct"][1] == pytest.approx(100 * 7 / field, abs=1e-3)
    assert alone["glints"] == [2.0] * 3
    assert alone["glint_size_pct"] == pytest.approx(100 * 3.5 / field, abs=1e-4)  # 7 px over two glints
    dull = rgb.copy()
    dull[dull.min(axis=-1) >= 225] = (200, 110, 90)
    Image.fromarray(dull).save(tmp_path / "dull.png")
    none = _run(tmp_path / "dull.png")
    assert none["glints"] == [0.0] * 3 and none["glint_size_pct"] is None  # no glint: no size, not a division by 0
    assert none["glints_of_4px"] == 0 and none["glint_elongation"] is None
    # a rendered dataset: the window comes from the manifest's border columns (and dataset.yaml's octagon
    # cut), the same here
    (root / "dataset.yaml").write_text("name: frames_x\nconfig:\n  endoscope:\n    octagon_cut: 0.2\n")
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "endoscope.border", "endoscope.border_radius"])
        writer.writerows([f"{i:06d}", 1, "circle", 0.95] for i in range(3))
    rendered = _run(root / "images", "--limit", 2)
    assert rendered["frames"] == 2
    assert rendered["near_black"] == [alone["near_black"][1]] * 3
    assert rendered["dark"] == [alone["dark"][1]] * 3
    assert rendered["glint_size_pct"] == alone["glint_size_pct"]  # pooled over frames: the same size
    # hue and the rest come from the lit pixels only: the wall's saturation, (200 - 90) / 200
    assert rendered["saturation"][1] == pytest.approx(0.55, abs=0.01)
    # white that touches the image's edge (a figure's background around a tile) is not a glint
    spec = importlib.util.spec_from_file_location("frame_colour_stats", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    framed = rgb.copy()
    framed[0:3, :] = 255
    framed[0:3, 20:40] = 255  # ... though it reaches into the window
    assert script.frame_stats(framed, inside)["glints_per_10k_px"] == pytest.approx(2 / field * 1e4)
    # how drawn out a glint is: a streak 8 px long and one wide gives 8, a 3 x 3 spot 1, glints under 4 px none
    shaped = rgb.copy()
    shaped[20, 12:20] = 255
    shaped[44:47, 40:43] = 255
    assert sorted(script.frame_stats(shaped, inside)["glint_elongations"]) == pytest.approx([1.0, 1.5, 8.0])  # + the 3 x 2
    assert alone["glints_of_4px"] == 1 and alone["glint_elongation"] == [1.5] * 3
    # a dataset.yaml without the octagon's cut is named
    (root / "dataset.yaml").write_text("name: frames_x\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(root / "images")], capture_output=True, text=True)
    assert done.returncode != 0 and "dataset.yaml: no config.endoscope.octagon_cut" in done.stderr
    (root / "dataset.yaml").write_text("name: frames_x\nconfig:\n  endoscope:\n    octagon_cut: 0.2\n")
    # a frame the manifest does not know is named
    Image.fromarray(rgb).save(root / "images" / "000009.png")
    done = subprocess.run([sys.executable, str(SCRIPT), str(root / "images")], capture_output=True, text=True)
    assert done.returncode != 0 and "no row for 000009.png" in done.stderr


def test_fine_texture_is_the_relative_detail_at_one_scale():
    """fine_texture: a smooth wall is 0; a pixel-fine noise of 5% of the wall's luma reads about 0.05 (the blur
    keeps little of it), twice the noise twice it; a frame at 256 px (each pixel doubled) is compared on a copy
    128 px wide and reads about as the 128-px frame does; too small a field gives NaN (left out of the output)."""
    spec = importlib.util.spec_from_file_location("frame_colour_stats", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    size = 128
    inside = border_mask(size, "circle", 0.95, 0.2)
    wall = np.where(inside[..., None], np.float64([190.0, 120.0, 100.0]), 0.0)
    assert script.fine_texture(wall.astype(np.uint8), inside) == pytest.approx(0.0, abs=1e-9)
    noise = np.random.default_rng(0).normal(0.0, 1.0, (size, size, 1))

    def textured(amplitude):
        return np.clip(wall * (1.0 + amplitude * noise) + 0.5, 0, 255).astype(np.uint8)

    one, two = script.fine_texture(textured(0.05), inside), script.fine_texture(textured(0.10), inside)
    assert 0.04 < one < 0.055 and two == pytest.approx(2.0 * one, rel=0.1), (one, two)
    big = np.kron(textured(0.05), np.ones((2, 2, 1), np.uint8))
    halved = script.fine_texture(big, np.kron(inside, np.ones((2, 2), bool)))
    assert 0.7 * one < halved <= one, (halved, one)  # the LANCZOS resize softens pixel-fine noise by about a fifth
    tiny = np.zeros((size, size), bool)
    tiny[60:70, 60:70] = True
    assert np.isnan(script.fine_texture(textured(0.05), tiny))
    assert np.isnan(script.frame_stats(textured(0.05), tiny)["fine_texture"])


def test_wall_chroma_reads_the_walls_colour_spread_and_its_dim_red():
    """chroma_spread and dim_redder: one colour over the whole wall spreads 0 and its dim half is no redder; a
    dim half whose G is e^-0.3 lower reads dim_redder and a spread of the difference in ln((G + 0.01) / (R + 0.01))
    (0.26); yellow arrow pixels (G >= 0.75 R) are left out; a field with too few dim pixels gives NaN."""
    spec = importlib.util.spec_from_file_location("frame_colour_stats", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    size = 64
    inside = border_mask(size, "circle", 0.95, 0.2)
    lit, dim = np.array([230.0, 120.0, 90.0]), np.array([90.0, 47.0, 35.0])  # values 0.90 and 0.35, one hue
    rgb = np.zeros((size, size, 3))
    rgb[:, :32], rgb[:, 32:] = lit, dim
    rgb = np.where(inside[..., None], rgb, 0.0)
    spread, redder = script.wall_chroma(rgb.astype(np.uint8), inside)
    assert spread == pytest.approx(0.0, abs=0.02) and redder == pytest.approx(0.0, abs=0.02), (spread, redder)
    deeper = rgb.copy()
    deeper[:, 32:, 1] *= np.exp(-0.3)  # the dim half's G / R down by 0.3 in ln
    deeper[:4, :] = np.where(inside[:4, :, None], [250.0, 210.0, 20.0], 0.0)  # an arrow, left out
    spread, redder = script.wall_chroma(np.rint(deeper).astype(np.uint8), inside)
    # ln((G + 0.01) / (R + 0.01)) on values 0-1: the 0.01 (kept off 0 in the black) takes a little off the dim side
    g_dim = np.rint(dim[1] * np.exp(-0.3)) / 255.0
    expected = np.log((lit[1] / 255 + 0.01) / (lit[0] / 255 + 0.01)) - np.log((g_dim + 0.01) / (dim[0] / 255 + 0.01))
    assert 0.25 < expected < 0.3
    assert redder == pytest.approx(expected, abs=1e-6) and spread == pytest.approx(expected, abs=1e-6), (spread, redder)
    stats = script.frame_stats(np.rint(deeper).astype(np.uint8), inside)
    assert stats["dim_redder"] == pytest.approx(redder) and stats["chroma_spread"] == pytest.approx(spread)
    bright = np.where(inside[..., None], lit, 0.0).astype(np.uint8)
    assert np.isnan(script.wall_chroma(bright, inside)[1])
