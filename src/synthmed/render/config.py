"""The `render` config: composing it, what Hydra cannot check, the dataset name, per-frame parameter sampling.

Keys and types are Hydra's job (synthmed/render/schema.py, used by conf/render/default.yaml). Here: the
distributions in `params` (their syntax), value ranges, the dataset name, and per-frame sampling.
Pure Python + numpy (no bpy): the main process uses it to plan work, the workers to draw parameters.
"""

from __future__ import annotations

import copy
import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthmed.utils import config_hash

# How the work is spread: never changes a pixel, so never part of the dataset's name.
RUN_KEYS = ("workers", "threads", "session_frames", "shard", "num_shards")
# Raise when a code change alters the frames a config renders: dataset names hash it, so a dataset of the old
# code is never reused. Version 1 (the renderer of 2026-12-01) hashes as no key at all.
RENDERER_VERSION = 27
RENDERER_DATE = "2026-12-07"  # the day RENDERER_VERSION's renderer was fixed (coco.json's info): change both together
# Keys added after version 1 that hash as no key at all at these values, so that existing dataset names stay.
# `device: gpu` is hashed: Cycles on a GPU does not give the CPU's bytes, and one dataset must never mix them.
UNHASHED_DEFAULTS = {"device": "cpu"}
DIST_KINDS = ("uniform", "loguniform", "normal", "randint", "choice", "bernoulli", "by")
# Paris classes: 0-Ip pedunculated, 0-Is sessile, 0-IIa flat elevated, 0-IIb flat, 0-IIc depressed
LESION_TYPES = ("pedunculated", "sessile", "flat_elevated", "flat", "depressed")
LESION_SURFACES = ("smooth", "pits", "villous", "vascular")
# The experiment whose composed config holds the renderer's defaults (scale=paper unless overridden).
EXPERIMENT = "experiment=colon_render"


class RenderConfigError(ValueError):
    """A bad `render` config: the message names the offending key."""


@functools.lru_cache(maxsize=16)
def _compose(overrides: tuple[str, ...]):
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from synthmed.utils import compose_config

    args = [EXPERIMENT, *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app or a test's initialize(): its search path
        return compose("config", overrides=args)
    return compose_config(args)


def compose_render(overrides: Sequence[str] = ()):
    """The `render` node (a DictConfig, typed by the schema) of the config `experiment=colon_render` composed
    with Hydra overrides, e.g. `compose_render(["render.resolution=64", "scale=ci"])`. For code that renders
    without a Hydra app (benchmarks, scripts, tests). A bad key or type raises Hydra's error naming it."""
    return copy.deepcopy(_compose(tuple(overrides))).render


def _is_dist(node: Any) -> bool:
    return isinstance(node, Mapping) and any(k in node for k in DIST_KINDS)


def render_node(cfg: Any = None):
    """`cfg` as the composed, schema-typed `render` node: a composed node as is, None: the defaults of
    `compose_render()`. A plain mapping is refused: the knobs are checked by Hydra where the config is composed,
    never by a second merge of our own."""
    from omegaconf import DictConfig, OmegaConf

    from synthmed.render.schema import RenderConfig

    if cfg is None:
        return compose_render()
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is RenderConfig:
        return cfg
    raise RenderConfigError(f"a render config must be the composed `render` node, got {type(cfg).__name__}: "
                            "use synthmed.render.compose_render([...overrides]) (or a composed config's `render`)")


def resolve_config(cfg: Mapping | None = None) -> dict:
    """The plain, resolved `render` config (see `render_node`), its distributions and ranges checked.
    Raises RenderConfigError naming a bad key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(render_node(cfg), resolve=True, throw_on_missing=True, enum_to_str=True)
    except OmegaConfBaseException as e:
        raise RenderConfigError(f"bad render config: {e}") from e
    _check_values(plain)
    return plain


def _check_dist(name: str, spec: Any) -> None:
    if not isinstance(spec, Mapping):
        if isinstance(spec, list | tuple):
            raise RenderConfigError(f"'{name}': a list is not a distribution; use {{choice: [...]}}")
        return
    kinds = [k for k in spec if k in DIST_KINDS]
    extra = [k for k in spec if k not in (*DIST_KINDS, "p", "clip", "cases")]
    if len(kinds) != 1 or extra:
        raise RenderConfigError(f"'{name}': bad distribution {dict(spec)!r} (use one of {', '.join(DIST_KINDS)})")
    kind = kinds[0]
    if kind == "by":
        if not isinstance(spec.get("cases"), Mapping):
            raise RenderConfigError(f"'{name}': 'by' needs 'cases: {{value: distribution}}'")
        for case, sub in spec["cases"].items():
            _check_dist(f"{name}.cases.{case}", sub)
    elif kind in ("uniform", "loguniform", "normal", "randint"):
        v = spec[kind]
        if not (isinstance(v, list | tuple) and len(v) == 2):
            raise RenderConfigError(f"'{name}': {kind} needs [a, b], got {v!r}")
    elif kind == "choice":
        if not spec["choice"]:
            raise RenderConfigError(f"'{name}': empty choice")
        if "p" in spec and len(spec["p"]) != len(spec["choice"]):
            raise RenderConfigError(f"'{name}': p has {len(spec['p'])} entries for {len(spec['choice'])} choices")


def _check_values(c: dict) -> None:
    """Ranges, and the syntax of every distribution (types are the schema's)."""

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            node = c
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            raise RenderConfigError(f"render config key 'render.{key}' {what}, got {node!r}")

    for key in ("resolution", "samples", "workers", "num_shards", "preview_frames"):
        need(key, c[key] >= (0 if key == "preview_frames" else 1), "must be a positive integer")
    need("num_frames", c["num_frames"] >= 0, "must be >= 0")
    need("shard", 0 <= c["shard"] < c["num_shards"], "must be in [0, num_shards)")
    need("threads", c["threads"] is None or c["threads"] >= 1, "must be null or >= 1")
    need("session_frames", c["session_frames"] >= 0, "must be >= 0 (0: Cycles keeps its scene for every frame)")
    need("lesion_probability", 0 <= c["lesion_probability"] <= 1, "must be in [0, 1]")
    need("min_visible_pixels", c["min_visible_pixels"] >= 1, "must be >= 1")
    tx = c["textures"]
    need("textures.patterns", tx["patterns"] >= 1, "must be a positive integer")
    need("textures.vessel_scale", len(tx["vessel_scale"]) == 2 and all(v > 0 for v in tx["vessel_scale"]),
         "must be [low, high] cells per mm, > 0")
    for key in ("reference_radius_mm", "length_mm", "capillary_scale", "capillary_width"):
        need(f"textures.{key}", tx[key] > 0, "must be > 0")
    tree = tx["tree"]
    for key in ("trunk_spacing", "step", "bend_length", "branch_every", "taper", "clearance"):
        need(f"textures.tree.{key}", tree[key] > 0, "must be > 0 (main vessel cells)")
    need("textures.tree.turn", tree["turn"] >= 0, "must be >= 0 (radians over a cell)")
    need("textures.tree.min_calibre", 0 < tree["min_calibre"] < 1, "must be in (0, 1) (of a trunk's calibre)")
    for key, low, high in (("branch_angle_deg", 0, 180), ("child_calibre", 0, 1)):
        values = list(tree[key])
        need(f"textures.tree.{key}", len(values) == 2 and low < values[0] <= values[1] < high,
             f"must be [low, high] with {low} < low <= high < {high}")
    need("textures.texel_mm", tx["texel_mm"] is None or tx["texel_mm"] > 0, "must be null or > 0")
    for key, value in c["shader"].items():
        if key.endswith(("_edges", "_radius", "_offset", "_direction", "_shift", "_tint")) and isinstance(value, list):
            size = 2 if key.endswith("_edges") else 3
            need(f"shader.{key}", len(value) == size, f"must have {size} entries")
            if key.endswith("_edges"):  # the from-range of a map-range node: equal or falling ends make a step or
                need(f"shader.{key}", value[0] < value[1], "must be [low, high], low < high")  # flip it
    need("shader.pattern_vessel_range", c["shader"]["pattern_vessel_range"] > 0, "must be > 0")
    need("shader.capillary_patch_floor", 0 <= c["shader"]["capillary_patch_floor"] <= 1, "must be in [0, 1]")
    need("shader.vessel_taper", 0 <= c["shader"]["vessel_taper"] <= 1, "must be in [0, 1] (a fraction of the width)")
    need("shader.vessel_fade_floor", 0 <= c["shader"]["vessel_fade_floor"] <= 1, "must be in [0, 1] (of the vessels' contrast)")
    need("shader.groove_cut", 0 <= c["shader"]["groove_cut"] <= 1,
         "must be in [0, 1] (0: the grooves' closed lines, 1: cut into strokes)")
    need("shader.groove_pixel_width", c["shader"]["groove_pixel_width"] >= 0,
         "must be >= 0 (noise units per cell a pixel spans; 0: the grooves at their own width, however thin)")
    need("shader.grain_patch_contrast", 0 <= c["shader"]["grain_patch_contrast"] <= 1,
         "must be in [0, 1] (the grooves' relief is scaled by 1 - this .. 1 + this)")
    need("shader.lesion_stipple_fill", 0 <= c["shader"]["lesion_stipple_fill"] <= 1,
         "must be in [0, 1] (the fraction of cells that hold a dot)")
    need("shader.lesion_stipple_radius", c["shader"]["lesion_stipple_radius"] > 0, "must be > 0 (cells)")
    need("shader.lesion_nodule_radius", c["shader"]["lesion_nodule_radius"] > 0, "must be > 0 (cells)")
    endo = c["endoscope"]
    need("endoscope.exposure_percentile", 0 < endo["exposure_percentile"] <= 100, "must be in (0, 100]")
    need("endoscope.exposure_target", endo["exposure_target"] > 0, "must be > 0")
    need("endoscope.exposure_max_gain", endo["exposure_max_gain"] >= 1, "must be >= 1")
    need("endoscope.tone_lift", endo["tone_lift"] >= 0, "must be >= 0")
    need("endoscope.black_level", 0 <= endo["black_level"] < 1, "must be in [0, 1) (0: off)")
    need("endoscope.highlight_knee", 0 <= endo["highlight_knee"] <= 1, "must be in [0, 1] (1: off)")
    need("endoscope.lens_halo", 0 <= endo["lens_halo"] <= 1, "must be in [0, 1] (0: off)")
    need("endoscope.lens_halo_sigma", endo["lens_halo_sigma"] > 0, "must be > 0")
    need("endoscope.enhance_sigma", endo["enhance_sigma"] > 0, "must be > 0")
    need("endoscope.fill_min_distance_mm", endo["fill_min_distance_mm"] > 0, "must be > 0")
    need("endoscope.dim_reddening", endo["dim_reddening"] >= 0, "must be >= 0 (0: off)")
    need("endoscope.dim_reddening_most", endo["dim_reddening_most"] > 0, "must be > 0")
    need("endoscope.far_smoothing_px", endo["far_smoothing_px"] >= 0, "must be >= 0 (0: off)")
    ramp = endo["far_smoothing_mm"]
    need("endoscope.far_smoothing_mm", len(ramp) == 2 and 0 <= ramp[0] < ramp[1],
         "must be [near, far] in mm, 0 <= near < far")
    for name, spec in param_specs(c).items():
        _check_dist(f"render.params.{name}", spec)
    names = set(param_names(c))
    for key in c["overrides"] or {}:
        if key not in names:
            raise RenderConfigError(f"unknown parameter 'render.overrides.{key}' (parameters: {', '.join(sorted(names))})")


def dataset_config(cfg: Mapping) -> dict:
    """The part of a resolved config that changes pixels or labels (what `dataset_name` hashes). Still frames
    leave out the sequence knobs (`mode`, `sequence`, `params.sequence`): they change no still pixel."""
    out = {k: v for k, v in cfg.items()
           if k not in RUN_KEYS and not (k in UNHASHED_DEFAULTS and v == UNHASHED_DEFAULTS[k])}
    if cfg.get("mode", "still") == "still":
        out = {k: v for k, v in out.items() if k not in ("mode", "sequence")}
        out["params"] = {k: v for k, v in out["params"].items() if k != "sequence"}
    return out


def dataset_name(cfg: Mapping | None = None) -> str:
    """A stable name for the dataset a config renders, independent of workers/threads/shards. Past version 1
    it hashes `RENDERER_VERSION` too, so a code change that alters pixels never reuses an old dataset."""
    return resolved_name(resolve_config(cfg))


def resolved_name(resolved: Mapping) -> str:
    """`dataset_name` of a config `resolve_config` returned."""
    version = {"renderer": RENDERER_VERSION} if RENDERER_VERSION != 1 else {}
    return f"frames_{config_hash({**version, **dataset_config(resolved)})}"


# ----------------------------------------------------------------------------------- sampling


def param_specs(cfg: Mapping) -> dict[str, Any]:
    """Flat {"group.name": distribution} of every per-frame parameter, in config order."""
    out: dict[str, Any] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and not _is_dist(value):
                walk(value, name + ".")
            else:
                out[name] = value

    walk(cfg["params"], "")
    return out


def param_names(cfg: Mapping) -> list[str]:
    return list(param_specs(cfg))


def pattern_lane(cfg: Mapping, params: Mapping[str, Any]) -> int:
    """Which of the baked mucosa patterns (`textures.patterns`) a frame's wall shows."""
    n = int(cfg["textures"]["patterns"])
    return min(n - 1, int(math.floor(float(params["mucosa.pattern"]) * n)))


def frame_seed(seed: int, index: int) -> int:
    """The per-frame seed (also Cycles' seed): a function of (seed, frame index) only."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


def _draw(spec: Any, rng: np.random.Generator, drawn: Mapping[str, Any], name: str) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    if "by" in spec:
        key = drawn.get(spec["by"])
        cases = spec["cases"]
        if key not in cases:
            raise RenderConfigError(f"'{name}': no case for {spec['by']}={key!r}")
        return _draw(cases[key], rng, drawn, name)
    if "uniform" in spec:
        lo, hi = spec["uniform"]
        return float(rng.uniform(lo, hi))
    if "loguniform" in spec:
        lo, hi = spec["loguniform"]
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if "normal" in spec:
        mu, sd = spec["normal"]
        v = float(rng.normal(mu, sd))
        if "clip" in spec:
            v = float(min(max(v, spec["clip"][0]), spec["clip"][1]))
        return v
    if "randint" in spec:
        lo, hi = spec["randint"]
        return int(rng.integers(lo, hi + 1))
    if "bernoulli" in spec:
        return int(rng.random() < float(spec["bernoulli"]))
    if "choice" in spec:
        choices = list(spec["choice"])
        p = spec.get("p")
        if p is not None:
            p = np.asarray(p, float) / float(np.sum(p))
        return choices[int(rng.choice(len(choices), p=p))]
    raise RenderConfigError(f"'{name}': bad distribution {spec!r}")


def sample_params(cfg: Mapping, index: int, names: list[str] | None = None) -> dict[str, Any]:
    """Every per-frame parameter of frame `index` (or only `names`, with the same values). Each parameter
    draws from its own stream keyed by (frame seed, parameter name), so adding a parameter never shifts the
    others. Overrides win."""
    fseed = frame_seed(cfg["seed"], index)
    specs = param_specs(cfg)
    if names is not None:  # the names and, transitively, the parameters their `by` conditions read
        want, stack = set(), list(names)
        while stack:
            name = stack.pop()
            if name not in want:
                want.add(name)
                if isinstance(specs[name], Mapping) and "by" in specs[name]:
                    stack.append(specs[name]["by"])
        specs = {n: s for n, s in specs.items() if n in want}
    drawn: dict[str, Any] = {}
    overrides = cfg.get("overrides") or {}
    # unconditional first, then those conditioned on an earlier draw
    order = [n for n, s in specs.items() if not (isinstance(s, Mapping) and "by" in s)]
    order += [n for n in specs if n not in order]
    for name in order:
        rng = np.random.default_rng([fseed, zlib.crc32(name.encode())])
        drawn[name] = overrides[name] if name in overrides else _draw(specs[name], rng, drawn, name)
    return {name: drawn[name] for name in (names if names is not None else specs)}
