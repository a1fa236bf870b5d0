"""Colour and brightness of endoscopy frames, to set rendered frames beside real ones (docs/render.md, "The wall's look").

    python scripts/frame_colour_stats.py data/colon/<frames>/images [--limit 400]
    python scripts/frame_colour_stats.py ../shared/reference/real_colonoscopy_examples.png --grid 3x3

Per frame: the median HSV hue, saturation and value of the lit pixels (value > 0.08: the black border and the
darkest lumen left out); the shares of the field that are near black (every channel < 8/255) and dark
(< 32/255); glints, the blobs of near-white pixels (every channel >= 225) not touching the image's edge: how
many in the frame and per 10,000 pixels of the field, and the percent of the field they cover. Over all the
frames, `glint_size_pct`: the glints' total area over their number, in percent of the field (one glint's size,
comparable across resolutions). The field is the endoscope's circular or octagonal window: from the frames'
manifest.csv and dataset.yaml (a rendered dataset's images folder), else every pixel that is not pure black plus
the black holes inside them (a lumen clamped to black still counts; the black corners do not). A figure of
several frames is cut into a grid (`--grid RxC`, a margin of 10 px trimmed from each tile). Prints ONE JSON
line: the number of frames, for each statistic the 10th, 50th and 90th percentile over the frames, and
`glint_size_pct` (null when no frame has a glint), and over the glints of 4 pixels or more (`glints_of_4px`) the
10th, 50th and 90th percentile of how drawn out they are (`glint_elongation`: 1 a round spot, n a streak n
pixels long and one wide; null when there are none). `fine_texture`: how much detail finer than a couple of
pixels a copy of the frame 128 px wide shows (every frame compared at one scale): the robust spread (1.4826 x the
median absolute deviation) of its luma less a gaussian blur of it (sigma 1.5 px), over the blur, on the field's
pixels 4 px or more inside its edge and 2 px or more from glints and shadows (luma 40-215 of 255); a frame with
under 200 such pixels is left out (null when every frame is). A smooth, plastic wall is near 0.
`chroma_spread` and `dim_redder` (the wall's colour within a frame, as ln((G + 0.01) / (R + 0.01)) on values
0-1; pixels with G >= 0.75 R left out, no wall is that yellow but the reference figure's arrows are, and pixels
with R <= 0.05, near black): the spread of it over the field's pixels of value (largest channel) over 0.25 and
under 0.95 (its 90th less its 10th percentile), and how much redder the dim wall is than the lit wall (its median
over pixels of value 0.6-0.95 less that over pixels of value 0.15-0.45; NaN, left out, with under 30 of either).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion, binary_fill_holes, find_objects, gaussian_filter, label


def window(rgb: np.ndarray, field: np.ndarray | None) -> np.ndarray:
    """The field given, else the pixels not pure black with the holes among them filled."""
    return binary_fill_holes(rgb.max(axis=-1) > 0) if field is None else field


def glints(rgb: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of near-white pixels (every channel >= 225) in the field, not touching the image's edge (a figure's
    white background does): the labelled image and the glints' labels."""
    blobs, _ = label(rgb.min(axis=-1) >= 225)
    edge = np.unique(np.concatenate([blobs[0], blobs[-1], blobs[:, 0], blobs[:, -1]]))
    return blobs, np.setdiff1d(np.unique(blobs[field]), np.append(edge, 0))


def glint_elongations(blobs: np.ndarray, inner: np.ndarray, min_px: int = 4) -> list[float]:
    """How drawn out each glint (`glints`' labels) of at least `min_px` pixels is: the square root of the ratio of
    its pixels' principal variances, each plus 1/12 (a pixel's own extent): a row of n pixels gives n, a square 1."""
    out = []
    boxes = find_objects(blobs)
    for k in inner:
        ys, xs = np.nonzero(blobs[boxes[k - 1]] == k)
        if ys.size >= min_px:
            low, high = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(np.float64), bias=True)) + 1.0 / 12.0
            out.append(float(np.sqrt(high / low)))
    return out


def fine_texture(rgb: np.ndarray, field: np.ndarray, width: int = 128) -> float:
    """The robust relative spread of the luma's detail (luma less its gaussian blur, sigma 1.5 px, over the blur)
    in a copy of the frame `width` px wide, on the field away from its edge (4 px), glints and shadows (luma
    40-215, 2 px): see the module's text. NaN under 200 such pixels."""
    if rgb.shape[1] != width:
        height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))
        field = np.asarray(Image.fromarray(field.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
    luma = rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    kept = binary_erosion(binary_erosion(field, iterations=4) & (luma > 40) & (luma < 215), iterations=2)
    if kept.sum() < 200:
        return float("nan")
    blur = gaussian_filter(luma, 1.5)
    detail = ((luma - blur) / np.maximum(blur, 1.0))[kept]
    return float(1.4826 * np.median(np.abs(detail - np.median(detail))))


def wall_chroma(rgb: np.ndarray, field: np.ndarray) -> tuple[float, float]:
    """(`chroma_spread`, `dim_redder`) of a frame: see the module's text. NaN where too few pixels."""
    rgb = rgb.astype(np.float64) / 255.0
    value = rgb.max(axis=-1)
    wall = field & (rgb[..., 1] < 0.75 * rgb[..., 0]) & (rgb[..., 0] > 0.05)
    green_red = np.log((rgb[..., 1] + 0.01) / (rgb[..., 0] + 0.01))
    spread = wall & (value > 0.25) & (value < 0.95)
    dim, lit = wall & (value >= 0.15) & (value < 0.45), wall & (value >= 0.6) & (value < 0.95)
    chroma = float(np.subtract(*np.percentile(green_red[spread], [90, 10]))) if spread.sum() >= 30 else float("nan")
    redder = float(np.median(green_red[lit]) - np.median(green_red[dim])) if min(dim.sum(), lit.sum()) >= 30 \
        else float("nan")
    return chroma, redder


def frame_stats(rgb: np.ndarray, field: np.ndarray | None = None) -> dict:
    """Median hue (turns, red at 0, negative below it), saturation and value of the lit pixels, the shares of
    the field that are near black and dark, its glints (how many, per 10,000 field pixels, percent covered,
    and under `glint_elongations` a list: how drawn out each one of 4 px or more is), `fine_texture` (NaN
    when too little of the field is left to measure it), `chroma_spread` and `dim_redder` (`wall_chroma`).
    `field` (bool, the endoscope's window) defaults to `window`'s."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), np.float32) / 255.0
    field = window(rgb, field)
    lit = field & (hsv[..., 2] > 0.08)
    if not lit.any():
        raise ValueError("a frame with no lit pixel")
    hue = hsv[..., 0][lit]
    hue = np.where(hue > 0.5, hue - 1.0, hue)
    blobs, inner = glints(rgb, field)
    area = float(field.sum())
    chroma, redder = wall_chroma(rgb, field)
    return {"hue": float(np.median(hue)), "saturation": float(np.median(hsv[..., 1][lit])),
            "value": float(np.median(hsv[..., 2][lit])),
            "near_black": float((rgb.max(axis=-1)[field] < 8).mean()),
            "dark": float((rgb.max(axis=-1)[field] < 32).mean()),
            "glints": float(inner.size), "glints_per_10k_px": inner.size / area * 1e4,
            "glint_area_pct": 100.0 * float(np.isin(blobs, inner).sum()) / area,
            "glint_elongations": glint_elongations(blobs, inner),
            "fine_texture": fine_texture(rgb, field), "chroma_spread": chroma, "dim_redder": redder}


def rendered_fields(folder: Path, files: list[Path], sizes: list[int]) -> list[np.ndarray | None]:
    """Each rendered frame's window, from the border columns of the dataset's manifest.csv (None without one)."""
    manifest = folder.parent / "manifest.csv"
    if not manifest.is_file():
        return [None] * len(files)
    import yaml

    from synthmed.render.post import border_mask
    meta = folder.parent / "dataset.yaml"  # the config it was rendered with; else today's default
    if meta.is_file():
        try:
            cut = float(yaml.safe_load(meta.read_text())["config"]["endoscope"]["octagon_cut"])
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise SystemExit(f"{meta}: no config.endoscope.octagon_cut ({exc!r})") from None
    else:
        from synthmed.render.config import compose_render
        cut = float(compose_render([])["endoscope"]["octagon_cut"])
    with open(manifest, newline="") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    fields = []
    for file, size in zip(files, sizes, strict=True):
        row = rows.get(file.stem)
        if row is None:
            raise SystemExit(f"{manifest}: no row for {file.name}")
        fields.append(border_mask(size, row["endoscope.border"], float(row["endoscope.border_radius"]), cut))
    return fields


def tiles(path: Path, grid: str | None) -> list[np.ndarray]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if not grid:
        return [rgb]
    rows, cols = (int(v) for v in grid.lower().split("x"))
    h, w = rgb.shape[0] // rows, rgb.shape[1] // cols
    return [rgb[r * h + 10:(r + 1) * h - 10, c * w + 10:(c + 1) * w - 10] for r in range(rows) for c in range(cols)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a folder of PNG frames, or one image")
    ap.add_argument("--grid", default=None, help="cut one image into RxC frames, e.g. 3x3")
    ap.add_argument("--limit", type=int, default=400, help="at most this many frames of a folder (sorted by name)")
    args = ap.parse_args()
    path = Path(args.path)
    if path.is_dir():
        files = sorted(path.glob("*.png"))[:args.limit]
        if not files:
            raise SystemExit(f"{path}: no PNG frames")
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        fields = rendered_fields(path, files, [f.shape[0] for f in frames])
    elif path.is_file():
        frames = tiles(path, args.grid)
        fields = [None] * len(frames)
    else:
        raise SystemExit(f"{path}: no such file or folder")
    stats = [frame_stats(f, field) for f, field in zip(frames, fields, strict=True)]
    shapes = [e for s in stats for e in s.pop("glint_elongations")]
    out = {"path": str(path), "frames": len(stats)}
    for key in stats[0]:
        values = [s[key] for s in stats if not np.isnan(s[key])]  # frames with too few pixels to measure left out
        out[key] = [round(float(v), 4 if key == "fine_texture" else 3) for v in np.percentile(values, [10, 50, 90])] \
            if values else None
    count = sum(s["glints"] for s in stats)
    out["glint_size_pct"] = round(sum(s["glint_area_pct"] for s in stats) / count, 4) if count else None
    out["glints_of_4px"] = len(shapes)
    out["glint_elongation"] = [round(float(v), 2) for v in np.percentile(shapes, [10, 50, 90])] if shapes else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
