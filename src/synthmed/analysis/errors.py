"""Which rendered frames does a lesion classifier get wrong? Joins a run's `test_predictions.csv` with the
rendered dataset's `manifest.csv` and breaks the test accuracy down by what the frame shows.

    python -m synthmed.analysis.errors <run dir> <dataset dir> [--compare NAME=PREDICTIONS.csv ...]

Lesion frames (label 1): recall by visible lesion pixels and by lesion type. Normal frames (label 0):
specificity by what is in the scene: no lesion placed, a lesion placed but hidden (0 visible pixels), or a
lesion partly visible below `render.min_visible_pixels` (the label rule's grey zone). `--compare` puts other
classifiers' predictions of the same test frames beside the run's, group by group (for example the colour-only
classifier of `synthmed.analysis.shortcut`, whose `shortcut_predictions.csv` has the same columns).
`--by COLUMN[=EDGES]` adds recall and specificity by any manifest column: by its values, or, with edges (for
example `--by lesion.redness=0.2,0.4,0.6`), by the bins between them (`clutter.red_patch` needs none).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

VISIBLE_BINS = (0, 100, 200, 400, 800, 1600)  # lower edges, visible lesion pixels (at the render size)
MAX_VALUES = 12  # a column broken down by its values holds at most this many; more need edges


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


def _edge(value: float) -> str:
    return f"{value:g}"


def _value_order(text: str) -> tuple[int, float, str]:
    """Numbers first, in numeric order (9 before 10), then text."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _by_column(rows: list[dict[str, Any]], column: str, edges: tuple[float, ...] | None,
               manifest: str | Path) -> dict[str, dict[str, Any]]:
    """{group name: share} of `rows` by the manifest column's values, or by the bins between `edges`
    (below the first, between two, from the last on; an empty cell is a group of its own)."""
    if edges is None:
        values = sorted({r["by"][column] for r in rows}, key=_value_order)
        if len(values) > MAX_VALUES:
            raise ValueError(f"{manifest}: the column {column!r} holds {len(values)} values in these frames; "
                             f"give bin edges: --by {column}=E1,E2,...")
        return {f"{column} = {v}": _share(r for r in rows if r["by"][column] == v) for v in values}
    if list(edges) != sorted(set(edges)):
        raise ValueError(f"--by {column}: the edges {list(edges)} must rise")
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        text = r["by"][column]
        if text == "":  # not drawn for this frame
            groups.setdefault((-1, f"{column} empty"), []).append(r)
            continue
        try:
            x = float(text)
        except ValueError:
            raise ValueError(f"{manifest}: the column {column!r} holds {text!r}, not a number: "
                             f"drop the edges to break it down by value") from None
        k = sum(x >= e for e in edges)
        name = (f"{column} < {_edge(edges[0])}" if k == 0 else f"{column} >= {_edge(edges[-1])}" if k == len(edges)
                else f"{column} {_edge(edges[k - 1])}..{_edge(edges[k])}")
        groups.setdefault((k, name), []).append(r)
    return {name: _share(g) for (_, name), g in sorted(groups.items())}


def error_breakdown(predictions: str | Path, manifest: str | Path,
                    by: dict[str, tuple[float, ...] | None] | None = None) -> dict[str, Any]:
    """Accuracy of the test predictions, overall and by group (see the module docstring); `by` maps manifest
    columns to bin edges (None: by value) for `lesion_recall_by` and `normal_specificity_by`.
    Raises if a predicted id is not in the manifest (predictions from another dataset)."""
    preds, listed = _read(Path(predictions)), _read(Path(manifest))
    by = by or {}
    for path, table, needed in ((predictions, preds, ("id", "label", "predicted")),
                                (manifest, listed, ("id", "visible_pixels", *by))):
        lacking = [c for c in needed if table and c not in table[0]]
        if lacking:
            raise ValueError(f"{path} lacks the column(s) {lacking}")
    frames = {r["id"]: r for r in listed}
    missing = [p["id"] for p in preds if p["id"] not in frames]
    if missing:
        raise ValueError(f"{predictions}: {len(missing)} ids not in {manifest} (first: {missing[0]}): "
                         f"predictions of another dataset?")
    rows = []
    for p in preds:
        f = frames[p["id"]]
        rows.append({"label": int(p["label"]), "right": int(p["label"]) == int(p["predicted"]),
                     "visible": int(f["visible_pixels"]), "placed": int(float(f.get("lesion.placed") or 0)),
                     "type": f.get("lesion.type", ""), "by": {c: f[c] for c in by}})
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
        "lesion_recall_by": {c: _by_column(lesion, c, e, manifest) for c, e in by.items()},
        "normal_specificity_by": {c: _by_column(normal, c, e, manifest) for c, e in by.items()},
    }


def _groups(b: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rows of the tables, in order: (group name, share)."""
    rows = [("all test frames (accuracy)", b["accuracy"]), ("lesion frames (recall)", b["lesion_recall"])]
    rows += [(f"lesion, {name} visible px", s) for name, s in b["lesion_recall_by_visible_pixels"].items()]
    rows += [(f"lesion, {name}", s) for name, s in b["lesion_recall_by_type"].items()]
    rows += [(f"lesion, {name}", s) for groups in b.get("lesion_recall_by", {}).values() for name, s in groups.items()]
    rows.append(("normal frames (specificity)", b["normal_specificity"]))
    rows += [(f"normal, {name}", s) for name, s in b["normal_specificity_by_scene"].items()]
    rows += [(f"normal, {name}", s) for groups in b.get("normal_specificity_by", {}).values()
             for name, s in groups.items()]
    return rows


def to_markdown(b: dict[str, Any]) -> str:
    lines = ["| group | frames | correct | rate |", "|---|---|---|---|"]
    for name, s in _groups(b):
        if s["n"]:
            lines.append(f"| {name} | {s['n']} | {s['correct']} | {s['rate']:.3f} |")
    return "\n".join(lines)


def compare_breakdowns(predictions: dict[str, str | Path], manifest: str | Path,
                       by: dict[str, tuple[float, ...] | None] | None = None) -> dict[str, dict[str, Any]]:
    """`error_breakdown` of several classifiers' predictions (name -> predictions CSV) of one dataset.
    Raises unless they all predict the same frames: side by side, every group must hold the same frames."""
    if not predictions:
        raise ValueError("compare_breakdowns needs at least one predictions file")
    ids: dict[str, set[str]] = {}
    for name, path in predictions.items():
        ids[name] = {row["id"] for row in _read(Path(path))}
    first = next(iter(predictions))
    for name, path in predictions.items():
        if ids[name] != ids[first]:
            only = sorted(ids[name] ^ ids[first])
            raise ValueError(f"{path} ({name}) and {predictions[first]} ({first}) predict different frames "
                             f"({len(only)} ids in one only, first: {only[0]}): not the same test split")
    return {name: error_breakdown(path, manifest, by) for name, path in predictions.items()}


def to_markdown_side_by_side(breakdowns: dict[str, dict[str, Any]]) -> str:
    """One row a group, one rate column a classifier (breakdowns of the same frames: `compare_breakdowns`)."""
    names = list(breakdowns)
    lines = ["| group | frames | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    columns = [_groups(b) for b in breakdowns.values()]
    for cells in zip(*columns, strict=True):
        group, first = cells[0]
        if first["n"]:
            lines.append(f"| {group} | {first['n']} | " + " | ".join(f"{s['rate']:.3f}" for _, s in cells) + " |")
    return "\n".join(lines)


def _named_file(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--compare {text!r}: expected NAME=PATH (a predictions CSV)")
    return name, Path(path)


def _column_and_edges(text: str) -> tuple[str, tuple[float, ...] | None]:
    column, sep, edges = text.partition("=")
    if not column or (sep and not edges):
        raise argparse.ArgumentTypeError(f"--by {text!r}: expected COLUMN or COLUMN=E1,E2,... (bin edges)")
    if not sep:
        return column, None
    try:
        return column, tuple(float(e) for e in edges.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--by {text!r}: the edges must be numbers, e.g. {column}=0.2,0.4") from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a colon_cls run dir (test_predictions.csv) or a colon_eval run dir "
                                               "(predictions.csv)")
    ap.add_argument("dataset_dir", type=Path, help="the rendered dataset it was tested on (holds manifest.csv)")
    ap.add_argument("--compare", type=_named_file, action="append", default=[], metavar="NAME=CSV",
                    help="another classifier's predictions of the same test frames, shown beside the run's "
                         "(e.g. colour_only=<dir>/shortcut_predictions.csv)")
    ap.add_argument("--by", type=_column_and_edges, action="append", default=[], metavar="COLUMN[=EDGES]",
                    help="recall and specificity by a manifest column: by value, or by bins between the edges "
                         "(e.g. lesion.redness=0.2,0.4,0.6)")
    args = ap.parse_args(argv)
    by = dict(args.by)
    manifest = args.dataset_dir / "manifest.csv"
    run_predictions = args.run_dir / "test_predictions.csv"
    if not run_predictions.exists() and (args.run_dir / "predictions.csv").exists():  # a test-only run's
        run_predictions = args.run_dir / "predictions.csv"
    if not args.compare:
        print(to_markdown(error_breakdown(run_predictions, manifest, by)))
        return
    named = {"run": run_predictions, **dict(args.compare)}
    if len(named) != len(args.compare) + 1:
        raise SystemExit("--compare: every NAME must be distinct and not 'run'")
    print(to_markdown_side_by_side(compare_breakdowns(named, manifest, by)))


if __name__ == "__main__":
    main()
