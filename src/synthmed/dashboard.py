"""The study dashboard: a saved W&B workspace laid out for a synthmed study.

    synthmed dashboard <project> [--metric test/iou_wt] [--by aug.name]        # offline: writes the layout
    synthmed dashboard <project> --entity <you> --apply                         # online: saves the workspace

The layout is a plain description (sections, panels, the keys each panel shows) built from what synthmed
runs log: the sweep's summary run (tables `summary`, `paired_differences`, `seeds`, `failed_jobs`, the chart and
the validation-loss curves), the jobs' scalars grouped by regime, and their pictures and tables. Offline (the
default mode, or without a W&B login) it is written to `dashboard.json` with how to apply it once the runs are
synced; `--apply` builds it with the `wandb-workspaces` library (`pip install "synthmed[dashboard]"`) and
saves it to the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

# what the runs log, by kind of panel (keys as the runner, the modules and the sweep report log them)
SUMMARY_TABLES = ("summary", "paired_differences", "seeds", "failed_jobs")
SUMMARY_IMAGES = ("summary_chart", "val_loss_curves")
# (the brain generator's slot is gan/pix2pix/* whichever fills it: SPADE logs its losses per step and per epoch)
CURVES = ("val/loss", "train/loss_epoch", "gan/dcgan/train/d_loss", "gan/dcgan/train/g_loss",
          "gan/pix2pix/train/g_loss", "gan/pix2pix/train/g_loss_epoch", "gan/pix2pix/val/l1",
          "gan/inpaint/train/g_loss")
PICTURES = ("val/masks", "test/masks", "val/overlay", "test/overlay", "test/errors", "test/confusion_matrix",
            "data/preview", "loss_curves", "gan/dcgan/samples/tumour_maps", "gan/pix2pix/samples/pix2pix_grid",
            "gan/pix2pix/samples/spade_grid", "gan/inpaint/samples/inpaint_grid", "samples/tumour_maps",
            "val/pix2pix_grid", "val/spade_grid", "val/inpaint_grid", "aug/pairs", "analysis/embeddings")
RUN_TABLES = ("test/predictions", "test/volume_metrics")


def layout(project: str, metric: str = "test/iou_wt", by: str = "aug.name", entity: str | None = None,
           name: str | None = None) -> dict[str, Any]:
    """The dashboard as plain data: every section and panel, with the keys it shows."""
    return {
        "entity": entity, "project": project, "name": name or f"{project} study",
        "group_runs_by": by,
        "sections": [
            {"name": "Study summary", "panels": [
                *({"type": "table", "title": key, "key": key} for key in SUMMARY_TABLES),
                {"type": "media", "title": "comparison chart and validation loss", "keys": list(SUMMARY_IMAGES)},
            ]},
            {"name": f"{metric} by {by}", "panels": [
                {"type": "bar", "title": f"{metric} per {by} (mean, std over seeds)", "metrics": [metric], "groupby": by},
                *({"type": "line", "title": key, "y": [key], "groupby": by} for key in CURVES),
            ]},
            {"name": "Pictures and tables", "panels": [
                {"type": "media", "title": "what the runs show", "keys": list(PICTURES)},
                *({"type": "table", "title": key, "key": key} for key in RUN_TABLES),
            ]},
        ],
    }


def panel_titles(spec: dict[str, Any]) -> list[str]:
    return [panel["title"] for section in spec["sections"] for panel in section["panels"]]


def build_workspace(spec: dict[str, Any]) -> Any:
    """The `wandb_workspaces` Workspace of a layout (no network: `.save()` sends it)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def panel(p: dict[str, Any]) -> Any:
        if p["type"] == "table":
            return wr.WeavePanelSummaryTable(table_name=p["key"])
        if p["type"] == "media":
            return wr.MediaBrowser(title=p["title"], media_keys=list(p["keys"]))
        if p["type"] == "bar":
            return wr.BarPlot(title=p["title"], metrics=list(p["metrics"]), groupby=wr.Config(p["groupby"]),
                              groupby_aggfunc="mean", groupby_rangefunc="stddev")
        if p["type"] == "line":
            return wr.LinePlot(title=p["title"], y=list(p["y"]), groupby=wr.Config(p["groupby"]),
                               groupby_aggfunc="mean", groupby_rangefunc="stddev")
        raise ValueError(f"unknown panel type {p['type']!r}")

    return ws.Workspace(
        entity=spec["entity"] or "unknown", project=spec["project"], name=spec["name"],
        sections=[ws.Section(name=s["name"], panels=[panel(p) for p in s["panels"]], is_open=True)
                  for s in spec["sections"]],
        runset_settings=ws.RunsetSettings(groupby=[ws.Config(spec["group_runs_by"])]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synthmed dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("project", help="the W&B project of the runs (logger.wandb.project, synthmed by default)")
    parser.add_argument("--entity", help="your W&B user or team (needed with --apply)")
    parser.add_argument("--metric", default="test/iou_wt", help="the study's metric (default test/iou_wt)")
    parser.add_argument("--by", default="aug.name", help="the config key that names a regime (default aug.name)")
    parser.add_argument("--out", type=Path, default=Path("dashboard.json"), help="where the layout is written")
    parser.add_argument("--apply", action="store_true", help="save the workspace to W&B (online)")
    args = parser.parse_args(argv)
    spec = layout(args.project, args.metric, args.by, args.entity)
    build_workspace(spec)  # a layout that the library refuses fails here, offline, not after a sync
    args.out.write_text(json.dumps(spec, indent=2) + "\n")
    print(f"wrote {args.out}: {len(panel_titles(spec))} panels in {len(spec['sections'])} sections")
    if not args.apply:
        print("to see it in W&B: sync the runs (wandb sync outputs/runs/*/*/wandb/offline-run-* "
              "outputs/multiruns/*/*/*/wandb/offline-run-* outputs/multiruns/*/*/wandb/offline-run-*), then "
              f"synthmed dashboard {args.project} --entity <you> --apply")
        return 0
    if os.environ.get("WANDB_MODE", "") in ("offline", "disabled") or not args.entity:
        print("error: --apply needs W&B online (WANDB_MODE unset or online, `wandb login`) and --entity",
              file=sys.stderr)
        return 2
    saved = build_workspace(spec).save()
    print(f"saved the workspace: {getattr(saved, 'url', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
