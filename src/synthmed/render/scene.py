"""The Blender scene: built once per process, re-parameterised per frame. It assembles the parts —
`lumen` (tube geometry), `mucosa` (wall material and its pattern), `lesions`, `camera` (endoscope and
light) — and owns the render settings and the compositor. bpy is imported here, in the worker processes.

`ColonScene(cfg).render(params, seed)` returns linear RGB, the albedo, the diffuse light, the object-index pass
(lesion = 1) and depth as numpy arrays, plus the values derived while posing the frame (camera and lesion
placement). A sequence (`mode: sequence`) poses the scene once (`pose_scene`, then `place_objects` from the
camera poses it chooses), moves only the camera per frame (`move_camera`) and renders the current state
(`render_current`), with a normal pass besides.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from synthmed.render.camera import Endoscope
from synthmed.render.clutter import Clutter
from synthmed.render.exr import read_exr
from synthmed.render.lesions import Lesions
from synthmed.render.lumen import LumenGeometry
from synthmed.render.mucosa import Mucosa
from synthmed.render.nodes import NORMAL_AOV


class ColonScene:
    """A colon lumen, its mucosa, a lesion model per Paris class, the hard negatives (clutter), an endoscope
    camera and light. Build once; `render` many times with different parameters."""

    def __init__(self, cfg: Mapping, threads: int | None = None, tmp_root: str | None = None):
        import bpy

        self.bpy, self.cfg = bpy, cfg
        self.sequence_mode = cfg["mode"] == "sequence"
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        if tmp_root:
            os.makedirs(tmp_root, exist_ok=True)
        self.tmpdir = tempfile.mkdtemp(prefix="synthmed_render_", dir=tmp_root)
        self._setup_render(threads)
        self.mucosa = Mucosa(bpy, cfg)
        self.lumen = LumenGeometry(bpy, self.scene, cfg, self.mucosa.material)
        self.lesions = Lesions(bpy, self.scene, cfg, self.mucosa, self.lumen)
        self.clutter = Clutter(bpy, self.scene, cfg)
        self.endoscope = Endoscope(bpy, self.scene, cfg)
        self.exr_path = self._build_compositor()
        self.renders = 0  # renders so far: every `session_frames`-th one rebuilds Cycles' kept scene
        self.trees_rendered = 0  # procedural mode: the vessel trees the last render saw (`render_current`)

    def _use_gpus(self) -> list[str]:
        """Enable every OptiX (else CUDA) device Cycles finds; return their names. Raises RuntimeError naming
        `render.device` when there is none: a GPU render never falls back to the CPU silently."""
        prefs = self.bpy.context.preferences.addons["cycles"].preferences
        for kind in ("OPTIX", "CUDA"):
            prefs.compute_device_type = kind
            prefs.refresh_devices()
            gpus = [d for d in prefs.devices if d.type == kind]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == kind  # the GPUs only: a CPU entry would join the render and change its bytes
                return [d.name for d in gpus]
        raise RuntimeError("render.device=gpu, but Cycles finds no CUDA or OptiX GPU here (no driver, or none "
                           "visible to this process): use render.device=cpu, or run where a GPU is")

    def _setup_render(self, threads: int | None) -> None:
        """Cycles on the CPU (or `device: gpu`), no denoiser, direct light by default (`engine` knobs), three
        passes (four for sequences: + normal)."""
        cfg, engine = self.cfg, self.cfg["engine"]
        render = self.scene.render
        cycles = self.scene.cycles
        render.engine = "CYCLES"
        if cfg["device"] == "gpu":
            self.gpus = self._use_gpus()
            cycles.device = "GPU"
        else:
            cycles.device = "CPU"
        cycles.samples = int(cfg["samples"])
        cycles.use_adaptive_sampling = bool(engine["adaptive_sampling"])
        cycles.adaptive_threshold = float(engine["adaptive_threshold"])
        cycles.adaptive_min_samples = int(engine["adaptive_min_samples"])
        cycles.use_denoising = False
        cycles.max_bounces = int(cfg["max_bounces"])
        cycles.diffuse_bounces = int(engine["diffuse_bounces"])
        cycles.glossy_bounces = int(engine["glossy_bounces"])
        cycles.transmission_bounces = 0
        cycles.volume_bounces = 0
        cycles.transparent_max_bounces = int(cfg["shader"]["clutter_transparent_bounces"])  # bubbles, fluid
        cycles.caustics_reflective = False
        cycles.caustics_refractive = False
        cycles.sample_clamp_direct = float(engine["clamp_direct"])
        cycles.sample_clamp_indirect = float(engine["clamp_indirect"])
        cycles.pixel_filter_type = "BLACKMAN_HARRIS"
        cycles.filter_width = float(engine["filter_width"])
        cycles.use_animated_seed = False  # the seed is set per frame
        cycles.use_light_tree = bool(engine["light_tree"])  # one light: the tree only costs time
        render.resolution_x = render.resolution_y = int(cfg["resolution"])
        render.resolution_percentage = 100
        render.use_persistent_data = True
        render.film_transparent = False
        render.use_compositing = True
        render.use_sequencer = False
        if threads:
            render.threads_mode = "FIXED"
            render.threads = int(threads)
        world = self.bpy.data.worlds.new("dark")  # the tip light is the only light
        world.color = (0.0, 0.0, 0.0)
        background = world.node_tree.nodes.get("Background") if world.node_tree else None
        if background is not None:
            background.inputs["Strength"].default_value = 0.0
        self.scene.world = world
        view_layer = self.scene.view_layers[0]
        view_layer.use_pass_object_index = True
        view_layer.use_pass_z = True
        view_layer.use_pass_diffuse_color = True  # the albedo the post-processing's fill light lights (post.fill_light)
        view_layer.use_pass_diffuse_direct = True  # the diffuse light post.translucency spreads under the surface
        if self.sequence_mode:  # the sequences' normals (a still frame has none): the materials' smooth surface
            aov = view_layer.aovs.add()  # normal (nodes.material_output), not Cycles' Normal pass, which
            aov.name, aov.type = NORMAL_AOV, "COLOR"  # averages in the wet film's droplet bumps

    def _build_compositor(self) -> str:
        """Write Combined, object index, depth, albedo and diffuse light (and, for sequences, the normal AOV) to one
        uncompressed EXR a frame; returns its path."""
        tree = self.bpy.data.node_groups.new("passes", "CompositorNodeTree")
        self.scene.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        output = tree.nodes.new("CompositorNodeOutputFile")
        output.directory = self.tmpdir + os.sep
        output.file_name = "passes"
        output.format.media_type = "MULTI_LAYER_IMAGE"
        output.format.file_format = "OPEN_EXR_MULTILAYER"
        output.format.exr_codec = "NONE"
        output.format.color_depth = "32"
        output.format.use_exr_interleave = True  # one part, so our small reader handles it
        passes = [("rgb", "RGBA", "Image"), ("index", "FLOAT", "Object Index"), ("depth", "FLOAT", "Depth"),
                  ("albedo", "RGBA", "Diffuse Color"), ("diffuse", "RGBA", "Diffuse Direct")]
        if self.sequence_mode:
            passes.append(("normal", "VECTOR", NORMAL_AOV))
        for name, kind, source in passes:
            output.file_output_items.new(kind, name)
            tree.links.new(layers.outputs[source], output.inputs[name])
        return os.path.join(self.tmpdir, "passes.exr")

    # ------------------------------------------------------------------------- the baked pattern
    @property
    def pattern_lanes(self) -> frozenset[int]:
        """The baked mucosa patterns `set_pattern` loaded."""
        return self.mucosa.pattern_lanes

    def bake_pattern(self, lane: int) -> np.ndarray:
        """Mucosa pattern `lane` baked on its texel grid: (rows, cols, 4) uint8 (see `mucosa.pattern_grid`)."""
        return self.mucosa.bake_pattern(self.scene, lane)

    def set_pattern(self, lanes: Mapping[int, np.ndarray]) -> None:
        """Load baked patterns ({lane: `bake_pattern(lane)`}) for the frames of this run."""
        self.mucosa.set_pattern(lanes)

    # ------------------------------------------------------------------------- per frame
    def ray_cast(self, origin: np.ndarray, direction: np.ndarray):
        """The first lumen wall hit from `origin` along `direction` in this frame's evaluated geometry."""
        return self.lumen.ray_cast(origin, direction, self._depsgraph)

    def pose_scene(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Set the lumen's, the mucosa's and the lesion models' inputs (every lesion hidden) and evaluate the
        lumen, so that `ray_cast` sees it; return the derived pattern values."""
        self.lumen.pose(params)
        pattern = self.mucosa.pose(params)
        self.lesions.pose(params)
        self._depsgraph = self.bpy.context.evaluated_depsgraph_get()
        self._depsgraph.update()
        self.lumen.sync(self._depsgraph)
        return {"mucosa.pattern_index": int(pattern["pattern.lane"]),
                "vessels.scale_per_mm": pattern["pattern.vessel_scale"] * pattern["pattern.axial_scale"]}

    def place_objects(self, params: Mapping[str, Any], lesion_pose: tuple, clutter_pose: tuple) -> dict[str, Any]:
        """Put the lesion (if present) and the clutter on the wall of the posed scene, each seen from a camera
        pose (position, forward, up); return their derived values."""
        derived: dict[str, Any] = {"lesion.placed": 0, "lesion.distance_mm": -1.0}
        if int(params["lesion.present"]):
            derived.update(self.lesions.place(params, self.ray_cast, *lesion_pose))
        derived.update(self.clutter.place(params, self.ray_cast, *clutter_pose))
        return derived

    def pose(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Set every node input, transform and visibility for one frame; return derived placement values."""
        pattern = self.pose_scene(params)
        position, forward, up, offset = self.endoscope.pose(params, self.ray_cast)
        derived: dict[str, Any] = {"camera.offset_mm": offset, **pattern}
        derived.update(self.place_objects(params, (position, forward, up), (position, forward, up)))
        return derived

    def pose_sequence(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Pose a sequence's scene (`pose_scene`) after checking its mucosa pattern is loaded; the caller places
        the lesion and the clutter (`place_objects`) from the camera poses it chooses, then moves the camera."""
        self.mucosa.check_pattern(params)
        return self.pose_scene(params)

    def move_camera(self, params: Mapping[str, Any], position: np.ndarray, right: np.ndarray, up: np.ndarray,
                    forward: np.ndarray) -> None:
        """Move only the endoscope (camera and tip light) in the posed scene."""
        self.endoscope.place(params, position, right, up, forward)

    def lesion_location(self) -> np.ndarray | None:
        """Where the placed lesion's model stands (its origin, at its base in the wall), or None."""
        for lesion in self.lesions.objects.values():
            if not lesion.hide_render:
                return np.array(lesion.matrix_world.translation, dtype=np.float64)
        return None

    def render(self, params: Mapping[str, Any], cycles_seed: int) -> dict[str, Any]:
        """Render one frame: `render_current`'s passes plus "derived": {...} (the pose's values)."""
        self.mucosa.check_pattern(params)
        derived = self.pose(params)
        return {**self.render_current(cycles_seed), "derived": derived}

    def render_current(self, cycles_seed: int) -> dict[str, np.ndarray]:
        """Render the scene as posed: {"rgb", "albedo", "diffuse" (Cycles' Diffuse Direct): HxWx3 linear float32,
        "index", "depth": HxW float32 (the first sample's; depth is the distance along the ray in mm, 1e10 where it
        hits nothing) and, for sequences, "normal": HxWx3 world-space normal averaged over the samples}. Row 0 is
        the top of the image."""
        self.scene.cycles.seed = int(cycles_seed)
        if self.sequence_mode:
            # only the camera moved: with persistent data Cycles then keeps the integrator, and the old seed with
            # it (a frame's noise would depend on which frame the worker rendered first); tag the scene
            self.scene.update_tag()
        if os.path.exists(self.exr_path):
            os.remove(self.exr_path)
        self.renders += 1
        every = int(self.cfg["session_frames"])
        renew = every > 0 and self.renders % every == 0
        # procedural mode: a tree grown since the last render is in the texture's pixels, but Cycles' kept scene
        # holds the texture as it first uploaded it (the new lane's rows empty: no vessels); rebuild it
        renew = renew or len(self.mucosa.trees) != self.trees_rendered
        self.trees_rendered = len(self.mucosa.trees)
        if renew:  # persistent data keeps something of every past lesion mesh (about 14 KB a frame at 128 px):
            self.scene.render.use_persistent_data = False  # a render without it frees the kept scene; same bytes
        try:
            self.bpy.ops.render.render()
        finally:
            if renew:
                self.scene.render.use_persistent_data = True
        channels = read_exr(self.exr_path)
        def stacked(name: str, axes: str = "RGB") -> np.ndarray:
            return np.stack([channels[f"{name}.{axis}"] for axis in axes], axis=-1)

        out = {"rgb": stacked("rgb"), "albedo": stacked("albedo"), "diffuse": stacked("diffuse"),
               "index": channels["index.V"], "depth": channels["depth.V"]}
        if self.sequence_mode:
            out["normal"] = stacked("normal", "XYZ")
        return out

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)
