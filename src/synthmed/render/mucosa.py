"""The mucosa: its material (mottled colour, vessels and a fine capillary net, fake translucency, wet droplets
under a coat) over a pattern that is baked once per dataset (`textures.mode: baked`) or evaluated per sample
(`procedural`). The pattern's nodes are `pattern.py`'s; the vessel tree is grown in numpy (`vessels.py`) and read
from a texture in both modes. The wall's colour over the pattern (`wall_colour`) is shared with the lesions'
material, which the wall runs on over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from synthmed.render.camera import fisheye_focal_px
from synthmed.render.config import pattern_lane
from synthmed.render.lumen import TAU
from synthmed.render.nodes import (
    NodeGraph,
    NodeInputs,
    as_vector,
    hsv_colour,
    material_output,
    new_geometry_tree,
    new_material,
    shifted_colour,
    shifted_toward,
)
from synthmed.render.pattern import pattern_channels, wall_pattern
from synthmed.render.vessels import CHANNELS, lane_vessel_scale, pattern_grid, texel_mm, tree_texels


def droplet_bump(graph: NodeGraph, position, knob: NodeInputs, cfg: Mapping, normal=None, ripple=None):
    """The wet film's normal: small domes of mucus (where a seeded noise of `position`, in mm, rises above a
    threshold). Each dome holds every normal direction, so each catches the tip light as a glint. The mucosa and
    the lesions (reading the world position: the lumen's object space is the world's) share one field, so the
    droplets run on over a lesion. Used as the coat's normal only: the tissue under the film shades as it is
    (tilting it too made a skin of goose bumps). A slow ripple of the film (`shader.coat_ripple_*`: a noise of
    `coat_ripple_scale` cells per mm, its height x `coat_ripple_gain` added to the domes') breaks the wall's
    glints into irregular streaks and patches, as a wet, uneven surface shows them. `normal`: the surface's own
    (bumped) normal, if any; `ripple`: the ripple noise as a socket (the mucosa's baked pattern channel: an image
    lookup costs far less than a 3D noise the bump evaluates three times a sample), else a noise of `position`."""
    geometry, shader = cfg["scene"], cfg["shader"]
    noise = graph.noise(graph.seeded(position, knob["mucosa.bump_seed"]), float(geometry["mucosa_bump_scale"]),
                        float(shader["droplet_noise_detail"]))
    low = graph.math("SUBTRACT", float(shader["droplet_threshold"]),
                     graph.math("MULTIPLY", knob["mucosa.droplets"], float(shader["droplet_density_gain"])))
    height = graph.map_range(noise, low, graph.math("ADD", low, float(shader["droplet_band"])), 0.0, 1.0, "SMOOTHSTEP")
    if float(shader["coat_ripple_gain"]):
        if ripple is None:
            ripple = graph.noise(graph.seeded(position, graph.math("ADD", knob["mucosa.bump_seed"], 7.0)),
                                 float(shader["coat_ripple_scale"]), float(shader["coat_ripple_detail"]))
        height = graph.math("ADD", height, graph.math("MULTIPLY", ripple, float(shader["coat_ripple_gain"])))
    inputs = {"Strength": knob["mucosa.bump_strength"], "Distance": float(geometry["mucosa_bump_distance"]),
              "Height": height}
    if normal is not None:
        inputs["Normal"] = normal
    return graph.node("ShaderNodeBump", inputs).outputs[0]


def groove_bump(graph: NodeGraph, position, knob: NodeInputs, cfg: Mapping, colour, dark, patches=None):
    """The tissue's fine grooves (the lines that part the mucosa into small areas, seen where the light glints):
    the level-0.5 lines of a noise of `shader.groove_scale` x `params.mucosa.grain_scale` cells per mm,
    `groove_width` wide (noise units): they meander and close on themselves. Returns (colour, normal): `colour`
    darkened along them toward `dark` (by up to `groove_darkening` x `params.mucosa.grain`) and the tissue's
    normal, sunk along them (`groove_strength` x `mucosa.grain`, `groove_depth_mm`; that relief x 1 - c .. 1 + c
    across the wall by a slow noise, c = `grain_patch_contrast`: close to a glint the grooves show in patches, not
    as one web; the colour is left even: its patches kept the CNN 4-17 epochs longer on the chance plateau,
    docs/render.md, versions 10 and 11). A noise `groove_cut_scale` times finer lifts the lines back to the surface
    where it is below `groove_cut_edges` (by `groove_cut`, 0: none, version 11): closed loops become open strokes
    (version 12); since version 18 the cut scales the bump's strength, not its height (the cut noise read once a
    sample, not three times). `patches`: the relief's slow noise as a socket (the baked pattern's channel), else
    a noise of `position`. With both shader gains 0, `colour` and the surface's normal, no nodes added. The mucosa
    and the lesions read the world position (the lumen's object space is the world's), so the grooves run on over
    a lesion's foot. (A Voronoi field's
    cell edges looked like a crackle glaze and cost about a third of the frame rate: 3D cell searches, three a
    sample for the bump.)"""
    shader = cfg["shader"]
    if not float(shader["groove_strength"]) and not float(shader["groove_darkening"]):
        return colour, graph.node("ShaderNodeNewGeometry").outputs["Normal"]
    grain = relief = knob["mucosa.grain"]
    contrast = float(shader["grain_patch_contrast"])
    if contrast:  # the relief deep in some places, faint in others: x (1 - c .. 1 + c) by a slow noise, mean 1
        patches = patches if patches is not None else graph.noise(
            graph.seeded(position, graph.math("ADD", knob["mucosa.bump_seed"], 17.0)),
            float(shader["grain_patch_scale"]), float(shader["grain_patch_detail"]))
        low, high = (float(v) for v in shader["grain_patch_edges"])
        relief = graph.math("MULTIPLY", grain, graph.map_range(patches, low, high, 1.0 - contrast, 1.0 + contrast,
                                                               "SMOOTHSTEP"))
    field = graph.noise(graph.seeded(position, graph.math("ADD", knob["mucosa.bump_seed"], 13.0)),
                        graph.math("MULTIPLY", knob["mucosa.grain_scale"], float(shader["groove_scale"])),
                        float(shader["groove_detail"]))
    edges = graph.math("ABSOLUTE", graph.math("SUBTRACT", field, 0.5))  # 0 on the field's level-0.5 lines
    # a line far thinner than a pixel, sampled three times a pixel, is a scatter of dark dots (pepper on the
    # middle wall): it is drawn no thinner than `groove_pixel_width` noise units per groove cell a pixel spans,
    # its relief and darkening x its width / that (a box filter's, roughly: the noise's values crowd round 0.5, so a
    # wider band covers somewhat less than in proportion; version 26)
    width = float(shader["groove_width"])
    if float(shader["groove_pixel_width"]):
        cells = _cells_a_pixel(graph, knob["grooves.cells_per_px_mm"])
        drawn = graph.math("MAXIMUM", width, graph.math("MULTIPLY", cells, float(shader["groove_pixel_width"])))
        thin = graph.math("DIVIDE", width, drawn)
        relief, grain, width = graph.math("MULTIPLY", relief, thin), graph.math("MULTIPLY", grain, thin), drawn
    height = graph.map_range(edges, 0.0, width, 0.0, 1.0, "SMOOTHSTEP")
    cut, lines = float(shader["groove_cut"]), height
    strength = graph.math("MULTIPLY", relief, float(shader["groove_strength"]))
    if cut:  # the lines cut into open strokes: a finer noise lifts them back to the surface where it is low
        pieces = graph.noise(graph.seeded(position, graph.math("ADD", knob["mucosa.bump_seed"], 19.0)),
                             graph.math("MULTIPLY", knob["mucosa.grain_scale"],
                                        float(shader["groove_scale"]) * float(shader["groove_cut_scale"])), 0.0)
        low, high = (float(v) for v in shader["groove_cut_edges"])
        gone = graph.map_range(pieces, low, high, cut, 0.0, "SMOOTHSTEP")  # cut .. 0: how far a stroke is lifted
        lines = graph.math("MULTIPLY_ADD", graph.math("SUBTRACT", 1.0, height), gone, height)
        # the relief lifted by scaling the bump's strength, not its height: the cut noise is read once a sample,
        # not three times (the strokes' ends lose only their own slope; version 18)
        strength = graph.math("MULTIPLY", strength, graph.math("SUBTRACT", 1.0, gone))
    darkening = graph.math("MULTIPLY", graph.math("SUBTRACT", 1.0, lines),
                           graph.math("MULTIPLY", grain, float(shader["groove_darkening"])))
    normal = graph.node("ShaderNodeBump", {"Strength": strength, "Distance": float(shader["groove_depth_mm"]),
                                           "Height": height})
    return graph.mix_colour(darkening, colour, dark), normal.outputs[0]


def _cells_a_pixel(graph: NodeGraph, per_px_mm, distance=None):
    """How many of a texture's cells (texels) one pixel spans where a sample lands: its view distance x
    `per_px_mm` (cells per mm / the fisheye's focal length in pixels), over the cosine of the view to the surface
    (no less than 0.2: a grazing wall is not smeared without end). `distance`: a View Distance socket, if one."""
    geometry = graph.node("ShaderNodeNewGeometry")
    facing = graph.math("ABSOLUTE", graph.vector_math("DOT_PRODUCT", geometry.outputs["Normal"],
                                                      geometry.outputs["Incoming"]))
    if distance is None:
        distance = graph.node("ShaderNodeCameraData").outputs["View Distance"]
    return graph.math("DIVIDE", graph.math("MULTIPLY", distance, per_px_mm), graph.math("MAXIMUM", facing, 0.2))


# ------------------------------------------------------------------------------ the material
def wall_colour(graph: NodeGraph, channels: Mapping[str, Any], knob: NodeInputs, cfg: Mapping):
    """The wall's colour from its pattern `channels` (`wall_pattern`): the mucosa's colour, yellower in
    regions, mottled, its vessels and capillary net (the mucosa's material, and a lesion's foot, which grows out
    of the wall)."""
    shader = cfg["shader"]
    # colour regions: a slow noise turns stretches of wall toward the tint colour, by up to `params.mucosa.tint`
    tint_low, tint_high = (float(v) for v in shader["mucosa_tint_edges"])
    tint = graph.math("MULTIPLY", graph.map_range(channels["tint"], tint_low, tint_high, 0.0, 1.0, "SMOOTHSTEP"),
                      knob["mucosa.tint"])
    base = graph.mix_colour(tint, knob.rgb("mucosa.colour"), knob.rgb("mucosa.colour_tint"))
    # mottled base colour
    mottle_low, mottle_high = (float(v) for v in shader["mucosa_mottle_edges"])
    mottle = graph.math("MULTIPLY", graph.map_range(channels["mottle"], mottle_low, mottle_high), knob["mucosa.mottle"])
    base = graph.mix_colour(mottle, base, knob.rgb("mucosa.colour_dark"))
    # vessels: the tree (`vessels.py`); a vessel's half width is `vessels.width` (main cells) x its calibre,
    # and x `vessel_taper` .. 1 where the patch mask (vascular density) fades it out. A line thinner than a
    # texel of the pattern is drawn a texel wide and fainter in proportion (it keeps its ink, and is never
    # lost between two texels: a thin line sampled at texel centres would break into dashes)
    threshold = graph.math("SUBTRACT", float(shader["vessels_patch_threshold"]),
                           graph.math("MULTIPLY", knob["vessels.density"], float(shader["vessels_patch_density_gain"])))
    shown = graph.map_range(channels["patch"], threshold,
                            graph.math("ADD", threshold, float(shader["vessels_patch_band"])), 0.0, 1.0, "SMOOTHSTEP")
    taper = float(shader["vessel_taper"])
    width = graph.math("MULTIPLY", graph.math("MULTIPLY", knob["vessels.width"], channels["calibre"]),
                       graph.math("MULTIPLY_ADD", shown, 1.0 - taper, taper))
    texel = graph.math("MULTIPLY", knob["pattern.vessel_scale"], texel_mm(cfg))
    drawn = graph.math("MAXIMUM", width, texel)
    line = graph.map_range(channels["main"], drawn, 0.0, 0.0, 1.0, "SMOOTHSTEP")
    # by calibre (`shader.vessel_calibre_edges`: 0 a twig .. 1 a trunk): a trunk, deeper in the submucosa, in
    # the vessels' colour and contrast; a twig, near the surface, paler and pinker (`shader.vessel_twig`) and
    # fainter (x `shader.vessel_twig_contrast`): the reference's net is not one colour
    calibre_low, calibre_high = (float(v) for v in shader["vessel_calibre_edges"])
    trunk = graph.map_range(channels["calibre"], calibre_low, calibre_high, 0.0, 1.0)
    twig_contrast = float(shader["vessel_twig_contrast"])
    contrast = graph.math("MULTIPLY", knob["vessels.contrast"],
                          graph.math("MULTIPLY_ADD", trunk, 1.0 - twig_contrast, twig_contrast))
    vessels = graph.math("MULTIPLY", graph.math("MULTIPLY", line, graph.math("DIVIDE", width, drawn)),
                         graph.math("MULTIPLY", shown, contrast))
    # seen through the mucosa, a vessel blurs and pales with distance: x 1 near .. `vessel_fade_floor` far
    near, far = (float(v) for v in shader["vessel_fade_edges"])
    distance = graph.node("ShaderNodeCameraData").outputs["View Distance"]
    vessels = graph.math("MULTIPLY", vessels, graph.map_range(distance, near, far, 1.0, float(shader["vessel_fade_floor"])))
    colour = graph.mix_colour(trunk, knob.rgb("vessels.colour_twig"), knob.rgb("vessels.colour"))
    coloured = graph.mix_colour(vessels, base, colour)
    # the capillary net: the finest vessels, in the twigs' colour
    coloured = graph.mix_colour(_capillaries(graph, channels, knob, cfg, distance), coloured,
                                knob.rgb("vessels.colour_twig"))
    return coloured


def _capillaries(graph: NodeGraph, channels: Mapping[str, Any], knob: NodeInputs, cfg: Mapping, distance):
    """How far the wall turns toward the vessels' colour for the capillary net: its line x
    `vessels.capillary_contrast`, shown everywhere but stronger where the vessel patches are (x floor + (1 -
    floor) x patch, floor = `shader.capillary_patch_floor`). Where a pixel spans more than a texel of the
    pattern (far, or oblique: the texels a pixel spans = its distance x `capillary.texels_per_mm` / the
    cosine of the view to the surface) the texture would alias into speckle: the line gives way, over
    `shader.capillary_fade_edges` texels a pixel, to its mean over the wall (`capillary_mean`), the tint a
    pixel that spans many cells sees. `distance`: the view distance (`wall_colour`'s Camera Data socket)."""
    shader = cfg["shader"]
    spans = _cells_a_pixel(graph, knob["capillary.texels_per_mm"], distance)
    low, high = (float(v) for v in shader["capillary_fade_edges"])
    fade = graph.map_range(spans, low, high, 0.0, 1.0, "SMOOTHSTEP")
    line = channels["capillary"]
    line = graph.math("MULTIPLY_ADD", fade, graph.math("SUBTRACT", float(shader["capillary_mean"]), line), line)
    floor = float(shader["capillary_patch_floor"])
    shown = graph.math("MULTIPLY_ADD", channels["patch"], 1.0 - floor, floor)
    return graph.math("MULTIPLY", graph.math("MULTIPLY", line, shown), knob["vessels.capillary_contrast"])


class Mucosa:
    """The mucosa material (`material`), its per-frame inputs, and (baked mode) the pattern texture."""

    def __init__(self, bpy, cfg: Mapping) -> None:
        self.bpy, self.cfg = bpy, cfg
        self.material, graph = new_material(bpy, "mucosa")
        self.inputs = NodeInputs(graph)
        self.pattern_images: tuple = ()  # the pattern's textures (`_build`)
        self.pattern_lanes: frozenset[int] = frozenset()  # the baked patterns `set_pattern` loaded
        self.trees: dict[int, np.ndarray] = {}  # procedural mode: the vessel trees grown so far (`pose`)
        self._build(graph)

    def _build(self, graph: NodeGraph) -> None:
        bpy, cfg, knob = self.bpy, self.cfg, self.inputs
        shader = cfg["shader"]
        # baked: the pattern's two textures; procedural: the vessel tree's, the rest evaluated per sample
        names = ("mucosa_pattern", "mucosa_pattern_fine") if cfg["textures"]["mode"] == "baked" else ("mucosa_tree",)
        self.pattern_images = tuple(bpy.data.images.new(name, 1, 1, alpha=True, float_buffer=False) for name in names)
        for image in self.pattern_images:
            image.colorspace_settings.name = "Non-Color"  # data, not colour: no sRGB decoding
            image.alpha_mode = "CHANNEL_PACKED"  # alpha is a fourth data channel, never premultiplied
        # where on the wall: the angle around the lumen (from the profile direction each vertex keeps) and the
        # axial position (the lumen's object space is the world's)
        around = graph.node("ShaderNodeAttribute", attribute_name="around", attribute_type="GEOMETRY").outputs["Vector"]
        around_xyz = graph.node("ShaderNodeSeparateXYZ", {0: around})
        coordinates = graph.node("ShaderNodeTexCoord").outputs["Object"]
        z = graph.node("ShaderNodeSeparateXYZ", {0: coordinates}).outputs[2]
        raw_angle = graph.math("ARCTAN2", around_xyz.outputs[1], around_xyz.outputs[0])
        channels = wall_pattern(graph, raw_angle, z, knob, self.pattern_images, cfg)
        coloured = wall_colour(graph, channels, knob, cfg)
        # a reddened patch (erythema, a hard negative: lesion-coloured, but no lesion): redder within a
        # noisy radius of a point on the wall (axial, angle around the lumen)
        turn = graph.math("SUBTRACT", raw_angle, knob["erythema.angle"])
        turn = graph.math("SUBTRACT", turn, graph.math("MULTIPLY", graph.math("ROUND", graph.math("DIVIDE", turn, TAU)), TAU))
        arc = graph.math("MULTIPLY", turn, knob["tube.radius_mm"])
        along = graph.math("SUBTRACT", z, knob["erythema.axial"])
        distance = graph.math("SQRT", graph.math("ADD", graph.math("MULTIPLY", arc, arc), graph.math("MULTIPLY", along, along)))
        ragged = graph.math("MULTIPLY", knob["erythema.radius"], graph.math(
            "ADD", 1.0, graph.math("MULTIPLY", graph.math("SUBTRACT", channels["mottle"], 0.5), float(shader["erythema_ragged"]))))
        patch = graph.math("MULTIPLY", graph.map_range(graph.math("DIVIDE", distance, ragged), 1.0,
                                                       float(shader["erythema_core"]), 0.0, 1.0, "SMOOTHSTEP"),
                           knob["erythema.strength"])
        coloured = graph.mix_colour(patch, coloured, knob.rgb("erythema.colour"))
        # fake translucency: warmer, lighter where the surface turns away (light scattered under the surface)
        facing = graph.node("ShaderNodeLayerWeight", {"Blend": float(shader["mucosa_rim_blend"])}).outputs["Facing"]
        rim = graph.math("MULTIPLY", facing, knob["mucosa.translucency"])
        coloured = graph.mix_colour(rim, coloured, knob.rgb("mucosa.colour_rim"))
        bump = droplet_bump(graph, coordinates, knob, cfg, ripple=channels["ripple"])
        coloured, tissue = groove_bump(graph, coordinates, knob, cfg, coloured, knob.rgb("mucosa.colour_dark"),
                                       patches=channels["relief"])
        bsdf = graph.node("ShaderNodeBsdfPrincipled", {
            "Base Color": coloured, "Roughness": knob["mucosa.roughness"], "Normal": tissue,
            "Coat Weight": knob["mucosa.wetness"], "Coat Roughness": knob["mucosa.coat_roughness"],
            "Coat IOR": float(shader["mucosa_coat_ior"]), "Coat Normal": bump,
            "Specular IOR Level": float(shader["mucosa_specular"]),
        })
        if cfg["engine"]["subsurface"]:
            graph.connect(float(shader["subsurface_weight"]), bsdf.inputs["Subsurface Weight"])
            graph.connect(as_vector(shader["subsurface_radius"]), bsdf.inputs["Subsurface Radius"])
            graph.connect(float(shader["subsurface_scale"]), bsdf.inputs["Subsurface Scale"])
        material_output(graph, bsdf.outputs[0])

    # -------------------------------------------------------------------------- per frame
    def pattern_inputs(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Where this frame's wall lies on the mucosa pattern: which pattern, turned and shifted how, and the
        axial scale that keeps its cells round on a lumen of this radius; and, for the textures drawn no finer
        than a pixel, their cells a pixel spans per mm of view distance (capillary texels, groove cells)."""
        cfg = self.cfg
        textures = cfg["textures"]
        lane = pattern_lane(cfg, params)
        scale = float(textures["reference_radius_mm"]) / float(params["tube.radius_mm"])
        # the wall from a little behind the lens to the far end of the tube must lie on [0, length_mm]
        first = (float(params["camera.axial_mm"]) - float(cfg["shader"]["pattern_margin_mm"])) * scale
        free = float(textures["length_mm"]) - (float(cfg["scene"]["tube_length_mm"]) * scale - first)
        offset = -first + max(free, 0.0) * float(params["mucosa.pattern_shift"])
        # a pixel at distance d spans d / f mm of a wall facing it, d / f x scale mm of the pattern
        focal = fisheye_focal_px(float(params["camera.fov_deg"]), int(cfg["resolution"]))
        return {"pattern.lane": float(lane), "pattern.angle": math.radians(float(params["mucosa.pattern_angle_deg"])),
                "pattern.axial_scale": scale, "pattern.axial_offset": offset,
                "pattern.vessel_scale": lane_vessel_scale(textures, lane),
                "capillary.texels_per_mm": scale / (focal * texel_mm(cfg)),
                "grooves.cells_per_px_mm": float(params["mucosa.grain_scale"])
                * float(cfg["shader"]["groove_scale"]) / focal}

    def frame_inputs(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The material's per-frame inputs (values, colours; colours from the sampled HSV). A lesion's material
        reads the wall's part of them too (`wall_colour` at its foot)."""
        shader = self.cfg["shader"]
        hue, saturation, value = params["mucosa.hue"], params["mucosa.saturation"], params["mucosa.value"]
        colours = {
            "mucosa.colour": hsv_colour(hue, saturation, value),
            "mucosa.colour_dark": shifted_colour(hue, saturation, value, shader["mucosa_dark"]),
            "mucosa.colour_rim": shifted_colour(hue, saturation, value, shader["mucosa_rim"]),
            "mucosa.colour_tint": shifted_colour(hue, saturation, value, shader["mucosa_tint"]),
            "vessels.colour": hsv_colour(params["vessels.hue"], params["vessels.saturation"], params["vessels.value"]),
            "vessels.colour_twig": shifted_colour(params["vessels.hue"], params["vessels.saturation"],
                                                  params["vessels.value"], shader["vessel_twig"]),
        }
        patch = bool(int(params["clutter.red_patch"]))
        colours["erythema.colour"] = hsv_colour(*shifted_toward(hue, saturation, value, float(params["clutter.red_patch_redness"]),
                                                                shader))
        erythema = {"erythema.axial": float(params["camera.axial_mm"]) + float(params["clutter.red_patch_ahead_mm"]),
                    "erythema.angle": math.radians(float(params["clutter.red_patch_angle_deg"])),
                    "erythema.radius": float(params["clutter.red_patch_size_mm"]) / 2.0,
                    "erythema.strength": float(shader["erythema_opacity"]) if patch else 0.0}
        return {**params, **self.pattern_inputs(params), **erythema}, colours

    def pose(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Set the material's per-frame inputs; return the pattern inputs."""
        values, colours = self.frame_inputs(params)
        if self.cfg["textures"]["mode"] == "procedural":
            self._grow_tree(int(values["pattern.lane"]))
        self.inputs.set(values, colours)
        return self.pattern_inputs(params)

    def _grow_tree(self, lane: int) -> None:
        """Procedural mode: grow pattern `lane`'s vessel tree when this scene first shows it, into its texture."""
        if lane in self.trees:
            return
        self.trees[lane] = tree_texels(self.cfg, lane)
        rows, cols = pattern_grid(self.cfg)[:2]
        empty = np.zeros((rows, cols, 2), np.uint8)
        # lane k occupies rows k * rows .. (k + 1) * rows - 1; red: the distance, green: the calibre
        stacked = np.concatenate([self.trees.get(k, empty) for k in range(int(self.cfg["textures"]["patterns"]))])
        self._load([np.concatenate([stacked, np.zeros_like(stacked)], axis=-1)])

    # -------------------------------------------------------------------------- the baked pattern
    def bake_pattern(self, scene, lane: int) -> np.ndarray:
        """Evaluate pattern `lane` on its texel grid with geometry nodes (the same texture nodes the
        procedural shader runs per sample). Returns (rows, cols, `CHANNELS`) uint8: mottle, main, calibre, patch,
        capillary, ripple, relief and tint; see `pattern_grid`."""
        bpy, cfg = self.bpy, self.cfg
        rows, cols, texel_theta, texel_axial = pattern_grid(cfg)
        tree = new_geometry_tree(bpy, "MucosaPatternBake")
        graph = NodeGraph(tree)
        points = graph.node("GeometryNodeMeshLine", {"Count": rows * cols})
        index = graph.node("GeometryNodeInputIndex").outputs[0]
        # texel (row, col) of point `index`, row-major; +0.5 keeps floor() exact in float arithmetic
        row = graph.math("FLOOR", graph.math("DIVIDE", graph.math("ADD", index, 0.5), float(cols)))
        col = graph.math("SUBTRACT", index, graph.math("MULTIPLY", row, float(cols)))
        # row 0 and the last row repeat the other end of the circle, so bilinear lookups wrap without a seam
        theta = graph.math("MULTIPLY", graph.math("SUBTRACT", row, 0.5), texel_theta)
        axial = graph.math("MULTIPLY", graph.math("ADD", col, 0.5), texel_axial)
        channels = pattern_channels(graph, theta, axial, float(lane), cfg)
        packed = graph.node("ShaderNodeCombineXYZ", {0: channels["mottle"], 1: 0.0, 2: 0.0}).outputs[0]
        store = graph.node("GeometryNodeStoreNamedAttribute", {"Geometry": points.outputs[0], "Name": "rgb",
                                                               "Value": packed}, data_type="FLOAT_VECTOR", domain="POINT")
        slow = graph.node("ShaderNodeCombineXYZ", {0: channels["capillary"], 1: channels["ripple"],
                                                   2: channels["relief"]}).outputs[0]
        store = graph.node("GeometryNodeStoreNamedAttribute", {"Geometry": store.outputs[0], "Name": "fine",
                                                               "Value": slow}, data_type="FLOAT_VECTOR", domain="POINT")
        for name, value in (("a", channels["patch"]), ("tint", channels["tint"])):
            store = graph.node("GeometryNodeStoreNamedAttribute", {"Geometry": store.outputs[0], "Name": name,
                                                                   "Value": value}, data_type="FLOAT", domain="POINT")
        graph.connect(store.outputs[0], graph.node("NodeGroupOutput").inputs[0])
        mesh = bpy.data.meshes.new("mucosa_pattern_bake")
        bake_object = bpy.data.objects.new("mucosa_pattern_bake", mesh)
        bake_object.hide_render = True
        scene.collection.objects.link(bake_object)
        bake_object.modifiers.new("bake", "NODES").node_group = tree
        try:
            depsgraph = bpy.context.evaluated_depsgraph_get()
            depsgraph.update()
            evaluated = bake_object.evaluated_get(depsgraph)
            evaluated_mesh = evaluated.to_mesh()
            count = rows * cols
            if len(evaluated_mesh.vertices) != count:
                raise RuntimeError(f"pattern bake produced {len(evaluated_mesh.vertices)} points, expected {count}")
            rgb, fine = np.empty(count * 3, np.float32), np.empty(count * 3, np.float32)
            evaluated_mesh.attributes["rgb"].data.foreach_get("vector", rgb)
            evaluated_mesh.attributes["fine"].data.foreach_get("vector", fine)
            alpha, tint = np.empty(count, np.float32), np.empty(count, np.float32)
            evaluated_mesh.attributes["a"].data.foreach_get("value", alpha)
            evaluated_mesh.attributes["tint"].data.foreach_get("value", tint)
            evaluated.to_mesh_clear()
        finally:
            bpy.data.objects.remove(bake_object)
            bpy.data.meshes.remove(mesh)
            bpy.data.node_groups.remove(tree)
        values = np.concatenate([rgb.reshape(count, 3), alpha[:, None], fine.reshape(count, 3), tint[:, None]], axis=1)
        texels = np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(rows, cols, CHANNELS)
        texels[..., 1:3] = tree_texels(cfg, lane)  # the vessel tree: distance and calibre
        return texels

    def set_pattern(self, lanes: Mapping[int, np.ndarray]) -> None:
        """Load baked patterns ({lane: `bake_pattern(lane)`}) into the texture the material looks up. Lanes no
        frame of this run shows may be left out (their rows stay empty)."""
        rows, cols = pattern_grid(self.cfg)[:2]
        empty = np.zeros((rows, cols, CHANNELS), np.uint8)
        # lane k occupies rows k*rows .. (k+1)*rows - 1
        texture = np.concatenate([lanes.get(k, empty) for k in range(int(self.cfg["textures"]["patterns"]))], axis=0)
        self._load([texture[..., :4], texture[..., 4:]])
        self.pattern_lanes = frozenset(lanes)

    def _load(self, textures: list[np.ndarray]) -> None:
        """Fill `pattern_images` from (rows, cols, 4) uint8 arrays (lanes stacked)."""
        for image, pixels in zip(self.pattern_images, textures, strict=True):
            image.scale(pixels.shape[1], pixels.shape[0])
            # Blender images store rows bottom-up; v = 0 is row 0 of our array
            image.pixels.foreach_set((pixels.astype(np.float32) / 255.0).ravel())
            image.update()

    def check_pattern(self, params: Mapping[str, Any]) -> None:
        """Baked mode: the frame's pattern must be loaded (a missing one would render a blank wall)."""
        lane = pattern_lane(self.cfg, params)
        if self.cfg["textures"]["mode"] == "baked" and lane not in self.pattern_lanes:
            raise RuntimeError(f"textures.mode=baked: pattern {lane} of this frame is not loaded "
                               f"(loaded: {sorted(self.pattern_lanes)}); bake it and pass it to set_pattern()")
