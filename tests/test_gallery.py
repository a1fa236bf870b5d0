"""scripts/make_gallery.py's figure writing: the before/after figure (--compare) and the paletted PNG it saves
(mask outlines exact, no outline green dithered onto the walls). The renders behind the full gallery are the
render tests' business; nothing here needs Blender."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_gallery.py"


def _gallery():
    spec = importlib.util.spec_from_file_location("make_gallery", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wall(size: int, seed: int) -> np.ndarray:
    """A smooth orange-pink gradient with noise: the kind of image the palette has to dither."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.85 - 0.3 * y, 0.45 - 0.2 * y + 0.1 * x, 0.3 - 0.15 * x], -1) * 255
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


def _datasets(tmp: Path, frames: int) -> list[Path]:
    """Two folders laid out as rendered datasets: images/000000.png ... of 16 px walls."""
    roots = []
    for k in range(2):
        root = tmp / f"frames_{k}"
        (root / "images").mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(_wall(16, 10 * k + i)).save(root / "images" / f"{i:06d}.png")
        roots.append(root)
    return roots


def test_saved_figure_keeps_outlines_exact_and_no_outline_green_elsewhere(tmp_path):
    gallery = _gallery()
    image = _wall(96, 0)
    outline = np.zeros((96, 96), bool)
    outline[30, 20:60] = outline[60, 20:60] = outline[30:61, 20] = outline[30:61, 59] = True
    image[outline] = (0, 255, 0)
    gallery._save(tmp_path / "fig.png", image)
    saved = Image.open(tmp_path / "fig.png")
    assert saved.mode == "P"
    back = np.asarray(saved.convert("RGB")).astype(int)
    green = np.all(back == (0, 255, 0), axis=-1)
    assert (green == outline).all()  # every outline pixel, and nowhere else
    assert np.abs(back - image)[~outline].mean() < 4.0  # 255 colours, dithered: close to the original


def test_compare_sets_two_datasets_in_rows_and_names_a_folder_without_frames(tmp_path):
    roots = _datasets(tmp_path, 10)
    out = tmp_path / "a_vs_b.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figure = np.asarray(Image.open(out).convert("RGB"))
    assert figure.shape == (2 * 16 + 4, 10 * 16 + 9 * 4, 3)  # two rows, ten frames, 4-px white gaps
    assert (figure[16:20] == 255).all()
    first = np.asarray(Image.open(roots[1] / "images" / "000000.png")).astype(int)
    assert np.abs(figure[20:, :16].astype(int) - first).mean() < 4.0  # B's frame 0 starts the second row
    # a folder that is not a rendered dataset: one error naming it, no figure
    (roots[1] / "images" / "000007.png").unlink()
    bad = tmp_path / "bad.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(roots[1]) in proc.stderr and "000007.png" in proc.stderr
    assert not bad.exists()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "--to" in proc.stderr


def test_compare_zooms_pixel_for_pixel_and_sets_the_frames_asked(tmp_path):
    roots = _datasets(tmp_path, 3)
    out = tmp_path / "zoomed.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(out), "--frames",
                           "3", "--zoom", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figure = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert figure.shape == (2 * 32 + 4, 3 * 32 + 2 * 4, 3)  # three frames a row, each 2 x 16 px
    first = np.asarray(Image.open(roots[0] / "images" / "000000.png")).astype(int)
    blocks = first.repeat(2, axis=0).repeat(2, axis=1)  # each pixel a 2 x 2 block (then dithered onto the palette)
    assert np.abs(figure[:32, :32] - blocks).mean() < 4.0
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(tmp_path / "z0.png"),
                           "--zoom", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--zoom" in proc.stderr and not (tmp_path / "z0.png").exists()


def test_lesion_box_is_a_square_around_the_lesion_inside_the_frame():
    gallery = _gallery()
    mask = np.zeros((64, 64), np.uint8)
    assert gallery.lesion_box(mask) is None
    mask[10:16, 20:26] = 255  # 6 x 6 px
    assert gallery.lesion_box(mask, margin=2, least=8) == (8, 18, 10)  # 6 + 2 x 2 px, centred on it
    assert gallery.lesion_box(mask, margin=4, least=16) == (5, 15, 16)  # 6 + 2 x 4 < 16: the least, 16
    mask[:] = 0
    mask[0:4, 60:64] = 255  # in the corner: the square is moved inside the frame
    assert gallery.lesion_box(mask, margin=4, least=16) == (0, 48, 16)


def test_compare_crop_sets_the_frames_with_a_lesion_cut_around_it(tmp_path):
    roots = _datasets(tmp_path, 4)
    for root in roots:
        (root / "masks").mkdir()
        for i in range(4):
            mask = np.zeros((16, 16), np.uint8)
            if i in (1, 3):
                mask[4:8, 4:8] = 255
            Image.fromarray(mask).save(root / "masks" / f"{i:06d}.png")
    out = tmp_path / "crop.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(out), "--frames",
                           "2", "--crop"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figure = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert figure.shape == (2 * 16 + 4, 2 * 16 + 4, 3)  # frames 1 and 3, the ones with a lesion
    top, left, side = _gallery().lesion_box(np.asarray(Image.open(roots[0] / "masks" / "000003.png")), least=8)
    assert side == 16  # 4 px + 2 x 12 px of margin, cut to the 16 px frame
    cut = Image.open(roots[1] / "images" / "000003.png").convert("RGB").crop((left, top, left + side, top + side))
    expected = np.asarray(cut.resize((16, 16), Image.LANCZOS)).astype(int)
    assert np.abs(figure[20:, 20:] - expected).mean() < 4.0  # B's frame 3, cut where A's lesion is
    for i in (1, 3):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(roots[0] / "masks" / f"{i:06d}.png")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compare", *map(str, roots), "--to", str(tmp_path / "no.png"),
                           "--crop"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(roots[0]) in proc.stderr and not (tmp_path / "no.png").exists()
