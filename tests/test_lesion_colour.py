"""scripts/lesion_colour.py: a lesion's colour less the wall's round it, per frame. No Blender needed."""

from __future__ import annotations

import colorsys
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "lesion_colour.py"
REFERENCE = ROOT.parent / "shared" / "reference" / "real_colonoscopy_examples.png"
WALL, LESION = (200, 110, 90), (190, 70, 75)


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False)


def _dataset(root: Path, radii: list[int], size: int = 128) -> None:
    """Frames of one wall colour with a disc of lesion colour (radius r px, 0: none), a glint on the lesion."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i, r in enumerate(radii):
        disc = (yy - 64) ** 2 + (xx - 64) ** 2 < r * r
        rgb = np.zeros((size, size, 3), np.uint8)
        rgb[:] = WALL
        rgb[disc] = LESION
        rgb[62:65, 62:65] = 255  # a glint: left out
        Image.fromarray(rgb).save(root / "images" / f"{i:06d}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "masks" / f"{i:06d}.png")


def test_the_lesion_is_measured_against_the_wall_round_it(tmp_path):
    _dataset(tmp_path / "frames_x", [20, 3, 0])  # the 3 px and empty frames are left out (under 25 px at 128)
    done = _run(tmp_path / "frames_x")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    wall, lesion = (colorsys.rgb_to_hsv(*(c / 255 for c in rgb)) for rgb in (WALL, LESION))
    assert out["lesions"] == 1  # (values printed to 4 decimals)
    d_hue = (lesion[0] - wall[0] + 0.5) % 1.0 - 0.5  # round the circle: the lesion's hue is past red
    assert d_hue < 0 and out["d_hue"][1] == pytest.approx(d_hue, abs=1e-4)
    assert out["d_saturation"][1] == pytest.approx(lesion[1] - wall[1], abs=1e-4)
    assert out["d_value"][1] == pytest.approx(lesion[2] - wall[2], abs=1e-4)
    assert out["saturation"][1] == pytest.approx(lesion[1], abs=1e-4)


def test_a_missing_mask_or_a_folder_without_frames_is_named(tmp_path):
    _dataset(tmp_path / "frames_x", [20])
    (tmp_path / "frames_x" / "masks" / "000000.png").unlink()
    done = _run(tmp_path / "frames_x")
    assert done.returncode != 0 and "000000.png: missing" in done.stderr, done.stderr
    done = _run(tmp_path)
    assert done.returncode != 0 and f"{tmp_path}: no images" in done.stderr, done.stderr


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference figure is not beside the checkout")
def test_the_reference_figures_five_lesions_are_near_their_walls_colour():
    done = _run("--reference", REFERENCE)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["lesions"] == 5
    assert abs(out["d_hue"][1]) < 0.02 and abs(out["d_saturation"][1]) < 0.1, out  # -0.0014, +0.019


def test_a_wall_astride_red_is_measured_round_the_circle(tmp_path):
    """A wall half just under red (hue 0.99) and half just over (0.01): its hue is 0, not their plain mean 0.5, so a
    lesion at 0.98 is 0.02 redder, not half a turn off."""
    root = tmp_path / "frames_x"
    _dataset(root, [20])
    yy, xx = np.mgrid[:128, :128]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 400
    under, over, lesion = (tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.6, 0.8)) for h in (0.99, 0.01, 0.98))
    rgb = np.zeros((128, 128, 3), np.uint8)
    rgb[:] = under
    rgb[:, ::2] = over
    rgb[disc] = lesion
    Image.fromarray(rgb).save(root / "images" / "000000.png")
    done = _run(root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["d_hue"][1] == pytest.approx(-0.02, abs=2e-3)
