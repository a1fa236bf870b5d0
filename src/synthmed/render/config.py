"""The `render` config: defaults, validation, the dataset name, and per-frame parameter sampling.

Pure Python + numpy (no bpy): the main process uses it to plan work, the workers to draw parameters.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.utils import config_hash, to_plain

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_YAML = CONF_DIR / "render" / "default.yaml"
# How the work is spread: never changes a pixel, so never part of the dataset's name.
RUN_KEYS = ("workers", "threads", "shard", "num_shards")
# Raise when a code change alters the frames a config renders: dataset names hash it, so a dataset of the old
# code is never reused. Version 1 (the renderer of 2026-12-01) hashes as no key at all, so the names of the
# datasets made before this constant existed stay valid.
RENDERER_VERSION = 1
DIST_KINDS = ("uniform", "loguniform", "normal", "randint", "choice", "bernoulli", "by")
LESION_TYPES = ("sessile", "pedunculated", "flat")


class RenderConfigError(ValueError):
    """A bad `render` config: the message names the offending key."""


def _load_defaults_node():
    from omegaconf import OmegaConf

    return OmegaConf.load(DEFAULT_YAML)


def default_config() -> dict:
    """The defaults of conf/render/default.yaml, resolved against `scale=paper` (for use without Hydra)."""
    from omegaconf import OmegaConf

    scale = OmegaConf.load(CONF_DIR / "scale" / "paper.yaml")
    root = OmegaConf.create({"render": _load_defaults_node(), "scale": scale})
    return OmegaConf.to_container(root, resolve=True)["render"]


def _is_dist(node: Any) -> bool:
    return isinstance(node, Mapping) and any(k in node for k in DIST_KINDS)


def _check_keys(user: Mapping, ref: Mapping, prefix: str) -> None:
    for key, value in user.items():
        name = f"{prefix}{key}"
        if key not in ref:
            known = ", ".join(sorted(map(str, ref)))
            raise RenderConfigError(f"unknown render config key '{name}' (known here: {known})")
        if prefix.startswith("render.params.") or name.startswith("render.params."):
            if _is_dist(ref[key]) or not isinstance(ref[key], Mapping):
                _check_dist(name, value)  # a whole distribution may be swapped for another or a constant
                continue
        if key == "overrides":
            continue
        if isinstance(ref[key], Mapping) and ref[key]:
            if not isinstance(value, Mapping):
                raise RenderConfigError(f"render config key '{name}' must be a mapping, got {value!r}")
            _check_keys(value, ref[key], name + ".")


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


def resolve_config(cfg: Mapping | None = None) -> dict:
    """Resolve interpolations, fill defaults, validate. Raises RenderConfigError naming a bad key."""
    user = to_plain(cfg) if cfg is not None else {}
    if not isinstance(user, Mapping):
        raise RenderConfigError(f"render config must be a mapping, got {type(cfg).__name__}")
    defaults = default_config()
    _check_keys(user, defaults, "render.")
    merged = _deep_merge(defaults, user)
    # lesion.present follows lesion_probability unless the user replaced it explicitly
    if "lesion_probability" in user and "present" not in user.get("params", {}).get("lesion", {}):
        merged["params"]["lesion"]["present"] = {"bernoulli": merged["lesion_probability"]}
    _check_values(merged)
    return merged


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not _is_dist(value) and key != "overrides":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = to_plain(value)
    return out


def _check_values(c: dict) -> None:
    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise RenderConfigError(f"render config key 'render.{key}' {what}, got {c.get(key)!r}")

    for key in ("num_frames", "resolution", "samples", "workers", "num_shards"):
        need(key, isinstance(c[key], int) and not isinstance(c[key], bool) and c[key] >= (0 if key == "num_frames" else 1),
             "must be a positive integer")
    need("shard", isinstance(c["shard"], int) and 0 <= c["shard"] < c["num_shards"], "must be in [0, num_shards)")
    need("threads", c["threads"] is None or (isinstance(c["threads"], int) and c["threads"] >= 1), "must be null or >= 1")
    need("lesion_probability", isinstance(c["lesion_probability"], int | float) and 0 <= c["lesion_probability"] <= 1,
         "must be in [0, 1]")
    need("min_visible_pixels", isinstance(c["min_visible_pixels"], int) and c["min_visible_pixels"] >= 1, "must be >= 1")
    tx = c["textures"]

    def need_tx(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise RenderConfigError(f"render config key 'render.textures.{key}' {what}, got {tx.get(key)!r}")

    need_tx("mode", tx["mode"] in ("baked", "procedural"), "must be baked or procedural")
    need_tx("patterns", isinstance(tx["patterns"], int) and not isinstance(tx["patterns"], bool) and tx["patterns"] >= 1,
            "must be a positive integer")
    scales = tx["vessel_scale"]
    need_tx("vessel_scale", isinstance(scales, list | tuple) and len(scales) == 2
            and all(isinstance(v, int | float) and v > 0 for v in scales), "must be [low, high] cells per mm, > 0")
    for key in ("reference_radius_mm", "length_mm", "branch_scale"):
        need_tx(key, isinstance(tx[key], int | float) and tx[key] > 0, "must be > 0")
    need_tx("texel_mm", tx["texel_mm"] is None or (isinstance(tx["texel_mm"], int | float) and tx["texel_mm"] > 0),
            "must be null or > 0")
    names = set(param_names(c))
    for key in c["overrides"] or {}:
        if key not in names:
            raise RenderConfigError(f"unknown parameter 'render.overrides.{key}' (parameters: {', '.join(sorted(names))})")


def dataset_config(cfg: Mapping) -> dict:
    """The part of a resolved config that changes pixels or labels (what `dataset_name` hashes)."""
    return {k: v for k, v in cfg.items() if k not in RUN_KEYS}


def dataset_name(cfg: Mapping | None = None) -> str:
    """A stable name for the dataset a config renders, independent of workers/threads/shards. Past version 1
    it hashes `RENDERER_VERSION` too, so a code change that alters pixels never reuses an old dataset."""
    version = {"renderer": RENDERER_VERSION} if RENDERER_VERSION != 1 else {}
    return f"frames_{config_hash({**version, **dataset_config(resolve_config(cfg))})}"


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
