"""Procedural colonoscopy renderer (Blender/Cycles via bpy).

    from synthmed.render import render_dataset, dataset_name
    path = render_dataset(cfg, out_dir)      # cfg: the `render` config node (conf/render/default.yaml)
    name = dataset_name(cfg)                 # "frames_<hash of what changes pixels/labels>"

Importing this package is cheap: bpy is imported only by `synthmed.render.scene`, inside worker processes.
The writer is `synthmed.render.pipeline` (see docs/render.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_dataset", "dataset_name", "resolve_config", "RenderConfigError"]


def __getattr__(name: str) -> Any:
    if name == "render_dataset":
        from synthmed.render.pipeline import render_dataset

        return render_dataset
    if name in ("dataset_name", "resolve_config", "RenderConfigError"):
        from synthmed.render import config

        return getattr(config, name)
    raise AttributeError(f"module 'synthmed.render' has no attribute {name!r}")
