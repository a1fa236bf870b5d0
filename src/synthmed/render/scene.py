"""The Blender scene: built once per process, re-parameterised per frame. The only module that imports bpy.

`ColonScene(cfg).render(params)` returns linear RGB, the object-index pass (lesion = 1) and depth as numpy
arrays, plus the values derived while posing the frame (camera and lesion placement).
"""

from __future__ import annotations

import colorsys
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from synthmed.render.config import pattern_lane
from synthmed.render.exr import read_exr

LESION_INDEX = 1
VESSEL_RANGE = 0.32  # baked distances to a vessel (in cells) span [0, VESSEL_RANGE]: 8 bits give 0.0013 steps
LANE_SHIFT = (131.7, -77.3, 1013.9)  # pattern k is the noise field shifted by k x this (mm): disjoint patterns
PATTERN_MARGIN_MM = 40.0  # the wall seen behind the lens (wide field, pitched scope) still lies on the pattern


# ----------------------------------------------------------------------------- centreline (numpy)
def centreline(p: Mapping[str, float], z: float) -> np.ndarray:
    """Centre of the lumen at axial position z (mm). Mirrors the geometry-node tree exactly."""
    tau = 2.0 * math.pi
    a1, l1 = p["tube.bend_amplitude_mm"], p["tube.bend_wavelength_mm"]
    a2, l2 = p["tube.bend_amplitude2_mm"], p["tube.bend_wavelength2_mm"]
    x = a1 * math.sin(tau * z / l1 + p["tube.bend_phase_x1"]) + a2 * math.sin(tau * z / l2 + p["tube.bend_phase_x2"])
    y = a1 * math.sin(tau * z / l1 + p["tube.bend_phase_y1"]) + a2 * math.sin(tau * z / l2 + p["tube.bend_phase_y2"])
    return np.array([x, y, z])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of v about a unit axis."""
    axis = _unit(axis)
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * float(np.dot(axis, v)) * (1 - c)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float, float]:
    """HSV (hue wraps at 1) -> linear RGBA for a shader socket."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), max(v, 0.0))
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return (*lin, 1.0)


# ----------------------------------------------------------------------------- node helpers
class _Graph:
    """Tiny wrapper to build node trees readably: sockets by name (or index), values or links."""

    def __init__(self, tree):
        self.tree = tree
        self.nodes = tree.nodes
        self.links = tree.links

    def node(self, kind: str, inputs: Mapping | None = None, **props):
        n = self.nodes.new(kind)
        for key, value in props.items():
            setattr(n, key, value)
        for key, value in (inputs or {}).items():
            self.connect(value, self._socket(n.inputs, key))
        return n

    @staticmethod
    def _socket(sockets, key):
        if isinstance(key, int):
            return sockets[key]
        for s in sockets:  # prefer enabled sockets (mix/map-range nodes have several with one name)
            if (s.identifier == key or s.name == key) and s.enabled:
                return s
        return sockets[key]

    def connect(self, value, socket) -> None:
        if hasattr(value, "is_output"):
            self.links.new(value, socket)
        elif hasattr(value, "outputs"):
            self.links.new(value.outputs[0], socket)
        else:
            socket.default_value = value

    def out(self, node, key=0):
        return self._socket(node.outputs, key) if not isinstance(key, int) else node.outputs[key]

    def math(self, op: str, a, b=None, c=None):
        ins = {0: a}
        if b is not None:
            ins[1] = b
        if c is not None:
            ins[2] = c
        return self.node("ShaderNodeMath", ins, operation=op).outputs[0]

    def vmath(self, op: str, a, b=None, scale=None):
        ins = {0: a}
        if b is not None:
            ins[1] = b
        if scale is not None:
            ins[3] = scale
        n = self.node("ShaderNodeVectorMath", ins, operation=op)
        return n.outputs[1] if op in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else n.outputs[0]

    def mix_rgb(self, fac, a, b):
        n = self.node("ShaderNodeMix", {"Factor_Float": fac, "A_Color": a, "B_Color": b}, data_type="RGBA")
        return self._socket(n.outputs, "Result_Color")

    def map_range(self, value, fmin, fmax, tmin=0.0, tmax=1.0, interp="LINEAR"):
        n = self.node("ShaderNodeMapRange", {"Value": value, "From Min": fmin, "From Max": fmax,
                                             "To Min": tmin, "To Max": tmax}, interpolation_type=interp)
        return n.outputs[0]


class _Inputs:
    """Per-frame knobs of a node tree: named Value nodes whose outputs we set each frame."""

    def __init__(self, g: _Graph):
        self.g = g
        self.nodes: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self.nodes:
            n = self.g.node("ShaderNodeValue")
            n.name = n.label = name
            self.nodes[name] = n
        return self.nodes[name].outputs[0]

    def rgb(self, name: str):
        key = name + "#rgb"
        if key not in self.nodes:
            n = self.g.node("ShaderNodeRGB")
            n.name = n.label = key
            self.nodes[key] = n
        return self.nodes[key].outputs[0]


# ----------------------------------------------------------------------------- the scene
class ColonScene:
    """A colon lumen, its mucosa, three lesion models, an endoscope camera and light. Build once; `render`
    many times with different parameters."""

    def __init__(self, cfg: Mapping, threads: int | None = None, tmp_root: str | None = None):
        import bpy

        self.bpy = bpy
        self.cfg = cfg
        self.sc = cfg["scene"]
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        if tmp_root:
            os.makedirs(tmp_root, exist_ok=True)
        self.tmpdir = tempfile.mkdtemp(prefix="synthmed_render_", dir=tmp_root)
        self.pattern_lanes: frozenset[int] = frozenset()  # the baked patterns set_pattern loaded
        self._setup_render(threads)
        self._build_tube()
        self._build_lesions()
        self._build_camera()
        self._build_compositor()

    # ---- render settings
    def _setup_render(self, threads: int | None) -> None:
        bpy, cfg, eng = self.bpy, self.cfg, self.cfg["engine"]
        s = self.scene
        s.render.engine = "CYCLES"
        cy = s.cycles
        cy.device = "CPU"
        cy.samples = int(cfg["samples"])
        cy.use_adaptive_sampling = bool(eng["adaptive_sampling"])
        cy.adaptive_threshold = float(eng["adaptive_threshold"])
        cy.adaptive_min_samples = int(eng["adaptive_min_samples"])
        cy.use_denoising = False
        cy.max_bounces = int(cfg["max_bounces"])
        cy.diffuse_bounces = int(eng["diffuse_bounces"])
        cy.glossy_bounces = int(eng["glossy_bounces"])
        cy.transmission_bounces = 0
        cy.volume_bounces = 0
        cy.transparent_max_bounces = 0
        cy.caustics_reflective = False
        cy.caustics_refractive = False
        cy.sample_clamp_direct = float(eng["clamp_direct"])
        cy.sample_clamp_indirect = float(eng["clamp_indirect"])
        cy.pixel_filter_type = "BLACKMAN_HARRIS"
        cy.filter_width = float(eng["filter_width"])
        cy.use_animated_seed = False
        cy.use_light_tree = bool(eng["light_tree"])  # one light: the tree only costs time
        s.render.resolution_x = s.render.resolution_y = int(cfg["resolution"])
        s.render.resolution_percentage = 100
        s.render.use_persistent_data = True
        s.render.film_transparent = False
        s.render.use_compositing = True
        s.render.use_sequencer = False
        if threads:
            s.render.threads_mode = "FIXED"
            s.render.threads = int(threads)
        world = bpy.data.worlds.new("dark")
        world.color = (0.0, 0.0, 0.0)
        bg = world.node_tree.nodes.get("Background") if world.node_tree else None
        if bg is not None:
            bg.inputs["Strength"].default_value = 0.0
        s.world = world
        vl = s.view_layers[0]
        vl.use_pass_object_index = True
        vl.use_pass_z = True

    # ---- lumen: geometry nodes
    def _build_tube(self) -> None:
        bpy, sc = self.bpy, self.sc
        tree = bpy.data.node_groups.new("ColonLumen", "GeometryNodeTree")
        tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        g = _Graph(tree)
        k = self.tube_in = _Inputs(g)
        tau = 2 * math.pi
        length = float(sc["tube_length_mm"])
        line = g.node("GeometryNodeCurvePrimitiveLine", {"Start": (0, 0, 0), "End": (0, 0, length)})
        res = g.node("GeometryNodeResampleCurve", {"Curve": line.outputs[0], "Count": int(sc["segments_along"]) + 1})
        pos = g.node("GeometryNodeInputPosition").outputs[0]
        z = g.node("ShaderNodeSeparateXYZ", {0: pos}).outputs[2]
        store = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": res.outputs[0], "Name": "axial", "Value": z},
                       data_type="FLOAT", domain="POINT")

        def wave(amp, wavelength, phase):
            arg = g.math("ADD", g.math("MULTIPLY", g.math("DIVIDE", z, wavelength), tau), phase)
            return g.math("MULTIPLY", g.math("SINE", arg), amp)

        x = g.math("ADD", wave(k["tube.bend_amplitude_mm"], k["tube.bend_wavelength_mm"], k["tube.bend_phase_x1"]),
                   wave(k["tube.bend_amplitude2_mm"], k["tube.bend_wavelength2_mm"], k["tube.bend_phase_x2"]))
        y = g.math("ADD", wave(k["tube.bend_amplitude_mm"], k["tube.bend_wavelength_mm"], k["tube.bend_phase_y1"]),
                   wave(k["tube.bend_amplitude2_mm"], k["tube.bend_wavelength2_mm"], k["tube.bend_phase_y2"]))
        offset = g.node("ShaderNodeCombineXYZ", {0: x, 1: y, 2: 0.0}).outputs[0]
        bent = g.node("GeometryNodeSetPosition", {"Geometry": store.outputs[0], "Offset": offset})
        # slow radius change along the length (the profile is a unit circle scaled per curve point)
        radius = g.math("MULTIPLY", k["tube.radius_mm"],
                        g.math("ADD", 1.0, wave(k["tube.radius_variation"], k["tube.radius_wavelength_mm"],
                                                k["tube.radius_phase"])))
        circle = g.node("GeometryNodeCurvePrimitiveCircle", {"Resolution": int(sc["segments_around"]), "Radius": 1.0})
        # each wall vertex keeps its profile point's direction (cos, sin, 0): the mucosa pattern reads the angle
        # around the lumen from it (interpolating the vector, not the angle, leaves no seam where it wraps)
        around = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": circle.outputs[0], "Name": "around",
                                                             "Value": g.node("GeometryNodeInputPosition").outputs[0]},
                        data_type="FLOAT_VECTOR", domain="POINT")
        mesh = g.node("GeometryNodeCurveToMesh", {"Curve": bent.outputs[0], "Profile Curve": around.outputs[0],
                                                   "Scale": radius, "Fill Caps": False})
        # haustral folds: ridges at regular axial spacing, deeper on part of the ring (crescents)
        axial = g.node("GeometryNodeInputNamedAttribute", {"Name": "axial"}, data_type="FLOAT").outputs[0]
        phase = g.math("SUBTRACT", g.math("DIVIDE", axial, k["tube.fold_spacing_mm"]), k["tube.fold_phase"])
        ridge = g.math("POWER", g.math("ADD", 0.5, g.math("MULTIPLY", 0.5, g.math("COSINE", g.math("MULTIPLY", phase, tau)))),
                       k["tube.fold_sharpness"])
        pos2 = g.node("GeometryNodeInputPosition").outputs[0]
        ring_noise = g.node("ShaderNodeTexNoise", {"Vector": pos2, "W": k["tube.noise_seed"], "Scale": 0.045,
                                                   "Detail": 1.0}, noise_dimensions="4D").outputs[0]
        crescent = g.map_range(ring_noise, 0.38, 0.62, 0.0, 1.0)
        ring = g.math("SUBTRACT", 1.0, g.math("MULTIPLY", k["tube.fold_partial"], g.math("SUBTRACT", 1.0, crescent)))
        fold = g.math("MULTIPLY", g.math("MULTIPLY", ridge, ring), g.math("MULTIPLY", k["tube.fold_depth"], k["tube.radius_mm"]))
        wall_noise = g.node("ShaderNodeTexNoise", {"Vector": pos2, "W": g.math("ADD", k["tube.noise_seed"], 17.0),
                                                   "Scale": k["tube.wall_noise_scale"], "Detail": 3.0},
                            noise_dimensions="4D").outputs[0]
        bumps = g.math("MULTIPLY", g.math("SUBTRACT", wall_noise, 0.5), g.math("MULTIPLY", k["tube.wall_noise_mm"], 2.0))
        inward = g.math("ADD", fold, bumps)
        normal = g.node("GeometryNodeInputNormal").outputs[0]
        shift = g.vmath("SCALE", normal, scale=g.math("MULTIPLY", inward, -1.0))
        walled = g.node("GeometryNodeSetPosition", {"Geometry": mesh.outputs[0], "Offset": shift})
        flipped = g.node("GeometryNodeFlipFaces", {"Mesh": walled.outputs[0]})  # normals face the lumen
        smooth = g.node("GeometryNodeSetShadeSmooth", {"Mesh": flipped.outputs[0], "Shade Smooth": True})
        # generated geometry carries no material of its own: assign the mucosa explicitly
        self.mucosa, self.mucosa_in = self._mucosa_material()
        setmat = g.node("GeometryNodeSetMaterial", {"Geometry": smooth.outputs[0], "Material": self.mucosa})
        out = g.node("NodeGroupOutput")
        g.connect(setmat.outputs[0], out.inputs[0])

        # The tree is evaluated once a frame, in the viewport depsgraph that posing casts its rays in. The
        # render sees a plain mesh (`self.tube`) that takes the evaluated positions: with the modifier on the
        # rendered object, the render's own depsgraph evaluated the tree a second time every frame.
        mesh_data = bpy.data.meshes.new("lumen_nodes")
        self.tube_nodes = bpy.data.objects.new("lumen_nodes", mesh_data)
        self.scene.collection.objects.link(self.tube_nodes)
        mod = self.tube_nodes.modifiers.new("lumen", "NODES")
        mod.node_group = tree
        mesh_data.materials.append(self.mucosa)
        self.tube_nodes.hide_render = True
        self.tube = None  # made from the first evaluation (the topology never changes, only the positions)

    # ---- mucosa: shader nodes over a pattern that is baked once (default) or evaluated per sample
    def _mucosa_material(self):
        bpy, sc, tx = self.bpy, self.sc, self.cfg["textures"]
        mat = bpy.data.materials.new("mucosa")
        nt = mat.node_tree
        nt.nodes.clear()
        g = _Graph(nt)
        k = _Inputs(g)
        # where on the wall: the angle around the lumen and the axial position, mapped onto the pattern's
        # reference cylinder and turned / shifted per frame (pose sets pattern.*)
        around = g.node("ShaderNodeAttribute", attribute_name="around", attribute_type="GEOMETRY").outputs["Vector"]
        xyz = g.node("ShaderNodeSeparateXYZ", {0: around})
        theta = g.math("ADD", g.math("ARCTAN2", xyz.outputs[1], xyz.outputs[0]), k["pattern.angle"])
        co = g.node("ShaderNodeTexCoord").outputs["Object"]
        z = g.node("ShaderNodeSeparateXYZ", {0: co}).outputs[2]
        axial = g.math("MULTIPLY_ADD", z, k["pattern.axial_scale"], k["pattern.axial_offset"])
        if tx["mode"] == "baked":
            self.pattern_image = bpy.data.images.new("mucosa_pattern", 1, 1, alpha=True, float_buffer=False)
            self.pattern_image.colorspace_settings.name = "Non-Color"  # data, not colour: no sRGB decoding
            self.pattern_image.alpha_mode = "CHANNEL_PACKED"  # alpha is a fourth data channel, never premultiplied
            channels = _baked_channels(g, theta, axial, k["pattern.lane"], self.pattern_image, self.cfg)
        elif tx["mode"] == "procedural":
            self.pattern_image = None
            channels = pattern_channels(g, theta, axial, k["pattern.lane"], k["pattern.vessel_scale"], tx)
        else:
            raise ValueError(f"render.textures.mode: unknown mode {tx['mode']!r} (baked, procedural)")
        seed = k["mucosa.bump_seed"]
        # mottled base colour
        fac = g.math("MULTIPLY", g.map_range(channels["mottle"], 0.3, 0.7), k["mucosa.mottle"])
        base = g.mix_rgb(fac, k.rgb("mucosa.colour"), k.rgb("mucosa.colour_dark"))
        # vessels: the main network (width in its cells), and finer branches that grow out of it; the patch
        # mask decides how much of the wall shows them (vascular density)
        width = k["vessels.width"]
        main = g.map_range(channels["main"], width, 0.0, 0.0, 1.0, "SMOOTHSTEP")
        near = g.map_range(channels["main"], float(tx["branch_reach"]), 0.0, 0.0, 1.0, "SMOOTHSTEP")
        branch = g.map_range(channels["branch"], g.math("MULTIPLY", width, float(tx["branch_width"])), 0.0, 0.0, 1.0,
                             "SMOOTHSTEP")
        branch = g.math("MULTIPLY", g.math("MULTIPLY", branch, near), float(tx["branch_contrast"]))
        thresh = g.math("SUBTRACT", 0.75, g.math("MULTIPLY", k["vessels.density"], 0.6))
        shown = g.map_range(channels["patch"], thresh, g.math("ADD", thresh, 0.12), 0.0, 1.0, "SMOOTHSTEP")
        vessels = g.math("MULTIPLY", g.math("MULTIPLY", g.math("MAXIMUM", main, branch), shown), k["vessels.contrast"])
        coloured = g.mix_rgb(vessels, base, k.rgb("vessels.colour"))
        # fake translucency: warmer, lighter where the surface turns away (light scattered under the surface)
        facing = g.node("ShaderNodeLayerWeight", {"Blend": 0.4}).outputs["Facing"]
        rim = g.math("MULTIPLY", facing, k["mucosa.translucency"])
        coloured = g.mix_rgb(rim, coloured, k.rgb("mucosa.colour_rim"))
        # wet surface: small domes of mucus (where a noise rises above a threshold) under a glossy coat; each
        # dome holds every normal direction, so each catches the tip light as a glint (the bump node evaluates
        # its height three times a sample: one cheap noise; the wall's larger undulations are geometry already)
        noise = g.node("ShaderNodeTexNoise", {"Vector": _seeded(g, co, seed), "Scale": float(sc["mucosa_bump_scale"]),
                                              "Detail": 1.0}, noise_dimensions="3D").outputs[0]
        low = g.math("SUBTRACT", 0.7, g.math("MULTIPLY", k["mucosa.droplets"], 0.12))  # more droplets, lower
        height = g.map_range(noise, low, g.math("ADD", low, 0.1), 0.0, 1.0, "SMOOTHSTEP")
        bump = g.node("ShaderNodeBump", {"Strength": k["mucosa.bump_strength"],
                                         "Distance": float(sc["mucosa_bump_distance"]), "Height": height})
        bsdf = g.node("ShaderNodeBsdfPrincipled", {
            "Base Color": coloured, "Roughness": k["mucosa.roughness"], "Normal": bump.outputs[0],
            "Coat Weight": k["mucosa.wetness"], "Coat Roughness": k["mucosa.coat_roughness"], "Coat IOR": 1.33,
            "Coat Normal": bump.outputs[0], "Specular IOR Level": 0.5,
        })
        if self.cfg["engine"]["subsurface"]:
            g.connect(0.3, bsdf.inputs["Subsurface Weight"])
            g.connect((1.0, 0.35, 0.2), bsdf.inputs["Subsurface Radius"])
            g.connect(1.0, bsdf.inputs["Subsurface Scale"])
        out = g.node("ShaderNodeOutputMaterial")
        g.connect(bsdf.outputs[0], out.inputs["Surface"])
        return mat, k

    # ---- the baked pattern
    def bake_pattern(self, lane: int) -> np.ndarray:
        """Evaluate pattern `lane` on its texel grid with geometry nodes (the same texture nodes the
        procedural shader runs per sample). Returns (rows, cols, 4) uint8; see `pattern_grid`."""
        bpy, tx = self.bpy, self.cfg["textures"]
        rows, cols, texel_theta, texel_axial = pattern_grid(self.cfg)
        tree = bpy.data.node_groups.new("MucosaPatternBake", "GeometryNodeTree")
        tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        g = _Graph(tree)
        points = g.node("GeometryNodeMeshLine", {"Count": rows * cols})
        index = g.node("GeometryNodeInputIndex").outputs[0]
        # texel (row, col) of point `index`, row-major; +0.5 keeps floor() exact in float arithmetic
        row = g.math("FLOOR", g.math("DIVIDE", g.math("ADD", index, 0.5), float(cols)))
        col = g.math("SUBTRACT", index, g.math("MULTIPLY", row, float(cols)))
        # row 0 and the last row repeat the other end of the circle, so bilinear lookups wrap without a seam
        theta = g.math("MULTIPLY", g.math("SUBTRACT", row, 0.5), texel_theta)
        axial = g.math("MULTIPLY", g.math("ADD", col, 0.5), texel_axial)
        ch = pattern_channels(g, theta, axial, float(lane), lane_vessel_scale(tx, lane), tx)
        packed = g.node("ShaderNodeCombineXYZ", {0: ch["mottle"], 1: ch["main"], 2: ch["branch"]}).outputs[0]
        store = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": points.outputs[0], "Name": "rgb", "Value": packed},
                       data_type="FLOAT_VECTOR", domain="POINT")
        store = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": store.outputs[0], "Name": "a", "Value": ch["patch"]},
                       data_type="FLOAT", domain="POINT")
        g.connect(store.outputs[0], g.node("NodeGroupOutput").inputs[0])
        mesh = bpy.data.meshes.new("mucosa_pattern_bake")
        ob = bpy.data.objects.new("mucosa_pattern_bake", mesh)
        ob.hide_render = True
        self.scene.collection.objects.link(ob)
        ob.modifiers.new("bake", "NODES").node_group = tree
        try:
            depsgraph = bpy.context.evaluated_depsgraph_get()
            depsgraph.update()
            ev = ob.evaluated_get(depsgraph)
            me = ev.to_mesh()
            n = rows * cols
            if len(me.vertices) != n:
                raise RuntimeError(f"pattern bake produced {len(me.vertices)} points, expected {n}")
            rgb = np.empty(n * 3, np.float32)
            me.attributes["rgb"].data.foreach_get("vector", rgb)
            alpha = np.empty(n, np.float32)
            me.attributes["a"].data.foreach_get("value", alpha)
            ev.to_mesh_clear()
        finally:
            bpy.data.objects.remove(ob)
            bpy.data.meshes.remove(mesh)
            bpy.data.node_groups.remove(tree)
        values = np.concatenate([rgb.reshape(n, 3), alpha[:, None]], axis=1)
        values[:, 1:3] /= VESSEL_RANGE  # distances to a vessel: [0, VESSEL_RANGE] cells -> [0, 1]
        return np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(rows, cols, 4)

    def set_pattern(self, lanes: Mapping[int, np.ndarray]) -> None:
        """Load baked patterns ({lane: `bake_pattern(lane)`}) into the texture the mucosa looks up. Lanes no
        frame of this run shows may be left out (their rows stay empty)."""
        rows, cols = pattern_grid(self.cfg)[:2]
        empty = np.zeros((rows, cols, 4), np.uint8)
        # lane k occupies rows k*rows .. (k+1)*rows - 1
        texture = np.concatenate([lanes.get(k, empty) for k in range(int(self.cfg["textures"]["patterns"]))], axis=0)
        h, w = texture.shape[:2]
        img = self.pattern_image
        img.scale(w, h)
        # Blender images store rows bottom-up; v = 0 is row 0 of our array
        img.pixels.foreach_set((texture.astype(np.float32) / 255.0).ravel())
        img.update()
        self.pattern_lanes = frozenset(lanes)

    # ---- lesions: three meshes, one shared lobulation modifier and material
    def _build_lesions(self) -> None:
        import bmesh

        bpy, sc = self.bpy, self.sc
        seg = int(sc["lesion_segments"])
        tree = bpy.data.node_groups.new("LesionShape", "GeometryNodeTree")
        tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        g = _Graph(tree)
        k = self.lesion_shape_in = _Inputs(g)
        gin, gout = g.node("NodeGroupInput"), g.node("NodeGroupOutput")
        pos = g.node("GeometryNodeInputPosition").outputs[0]
        noise = g.node("ShaderNodeTexNoise", {"Vector": _seeded(g, pos, k["lesion.seed"]), "Scale": 1.6, "Detail": 2.0},
                       noise_dimensions="3D").outputs[0]
        amount = g.math("MULTIPLY", g.math("SUBTRACT", noise, 0.5), g.math("MULTIPLY", k["lesion.lobulation"], 2.0))
        above = g.math("GREATER_THAN", g.node("ShaderNodeSeparateXYZ", {0: pos}).outputs[2], 0.0)
        shift = g.vmath("SCALE", g.node("GeometryNodeInputNormal").outputs[0], scale=g.math("MULTIPLY", amount, above))
        setp = g.node("GeometryNodeSetPosition", {"Geometry": gin.outputs[0], "Offset": shift})
        smooth = g.node("GeometryNodeSetShadeSmooth", {"Mesh": setp.outputs[0], "Shade Smooth": True})
        g.connect(smooth.outputs[0], gout.inputs[0])

        self.lesion_mat, self.lesion_mat_in = self._lesion_material()
        self.lesions = {}
        for kind in ("sessile", "pedunculated", "flat"):
            bm = bmesh.new()
            if kind == "pedunculated":
                # unit frame: width 1, height 1 (z = 0 at the wall); stalk then a round head
                bmesh.ops.create_cone(bm, cap_ends=True, segments=seg // 2, radius1=0.2, radius2=0.16, depth=0.8,
                                      matrix=_translation(0, 0, 0.2))
                bmesh.ops.create_uvsphere(bm, u_segments=seg, v_segments=seg // 2, radius=0.5,
                                          matrix=_translation(0, 0, 0.5))
            else:
                # unit sphere -> dome after scaling (half of it sits inside the wall)
                bmesh.ops.create_uvsphere(bm, u_segments=seg, v_segments=seg // 2, radius=1.0)
            me = bpy.data.meshes.new(f"lesion_{kind}")
            bm.to_mesh(me)
            bm.free()
            me.materials.append(self.lesion_mat)
            ob = bpy.data.objects.new(f"lesion_{kind}", me)
            ob.pass_index = LESION_INDEX
            mod = ob.modifiers.new("shape", "NODES")
            mod.node_group = tree
            ob.hide_render = True
            self.scene.collection.objects.link(ob)
            self.lesions[kind] = ob

    def _lesion_material(self):
        bpy = self.bpy
        mat = bpy.data.materials.new("lesion")
        nt = mat.node_tree
        nt.nodes.clear()
        g = _Graph(nt)
        k = _Inputs(g)
        co = g.node("ShaderNodeTexCoord").outputs["Object"]  # object space: texture scales with the lesion
        noise = g.node("ShaderNodeTexNoise", {"Vector": _seeded(g, co, k["lesion.seed"]), "Scale": k["lesion.texture_scale_obj"],
                                              "Detail": 2.0, "Roughness": 0.6}, noise_dimensions="3D").outputs[0]
        fac = g.math("MULTIPLY", g.map_range(noise, 0.35, 0.65), g.math("MULTIPLY", k["lesion.texture_strength"], 0.6))
        colour = g.mix_rgb(fac, k.rgb("lesion.colour"), k.rgb("lesion.colour_dark"))
        bump = g.node("ShaderNodeBump", {"Strength": g.math("MULTIPLY", k["lesion.texture_strength"], 0.5),
                                         "Distance": 0.05, "Height": noise})
        bsdf = g.node("ShaderNodeBsdfPrincipled", {
            "Base Color": colour, "Roughness": 0.4, "Normal": bump.outputs[0], "Coat Weight": 0.8,
            "Coat Roughness": 0.05, "Coat IOR": 1.33, "Coat Normal": bump.outputs[0],
        })
        out = g.node("ShaderNodeOutputMaterial")
        g.connect(bsdf.outputs[0], out.inputs["Surface"])
        return mat, k

    # ---- camera + light
    def _build_camera(self) -> None:
        bpy, sc, endo = self.bpy, self.sc, self.cfg["endoscope"]
        cam_data = bpy.data.cameras.new("endoscope")
        cam_data.type = "PANO"
        cam_data.panorama_type = "FISHEYE_EQUISOLID"
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = float(endo["sensor_width_mm"])
        cam_data.clip_start = float(sc["near_clip_mm"])
        cam_data.clip_end = float(sc["far_clip_mm"])
        self.camera = bpy.data.objects.new("endoscope", cam_data)
        self.scene.collection.objects.link(self.camera)
        self.scene.camera = self.camera
        light_data = bpy.data.lights.new("tip_light", "POINT")
        light_data.shadow_soft_size = float(endo["light_soft_radius_mm"])
        self.light = bpy.data.objects.new("tip_light", light_data)
        self.scene.collection.objects.link(self.light)

    # ---- compositor: write Combined, object index and depth to one uncompressed EXR per frame
    def _build_compositor(self) -> None:
        bpy = self.bpy
        ng = bpy.data.node_groups.new("passes", "CompositorNodeTree")
        self.scene.compositing_node_group = ng
        rl = ng.nodes.new("CompositorNodeRLayers")
        fo = ng.nodes.new("CompositorNodeOutputFile")
        fo.directory = self.tmpdir + os.sep
        fo.file_name = "passes"
        fo.format.media_type = "MULTI_LAYER_IMAGE"
        fo.format.file_format = "OPEN_EXR_MULTILAYER"
        fo.format.exr_codec = "NONE"
        fo.format.color_depth = "32"
        fo.format.use_exr_interleave = True  # one part, so our small reader handles it
        for name, kind, src in (("rgb", "RGBA", "Image"), ("index", "FLOAT", "Object Index"), ("depth", "FLOAT", "Depth")):
            fo.file_output_items.new(kind, name)
            ng.links.new(rl.outputs[src], fo.inputs[name])
        self.exr_path = os.path.join(self.tmpdir, "passes.exr")

    # ------------------------------------------------------------------------- per frame
    def _ray(self, origin: np.ndarray, direction: np.ndarray, depsgraph) -> tuple[np.ndarray, np.ndarray, float] | None:
        from mathutils import Vector

        ok, loc, normal, _ = self.tube_nodes.ray_cast(Vector(origin.tolist()), Vector(_unit(direction).tolist()),
                                                depsgraph=depsgraph)
        if not ok:
            return None
        loc = np.array(loc[:])
        return loc, np.array(normal[:]), float(np.linalg.norm(loc - origin))

    def pose(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """Set every node input, transform and visibility for one frame; return derived placement values."""
        bpy = self.bpy
        for name in self.tube_in.nodes:
            self.tube_in.nodes[name].outputs[0].default_value = float(p[name])
        mucosa_rgb = _hsv(p["mucosa.hue"], p["mucosa.saturation"], p["mucosa.value"])
        rgb_values = {
            "mucosa.colour": mucosa_rgb,
            "mucosa.colour_dark": _hsv(p["mucosa.hue"] - 0.015, min(1.0, p["mucosa.saturation"] + 0.15),
                                       p["mucosa.value"] * 0.7),
            "mucosa.colour_rim": _hsv(p["mucosa.hue"] + 0.02, p["mucosa.saturation"] * 0.8,
                                      min(1.0, p["mucosa.value"] * 1.15)),
            "vessels.colour": _hsv(p["vessels.hue"], p["vessels.saturation"], p["vessels.value"]),
        }
        pattern = self._pattern_inputs(p)
        self._set_inputs(self.mucosa_in, {**p, **pattern}, rgb_values)
        size = float(p["lesion.size_mm"])
        lesion_rgb = {
            "lesion.colour": _hsv(p["lesion.hue"], p["lesion.saturation"], p["lesion.value"]),
            "lesion.colour_dark": _hsv(p["lesion.hue"] - 0.02, min(1.0, p["lesion.saturation"] + 0.15),
                                       p["lesion.value"] * 0.72),
        }
        lesion_vals = dict(p)
        lesion_vals["lesion.texture_scale_obj"] = float(p["lesion.texture_scale"]) * size
        self._set_inputs(self.lesion_mat_in, lesion_vals, lesion_rgb)
        self._set_inputs(self.lesion_shape_in, p, {})

        depsgraph = bpy.context.evaluated_depsgraph_get()
        depsgraph.update()
        self._sync_lumen(depsgraph)
        derived: dict[str, Any] = {}
        cam_pos, forward, up = self._pose_camera(p, depsgraph, derived)
        # light on the scope tip, slightly above the lens
        self.light.location = (cam_pos + up * float(self.cfg["endoscope"]["light_offset_mm"])).tolist()
        warm = float(p["light.warmth"])
        self.light.data.color = (1.0, 1.0 - 0.3 * warm, 1.0 - warm)
        self.light.data.energy = float(p["light.power_w"]) * float(self.cfg["endoscope"]["light_power_scale"])

        for ob in self.lesions.values():
            ob.hide_render = True
        derived.update({"mucosa.pattern_index": int(pattern["pattern.lane"]),
                        "vessels.scale_per_mm": pattern["pattern.vessel_scale"] * pattern["pattern.axial_scale"],
                        "lesion.placed": 0, "lesion.distance_mm": -1.0})
        if int(p["lesion.present"]):
            self._place_lesion(p, depsgraph, cam_pos, forward, up, derived)
        return derived

    def _sync_lumen(self, depsgraph) -> None:
        """Give the rendered lumen this frame's evaluated wall positions (the mesh, with its attributes and
        material, is made from the first evaluation; the topology never changes)."""
        ev = self.tube_nodes.evaluated_get(depsgraph)
        if self.tube is None:
            self.tube = self.bpy.data.objects.new("lumen", self.bpy.data.meshes.new_from_object(ev))
            self.tube.pass_index = 0
            self.tube.hide_viewport = True  # not evaluated (or needed) in the viewport depsgraph
            self.scene.collection.objects.link(self.tube)
            self._lumen_co = np.empty(len(self.tube.data.vertices) * 3, np.float32)
            return
        src, dst = ev.data.vertices, self.tube.data.vertices
        if len(src) != len(dst):
            raise RuntimeError(f"lumen: the geometry nodes made {len(src)} vertices, the rendered mesh has {len(dst)}")
        src.foreach_get("co", self._lumen_co)
        dst.foreach_set("co", self._lumen_co)
        self.tube.data.update()

    def _pattern_inputs(self, p: Mapping[str, Any]) -> dict[str, float]:
        """Where this frame's wall lies on the mucosa pattern: which pattern, turned and shifted how, and the
        axial scale that keeps its cells round on a lumen of this radius."""
        tx = self.cfg["textures"]
        lane = pattern_lane(self.cfg, p)
        scale = float(tx["reference_radius_mm"]) / float(p["tube.radius_mm"])
        # the wall from a little behind the lens to the far end of the tube must lie on [0, length_mm]
        first = (float(p["camera.axial_mm"]) - PATTERN_MARGIN_MM) * scale
        free = float(tx["length_mm"]) - (float(self.sc["tube_length_mm"]) * scale - first)
        offset = -first + max(free, 0.0) * float(p["mucosa.pattern_shift"])
        return {"pattern.lane": float(lane), "pattern.angle": math.radians(float(p["mucosa.pattern_angle_deg"])),
                "pattern.axial_scale": scale, "pattern.axial_offset": offset,
                "pattern.vessel_scale": lane_vessel_scale(tx, lane)}

    def _set_inputs(self, k: _Inputs, p: Mapping[str, Any], rgb: Mapping[str, Any]) -> None:
        for name, node in k.nodes.items():
            if name.endswith("#rgb"):
                node.outputs[0].default_value = rgb[name[:-4]]
            else:
                node.outputs[0].default_value = float(p[name])

    def _pose_camera(self, p, depsgraph, derived):
        z = float(p["camera.axial_mm"])
        centre = centreline(p, z)
        tangent = _unit(centreline(p, z + 0.5) - centreline(p, z - 0.5))
        side = _unit(np.cross(tangent, np.array([0.0, 1.0, 0.0])))
        upv = np.cross(side, tangent)
        a = math.radians(float(p["camera.offset_angle_deg"]))
        direction = side * math.cos(a) + upv * math.sin(a)
        want = float(p["camera.offset"]) * float(p["tube.radius_mm"])
        hit = self._ray(centre, direction, depsgraph)
        room = (hit[2] if hit else want + 1e3) - float(self.sc["min_wall_clearance_mm"])
        off = max(0.0, min(want, room))
        cam_pos = centre + direction * off
        derived["camera.offset_mm"] = off
        forward = _rotate(tangent, upv, math.radians(float(p["camera.yaw_deg"])))
        forward = _rotate(forward, side, math.radians(float(p["camera.pitch_deg"])))
        right = _unit(np.cross(forward, upv))
        up = _unit(np.cross(right, forward))
        roll = math.radians(float(p["camera.roll_deg"]))
        right, up = _rotate(right, forward, roll), _rotate(up, forward, roll)
        from mathutils import Matrix

        rot = Matrix([[right[i], up[i], -forward[i]] for i in range(3)])  # camera looks down -Z, +Y up
        self.camera.matrix_world = Matrix.Translation(cam_pos.tolist()) @ rot.to_4x4()
        # equisolid fisheye: r = 2 f sin(theta / 2); fov spans the frame width
        fov = math.radians(float(p["camera.fov_deg"]))
        cam = self.camera.data
        cam.fisheye_lens = float(cam.sensor_width) / (4.0 * math.sin(fov / 4.0))
        # trace only the pixels inside the scope's border (black outside anyway): r = rho * half width
        # <=> sin(theta / 2) = rho * sin(fov / 4); two pixels of margin
        if p["endoscope.border"] == "circle":
            rho = float(p["endoscope.border_radius"])
        else:
            rho = math.hypot(1.0, 1.0 - 2.0 * float(self.cfg["endoscope"]["octagon_cut"]))
        rho += 4.0 / float(self.cfg["resolution"])
        cam.fisheye_fov = min(math.radians(359.0), 4.0 * math.asin(min(1.0, rho * math.sin(fov / 4.0))))
        return cam_pos, forward, up

    def _place_lesion(self, p, depsgraph, cam_pos, forward, up, derived) -> None:
        from mathutils import Matrix, Vector

        if p["lesion.placement"] == "view":
            # a ray from the lens, inside (or just outside) the field of view: the lesion sits where it lands
            half = math.radians(float(p["camera.fov_deg"])) / 2.0
            off = float(p["lesion.view_offaxis"]) * half
            az = math.radians(float(p["lesion.view_azimuth_deg"]))
            right = _unit(np.cross(forward, up))
            d = _rotate(forward, right * math.cos(az) + up * math.sin(az), off)
            hit = self._ray(cam_pos, d, depsgraph)
        elif p["lesion.placement"] == "axial":
            z = float(p["lesion.axial_mm"])
            centre = centreline(p, z)
            tangent = _unit(centreline(p, z + 0.5) - centreline(p, z - 0.5))
            side = _unit(np.cross(tangent, np.array([0.0, 1.0, 0.0])))
            a = math.radians(float(p["lesion.angle_deg"]))
            hit = self._ray(centre, side * math.cos(a) + np.cross(side, tangent) * math.sin(a), depsgraph)
        else:
            raise ValueError(f"render.params.lesion.placement: unknown placement {p['lesion.placement']!r}")
        if hit is None:
            return
        loc, normal, _ = hit
        axis_pt = centreline(p, float(loc[2]))
        if np.dot(normal, axis_pt - loc) < 0:  # make it point into the lumen
            normal = -normal
        normal = _unit(normal)
        ob = self.lesions[p["lesion.type"]]
        size, height = float(p["lesion.size_mm"]), float(p["lesion.height_mm"])
        if p["lesion.type"] == "pedunculated":
            scale = (size, size, height)
        else:
            scale = (size / 2.0, size / 2.0, height)
        tilt_axis = _rotate(_unit(np.cross(normal, [0.0, 0.0, 1.0]) if abs(normal[2]) < 0.99 else np.array([1.0, 0, 0])),
                            normal, math.radians(float(p["lesion.tilt_azimuth_deg"])))
        zaxis = _rotate(normal, tilt_axis, math.radians(float(p["lesion.tilt_deg"])))
        quat = Vector(zaxis.tolist()).to_track_quat("Z", "Y")
        spin = Matrix.Rotation(math.radians(float(p["lesion.spin_deg"])), 4, "Z")
        base = loc - normal * float(self.sc["lesion_sink_mm"])
        ob.matrix_world = (Matrix.Translation(base.tolist()) @ quat.to_matrix().to_4x4() @ spin
                           @ Matrix.Diagonal((*scale, 1.0)))
        ob.hide_render = False
        derived["lesion.placed"] = 1
        derived["lesion.distance_mm"] = float(np.linalg.norm(loc - cam_pos))

    def render(self, p: Mapping[str, Any], cycles_seed: int) -> dict[str, Any]:
        """Render one frame. Returns {"rgb": HxWx3 linear float32, "index": HxW float32, "depth": HxW float32,
        "derived": {...}}. Row 0 is the top of the image."""
        if self.pattern_image is not None and pattern_lane(self.cfg, p) not in self.pattern_lanes:
            raise RuntimeError(f"textures.mode=baked: pattern {pattern_lane(self.cfg, p)} of this frame is not loaded "
                               f"(loaded: {sorted(self.pattern_lanes)}); bake it and pass it to set_pattern()")
        derived = self.pose(p)
        self.scene.cycles.seed = int(cycles_seed)
        if os.path.exists(self.exr_path):
            os.remove(self.exr_path)
        self.bpy.ops.render.render()
        ch = read_exr(self.exr_path)
        rgb = np.stack([ch["rgb.R"], ch["rgb.G"], ch["rgb.B"]], axis=-1)
        return {"rgb": rgb, "index": ch["index.V"], "depth": ch["depth.V"], "derived": derived}

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmpdir, ignore_errors=True)


def texel_mm(cfg: Mapping) -> float:
    """The baked pattern's texel: `textures.texel_mm`, or (null) 0.4 mm at 128 px, finer for larger frames."""
    t = cfg["textures"]["texel_mm"]
    return float(t) if t is not None else 0.4 * 128.0 / float(cfg["resolution"])


def pattern_grid(cfg: Mapping) -> tuple[int, int, float, float]:
    """Texels of one baked pattern: (rows, cols, radians a row, mm a column). Rows go around the reference
    circle plus one repeated row at each end; columns along `length_mm`."""
    tx = cfg["textures"]
    texel = texel_mm(cfg)
    around = max(8, int(round(2.0 * math.pi * float(tx["reference_radius_mm"]) / texel)))
    cols = max(8, int(round(float(tx["length_mm"]) / texel)))
    return around + 2, cols, 2.0 * math.pi / around, float(tx["length_mm"]) / cols


def lane_vessel_scale(tx: Mapping, lane: int) -> float:
    """Vessel cells per mm (on the reference radius) of pattern `lane`: log-spaced over `vessel_scale`."""
    lo, hi = (float(v) for v in tx["vessel_scale"])
    n = int(tx["patterns"])
    return lo * (hi / lo) ** (lane / (n - 1)) if n > 1 else math.sqrt(lo * hi)


def pattern_channels(g: _Graph, theta, axial, lane, scale, tx: Mapping) -> dict[str, Any]:
    """The mucosa pattern at (angle theta, axial mm) of the reference cylinder, as sockets: mottle and patch
    (noise, 0..1), main and branch (distance to the nearest main / fine vessel, in that network's cells).

    Built only from nodes that shader and geometry-node trees share, so the shader evaluates exactly the
    function that `ColonScene.bake_pattern` bakes. `lane` and `scale` are numbers or sockets."""
    r0 = float(tx["reference_radius_mm"])
    p = g.node("ShaderNodeCombineXYZ", {0: g.math("MULTIPLY", g.math("COSINE", theta), r0),
                                        1: g.math("MULTIPLY", g.math("SINE", theta), r0), 2: axial}).outputs[0]
    p = g.vmath("ADD", p, g.vmath("SCALE", LANE_SHIFT, scale=lane))

    def noise(shift, freq, detail):
        return g.node("ShaderNodeTexNoise", {"Vector": g.vmath("ADD", p, shift), "Scale": freq, "Detail": detail},
                      noise_dimensions="3D").outputs[0]

    def warped(q, shift, freq, cells):
        # one scalar noise shifts the lookup along a fixed oblique direction: meandering cell edges
        amount = g.math("MULTIPLY", g.math("SUBTRACT", noise(shift, freq, 1.0), 0.5),
                        g.math("DIVIDE", float(tx["vessel_distortion"]) * 1.7, cells))
        return g.vmath("ADD", q, g.vmath("SCALE", (0.62, 0.55, 0.56), scale=amount))

    def edges(q, cells):
        return g.node("ShaderNodeTexVoronoi", {"Vector": q, "Scale": cells, "Randomness": 1.0},
                      feature="DISTANCE_TO_EDGE", voronoi_dimensions="3D").outputs["Distance"]

    fine = g.math("MULTIPLY", scale, float(tx["branch_scale"]))
    main_at = warped(p, (37.1, 11.3, -5.9), 0.08, scale)
    branch_at = warped(main_at, (-21.7, 43.9, 8.2), 0.25, fine)
    return {"mottle": noise((0.0, 0.0, 0.0), 0.06, 3.0), "main": edges(main_at, scale),
            "branch": edges(branch_at, fine), "patch": noise((61.3, -29.4, 17.6), 0.05, 2.0)}


def _baked_channels(g: _Graph, theta, axial, lane, image, cfg: Mapping) -> dict[str, Any]:
    """The same channels as `pattern_channels`, read from the baked texture (lanes stacked bottom-up)."""
    tx = cfg["textures"]
    rows = pattern_grid(cfg)[0]
    around = g.math("FLOORED_MODULO", theta, 2.0 * math.pi)
    # row r of a lane holds angle (r - 0.5) x step: the angle sits at row position angle / step + 0.5, whose
    # texel-centre coordinate is one more (texel r spans [r, r + 1))
    row = g.math("MULTIPLY_ADD", around, (rows - 2) / (2.0 * math.pi), 1.0)
    v = g.math("DIVIDE", g.math("MULTIPLY_ADD", lane, float(rows), row), float(rows * int(tx["patterns"])))
    u = g.math("DIVIDE", axial, float(tx["length_mm"]))
    uv = g.node("ShaderNodeCombineXYZ", {0: u, 1: v, 2: 0.0}).outputs[0]
    tex = g.node("ShaderNodeTexImage", {"Vector": uv}, interpolation="Linear", extension="EXTEND")
    tex.image = image
    rgb = g.node("ShaderNodeSeparateColor", {0: tex.outputs["Color"]})
    return {"mottle": rgb.outputs[0], "main": g.math("MULTIPLY", rgb.outputs[1], VESSEL_RANGE),
            "branch": g.math("MULTIPLY", rgb.outputs[2], VESSEL_RANGE), "patch": tex.outputs["Alpha"]}


def _seeded(g: _Graph, co, seed):
    """3D texture coordinates shifted by a seed (cheaper than 4D textures with W = seed)."""
    return g.vmath("ADD", co, g.vmath("SCALE", (0.913, 1.37, 0.771), scale=seed))


def _translation(x: float, y: float, z: float):
    from mathutils import Matrix

    return Matrix.Translation((x, y, z))
