"""Which rendered frames does a lesion classifier get wrong? Joins a run's `test_predictions.csv` with the
rendered dataset's `manifest.csv` and breaks the test accuracy down by what the frame shows.

    python -m synthmed.analysis.errors <run dir> <dataset dir>

Lesion frames (label 1): recall by visible lesion pixels and by lesion type. Normal frames (label 0):
specificity by what is in the scene: no lesion placed, a lesion placed but hidden (0 visible pixels), or a
lesion partly visible below `render.min_visible_pixels` (the label rule's grey zone).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

VISIBLE_BINS = (0, 100, 200, 400, 800, 1600)  # lower edges, visible lesion pixels (at the render size)


def _read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _bin_name(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{lo}+"
    return f"<{hi}" if lo == 0 else f"{lo}-{hi - 1}"


def _share(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    right = sum(r["right"] for r in rows)
    return {"n": len(rows), "correct": right, "rate": right / len(rows) if rows else float("nan")}


def error_breakdown(predictions: str | Path, manifest: str | Path) -> dict[str, Any]:
    """Accuracy of the test predictions, overall and by group (see the module docstring).
    Raises if a predicted id is not in the manifest (predictions from another dataset)."""
    preds, frames = _read(Path(predictions)), {r["id"]: r for r in _read(Path(manifest))}
    missing = [p["id"] for p in preds if p["id"] not in frames]
    if missing:
        raise ValueError(f"{predictions}: {len(missing)} ids not in {manifest} (first: {missing[0]}): "
                         f"predictions of another dataset?")
    rows = []
    for p in preds:
        f = frames[p["id"]]
        rows.append({"label": int(p["label"]), "right": int(p["label"]) == int(p["predicted"]),
                     "visible": int(f["visible_pixels"]), "placed": int(float(f.get("lesion.placed") or 0)),
                     "type": f.get("lesion.type", "")})
    lesion = [r for r in rows if r["label"] == 1]
    normal = [r for r in rows if r["label"] == 0]
    by_visible = {}
    for k, lo in enumerate(VISIBLE_BINS):
        hi = VISIBLE_BINS[k + 1] if k + 1 < len(VISIBLE_BINS) else None
        group = [r for r in lesion if r["visible"] >= lo and (hi is None or r["visible"] < hi)]
        if group:
            by_visible[_bin_name(lo, hi)] = _share(group)
    return {
        "accuracy": _share(rows),
        "lesion_recall": _share(lesion),
        "lesion_recall_by_visible_pixels": by_visible,
        "lesion_recall_by_type": {t: _share(r for r in lesion if r["type"] == t)
                                  for t in sorted({r["type"] for r in lesion})},
        "normal_specificity": _share(normal),
        "normal_specificity_by_scene": {
            "no lesion placed": _share(r for r in normal if not r["placed"]),
            "lesion hidden (0 px)": _share(r for r in normal if r["placed"] and r["visible"] == 0),
            "lesion below threshold (1+ px)": _share(r for r in normal if r["visible"] > 0),
        },
    }


def to_markdown(b: dict[str, Any]) -> str:
    lines = ["| group | frames | correct | rate |", "|---|---|---|---|"]

    def row(name: str, s: dict[str, Any]) -> None:
        if s["n"]:
            lines.append(f"| {name} | {s['n']} | {s['correct']} | {s['rate']:.3f} |")

    row("all test frames (accuracy)", b["accuracy"])
    row("lesion frames (recall)", b["lesion_recall"])
    for name, s in b["lesion_recall_by_visible_pixels"].items():
        row(f"lesion, {name} visible px", s)
    for name, s in b["lesion_recall_by_type"].items():
        row(f"lesion, {name}", s)
    row("normal frames (specificity)", b["normal_specificity"])
    for name, s in b["normal_specificity_by_scene"].items():
        row(f"normal, {name}", s)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a colon_cls run dir (holds test_predictions.csv)")
    ap.add_argument("dataset_dir", type=Path, help="the rendered dataset it was tested on (holds manifest.csv)")
    args = ap.parse_args(argv)
    print(to_markdown(error_breakdown(args.run_dir / "test_predictions.csv", args.dataset_dir / "manifest.csv")))


if __name__ == "__main__":
    main()
