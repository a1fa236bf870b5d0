"""The renderer's parts against each other: the numpy centreline that posing uses and the Geometry Nodes
tree that makes the lumen are two codings of one function; a real scene checks that they agree."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed", allow_module_level=True)

# Runs in its own interpreter: bpy is never imported in the test process (forked tests follow).
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params
    from synthmed.render.lumen import PLAIN_RINGS, centreline
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=32", "render.seed=7"]))
    scene = ColonScene(cfg, threads=1)
    along, around = cfg["scene"]["segments_along"] + 1, cfg["scene"]["segments_around"]
    gaps = []
    for index in range(4):
        params = sample_params(cfg, index)
        # no folds, no bumps, no sacs, rings not moved: every ring of the wall is then a circle around its
        # centreline point
        params.update({"tube.fold_depth": 0.0, "tube.wall_noise_mm": 0.0, **PLAIN_RINGS})
        scene.pose(params)
        mesh = scene.lumen.mesh_object.data
        positions = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", positions)
        rings = positions.reshape(along, around, 3).astype(np.float64).mean(axis=1)
        numpy_centres = np.stack([centreline(params, z) for z in rings[:, 2]])
        gaps.append({"max_gap_mm": float(np.abs(rings - numpy_centres).max()),
                     "bend_mm": float(np.abs(numpy_centres[:, :2]).max()),
                     "z_span_mm": float(rings[-1, 2] - rings[0, 2])})
    scene.close()
    print(json.dumps(gaps))
""")


def test_node_centreline_matches_numpy():
    """For four random draws of the tube parameters, the centres of the evaluated wall rings lie on the
    numpy centreline within 0.001 mm (measured: ~1e-5 mm, float32 vertices; a bend phase off by 0.05 rad
    is 0.02-0.2 mm off)."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gaps = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(gaps) == 4
    for gap in gaps:
        assert gap["z_span_mm"] == pytest.approx(320.0, abs=1e-3)  # the rings span the whole tube ...
        assert gap["bend_mm"] > 1.0  # ... and the lumen is bent: the check is not trivially met
        assert gap["max_gap_mm"] < 1e-3, gaps


HAUSTRA_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params
    from synthmed.render.lumen import PLAIN_RINGS
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=32", "render.seed=7"]))
    scene = ColonScene(cfg, threads=1)
    along, around = cfg["scene"]["segments_along"] + 1, cfg["scene"]["segments_around"]
    # a straight lumen on the z axis: only the haustra shape its wall
    straight = {"tube.bend_amplitude_mm": 0.0, "tube.bend_amplitude2_mm": 0.0, "tube.radius_variation": 0.0,
                "tube.wall_noise_mm": 0.0, "tube.fold_partial": 0.0, "tube.radius_mm": 18.0, "tube.fold_spacing_mm": 20.0,
                "tube.fold_phase": 0.0, "tube.fold_depth": 0.4, "tube.fold_sharpness": 7.0}
    cases = {"shaped": {"tube.fold_notch": 0.8, "tube.sac_bulge": 0.1, "tube.taenia_angle": 0.5, "tube.fold_tilt": 0.3,
                        "tube.fold_tilt_angle": 2.0, "tube.fold_wave": 0.15, "tube.fold_irregularity": 0.0}}
    for seed in (3.0, 41.0, 77.0):
        cases[f"uneven_{seed:g}"] = {**PLAIN_RINGS, "tube.fold_irregularity": 0.2, "tube.fold_tilt": 0.45,
                                     "tube.noise_seed": seed}
    out = {}
    for name, knobs in cases.items():
        scene.pose({**sample_params(cfg, 0), **straight, **knobs})
        mesh = scene.lumen.mesh_object.data
        positions = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", positions)
        unit = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.attributes["around"].data.foreach_get("vector", unit)
        out[name] = {"xyz": positions.reshape(along, around, 3).tolist(),
                     "theta": np.arctan2(unit[1::3], unit[0::3]).reshape(along, around)[0].tolist()}
    scene.close()
    print(json.dumps(out))
""")


def test_haustra_shape_the_wall():
    """The haustra on a straight lumen, vertex by vertex: each wall point lies at the radius and axial position
    `_haustra` documents (folds notched on the three taeniae, the wall bulging between them, rings swung into
    oblique, three-lobed folds), so the lumen seen through a fold is a rounded triangle; and at the strongest
    uneven spacing and tilt the rings never cross (the wall never folds over itself)."""
    proc = subprocess.run([sys.executable, "-c", HAUSTRA_SCRIPT], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import numpy as np

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shaped = out["shaped"]
    xyz, theta = np.array(shaped["xyz"]), np.array(shaped["theta"])[None, :]
    radius, spacing, depth = 18.0, 20.0, 0.4 * 18.0
    rings_z = np.linspace(0.0, 320.0, xyz.shape[0])[:, None]
    on_taenia = 0.5 + 0.5 * np.cos(3.0 * (theta - 0.5))
    ridge = (0.5 + 0.5 * np.cos(2.0 * np.pi * rings_z / spacing)) ** 7.0
    expected_r = radius * (1.0 + 0.1 * (1.0 - on_taenia)) - depth * ridge * (1.0 - 0.8 * on_taenia)
    expected_z = rings_z + spacing * (0.3 * np.sin(theta - 2.0) + 0.15 * np.sin(3.0 * (theta - 0.5)))
    assert np.abs(np.hypot(xyz[..., 0], xyz[..., 1]) - expected_r).max() < 1e-3
    assert np.abs(xyz[..., 2] - expected_z).max() < 1e-3
    # through a fold's crest the lumen is a rounded triangle: widest on the taeniae, 4 mm narrower between
    crest = np.hypot(xyz[10, :, 0], xyz[10, :, 1])  # ring 10 lies at z = 20 mm, a crest
    widest = np.sort(np.argsort(crest)[-3:])
    assert np.all(on_taenia[0, widest] > 0.95), (widest, on_taenia[0, widest])
    assert crest.max() - crest.min() == pytest.approx(depth * 0.8 - 0.1 * radius, abs=0.05)
    for name in ("uneven_3", "uneven_41", "uneven_77"):
        z = np.array(out[name]["xyz"])[..., 2]
        steps = np.diff(z, axis=0)
        assert steps.min() > 0.5, (name, steps.min())  # 2 mm rings stay in order, at least 0.5 mm apart
        shift = z.mean(axis=1) - rings_z[:, 0]  # tilt averages out around a ring; what is left is the unevenness
        assert 0.5 < np.abs(shift).max() <= 0.2 * spacing + 1e-3, (name, np.abs(shift).max())


PROCESS_SCRIPT = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=32", "render.samples=16", "render.seed=3",
                                         "render.textures.mode=procedural", "render.lesion_probability=1.0"]))
    scene = ColonScene(cfg, threads=1)
    out = {}
    for index in range(3):
        params = sample_params(cfg, index)
        params.update({"clutter.debris": 1, "clutter.bubbles": 1})
        passes = scene.render(params, 11 + index)
        placed = passes["derived"]["lesion.placed"]
        out[str(index)] = {"placed": placed, **{k: hashlib.sha1(np.ascontiguousarray(passes[k]).tobytes()).hexdigest()
                                                for k in ("rgb", "albedo", "diffuse", "depth")}}
    data = scene.lesions.objects["sessile"].data
    out["faces"] = [tuple(p.vertices) for p in data.polygons][:5]
    scene.close()
    print(json.dumps(out))
""")


def test_a_frame_is_the_same_in_every_process():
    """A frame's float passes are bit-identical whichever process renders it. bmesh makes the lesion and clutter
    spheres with their faces in an order that changes from process to process; before `mesh_in_order` sorted
    them, their vertex normals (summed over the faces in that order) differed in the last bit between render
    workers, and a resumed dataset now and then differed from an uninterrupted one by one level in a pixel."""
    runs = [subprocess.run([sys.executable, "-c", PROCESS_SCRIPT], capture_output=True, text=True, timeout=180)
            for _ in range(3)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [json.loads(proc.stdout.strip().splitlines()[-1]) for proc in runs]
    assert any(frame["placed"] for key, frame in outs[0].items() if key != "faces"), "no lesion was placed"
    assert outs[0]["faces"] == sorted(outs[0]["faces"])
    assert outs[1] == outs[0] and outs[2] == outs[0]
