"""The colon lumen: a tube bent along a centreline, with haustral folds and wall bumps (Geometry Nodes),
and the same centreline in numpy (posing the camera and the lesions needs it without evaluating the tree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from synthmed.render.nodes import NodeGraph, NodeInputs, new_geometry_tree, unit

TAU = 2.0 * math.pi
# the haustra's knobs that make every fold a plain ring across the lumen (renderer version 6's folds), the wall
# between them round: tests that need a known lumen set these
PLAIN_RINGS = {"tube.fold_notch": 0.0, "tube.sac_bulge": 0.0, "tube.fold_tilt": 0.0, "tube.fold_wave": 0.0,
               "tube.fold_irregularity": 0.0}


def centreline(params: Mapping[str, float], axial_mm: float) -> np.ndarray:
    """Centre of the lumen at axial position `axial_mm`: the sum of two sine bends in x and in y. The same
    function as the geometry-node tree (`LumenGeometry`) evaluates; tests/test_render_parts.py checks it."""
    amplitude1, wavelength1 = params["tube.bend_amplitude_mm"], params["tube.bend_wavelength_mm"]
    amplitude2, wavelength2 = params["tube.bend_amplitude2_mm"], params["tube.bend_wavelength2_mm"]
    z = axial_mm
    x = (amplitude1 * math.sin(TAU * z / wavelength1 + params["tube.bend_phase_x1"])
         + amplitude2 * math.sin(TAU * z / wavelength2 + params["tube.bend_phase_x2"]))
    y = (amplitude1 * math.sin(TAU * z / wavelength1 + params["tube.bend_phase_y1"])
         + amplitude2 * math.sin(TAU * z / wavelength2 + params["tube.bend_phase_y2"]))
    return np.array([x, y, z])


def centreline_frame(params: Mapping[str, float], axial_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, tangent, side) at `axial_mm`: side is horizontal, perpendicular to the tangent."""
    centre = centreline(params, axial_mm)
    tangent = unit(centreline(params, axial_mm + 0.5) - centreline(params, axial_mm - 0.5))
    side = unit(np.cross(tangent, np.array([0.0, 1.0, 0.0])))
    return centre, tangent, side


class LumenGeometry:
    """The lumen's geometry-node tree on a hidden object (`nodes_object`, evaluated once a frame, ray-cast by
    posing) and the plain mesh the render sees (`mesh_object`), which takes the evaluated wall positions."""

    def __init__(self, bpy, scene, cfg: Mapping, material) -> None:
        self.bpy, self.scene = bpy, scene
        self.segments_around = int(cfg["scene"]["segments_around"])
        tree = new_geometry_tree(bpy, "ColonLumen")
        graph = NodeGraph(tree)
        self.inputs = NodeInputs(graph)
        self._build(graph, cfg["scene"], cfg["shader"], material)
        # The tree is evaluated once a frame, in the viewport depsgraph that posing casts its rays in. The
        # render sees a plain mesh that takes the evaluated positions: with the modifier on the rendered
        # object, the render's own depsgraph evaluated the tree a second time every frame.
        mesh_data = bpy.data.meshes.new("lumen_nodes")
        self.nodes_object = bpy.data.objects.new("lumen_nodes", mesh_data)
        scene.collection.objects.link(self.nodes_object)
        self.nodes_object.modifiers.new("lumen", "NODES").node_group = tree
        mesh_data.materials.append(material)
        self.nodes_object.hide_render = True
        self.mesh_object = None  # made from the first evaluation (the topology never changes, only the positions)

    def _build(self, graph: NodeGraph, geometry: Mapping, shader: Mapping, material) -> None:
        knob = self.inputs
        length = float(geometry["tube_length_mm"])
        line = graph.node("GeometryNodeCurvePrimitiveLine", {"Start": (0, 0, 0), "End": (0, 0, length)})
        rings = graph.node("GeometryNodeResampleCurve", {"Curve": line.outputs[0],
                                                         "Count": int(geometry["segments_along"]) + 1})
        position = graph.node("GeometryNodeInputPosition").outputs[0]
        z = graph.node("ShaderNodeSeparateXYZ", {0: position}).outputs[2]
        with_axial = graph.node("GeometryNodeStoreNamedAttribute",
                                {"Geometry": rings.outputs[0], "Name": "axial", "Value": z},
                                data_type="FLOAT", domain="POINT")

        def wave(amplitude, wavelength, phase):
            argument = graph.math("ADD", graph.math("MULTIPLY", graph.math("DIVIDE", z, wavelength), TAU), phase)
            return graph.math("MULTIPLY", graph.math("SINE", argument), amplitude)

        def bend(axis: str):
            return graph.math(
                "ADD",
                wave(knob["tube.bend_amplitude_mm"], knob["tube.bend_wavelength_mm"], knob[f"tube.bend_phase_{axis}1"]),
                wave(knob["tube.bend_amplitude2_mm"], knob["tube.bend_wavelength2_mm"], knob[f"tube.bend_phase_{axis}2"]))

        x, y = bend("x"), bend("y")
        offset = graph.node("ShaderNodeCombineXYZ", {0: x, 1: y, 2: 0.0}).outputs[0]
        bent = graph.node("GeometryNodeSetPosition", {"Geometry": with_axial.outputs[0], "Offset": offset})
        # the centreline's direction at each ring: `_haustra` moves rings along it (oblique, wavy, uneven folds)
        bent = graph.node("GeometryNodeStoreNamedAttribute",
                          {"Geometry": bent.outputs[0], "Name": "tangent",
                           "Value": graph.node("GeometryNodeInputTangent").outputs[0]},
                          data_type="FLOAT_VECTOR", domain="POINT")
        # slow radius change along the length (the profile is a unit circle scaled per curve point)
        radius = graph.math("MULTIPLY", knob["tube.radius_mm"],
                            graph.math("ADD", 1.0, wave(knob["tube.radius_variation"], knob["tube.radius_wavelength_mm"],
                                                        knob["tube.radius_phase"])))
        circle = graph.node("GeometryNodeCurvePrimitiveCircle",
                            {"Resolution": int(geometry["segments_around"]), "Radius": 1.0})
        # each wall vertex keeps its profile point's direction (cos, sin, 0): the mucosa pattern reads the angle
        # around the lumen from it (interpolating the vector, not the angle, leaves no seam where it wraps)
        around = graph.node("GeometryNodeStoreNamedAttribute",
                            {"Geometry": circle.outputs[0], "Name": "around",
                             "Value": graph.node("GeometryNodeInputPosition").outputs[0]},
                            data_type="FLOAT_VECTOR", domain="POINT")
        tube = graph.node("GeometryNodeCurveToMesh", {"Curve": bent.outputs[0], "Profile Curve": around.outputs[0],
                                                      "Scale": radius, "Fill Caps": False})
        # haustral folds, and the wall between the taeniae bulging outward (haustral sacs): `_haustra`
        wall_position = graph.node("GeometryNodeInputPosition").outputs[0]
        fold, sacs, along = self._haustra(graph, knob, shader, wall_position)
        # the wall's bumps read the noise at another W (+17) than the crescents: the two are unrelated
        wall_noise = graph.node("ShaderNodeTexNoise", {
            "Vector": wall_position, "W": graph.math("ADD", knob["tube.noise_seed"], 17.0),
            "Scale": knob["tube.wall_noise_scale"], "Detail": float(shader["wall_noise_detail"])},
            noise_dimensions="4D").outputs[0]
        bumps = graph.math("MULTIPLY", graph.math("SUBTRACT", wall_noise, 0.5),
                           graph.math("MULTIPLY", knob["tube.wall_noise_mm"], 2.0))  # noise 0..1 -> +-wall_noise_mm
        inward = graph.math("SUBTRACT", graph.math("ADD", fold, bumps), sacs)
        normal = graph.node("GeometryNodeInputNormal").outputs[0]
        shift = graph.vector_math("ADD", graph.vector_math("SCALE", normal, scale=graph.math("MULTIPLY", inward, -1.0)), along)
        walled = graph.node("GeometryNodeSetPosition", {"Geometry": tube.outputs[0], "Offset": shift})
        flipped = graph.node("GeometryNodeFlipFaces", {"Mesh": walled.outputs[0]})  # normals face the lumen
        smooth = graph.node("GeometryNodeSetShadeSmooth", {"Mesh": flipped.outputs[0], "Shade Smooth": True})
        # generated geometry carries no material of its own: assign the mucosa explicitly
        with_material = graph.node("GeometryNodeSetMaterial", {"Geometry": smooth.outputs[0], "Material": material})
        graph.connect(with_material.outputs[0], graph.node("NodeGroupOutput").inputs[0])

    @staticmethod
    def _haustra(graph: NodeGraph, knob: NodeInputs, shader: Mapping, wall_position):
        """(fold, sacs, along): how far each wall vertex moves inward for the folds and outward for the sacs
        (mm), and the vector that moves its ring along the lumen. `wall_position`: the tube's vertex positions
        (the crescent noise reads them, as the wall's bumps do).

        Three taeniae (longitudinal bands, at `tube.taenia_angle` + 0, 120, 240 degrees around the lumen) part the
        wall into three sectors. A fold is a ridge `cos^(2 sharpness)` across one ring of the mesh; it is lowest
        on the taeniae (`tube.fold_notch`), so the lumen seen through a fold is a rounded triangle, and deeper on
        part of the ring (crescent noise). Between the taeniae the wall bulges outward by up to `tube.sac_bulge` x
        radius. Then each vertex moves along the centreline's tangent: a fold swings `tube.fold_tilt` spacings
        either way around the lumen (an oblique ring), in three lobes between the taeniae (`tube.fold_wave`),
        and folds shift along the lumen by up to `tube.fold_irregularity` spacings (uneven spacing). Moving the
        rings, not the ridge across them, keeps each crest on one ring of the mesh: a ridge that crossed the
        rings diagonally cast a sawtooth shadow."""
        axial = graph.node("GeometryNodeInputNamedAttribute", {"Name": "axial"}, data_type="FLOAT").outputs[0]
        around = graph.node("GeometryNodeInputNamedAttribute", {"Name": "around"}, data_type="FLOAT_VECTOR").outputs[0]
        tangent = graph.node("GeometryNodeInputNamedAttribute", {"Name": "tangent"}, data_type="FLOAT_VECTOR").outputs[0]
        around_xyz = graph.node("ShaderNodeSeparateXYZ", {0: around})
        theta = graph.math("ARCTAN2", around_xyz.outputs[1], around_xyz.outputs[0])
        from_taenia = graph.math("MULTIPLY", graph.math("SUBTRACT", theta, knob["tube.taenia_angle"]), 3.0)
        on_taenia = graph.math("MULTIPLY_ADD", graph.math("COSINE", from_taenia), 0.5, 0.5)  # 1 on a taenia, 0 between
        # the ridge, across the mesh's rings
        fold_phase = graph.math("SUBTRACT", graph.math("DIVIDE", axial, knob["tube.fold_spacing_mm"]), knob["tube.fold_phase"])
        ridge = graph.math("POWER", graph.math("ADD", 0.5, graph.math("MULTIPLY", 0.5, graph.math(
            "COSINE", graph.math("MULTIPLY", fold_phase, TAU)))), knob["tube.fold_sharpness"])
        crescent_noise = graph.node("ShaderNodeTexNoise", {
            "Vector": wall_position, "W": knob["tube.noise_seed"], "Scale": float(shader["fold_crescent_noise_scale"]),
            "Detail": float(shader["fold_crescent_noise_detail"])}, noise_dimensions="4D").outputs[0]
        low, high = (float(v) for v in shader["fold_crescent_edges"])
        crescent = graph.map_range(crescent_noise, low, high, 0.0, 1.0)
        ring = graph.math("SUBTRACT", 1.0, graph.math("MULTIPLY", knob["tube.fold_partial"],
                                                      graph.math("SUBTRACT", 1.0, crescent)))
        notch = graph.math("SUBTRACT", 1.0, graph.math("MULTIPLY", knob["tube.fold_notch"], on_taenia))
        fold = graph.math("MULTIPLY", graph.math("MULTIPLY", ridge, graph.math("MULTIPLY", ring, notch)),
                          graph.math("MULTIPLY", knob["tube.fold_depth"], knob["tube.radius_mm"]))
        sacs = graph.math("MULTIPLY", graph.math("SUBTRACT", 1.0, on_taenia),
                          graph.math("MULTIPLY", knob["tube.sac_bulge"], knob["tube.radius_mm"]))
        # the rings moved along the lumen (in fold spacings)
        tilt = graph.math("MULTIPLY", knob["tube.fold_tilt"],
                          graph.math("SINE", graph.math("SUBTRACT", theta, knob["tube.fold_tilt_angle"])))
        wave = graph.math("MULTIPLY", knob["tube.fold_wave"], graph.math("SINE", from_taenia))
        uneven_noise = graph.noise(graph.node("ShaderNodeCombineXYZ", {0: knob["tube.noise_seed"], 1: 0.0, 2: axial}).outputs[0],
                                   float(shader["fold_irregularity_scale"]), 0.0)
        uneven = graph.math("MULTIPLY", graph.math("SUBTRACT", uneven_noise, 0.5),
                            graph.math("MULTIPLY", knob["tube.fold_irregularity"], 2.0))
        moved = graph.math("MULTIPLY", graph.math("ADD", graph.math("ADD", tilt, wave), uneven), knob["tube.fold_spacing_mm"])
        return fold, sacs, graph.vector_math("SCALE", tangent, scale=moved)

    def pose(self, params: Mapping[str, Any]) -> None:
        """Set the tree's per-frame inputs (evaluated at the next depsgraph update)."""
        self.inputs.set(params, {})

    def sync(self, depsgraph) -> None:
        """Give the rendered mesh this frame's evaluated wall positions (the mesh, with its attributes and
        material, is made from the first evaluation; the topology never changes)."""
        evaluated = self.nodes_object.evaluated_get(depsgraph)
        if self.mesh_object is None:
            self.mesh_object = self.bpy.data.objects.new("lumen", self.bpy.data.meshes.new_from_object(evaluated))
            self.mesh_object.pass_index = 0
            self.mesh_object.hide_viewport = True  # not evaluated (or needed) in the viewport depsgraph
            self.scene.collection.objects.link(self.mesh_object)
            self._positions = np.empty(len(self.mesh_object.data.vertices) * 3, np.float32)
            around = np.empty(len(self._positions), np.float32)
            evaluated.data.attributes["around"].data.foreach_get("vector", around)
            self._angles = np.arctan2(around[1::3], around[0::3])  # what the mucosa reads (`mucosa.wall_pattern`)
            evaluated.data.vertices.foreach_get("co", self._positions)
            return
        source, target = evaluated.data.vertices, self.mesh_object.data.vertices
        if len(source) != len(target):
            raise RuntimeError(f"lumen: the geometry nodes made {len(source)} vertices, the rendered mesh has "
                               f"{len(target)}")
        source.foreach_get("co", self._positions)
        target.foreach_set("co", self._positions)
        self.mesh_object.data.update()

    def angle_map(self, location: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
        """The angle around the lumen the mucosa reads (`mucosa.wall_pattern`) near the wall point `location`
        (normal `normal`), as a linear function of world position p: gradient . p + offset. Fitted at the wall
        vertex nearest `location` from its neighbours (the angle changes around a ring, not along the lumen, and
        not off the wall), so that a lesion's foot reads the wall's pattern where it grows out of it. The wall's
        vertices come ring by ring, `segments_around` to a ring (the curve-to-mesh node's order; a test renders a
        lesion over the wall and checks it shows the wall's pattern where it lies)."""
        count = int(self.segments_around)
        positions = self._positions.reshape(-1, 3).astype(np.float64)
        nearest = int(np.argmin(((positions - location) ** 2).sum(axis=1)))
        ring, j = divmod(nearest, count)
        rings = len(positions) // count
        before, after = ring * count + (j - 1) % count, ring * count + (j + 1) % count
        behind, ahead = max(ring - 1, 0) * count + j, min(ring + 1, rings - 1) * count + j
        turn = float(np.angle(np.exp(1j * (self._angles[after] - self._angles[before]))))  # wrapped
        system = np.stack([positions[after] - positions[before], positions[ahead] - positions[behind], normal])
        gradient = np.linalg.solve(system, np.array([turn, 0.0, 0.0]))
        return gradient, float(self._angles[nearest] - gradient @ positions[nearest])

    def ray_cast(self, origin: np.ndarray, direction: np.ndarray, depsgraph):
        """The first wall hit from `origin` along `direction`: (location, normal, distance), or None."""
        from mathutils import Vector

        hit, location, normal, _ = self.nodes_object.ray_cast(Vector(origin.tolist()), Vector(unit(direction).tolist()),
                                                              depsgraph=depsgraph)
        if not hit:
            return None
        location = np.array(location[:])
        return location, np.array(normal[:]), float(np.linalg.norm(location - origin))
