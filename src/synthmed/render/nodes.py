"""Helpers for building Blender node trees readably, and the small vector / colour maths the scene shares.

No bpy import: the helpers work on the trees and nodes they are given (made in the render workers).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class NodeGraph:
    """A node tree built by name: sockets by name (or index); an input takes a value or a link."""

    def __init__(self, tree):
        self.tree = tree
        self.nodes = tree.nodes
        self.links = tree.links

    def node(self, kind: str, inputs: Mapping | None = None, **props):
        """A new node of type `kind`, its properties set and its inputs set or linked."""
        new = self.nodes.new(kind)
        for key, value in props.items():
            setattr(new, key, value)
        for key, value in (inputs or {}).items():
            self.connect(value, self.socket(new.inputs, key))
        return new

    @staticmethod
    def socket(sockets, key):
        if isinstance(key, int):
            return sockets[key]
        for candidate in sockets:  # prefer enabled sockets (mix/map-range nodes have several with one name)
            if (candidate.identifier == key or candidate.name == key) and candidate.enabled:
                return candidate
        return sockets[key]

    def connect(self, value, socket) -> None:
        """Link an output socket (or a node's first output) to `socket`, or set its value."""
        if hasattr(value, "is_output"):
            self.links.new(value, socket)
        elif hasattr(value, "outputs"):
            self.links.new(value.outputs[0], socket)
        else:
            socket.default_value = value

    def math(self, operation: str, a, b=None, c=None):
        inputs = {0: a}
        if b is not None:
            inputs[1] = b
        if c is not None:
            inputs[2] = c
        return self.node("ShaderNodeMath", inputs, operation=operation).outputs[0]

    def vector_math(self, operation: str, a, b=None, scale=None):
        inputs = {0: a}
        if b is not None:
            inputs[1] = b
        if scale is not None:
            inputs[3] = scale
        new = self.node("ShaderNodeVectorMath", inputs, operation=operation)
        return new.outputs[1] if operation in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else new.outputs[0]

    def mix_colour(self, factor, a, b):
        new = self.node("ShaderNodeMix", {"Factor_Float": factor, "A_Color": a, "B_Color": b}, data_type="RGBA")
        return self.socket(new.outputs, "Result_Color")

    def map_range(self, value, from_min, from_max, to_min=0.0, to_max=1.0, interpolation="LINEAR"):
        new = self.node("ShaderNodeMapRange", {"Value": value, "From Min": from_min, "From Max": from_max,
                                               "To Min": to_min, "To Max": to_max}, interpolation_type=interpolation)
        return new.outputs[0]

    def noise(self, vector, scale, detail, **inputs):
        """A 3D noise texture's factor output."""
        return self.node("ShaderNodeTexNoise", {"Vector": vector, "Scale": scale, "Detail": detail, **inputs},
                         noise_dimensions="3D").outputs[0]

    def seeded(self, coordinates, seed):
        """3D texture coordinates shifted by a seed (cheaper than 4D textures with W = seed)."""
        return self.vector_math("ADD", coordinates, self.vector_math("SCALE", (0.913, 1.37, 0.771), scale=seed))


class NodeInputs:
    """The per-frame knobs of a node tree: named Value (or RGB) nodes whose outputs are set each frame."""

    def __init__(self, graph: NodeGraph):
        self.graph = graph
        self.nodes: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self.nodes:
            new = self.graph.node("ShaderNodeValue")
            new.name = new.label = name
            self.nodes[name] = new
        return self.nodes[name].outputs[0]

    def rgb(self, name: str):
        key = name + "#rgb"
        if key not in self.nodes:
            new = self.graph.node("ShaderNodeRGB")
            new.name = new.label = key
            self.nodes[key] = new
        return self.nodes[key].outputs[0]

    def set_some(self, values: Mapping[str, float]) -> None:
        """Set the value knobs named in `values` only."""
        for name, value in values.items():
            self.nodes[name].outputs[0].default_value = float(value)

    def set(self, values: Mapping[str, Any], colours: Mapping[str, Any]) -> None:
        """Set every knob: a value from `values`, a colour (name without `#rgb`) from `colours`."""
        for name, node in self.nodes.items():
            if name.endswith("#rgb"):
                node.outputs[0].default_value = colours[name[:-4]]
            else:
                node.outputs[0].default_value = float(values[name])


def new_geometry_tree(bpy, name: str):
    """An empty geometry-node group with one geometry input and output."""
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return tree


def mesh_in_order(bpy, name: str, bm):
    """A mesh of the BMesh `bm` with its faces sorted (by their vertex indices, each face's corners as `bm` has
    them). bmesh's `create_uvsphere` makes the same vertices and faces in every process but hands the faces out
    in an order that changes from process to process; Blender sums a vertex's normal over its faces in that
    order, so the normals, what the geometry nodes push along them and the shading differed in the last bit
    between render workers, and now and then a pixel by one level."""
    bm.verts.index_update()
    faces = sorted(tuple(v.index for v in face.verts) for face in bm.faces)
    data = bpy.data.meshes.new(name)
    data.from_pydata([v.co[:] for v in bm.verts], [], faces)
    data.update()
    return data


def new_material(bpy, name: str):
    """A material with an empty node tree, and its graph."""
    material = bpy.data.materials.new(name)
    material.node_tree.nodes.clear()
    return material, NodeGraph(material.node_tree)


NORMAL_AOV = "normal"  # the shader AOV the sequences' normal pass reads (scene.py)


def material_output(graph: NodeGraph, surface, opaque: bool = True) -> None:
    """Connect a material's surface shader; an opaque one also writes its smooth surface normal (world space,
    the mesh's interpolated normal: no bump, neither the tissue's texture nor the wet film's droplets) to the
    `NORMAL_AOV` output, which a sequence render writes as its normal pass. See-through surfaces (bubbles, fluid)
    write none: the pass shows the wall behind them."""
    graph.connect(surface, graph.node("ShaderNodeOutputMaterial").inputs["Surface"])
    if opaque:
        aov = graph.node("ShaderNodeOutputAOV", {"Color": graph.node("ShaderNodeNewGeometry").outputs["Normal"]})
        aov.aov_name = NORMAL_AOV


def hsv_colour(hue: float, saturation: float, value: float) -> tuple[float, float, float, float]:
    """HSV (hue wraps at 1) -> linear RGBA for a shader socket."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), max(value, 0.0))
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return (*linear, 1.0)


def as_vector(values) -> tuple[float, ...]:
    """A vector socket's value from a config list."""
    return tuple(float(v) for v in values)


def shifted_colour(hue: float, saturation: float, value: float, shift: Mapping[str, float]):
    """The colour `shift` (a shader ColourShift) derives from a sampled HSV colour, as linear RGBA."""
    return hsv_colour(hue + float(shift["hue_shift"]),
                      saturation * float(shift["saturation_scale"]) + float(shift["saturation_shift"]),
                      min(1.0, value * float(shift["value_scale"])))


def shifted_toward(hue: float, saturation: float, value: float, redness: float, shader: Mapping) -> tuple[float, float, float]:
    """An HSV colour moved toward paler (`redness` < 0: `shader.lesion_pale`) or redder (> 0: `shader.lesion_red`)
    by |redness| of the shift."""
    shift = shader["lesion_red"] if redness > 0 else shader["lesion_pale"]
    t = abs(redness)
    hue = hue + t * float(shift["hue_shift"])
    saturation = saturation * (1.0 + t * (float(shift["saturation_scale"]) - 1.0)) + t * float(shift["saturation_shift"])
    value = value * (1.0 + t * (float(shift["value_scale"]) - 1.0))
    return hue, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0)


def light_tint(warmth: float, tint) -> tuple[float, float, float]:
    """The tip light's colour: 1 - warmth x `shader.light_warmth_tint` (toward yellow)."""
    return tuple(1.0 - float(t) * float(warmth) for t in tint)


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of `vector` about an axis (normalised here)."""
    axis = unit(axis)
    cos, sin = math.cos(angle), math.sin(angle)
    return vector * cos + np.cross(axis, vector) * sin + axis * float(np.dot(axis, vector)) * (1 - cos)
