"""How a lesion's colour differs from the wall round it, in rendered frames or the reference figure (docs/render.md,
"Lesions in the reference's colours").

    python scripts/lesion_colour.py data/colon/<frames> [--limit 400]
    python scripts/lesion_colour.py --reference ../shared/reference/real_colonoscopy_examples.png

A lesion is told by its colour against the wall beside it, under the same light, so each frame is measured as a
difference: the median HSV hue, saturation and value of the lesion's pixels less those of a ring of wall round it
(`--ring` px wide at 256 px, scaled to the frame, starting 2 px out). Lesion pixels: the mask eroded by one pixel
(no blended edge); both sets leave out near-black (value <= 0.08) and glints (every channel >= 225 of 255). A frame
whose lesion keeps under `--min-pixels` pixels (at 256 px, scaled) or whose ring under 30 is left out. Hue is in
turns (0-1, red at 0; a difference is taken round the circle): a negative hue difference is redder (toward
crimson), a positive one more orange. `--reference`: the real figure's lesions, boxes drawn by hand round the
five that show whole (panels a, b, c, e, h of the 3x3 figure; the box's ring as the wall). Prints ONE JSON line:
the number of lesions and the 10th, 50th and 90th percentile of d_hue, d_saturation, d_value and the lesion's own
saturation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.colors import rgb_to_hsv
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

# x0, y0, x1, y1 in the 600 x 529 px reference figure: the lesion of panels a, b, c (the reddened patch), e, h
REFERENCE_BOXES = {"a": (95, 60, 120, 85), "b": (275, 75, 340, 130), "c": (500, 100, 525, 125),
                   "e": (250, 275, 330, 300), "h": (245, 400, 320, 450)}


def usable(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are neither near black nor a glint."""
    return (rgb.max(-1) > 0.08 * 255) & ~(rgb.min(-1) >= 225)


def difference(rgb: np.ndarray, lesion: np.ndarray, ring: np.ndarray, min_pixels: int) -> dict[str, float] | None:
    """Median HSV of the lesion's pixels less the ring's; None when either has too few usable pixels."""
    ok = usable(rgb)
    a, b = lesion & ok, ring & ok & ~lesion
    if a.sum() < min_pixels or b.sum() < 30:
        return None
    h = rgb_to_hsv(rgb / 255.0)  # float HSV, 0-1 (PIL's 8-bit HSV steps hue by 1/255, too coarse here)
    signed = (h[..., 0] + 0.5) % 1.0 - 0.5  # -0.5 .. 0.5, red at 0: a wall's median does not split at red
    turn = float(np.median(signed[b]))
    rel = (signed - turn + 0.5) % 1.0 - 0.5  # hue measured from the wall's, round the circle
    return {"d_hue": float(np.median(rel[a])), "d_saturation": float(np.median(h[a][:, 1]) - np.median(h[b][:, 1])),
            "d_value": float(np.median(h[a][:, 2]) - np.median(h[b][:, 2])), "saturation": float(np.median(h[a][:, 1]))}


def rendered(root: Path, ring_px: int, min_pixels: int, limit: int | None) -> list[dict[str, float]]:
    images = sorted((root / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"{root}: no images/*.png (a rendered dataset's folder is expected)")
    out = []
    for path in images[:limit]:
        mask_path = root / "masks" / path.name
        if not mask_path.exists():
            raise SystemExit(f"{mask_path}: missing (every image needs its mask)")
        rgb = np.asarray(Image.open(path).convert("RGB"))
        scale = rgb.shape[0] / 256.0
        mask = np.asarray(Image.open(mask_path)) > 0
        lesion = binary_erosion(mask)
        near = binary_dilation(mask, iterations=max(1, round(2 * scale)))
        ring = binary_dilation(mask, iterations=max(2, round((ring_px + 2) * scale))) & ~near
        d = difference(rgb, lesion, ring, max(1, round(min_pixels * scale * scale)))
        if d is not None:
            out.append(d)
    return out


def reference(path: Path, ring_px: int) -> list[dict[str, float]]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    out = []
    for x0, y0, x1, y1 in REFERENCE_BOXES.values():
        box = np.zeros(rgb.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        ring = binary_dilation(box, iterations=ring_px + 2) & ~binary_dilation(box, iterations=2)
        d = difference(rgb, box, ring, 30)
        if d is not None:
            out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", nargs="?", type=Path, help="a rendered dataset's folder (images/, masks/)")
    ap.add_argument("--reference", type=Path, help="the reference figure (3x3 panels): its five whole lesions")
    ap.add_argument("--ring", type=int, default=8, help="the wall ring's width in px at 256 px (8)")
    ap.add_argument("--min-pixels", type=int, default=100, help="least lesion pixels at 256 px (100)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    if (args.frames is None) == (args.reference is None):
        ap.error("give a rendered dataset's folder or --reference, one of them")
    rows = reference(args.reference, args.ring) if args.reference else rendered(args.frames, args.ring,
                                                                                 args.min_pixels, args.limit)
    result: dict[str, object] = {"lesions": len(rows)}
    for key in ("d_hue", "d_saturation", "d_value", "saturation"):
        vals = np.array([r[key] for r in rows])
        result[key] = [round(float(v), 4) for v in np.percentile(vals, [10, 50, 90])] if len(vals) else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
