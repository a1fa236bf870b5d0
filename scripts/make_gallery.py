"""Render the figures of docs/render.md into docs/gallery/ (small PNGs, about 2 MB in all).

    python scripts/make_gallery.py [--frames 8] [--resolution 256] [--out docs/gallery]
    python scripts/make_gallery.py --compare <dataset A> <dataset B> --to docs/gallery/renderer_3_vs_4.png [--frames 10] [--zoom 1]
                                   [--crop]

--compare renders nothing: it sets frames 0-9 (--frames) of two rendered datasets (their images/) in two rows, A
above B (two renderers' versions of the same frames: docs/render.md, "The wall's look"); --zoom 2 enlarges each
frame twice, pixel for pixel (what a 128 px frame holds, as the CNN sees it); --crop sets the first frames that
show a lesion (in A's masks), each cut to a square around it and scaled back to the frame's size.

gallery.png     frames of the default config (lesion forced present), mask outlines in green
varied.png      frames of render=varied (lesion forced present), mask outlines in green
closeup.png     frames of render=varied seen from a wall view (camera.view=wall: the scope turned toward a near wall)
pairs.png       frame | mask pairs
height.png      one scene, lesion height increasing left to right (per-frame overrides)
vessels.png     one scene, vascular density increasing left to right
morphology.png  one scene, one lesion per Paris class: pedunculated, sessile, sessile multi-lobed, flat elevated,
                flat, depressed
colour.png      one scene, lesion colour from paler than the mucosa through the same colour to redder
surface.png     one scene, surface patterns: smooth, pits, villous, vascular, and a mucus cap
negatives.png   frames without a lesion: bubbles, debris, a fluid pool, a reddened patch, motion blur, defocus
scenes.png      render=varied, the kinds of scene of ../shared/reference/real_colonoscopy_examples.png: a stalked
                polyp down the lumen, a large pale dome close up, a flat reddish lesion, a flat elevated one with
                pits, a multi-lobed villous one, a flat one under mucus
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def _load(root: Path, i: int, outline_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from synthmed.render.post import outline

    img = np.array(Image.open(root / "images" / f"{i:06d}.png").convert("RGB"))
    mask = np.array(Image.open(root / "masks" / f"{i:06d}.png"))
    if outline_mask:
        img = img.copy()
        img[outline(mask)] = (0, 255, 0)
    return img, mask


def _row(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    out = np.full((h, len(tiles) * (w + gap) - gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        out[:, k * (w + gap):k * (w + gap) + w] = t if t.ndim == 3 else np.repeat(t[..., None], 3, -1)
    return out


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the docs small; mapped onto it with dithering (Pillow dithers only onto a given
    # palette), so the smooth walls show no bands of flat colour. The mask outlines' pure green gets an entry of its
    # own and stays out of the dithering: dithered onto a palette that holds it, the walls took green specks.
    outline = np.all(arr == (0, 255, 0), axis=-1)
    image = Image.fromarray(np.where(outline[..., None], 0, arr).astype(np.uint8))
    palette = image.quantize(255, method=Image.Quantize.MEDIANCUT)
    out = image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    colours = out.getpalette()[:255 * 3]
    index = np.array(out)
    index[outline] = 255
    out = Image.frombytes("P", (index.shape[1], index.shape[0]), np.ascontiguousarray(index).tobytes())
    out.putpalette(colours + [0] * (255 * 3 - len(colours)) + [0, 255, 0])
    out.save(path, optimize=True)
    print(f"{path}  {path.stat().st_size // 1024} KiB")


def _config(base: list[str], overrides: dict):
    """The `render` node of the real config (experiment=colon_render) with Hydra overrides `base` and the
    per-frame parameter values `overrides` forced."""
    from synthmed.render import compose_render

    cfg = compose_render(base)
    cfg.overrides = overrides  # checked against the schema like any other value
    return cfg


def _sweep(base: list[str], fixed: dict, values: list, key: str | None, tmp: Path, name: str) -> list[np.ndarray]:
    """The same frame (index 0) rendered once per value of `key` (or, key None, per dict of values)."""
    from synthmed.render import render_dataset

    tiles = []
    for k, v in enumerate(values):
        change = v if key is None else {key: v}
        out = render_dataset(_config([*base, "render.num_frames=1"], {**fixed, **change}), tmp / f"{name}{k}",
                             progress=False)
        tiles.append(_load(out, 0, outline_mask=False)[0])
    return tiles


def _scenes(base: list[str], clean: dict, tmp: Path, out: Path) -> None:
    """scenes.png: the kinds of scene of the real reference figure, one scene of render=varied with the lesion and
    the view changed."""
    wall = {"camera.view": "wall", "camera.offset": 0.6, "camera.toward_wall_deg": 50.0, "light.power_w": 12.0}
    lumen = {"camera.view": "lumen", "camera.offset": 0.2, "camera.toward_wall_deg": 0.0, "light.power_w": 40.0}
    scenes = [{**lumen, "lesion.type": "pedunculated", "lesion.size_mm": 9.0, "lesion.height_mm": 12.0,
               "lesion.lobes": 0.12, "lesion.lobe_cells": 1.6, "lesion.redness": 0.1, "lesion.view_offaxis": 0.9},
              {**wall, "lesion.type": "sessile", "lesion.size_mm": 9.0, "lesion.height_mm": 3.5, "lesion.redness": -0.4,
               "lesion.surface": "smooth", "lesion.lobulation": 0.2, "lesion.view_offaxis": 0.35},
              {**lumen, "lesion.type": "flat", "lesion.size_mm": 16.0, "lesion.height_mm": 0.8, "lesion.plateau": 0.7,
               "lesion.redness": 0.7, "lesion.surface": "vascular", "lesion.view_offaxis": 1.0},
              {**wall, "lesion.type": "flat_elevated", "lesion.size_mm": 12.0, "lesion.height_mm": 1.2,
               "lesion.plateau": 0.6, "lesion.redness": 0.3, "lesion.surface": "pits", "lesion.view_offaxis": 0.35},
              {**wall, "lesion.type": "sessile", "lesion.size_mm": 10.0, "lesion.height_mm": 3.5, "lesion.lobes": 0.12,
               "lesion.lobe_cells": 1.6, "lesion.redness": 0.0, "lesion.surface": "villous", "lesion.view_offaxis": 0.35},
              {**lumen, "lesion.type": "flat", "lesion.size_mm": 14.0, "lesion.height_mm": 0.8, "lesion.plateau": 0.7,
               "lesion.redness": -0.2, "lesion.mucus": 1, "lesion.view_offaxis": 1.0}]
    _save(out / "scenes.png", _row(_sweep([*base, "render=varied"], {**clean, "lesion.surface_strength": 1.0}, scenes,
                                          None, tmp, "r")))


def lesion_box(mask: np.ndarray, margin: int = 12, least: int = 48) -> tuple[int, int, int] | None:
    """(top, left, side) of a square around a mask's lesion (`synthmed.analysis.embedding.region_box`: inside the
    frame), `margin` px beyond it and at least `least` px wide; None if the mask is empty."""
    from synthmed.analysis.embedding import region_box

    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    return region_box(mask > 0, max(margin, (least - extent + 1) // 2))


def compare(datasets: list[Path], to: Path, frames: int = 10, zoom: int = 1, crop: bool = False) -> None:
    """Frames 0 .. frames-1 of each dataset (its images/, no mask outlines), one row a dataset, each pixel a
    zoom x zoom block. `crop`: the first `frames` frames whose lesion shows in the first dataset's masks, each cut
    to a square around it and scaled back to the frame's size (the same square in every row)."""
    first = datasets[0]
    count = len(list((first / "images").glob("*.png")))
    picks, boxes = list(range(frames)), [None] * frames
    if crop:
        found = [(i, lesion_box(np.asarray(Image.open(first / "masks" / f"{i:06d}.png")))) for i in range(count)]
        found = [(i, box) for i, box in found if box is not None][:frames]
        if not found:
            raise SystemExit(f"{first}: no frame shows a lesion (--crop needs one)")
        picks, boxes = [i for i, _ in found], [box for _, box in found]
    rows = []
    for root in datasets:
        missing = [i for i in picks if not (root / "images" / f"{i:06d}.png").is_file()]
        if missing:
            raise SystemExit(f"{root}: no images/{missing[0]:06d}.png (--compare takes rendered datasets)")
        tiles = []
        for i, box in zip(picks, boxes, strict=True):
            image = Image.open(root / "images" / f"{i:06d}.png").convert("RGB")
            if box is not None:
                top, left, side = box
                image = image.crop((left, top, left + side, top + side)).resize(image.size, Image.LANCZOS)
            tiles.append(np.asarray(image))
        rows.append(_row([t.repeat(zoom, axis=0).repeat(zoom, axis=1) for t in tiles]))
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    _save(to, np.concatenate([part for row in rows for part in (row, gap)][:-1], 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=None, help="frames to render (8), or with --compare to set (10)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default="docs/gallery")
    ap.add_argument("--compare", nargs=2, type=Path, metavar="DATASET", help="set two datasets' frames 0-9 in rows")
    ap.add_argument("--to", type=Path, help="with --compare: the PNG to write")
    ap.add_argument("--zoom", type=int, default=1, help="with --compare: enlarge each frame this many times")
    ap.add_argument("--crop", action="store_true", help="with --compare: frames with a lesion, cut around it")
    args = ap.parse_args()
    if args.compare:
        if args.to is None:
            ap.error("--compare needs --to <file.png>")
        if args.zoom < 1:
            ap.error(f"--zoom must be >= 1, got {args.zoom}")
        compare(args.compare, args.to, args.frames or 10, args.zoom, args.crop)
        return
    args.frames = args.frames or 8

    from synthmed.render import render_dataset

    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="gallery_"))
    base = [f"render.resolution={args.resolution}", f"render.seed={args.seed}", "render.workers=2"]
    root = render_dataset(_config([*base, f"render.num_frames={args.frames}"], {"lesion.present": 1}), tmp / "main",
                          progress=True)
    frames = [_load(root, i) for i in range(args.frames)]
    half = (args.frames + 1) // 2
    rows = [_row([f[0] for f in frames[:half]])]
    if args.frames > half:
        rest = [f[0] for f in frames[half:]] + [np.full_like(frames[0][0], 255)] * (2 * half - args.frames)
        rows += [np.full((4, rows[0].shape[1], 3), 255, np.uint8), _row(rest)]
    _save(out / "gallery.png", np.concatenate(rows, 0))
    varied = render_dataset(_config([*base, "render=varied", f"render.num_frames={args.frames}"], {"lesion.present": 1}),
                            tmp / "varied", progress=True)
    tiles = [_load(varied, i)[0] for i in range(args.frames)]
    _save(out / "varied.png", np.concatenate([_row(tiles[:half]), np.full((4, rows[0].shape[1], 3), 255, np.uint8),
                                              _row(tiles[half:] + [np.full_like(tiles[0], 255)] * (2 * half - args.frames))]
                                             if args.frames > half else [_row(tiles)], 0))
    close = render_dataset(_config([*base, "render=varied", f"render.num_frames={args.frames}"],
                                   {"lesion.present": 1, "camera.view": "wall"}), tmp / "closeup", progress=True)
    tiles = [_load(close, i)[0] for i in range(args.frames)]
    _save(out / "closeup.png", np.concatenate([_row(tiles[:half]), np.full((4, rows[0].shape[1], 3), 255, np.uint8),
                                               _row(tiles[half:] + [np.full_like(tiles[0], 255)] * (2 * half - args.frames))]
                                              if args.frames > half else [_row(tiles)], 0))
    raw = [_load(root, i, outline_mask=False) for i in range(min(3, args.frames))]
    _save(out / "pairs.png", _row([t for img, m in raw for t in (img, m)]))
    # sweeps: a fixed, visible sessile lesion, one varied factor
    fixed = {"lesion.present": 1, "lesion.type": "sessile", "lesion.view_offaxis": 0.8, "lesion.size_mm": 11.0,
             "vessels.density": 0.5, "camera.axial_mm": 120.0}
    _save(out / "height.png", _row(_sweep(base, fixed, [1.5, 4.0, 7.0], "lesion.height_mm", tmp, "h")))
    _save(out / "vessels.png", _row(_sweep(base, fixed, [0.0, 0.5, 1.0], "vessels.density", tmp, "v")))
    # variety: a clean scene (no clutter, no blur), the lesion in view, one factor varied per figure
    clean = {**fixed, "clutter.bubbles": 0, "clutter.debris": 0, "clutter.fluid": 0, "clutter.red_patch": 0,
             "optics.motion_blur": 0, "optics.defocus": 0, "optics.glare": 0.3, "lesion.behind_fold": 0,
             "lesion.mucus": 0, "lesion.view_offaxis": 0.9, "lesion.view_azimuth_deg": 230.0, "lesion.size_mm": 13.0,
             "lesion.redness": 0.2, "endoscope.exposure_ev": 0.0, "camera.offset": 0.1, "camera.axial_mm": 116.0}
    # the lesion near the edge of the view, in front of the first fold: close to the lens, large
    kinds = [{"lesion.type": "pedunculated", "lesion.height_mm": 11.0, "lesion.size_mm": 9.0},
             {"lesion.type": "sessile", "lesion.height_mm": 5.0, "lesion.plateau": 0.2},
             {"lesion.type": "sessile", "lesion.height_mm": 5.0, "lesion.lobes": 0.12, "lesion.lobe_cells": 1.6},
             {"lesion.type": "flat_elevated", "lesion.height_mm": 1.8, "lesion.plateau": 0.6, "lesion.size_mm": 14.0},
             {"lesion.type": "flat", "lesion.height_mm": 0.8, "lesion.plateau": 0.7, "lesion.size_mm": 14.0},
             {"lesion.type": "depressed", "lesion.height_mm": 1.8, "lesion.depression": 0.5, "lesion.plateau": 0.4}]
    _save(out / "morphology.png", _row(_sweep(base, {**clean, "lesion.surface": "pits"}, kinds, None, tmp, "m")))
    _save(out / "colour.png", _row(_sweep(base, clean, [-1.0, -0.5, 0.0, 0.5, 1.0], "lesion.redness", tmp, "c")))
    surfaces = [{"lesion.surface": s, "lesion.surface_strength": 1.0} for s in ("smooth", "pits", "villous", "vascular")]
    surfaces.append({"lesion.surface": "smooth", "lesion.mucus": 1})
    _save(out / "surface.png", _row(_sweep(base, {**clean, "lesion.size_mm": 15.0}, surfaces,
                                           None, tmp, "s")))
    negatives = [{"clutter.bubbles": 1, "clutter.bubble_count": 18, "clutter.bubble_offaxis": 0.6},
                 {"clutter.debris": 1, "clutter.debris_count": 5, "clutter.debris_size_mm": 3.0, "clutter.debris_offaxis": 0.8},
                 {"clutter.fluid": 1, "clutter.fluid_level": 0.35},
                 {"clutter.red_patch": 1, "clutter.red_patch_size_mm": 18.0, "clutter.red_patch_redness": 0.9,
                  "clutter.red_patch_ahead_mm": 20.0},
                 {"optics.motion_blur": 1, "optics.motion_blur_length": 0.04},
                 {"optics.defocus": 1, "optics.defocus_sigma": 0.007}]
    _save(out / "negatives.png", _row(_sweep(base, {**clean, "lesion.present": 0}, negatives, None, tmp, "n")))
    _scenes(base, clean, tmp, out)


if __name__ == "__main__":
    main()
