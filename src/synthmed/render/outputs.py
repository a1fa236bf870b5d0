"""The rendered dataset's files besides the frames' own: each frame's manifest row and sidecar JSON, and, once
every frame exists, manifest.csv, preview.png, sequences/ (mode=sequence), coco.json and dataset.yaml (last).
No bpy here.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.render.config import RENDERER_DATE, RENDERER_VERSION, dataset_config, param_names, resolved_name
from synthmed.render.sequence import sequence_length
from synthmed.utils import atomic_path, atomic_write_json, atomic_write_text

SIDE_DIR = "frames"  # one sidecar JSON per finished frame
FIXED_COLUMNS = ("id", "index", "seed", "label", "visible_pixels", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
DERIVED_COLUMNS = ("camera.offset_mm", "mucosa.pattern_index", "vessels.scale_per_mm", "lesion.placed",
                   "lesion.distance_mm", "clutter.bubbles_placed", "clutter.debris_placed", "clutter.fluid_placed")
SEQUENCE_COLUMNS = ("sequence", "frame_in_sequence")  # mode=sequence: after FIXED_COLUMNS
SEQUENCE_DERIVED = ("camera.frame_axial_mm",)  # mode=sequence: after DERIVED_COLUMNS
SEQUENCES_DIR = "sequences"  # mode=sequence: <sequence id>.json (poses, intrinsics) and .gif (preview)



def frame_id(index: int) -> str:
    return f"{index:06d}"


def sidecar(out: Path, index: int) -> Path:
    return out / SIDE_DIR / f"{frame_id(index)}.json"


def frame_row(fid: str, index: int, seed: int, finished: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed manifest columns of a frame from `post.finish_frame`'s result."""
    x0, y0, x1, y1 = finished["bbox"]
    return {"id": fid, "index": index, "seed": seed, "label": finished["label"],
            "visible_pixels": finished["visible_pixels"], "bbox_x0": x0, "bbox_y0": y0, "bbox_x1": x1, "bbox_y1": y1}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return "" if v is None else str(v)


def finalize(c: dict, out: Path, patterns: Path | None = None) -> None:
    """Assemble manifest.csv (+ preview, coco) from the sidecars, then dataset.yaml last. The sidecars are read
    one at a time and each row goes straight to the manifest: what is kept per frame is only what the preview,
    coco.json and the sequences need (a whole sidecar is ~18 KB in Python: 1.8 GB for 100,000 frames)."""
    n = int(c["num_frames"])
    sequences = c["mode"] == "sequence"
    if sequences:
        columns = (list(FIXED_COLUMNS) + list(SEQUENCE_COLUMNS) + param_names(c) + list(DERIVED_COLUMNS)
                   + list(SEQUENCE_DERIVED))
    else:  # the motion parameters params.sequence.* mean nothing to a still frame
        columns = (list(FIXED_COLUMNS) + [k for k in param_names(c) if not k.startswith("sequence.")]
                   + list(DERIVED_COLUMNS))
    sides, blender = [], None
    with atomic_path(out / "manifest.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for i in range(n):
                path = sidecar(out, i)
                try:
                    side = json.loads(path.read_text())
                except (OSError, ValueError) as e:  # nothing is replaced: the manifest of before stays
                    raise RuntimeError(f"{path}: frame {i}'s sidecar cannot be read ({type(e).__name__}: {e}); "
                                       "delete it and render again: the frame is redone") from e
                row = side["row"]
                w.writerow([_fmt(row.get(k)) for k in columns])
                blender = side["blender"] if blender is None else blender
                kept = {"row": {k: row[k] for k in ("id", "label", "sequence") if k in row}}
                if sequences:
                    kept.update({k: side[k] for k in ("intrinsics", "camera_to_world", "lesion_mm")})
                sides.append(kept)
        rows = [s["row"] for s in sides]
        write_preview(out, rows[: int(c["preview_frames"])])
    from omegaconf import OmegaConf

    import synthmed

    meta = {
        "name": resolved_name(c),
        "renderer_version": RENDERER_VERSION,
        "synthmed_version": getattr(synthmed, "__version__", "unknown"),
        "blender_version": blender,
        "num_frames": n,
        "num_lesion_frames": int(sum(int(r["label"]) for r in rows)),
        "config": dataset_config(c),
    }
    if c["mode"] == "sequence":
        length = sequence_length(c)
        meta["num_sequences"] = n // length
        write_sequences(c, out, sides, length)
    if c["coco"]:
        write_coco(out, rows, meta)
    atomic_write_text(out / "dataset.yaml", OmegaConf.to_yaml(OmegaConf.create(meta)))
    if patterns is not None:
        shutil.rmtree(patterns, ignore_errors=True)  # every frame exists: the baked patterns are not needed again


def write_preview(out: Path, rows: list[dict], cols: int = 4) -> None:
    """A contact sheet of the first frames, lesion mask outlines drawn in green."""
    from PIL import Image

    from synthmed.render.post import outline, write_png

    if not rows:
        return
    tiles = []
    for r in rows:
        img = np.array(Image.open(out / "images" / f"{r['id']}.png").convert("RGB"))
        m = np.array(Image.open(out / "masks" / f"{r['id']}.png"))
        img[outline(m)] = (0, 255, 0)
        tiles.append(img)
    h, w = tiles[0].shape[:2]
    rows_n = (len(tiles) + cols - 1) // cols
    sheet = np.zeros((rows_n * (h + 2), min(cols, len(tiles)) * (w + 2), 3), np.uint8)
    for k, t in enumerate(tiles):
        y, x = (k // cols) * (h + 2) + 1, (k % cols) * (w + 2) + 1
        sheet[y:y + h, x:x + w] = t
    write_png(out / "preview.png", sheet)


def write_sequences(c: Mapping, out: Path, sides: list[dict], length: int) -> None:
    """Per sequence, `sequences/<id>.json` (its frames, intrinsics, camera-to-world matrices, lesion position)
    and `sequences/<id>.gif` (its frames at `sequence.preview_fps`, lesion mask outlines in green); the id is
    the sequence's number (the manifest's `sequence`), six digits."""
    from PIL import Image

    from synthmed.render.post import outline
    from synthmed.render.sequence import gif_bytes, write_bytes

    for first in range(0, len(sides), length):
        group = sides[first:first + length]
        rows = [s["row"] for s in group]
        sid = f"{first // length:06d}"
        record = {
            "sequence": int(rows[0]["sequence"]), "frames": [r["id"] for r in rows], "length": length,
            "convention": "camera_to_world: 4x4, mm, camera axes x right, y down, z forward (OpenCV)",
            "intrinsics": group[0]["intrinsics"], "camera_to_world": [s["camera_to_world"] for s in group],
            "lesion_mm": group[0]["lesion_mm"], "labels": [int(r["label"]) for r in rows],
        }
        atomic_write_json(out / SEQUENCES_DIR / f"{sid}.json", record)
        frames = []
        for r in rows:
            img = np.array(Image.open(out / "images" / f"{r['id']}.png").convert("RGB"))
            img[outline(np.array(Image.open(out / "masks" / f"{r['id']}.png")))] = (0, 255, 0)
            frames.append(img)
        write_bytes(out / SEQUENCES_DIR / f"{sid}.gif", gif_bytes(frames, float(c["sequence"]["preview_fps"])))


COCO_CATEGORY = {"id": 1, "name": "lesion", "supercategory": "colon"}


def write_coco(out: Path, rows: list[dict], meta: Mapping[str, Any]) -> dict:
    """Write `<out>/coco.json` (COCO instances: pycocotools' COCO, COCOeval and detection libraries read it)
    and return it. One image per frame (ids from 1, in frame order), one annotation (iscrowd 0, category 1
    "lesion") per frame of label 1: its mask from masks/<id>.png as compressed RLE (pycocotools), area the
    mask's pixel count, bbox [x, y, w, h] the mask's pixel extent. Frames whose few visible lesion pixels are
    under `min_visible_pixels` (label 0) get no annotation, as they get no label. `info` holds only what the
    config fixes (name, versions, the renderer's date): two renders of one config write the same bytes."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for image_id, r in enumerate(rows, start=1):
        name = f"{r['id']}.png"
        mask = np.asarray(Image.open(out / "masks" / name)) > 0
        height, width = mask.shape
        images.append({"id": image_id, "file_name": f"images/{name}", "width": width, "height": height})
        if not int(r["label"]):
            continue
        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        annotations.append({
            "id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_CATEGORY["id"], "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)), "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]})
    coco = {
        "info": {"description": f"synthmed procedural colonoscopy frames {meta['name']} (Blender "
                                f"{meta['blender_version']}, synthmed {meta['synthmed_version']})",
                 "version": f"renderer {meta['renderer_version']}", "year": int(RENDERER_DATE[:4]),
                 "date_created": RENDERER_DATE, "contributor": "synthmed", "url": ""},
        "licenses": [], "images": images, "annotations": annotations, "categories": [COCO_CATEGORY]}
    atomic_write_text(out / "coco.json", json.dumps(coco, sort_keys=True))
    return coco
