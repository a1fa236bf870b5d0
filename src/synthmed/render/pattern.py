"""The mucosa's pattern as nodes: mottle, patches, the capillary net and the slow noises (`pattern_channels`),
built from nodes that shader and geometry-node trees share, so that the bake evaluates exactly what the
procedural shader does; the baked textures' and the vessel tree's channels read back (`baked_channels`,
`tree_channels`); and the pattern at a wall point, as the mucosa's and the lesions' materials read it
(`wall_pattern`). The vessel tree itself is grown in numpy (`vessels.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from synthmed.render.nodes import NodeGraph, NodeInputs, as_vector
from synthmed.render.vessels import pattern_grid, texel_mm


# ------------------------------------------------------------------------------ the pattern as nodes
def pattern_channels(graph: NodeGraph, theta, axial, lane, cfg: Mapping) -> dict[str, Any]:
    """The mucosa pattern at (angle theta, axial mm) of the reference cylinder, as sockets: mottle and patch
    (noise, 0..1), capillary (the fine net's line, 0..1: `capillary_line`), two slow noises the wet film and the
    grooves read: ripple (`droplet_bump`) and relief (`groove_bump`), and a slower one, tint: the wall's colour
    regions (`wall_colour`). `lane` is a number or a socket. The main vessels
    are no nodes' work: a tree grown in numpy (`vessels.vessel_tree`), read from a texture."""
    textures, shader = cfg["textures"], cfg["shader"]
    radius = float(textures["reference_radius_mm"])
    point = graph.node("ShaderNodeCombineXYZ", {0: graph.math("MULTIPLY", graph.math("COSINE", theta), radius),
                                                1: graph.math("MULTIPLY", graph.math("SINE", theta), radius),
                                                2: axial}).outputs[0]
    point = graph.vector_math("ADD", point, graph.vector_math("SCALE", as_vector(shader["pattern_lane_shift"]),
                                                              scale=lane))

    def noise(offset, frequency, detail):
        return graph.noise(graph.vector_math("ADD", point, as_vector(offset)), float(frequency), float(detail))

    def warped(lookup, offset, frequency, cells):
        # three noises (the texture's colour) shift the lookup in 3D: cell edges that wind like vessels, not
        # polygons' straight sides
        at = graph.vector_math("ADD", point, as_vector(offset))
        colour = graph.node("ShaderNodeTexNoise", {"Vector": at, "Scale": float(frequency),
                                                   "Detail": float(shader["pattern_warp_detail"])},
                            noise_dimensions="3D").outputs["Color"]
        shift = graph.vector_math("SUBTRACT", colour, (0.5, 0.5, 0.5))
        gain = graph.math("DIVIDE", float(textures["vessel_distortion"]) * float(shader["pattern_warp_gain"]), cells)
        return graph.vector_math("ADD", lookup, graph.vector_math("SCALE", shift, scale=gain))

    def edges(lookup, cells):
        return graph.node("ShaderNodeTexVoronoi", {"Vector": lookup, "Scale": cells,
                                                   "Randomness": float(shader["pattern_voronoi_randomness"])},
                          feature="DISTANCE_TO_EDGE", voronoi_dimensions="3D").outputs["Distance"]

    capillary_cells = float(textures["capillary_scale"])
    capillary_at = warped(point, shader["pattern_capillary_warp_offset"], shader["pattern_capillary_warp_scale"],
                          capillary_cells)
    # the net cut into open strokes: a noise `capillary_cut_scale` x finer than its cells (read where the net's
    # meander is, at another scale) keeps a line where it is high (x 1) and leaves `capillary_cut_floor` where low
    low, high = (float(v) for v in shader["capillary_cut_edges"])
    kept = graph.map_range(noise(shader["pattern_capillary_warp_offset"],
                                 capillary_cells * float(shader["capillary_cut_scale"]), 0.0),
                           low, high, float(shader["capillary_cut_floor"]), 1.0, "SMOOTHSTEP")
    capillary = graph.math("MULTIPLY", capillary_line(graph, edges(capillary_at, capillary_cells), cfg), kept)
    return {"mottle": noise((0.0, 0.0, 0.0), shader["pattern_mottle_scale"], shader["pattern_mottle_detail"]),
            "capillary": capillary,
            "patch": noise(shader["pattern_patch_offset"], shader["pattern_patch_scale"], shader["pattern_patch_detail"]),
            "ripple": noise(shader["pattern_ripple_offset"], shader["coat_ripple_scale"], shader["coat_ripple_detail"]),
            "relief": noise(shader["pattern_relief_offset"], shader["grain_patch_scale"], shader["grain_patch_detail"]),
            "tint": noise(shader["pattern_tint_offset"], shader["pattern_tint_scale"], shader["pattern_tint_detail"])}


def capillary_line(graph: NodeGraph, distance, cfg: Mapping):
    """The capillary net's line (0..1) at `distance` (cells) from its cells' edges, drawn for the baked texel h:
    a line of half-width w = `textures.capillary_width` (cells) under a texel is widened to h and faded to
    w / h: it keeps its ink and is never missed between two texels (a thin line sampled at texel centres would
    break into dashes)."""
    textures = cfg["textures"]
    width = float(textures["capillary_width"])
    wide = max(width, texel_mm(cfg) * float(textures["capillary_scale"]))
    return graph.math("MULTIPLY", graph.map_range(distance, wide, 0.0, 0.0, 1.0, "SMOOTHSTEP"), width / wide)


def lane_texture(graph: NodeGraph, theta, axial, lane, images, cfg: Mapping) -> list:
    """Image texture nodes reading `images` (lanes stacked bottom-up on `pattern_grid`) at (theta, axial)."""
    textures = cfg["textures"]
    rows = pattern_grid(cfg)[0]
    around = graph.math("FLOORED_MODULO", theta, 2.0 * math.pi)
    # row r of a lane holds angle (r - 0.5) x step: the angle sits at row position angle / step + 0.5, whose
    # texel-centre coordinate is one more (texel r spans [r, r + 1))
    row = graph.math("MULTIPLY_ADD", around, (rows - 2) / (2.0 * math.pi), 1.0)
    v = graph.math("DIVIDE", graph.math("MULTIPLY_ADD", lane, float(rows), row), float(rows * int(textures["patterns"])))
    u = graph.math("DIVIDE", axial, float(textures["length_mm"]))
    uv = graph.node("ShaderNodeCombineXYZ", {0: u, 1: v, 2: 0.0}).outputs[0]
    nodes = [graph.node("ShaderNodeTexImage", {"Vector": uv}, interpolation="Linear", extension="EXTEND") for _ in images]
    for node, image in zip(nodes, images, strict=True):
        node.image = image
    return nodes


def tree_channels(graph: NodeGraph, node, cfg: Mapping) -> dict[str, Any]:
    """main (the distance to the vessel tree's nearest centreline, in main cells) and calibre (that vessel's,
    0..1) from a texture node whose red and green hold them (`vessels.tree_texels`)."""
    rgb = graph.node("ShaderNodeSeparateColor", {0: node.outputs["Color"]})
    return {"main": graph.math("MULTIPLY", rgb.outputs[0], float(cfg["shader"]["pattern_vessel_range"])),
            "calibre": rgb.outputs[1]}


def baked_channels(graph: NodeGraph, theta, axial, lane, images, cfg: Mapping) -> dict[str, Any]:
    """The channels of `pattern_channels` and the vessel tree's, read from the baked textures: the first image
    holds mottle, main, calibre and patch, the second the capillary line, ripple, relief and tint."""
    texture, fine = lane_texture(graph, theta, axial, lane, images, cfg)
    rgb = graph.node("ShaderNodeSeparateColor", {0: texture.outputs["Color"]})
    slow = graph.node("ShaderNodeSeparateColor", {0: fine.outputs["Color"]})
    vessel_range = float(cfg["shader"]["pattern_vessel_range"])
    return {"mottle": rgb.outputs[0], "main": graph.math("MULTIPLY", rgb.outputs[1], vessel_range),
            "calibre": rgb.outputs[2], "patch": texture.outputs["Alpha"],
            "capillary": slow.outputs[0], "ripple": slow.outputs[1], "relief": slow.outputs[2],
            "tint": fine.outputs["Alpha"]}


def wall_pattern(graph: NodeGraph, angle, z, knob: NodeInputs, images: tuple, cfg: Mapping) -> dict[str, Any]:
    """The pattern's channels at the wall point `angle` (radians) around the lumen and `z` (world mm) along it:
    this frame's pattern (`pattern.lane`), turned and shifted (`Mucosa.frame_inputs`), read from the baked
    `images` or (`textures.mode: procedural`) evaluated per sample, the vessel tree read from `images`."""
    textures = cfg["textures"]
    theta = graph.math("ADD", angle, knob["pattern.angle"])
    axial = graph.math("MULTIPLY_ADD", z, knob["pattern.axial_scale"], knob["pattern.axial_offset"])
    if textures["mode"] == "baked":
        return baked_channels(graph, theta, axial, knob["pattern.lane"], images, cfg)
    if textures["mode"] == "procedural":
        tree = tree_channels(graph, lane_texture(graph, theta, axial, knob["pattern.lane"], images, cfg)[0], cfg)
        return {**pattern_channels(graph, theta, axial, knob["pattern.lane"], cfg), **tree}
    raise ValueError(f"render.textures.mode: unknown mode {textures['mode']!r} (baked, procedural)")
