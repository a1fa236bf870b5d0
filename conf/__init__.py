"""synthmed's Hydra configs, shipped as the package `synthmed.conf` and found as pkg://synthmed.conf.

Hydra imports this package before it reads a config from it, so the typed schemas that the YAML files list in
their defaults (render/render_schema) are registered here, only when configs are composed."""

from synthmed.render.schema import register_schema

register_schema()
