"""Procedural colonoscopy renderer (Blender/Cycles via bpy).

    from synthmed.render import compose_render, dataset_name, render_dataset
    cfg = compose_render(["render.num_frames=24"])   # or the `render` node of a composed config
    path = render_dataset(cfg, out_dir)
    name = dataset_name(cfg)                 # "frames_<hash of what changes pixels/labels>"

Importing this package is cheap: bpy is imported only by `synthmed.render.scene` (and the parts it
assembles: nodes, lumen, mucosa, lesions, clutter, camera), inside worker processes. The writer is
`synthmed.render.pipeline`, the dataset's files `synthmed.render.outputs`; the config's schema `synthmed.render.schema` (see docs/render.md).
`render.mode=sequence` renders fly-throughs with depth, normals, flow and poses: the camera path, the flow and
the .flo reader (`read_flo`) are in `synthmed.render.sequence`, the fisheye model in `synthmed.render.camera`
(both numpy only; docs/render.md, "Sequences").
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_dataset", "dataset_name", "compose_render", "resolve_config", "RenderConfigError"]


def __getattr__(name: str) -> Any:
    if name == "render_dataset":
        from synthmed.render.pipeline import render_dataset

        return render_dataset
    if name in ("dataset_name", "compose_render", "resolve_config", "RenderConfigError"):
        from synthmed.render import config

        return getattr(config, name)
    raise AttributeError(f"module 'synthmed.render' has no attribute {name!r}")
