"""The typed schema of the `render` config, checked by Hydra when a config is composed.

conf/render/default.yaml holds every value; these dataclasses hold none (every field is MISSING): they say
which keys exist and of what type, so `render.engine.samplez=3` or `render.samples=many` fails at compose
time with Hydra's message naming the key. `params` stays a free mapping of distributions (their syntax and
value ranges are checked in `synthmed.render.config`). Registered in Hydra's ConfigStore as
`render/render_schema` when `synthmed` is imported; no numpy, no bpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class TextureMode(Enum):
    baked = 1  # evaluated once per dataset into a texture every frame looks up
    procedural = 2  # the same nodes evaluated per sample


class RenderMode(Enum):
    still = 1  # independent frames, each its own scene and camera
    sequence = 2  # the endoscope moves along the centreline through one scene per sequence (geometry passes)


class Device(Enum):
    cpu = 1  # Cycles on the CPU cores (the reference: byte-reproducible across x86-64 hosts)
    gpu = 2  # Cycles on CUDA/OptiX GPUs; fails when none is found


@dataclass
class EngineConfig:
    adaptive_sampling: bool = MISSING
    adaptive_threshold: float = MISSING
    adaptive_min_samples: int = MISSING
    diffuse_bounces: int = MISSING
    glossy_bounces: int = MISSING
    light_tree: bool = MISSING
    clamp_direct: float = MISSING
    clamp_indirect: float = MISSING
    filter_width: float = MISSING
    subsurface: bool = MISSING


@dataclass
class VesselTreeConfig:
    seed: int = MISSING
    trunk_spacing: float = MISSING
    step: float = MISSING
    turn: float = MISSING
    bend_length: float = MISSING
    branch_every: float = MISSING
    branch_angle_deg: list[float] = MISSING
    child_calibre: list[float] = MISSING
    taper: float = MISSING
    min_calibre: float = MISSING
    clearance: float = MISSING


@dataclass
class TexturesConfig:
    mode: TextureMode = MISSING
    patterns: int = MISSING
    vessel_scale: list[float] = MISSING
    vessel_distortion: float = MISSING
    tree: VesselTreeConfig = field(default_factory=VesselTreeConfig)
    capillary_scale: float = MISSING
    capillary_width: float = MISSING
    reference_radius_mm: float = MISSING
    length_mm: float = MISSING
    texel_mm: float | None = MISSING


@dataclass
class EndoscopeConfig:
    sensor_width_mm: float = MISSING
    light_offset_mm: float = MISSING
    light_soft_radius_mm: float = MISSING
    light_power_scale: float = MISSING
    fill_min_distance_mm: float = MISSING
    dim_reddening: float = MISSING
    dim_reddening_most: float = MISSING
    octagon_cut: float = MISSING
    vignette_power: float = MISSING
    lens_halo: float = MISSING
    lens_halo_sigma: float = MISSING
    enhance_sigma: float = MISSING
    glare_threshold: float = MISSING
    glare_sigma: float = MISSING
    glare_gain: float = MISSING
    exposure_percentile: float = MISSING
    exposure_target: float = MISSING
    exposure_max_gain: float = MISSING
    tone_lift: float = MISSING
    black_level: float = MISSING
    highlight_knee: float = MISSING
    far_smoothing_px: float = MISSING
    far_smoothing_mm: list[float] = MISSING


@dataclass
class SceneConfig:
    tube_length_mm: float = MISSING
    segments_along: int = MISSING
    segments_around: int = MISSING
    lesion_segments: int = MISSING
    near_clip_mm: float = MISSING
    far_clip_mm: float = MISSING
    min_wall_clearance_mm: float = MISSING
    min_view_distance_mm: float = MISSING
    mucosa_bump_scale: float = MISSING
    mucosa_bump_distance: float = MISSING
    lesion_sink_mm: float = MISSING


@dataclass
class SequenceConfig:
    """mode=sequence only: num_frames counts frames (sequences x length)."""

    length: int = MISSING
    preview_fps: int = MISSING
    lesion_frame: int = MISSING
    flow_visible_tolerance_mm: float = MISSING
    flow_visible_tolerance_rel: float = MISSING


@dataclass
class ColourShift:
    """A colour derived from a sampled HSV colour: hue + hue_shift, saturation x saturation_scale +
    saturation_shift, value x value_scale (value capped at 1)."""

    hue_shift: float = MISSING
    saturation_scale: float = MISSING
    saturation_shift: float = MISSING
    value_scale: float = MISSING


@dataclass
class ShaderConfig:
    """The constants of the node trees and materials (documented in conf/render/default.yaml)."""

    # lumen geometry
    fold_crescent_noise_scale: float = MISSING
    fold_crescent_noise_detail: float = MISSING
    fold_crescent_edges: list[float] = MISSING
    fold_irregularity_scale: float = MISSING
    wall_noise_detail: float = MISSING
    # mucosa pattern
    pattern_lane_shift: list[float] = MISSING
    pattern_margin_mm: float = MISSING
    pattern_vessel_range: float = MISSING
    pattern_warp_gain: float = MISSING
    pattern_capillary_warp_offset: list[float] = MISSING
    pattern_capillary_warp_scale: float = MISSING
    capillary_cut_scale: float = MISSING
    capillary_cut_edges: list[float] = MISSING
    capillary_cut_floor: float = MISSING
    pattern_ripple_offset: list[float] = MISSING
    pattern_relief_offset: list[float] = MISSING
    pattern_warp_detail: float = MISSING
    pattern_mottle_scale: float = MISSING
    pattern_mottle_detail: float = MISSING
    pattern_patch_offset: list[float] = MISSING
    pattern_patch_scale: float = MISSING
    pattern_patch_detail: float = MISSING
    pattern_voronoi_randomness: float = MISSING
    pattern_tint_offset: list[float] = MISSING
    pattern_tint_scale: float = MISSING
    pattern_tint_detail: float = MISSING
    # mucosa material
    mucosa_mottle_edges: list[float] = MISSING
    mucosa_dark: ColourShift = field(default_factory=ColourShift)
    mucosa_rim: ColourShift = field(default_factory=ColourShift)
    mucosa_tint: ColourShift = field(default_factory=ColourShift)
    mucosa_tint_edges: list[float] = MISSING
    mucosa_rim_blend: float = MISSING
    vessels_patch_threshold: float = MISSING
    vessels_patch_density_gain: float = MISSING
    vessels_patch_band: float = MISSING
    vessel_taper: float = MISSING
    vessel_calibre_edges: list[float] = MISSING
    vessel_twig_contrast: float = MISSING
    vessel_twig: ColourShift = field(default_factory=ColourShift)
    vessel_fade_edges: list[float] = MISSING
    vessel_fade_floor: float = MISSING
    capillary_patch_floor: float = MISSING
    capillary_fade_edges: list[float] = MISSING
    capillary_mean: float = MISSING
    droplet_threshold: float = MISSING
    droplet_density_gain: float = MISSING
    droplet_band: float = MISSING
    coat_ripple_scale: float = MISSING
    coat_ripple_detail: float = MISSING
    coat_ripple_gain: float = MISSING
    groove_scale: float = MISSING
    groove_detail: float = MISSING
    groove_width: float = MISSING
    groove_pixel_width: float = MISSING
    groove_strength: float = MISSING
    groove_depth_mm: float = MISSING
    groove_darkening: float = MISSING
    groove_cut: float = MISSING
    groove_cut_scale: float = MISSING
    groove_cut_edges: list[float] = MISSING
    grain_patch_scale: float = MISSING
    grain_patch_detail: float = MISSING
    grain_patch_edges: list[float] = MISSING
    grain_patch_contrast: float = MISSING
    droplet_noise_detail: float = MISSING
    mucosa_coat_ior: float = MISSING
    mucosa_specular: float = MISSING
    subsurface_weight: float = MISSING
    subsurface_radius: list[float] = MISSING
    subsurface_scale: float = MISSING
    translucency_depth_ratio: float = MISSING
    # lesions
    lesion_shape_noise_detail: float = MISSING
    lesion_lobe_subdivisions: int = MISSING
    lesion_lobe_crease: float = MISSING
    lesion_lobe_randomness: float = MISSING
    lesion_plateau_gain: float = MISSING
    lesion_depression_rim: float = MISSING
    lesion_lens_clearance: float = MISSING
    behind_fold_step_mm: float = MISSING
    lesion_noise_detail: float = MISSING
    lesion_noise_roughness: float = MISSING
    lesion_mottle_edges: list[float] = MISSING
    lesion_mottle_gain: float = MISSING
    lesion_bump_gain: float = MISSING
    lesion_bump_distance: float = MISSING
    lesion_dark: ColourShift = field(default_factory=ColourShift)
    lesion_pale: ColourShift = field(default_factory=ColourShift)
    lesion_red: ColourShift = field(default_factory=ColourShift)
    lesion_pattern_randomness: float = MISSING
    lesion_pattern_warp: float = MISSING
    lesion_pit_radius: float = MISSING
    lesion_pit_darkening: float = MISSING
    lesion_ridge_width: float = MISSING
    lesion_furrow_darkening: float = MISSING
    lesion_vessel_width: float = MISSING
    lesion_stipple_radius: float = MISSING
    lesion_stipple_fill: float = MISSING
    lesion_stipple: ColourShift = field(default_factory=ColourShift)
    lesion_nodule_radius: float = MISSING
    lesion_nodule_height: float = MISSING
    lesion_nodule_darkening: float = MISSING
    lesion_mucus_edges: list[float] = MISSING
    lesion_mucus_opacity: float = MISSING
    lesion_mucus_patch_edges: list[float] = MISSING
    lesion_mucus_patch_floor: float = MISSING
    lesion_mucus_colour: list[float] = MISSING
    lesion_base_edges: list[float] = MISSING
    stalk_radius_wall: float = MISSING
    stalk_radius_head: float = MISSING
    stalk_length: float = MISSING
    stalk_centre: float = MISSING
    head_radius: float = MISSING
    head_centre: float = MISSING
    # reddened patches
    erythema_ragged: float = MISSING
    erythema_core: float = MISSING
    erythema_opacity: float = MISSING
    # hard negatives
    clutter_max_bubbles: int = MISSING
    clutter_max_debris: int = MISSING
    clutter_transparent_bounces: int = MISSING
    clutter_min_aspect: float = MISSING
    bubble_smallest: float = MISSING
    bubble_ior: float = MISSING
    bubble_roughness: float = MISSING
    bubble_rim_gain: float = MISSING
    bubble_film: float = MISSING
    bubble_sink: float = MISSING
    debris_texture_scale: float = MISSING
    debris_texture_detail: float = MISSING
    debris_mottle_edges: list[float] = MISSING
    debris_bump_strength: float = MISSING
    debris_bump_distance: float = MISSING
    debris_shape_scale: float = MISSING
    debris_shape_detail: float = MISSING
    debris_lumpiness: float = MISSING
    debris_smallest: float = MISSING
    debris_sink: float = MISSING
    debris_flatten: float = MISSING
    debris_roughness: float = MISSING
    debris_dark: ColourShift = field(default_factory=ColourShift)
    fluid_roughness: float = MISSING
    fluid_saturation: float = MISSING
    fluid_lens_clearance_mm: float = MISSING
    fluid_behind_mm: float = MISSING
    # light
    light_warmth_tint: list[float] = MISSING


@dataclass
class RenderConfig:
    mode: RenderMode = MISSING
    num_frames: int = MISSING
    resolution: int = MISSING
    seed: int = MISSING
    workers: int = MISSING
    threads: int | None = MISSING
    session_frames: int = MISSING
    device: Device = MISSING
    shard: int = MISSING
    num_shards: int = MISSING
    min_visible_pixels: int = MISSING
    lesion_probability: float = MISSING
    samples: int = MISSING
    max_bounces: int = MISSING
    depth: bool = MISSING
    coco: bool = MISSING
    preview_frames: int = MISSING
    overrides: dict[str, Any] = field(default_factory=dict)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    textures: TexturesConfig = field(default_factory=TexturesConfig)
    endoscope: EndoscopeConfig = field(default_factory=EndoscopeConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    shader: ShaderConfig = field(default_factory=ShaderConfig)
    params: dict[str, Any] = field(default_factory=dict)


SCHEMA_NAME = "render_schema"


def register_schema() -> None:
    """Store the schema as `render/render_schema` (conf/render/default.yaml lists it first). Idempotent."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="render", name=SCHEMA_NAME, node=RenderConfig)
