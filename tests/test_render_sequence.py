"""Real (tiny) Blender renders of `render.mode=sequence`: files and their types, poses along the centreline,
depth that puts the wall where the lumen is and the lesion in front of it, flow that maps a frame onto the next,
determinism and resume; still mode untouched by the sequence knobs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

# find, don't import: bpy must only ever be imported in the render workers
if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed", allow_module_level=True)

from synthmed.render import RenderConfigError, compose_render, render_dataset  # noqa: E402
from synthmed.render.camera import fisheye_focal_px, fisheye_rays  # noqa: E402
from synthmed.render.lumen import centreline, centreline_frame  # noqa: E402
from synthmed.render.sequence import FLOW_UNKNOWN, read_flo  # noqa: E402

SIZE, LENGTH, SEQUENCES, STEP_MM = 64, 4, 2, 4.0
FRAMES = LENGTH * SEQUENCES
# a sessile lesion ahead of the last frame's camera, so that every sequence shows one; 4 mm a frame: motion
# the flow test can tell from none
SCENE = (f"lesion.present: 1, lesion.type: sessile, lesion.size_mm: 10.0, lesion.height_mm: 4.0, "
         f"lesion.behind_fold: 0, lesion.view_offaxis: 0.5, sequence.step_mm: {STEP_MM}")
TINY = ["render.mode=sequence", f"render.resolution={SIZE}", f"render.num_frames={FRAMES}",
        f"render.sequence.length={LENGTH}", "render.samples=1", "render.min_visible_pixels=4", "render.seed=3"]


def tiny(*overrides: str, scene: str = SCENE):
    return compose_render([*TINY, f"++render.overrides={{{scene}}}", *overrides])


def _rows(root: Path) -> list[dict]:
    with (root / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _frame(root: Path, index: int) -> dict:
    i = f"{index:06d}"
    side = json.loads((root / "frames" / f"{i}.json").read_text())
    return {"image": np.asarray(Image.open(root / "images" / f"{i}.png"), np.float64),
            "mask": np.asarray(Image.open(root / "masks" / f"{i}.png")) > 0,
            "depth": np.load(root / "depth" / f"{i}.npy"), "normals": np.load(root / "normals" / f"{i}.npy"),
            "c2w": np.array(side["camera_to_world"]), "intrinsics": side["intrinsics"], "row": side["row"]}


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u0 = np.clip(np.floor(u).astype(int), 0, image.shape[1] - 2)
    v0 = np.clip(np.floor(v).astype(int), 0, image.shape[0] - 2)
    a, b = u - u0, v - v0
    if image.ndim == 3:
        a, b = a[..., None], b[..., None]
    return (image[v0, u0] * (1 - a) * (1 - b) + image[v0, u0 + 1] * a * (1 - b) + image[v0 + 1, u0] * (1 - a) * b
            + image[v0 + 1, u0 + 1] * a * b)


BARE = SCENE.replace("lesion.present: 1", "lesion.present: 0")


def _median_angle(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """The median angle (degrees) between two fields of vectors over the pixels `where`."""
    cos = np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-9)
    return math.degrees(math.acos(np.clip(np.median(cos[where]), -1.0, 1.0)))


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seq")
    render_dataset(tiny("render.workers=2"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """The same sequences without their lesions."""
    out = tmp_path_factory.mktemp("bare")
    render_dataset(tiny("render.workers=2", scene=BARE), out, progress=False)
    return out


def test_files_shapes_and_types(seq):
    rows = _rows(seq)
    assert len(rows) == FRAMES
    assert [(int(r["sequence"]), int(r["frame_in_sequence"])) for r in rows] == \
        [(s, k) for s in range(SEQUENCES) for k in range(LENGTH)]
    for r in rows:
        f = _frame(seq, int(r["index"]))
        mask = np.asarray(Image.open(seq / "masks" / f"{r['id']}.png"))
        assert f["image"].shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
        assert int(r["visible_pixels"]) == int(f["mask"].sum())
        assert f["depth"].shape == (SIZE, SIZE) and f["depth"].dtype == np.float32 and f["depth"].min() >= 0
        assert f["normals"].shape == (SIZE, SIZE, 3) and f["normals"].dtype == np.float32
        length = np.linalg.norm(f["normals"], axis=-1)
        assert np.allclose(length[f["depth"] > 0], 1.0, atol=1e-4) and not length[f["depth"] == 0].any()
        # the surface faces the lens: normal . ray < 0 (a bump can tilt a few pixels past the grazing angle)
        rays = fisheye_rays(SIZE, f["intrinsics"]["f_px"])
        assert np.mean(np.sum(f["normals"] * rays, -1)[f["depth"] > 0] < 0) > 0.97
        intrinsics = f["intrinsics"]
        assert intrinsics["model"] == "equisolid" and intrinsics["cx"] == intrinsics["cy"] == (SIZE - 1) / 2
        assert intrinsics["f_px"] == pytest.approx(fisheye_focal_px(float(r["camera.fov_deg"]), SIZE))
        assert np.allclose(f["c2w"][3], [0, 0, 0, 1]) and np.allclose(f["c2w"][:3, :3].T @ f["c2w"][:3, :3], np.eye(3))
        flow = seq / "flow" / f"{r['id']}.flo"
        if int(r["frame_in_sequence"]) == LENGTH - 1:
            assert not flow.exists()  # the last frame of a sequence has no next frame
        else:
            data = read_flo(flow)
            assert data.shape == (SIZE, SIZE, 2) and data.dtype == np.float32
            assert (np.abs(data[f["depth"] == 0]) == np.float32(FLOW_UNKNOWN)).all()
            assert (np.abs(data[f["depth"] > 0]) < 1e9).all()
            valid = np.asarray(Image.open(seq / "flow_valid" / f"{r['id']}.png"))
            assert valid.shape == (SIZE, SIZE) and set(np.unique(valid)) <= {0, 255}
    for s in range(SEQUENCES):
        record = json.loads((seq / "sequences" / f"{s:06d}.json").read_text())
        assert record["frames"] == [f"{s * LENGTH + k:06d}" for k in range(LENGTH)]
        assert np.array(record["camera_to_world"]).shape == (LENGTH, 4, 4)
        gif = Image.open(seq / "sequences" / f"{s:06d}.gif")
        assert gif.n_frames == LENGTH and gif.size == (SIZE, SIZE)
    assert "num_sequences: 2" in (seq / "dataset.yaml").read_text()
    # every sequence shows its lesion, in more than one frame
    for s in range(SEQUENCES):
        assert sum(int(r["label"]) for r in rows if int(r["sequence"]) == s) >= 2, "lesion not seen: test is weak"


def test_poses_follow_the_centreline(seq):
    rows = _rows(seq)
    for s in range(SEQUENCES):
        frames = [_frame(seq, s * LENGTH + k) for k in range(LENGTH)]
        params = {k: float(v) for k, v in frames[0]["row"].items() if k.startswith("tube.")}
        axial = [float(f["row"]["camera.frame_axial_mm"]) for f in frames]
        assert np.allclose(np.diff(axial), STEP_MM)
        along = []
        for f, z in zip(frames, axial, strict=True):
            centre, tangent, _ = centreline_frame(params, z)
            position = f["c2w"][:3, 3]
            assert np.linalg.norm(position - centre) < params["tube.radius_mm"] * (1 - params["tube.radius_variation"])
            assert float(f["c2w"][:3, 2] @ tangent) > 0  # looking down the lumen, not back
            along.append(float((position - centreline(params, axial[0])) @ tangent))
        assert np.all(np.diff(along) > 0.5 * STEP_MM)
        # the scene is that of the sequence's first frame
        assert len({json.dumps({k: v for k, v in r.items() if k.startswith(("tube.", "lesion.type"))})
                     for r in rows if int(r["sequence"]) == s}) == 1


def test_depth_puts_the_wall_on_the_lumen(seq):
    """Depth is the distance along each pixel's ray of the equisolid fisheye: the points it gives (with the
    camera pose) lie on the lumen's wall, between the deepest fold and the widest radius (a haustral sac). Read
    as z-depth, the points off axis would fall inside the lumen (a 70-degree ray's point comes 3x closer)."""
    for index in (0, FRAMES - 1):
        f = _frame(seq, index)
        params = {k: float(v) for k, v in f["row"].items() if k.startswith("tube.")}
        rays = fisheye_rays(SIZE, f["intrinsics"]["f_px"])
        surface = (f["depth"] > 0) & ~f["mask"]
        points = (rays[surface] * f["depth"][surface][:, None]) @ f["c2w"][:3, :3].T + f["c2w"][:3, 3]
        line = np.stack([centreline(params, z) for z in np.arange(0.0, 320.0, 0.25)])
        distance = np.sqrt(((points[:, None, :] - line[None]) ** 2).sum(-1)).min(axis=1)
        radius, noise = params["tube.radius_mm"], params["tube.wall_noise_mm"]
        low = radius * (1 - params["tube.radius_variation"] - params["tube.fold_depth"]) - noise - 0.5
        high = radius * (1 + params["tube.radius_variation"] + params["tube.sac_bulge"]) + noise + 0.5
        assert low <= distance.min() and distance.max() <= high, (index, distance.min(), distance.max(), low, high)


def test_flow_maps_each_frame_onto_the_next(seq):
    """Warping frame t+1 back with the flow: the lesion mask lands on frame t's, the next frame's depth is the
    distance of frame t's points from the next camera, and its normals (in the world) are frame t's. (Not the
    images: the light rides on the scope, so a point's brightness changes from frame to frame.)"""
    grid_v, grid_u = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    for s in range(SEQUENCES):
        for k in range(LENGTH - 1):
            index = s * LENGTH + k
            f, g = _frame(seq, index), _frame(seq, index + 1)
            flow = read_flo(seq / "flow" / f"{index:06d}.flo").astype(np.float64)
            valid = np.asarray(Image.open(seq / "flow_valid" / f"{index:06d}.png")) > 0
            assert valid[f["depth"] > 0].mean() > 0.4  # 4 mm a frame: the near wall at the rim leaves the view
            u, v = grid_u + np.where(valid, flow[..., 0], 0), grid_v + np.where(valid, flow[..., 1], 0)
            rays = fisheye_rays(SIZE, f["intrinsics"]["f_px"])
            points = (rays * f["depth"][..., None]) @ f["c2w"][:3, :3].T + f["c2w"][:3, 3]
            expected = np.linalg.norm(points - g["c2w"][:3, 3], axis=-1)
            warped_depth = _bilinear(g["depth"].astype(np.float64), u, v)
            relative = np.abs(warped_depth - expected)[valid] / expected[valid]
            assert np.median(relative) < 0.005 and np.mean(relative < 0.03) > 0.95, (index, np.median(relative))
            warped_mask = _bilinear(g["mask"].astype(np.float64), u, v) > 0.5
            assert np.mean(warped_mask[valid] == f["mask"][valid]) > 0.995
            if f["mask"][valid].sum() >= 8:
                # a lesion of 10-20 px is mostly rim, where a binary mask sampled between pixels is a coin toss
                # (renderer 7's scene here: 64-100% of its pixels landed on the next lesion, every interior one):
                # each of its pixels lands within a pixel of the next frame's lesion
                near = binary_dilation(g["mask"], np.ones((3, 3), bool))
                assert np.all(_bilinear(near.astype(np.float64), u, v)[valid & f["mask"]] > 0.5), index
            # the normal pass (rendered apart from the depth the flow comes from): a point's normal, in the world,
            # is the same in both frames; unwarped, the pixels' normals are 10-15 degrees apart
            normal = f["normals"] @ f["c2w"][:3, :3].T
            warped = _bilinear(g["normals"].astype(np.float64) @ g["c2w"][:3, :3].T, u, v)
            unwarped = g["normals"] @ g["c2w"][:3, :3].T
            assert _median_angle(normal, warped, valid) < min(2.0, 0.25 * _median_angle(normal, unwarped, valid)), index


def test_lesion_stands_in_front_of_its_wall(seq, bare):
    """The same sequences without their lesions: at the lesion's pixels the wall is farther than the lesion; the
    camera path does not depend on the lesion, and away from it the depth is the same to the bit."""
    seen = 0
    for index in range(FRAMES):
        with_lesion, without = _frame(seq, index), _frame(bare, index)
        assert np.array_equal(with_lesion["c2w"], without["c2w"]) and not without["mask"].any()
        lesion = with_lesion["mask"]
        near = np.zeros_like(lesion)
        for dv in range(-2, 3):
            for du in range(-2, 3):
                near |= np.roll(np.roll(lesion, dv, 0), du, 1)
        assert np.array_equal(with_lesion["depth"][~near], without["depth"][~near])
        if lesion.any():
            gap = without["depth"][lesion] - with_lesion["depth"][lesion]
            assert gap.min() > -1e-3 and gap.mean() > 0.3, (index, gap.min(), gap.mean())
            seen += 1
    assert seen >= 4


def test_same_config_same_bytes_and_resume(bare, tmp_path):
    """One worker renders the bytes two workers did; a sequence cut short (its last frames' files gone) is
    finished from its first missing frame, to the same bytes."""
    render_dataset(tiny("render.workers=1", scene=BARE), tmp_path / "again", progress=False)
    assert _files(tmp_path / "again") == _files(bare)
    cut = tmp_path / "cut"
    shutil.copytree(bare, cut)
    for name in ("frames/000002.json", "frames/000003.json", "flow/000002.flo", "images/000003.png", "manifest.csv",
                 "dataset.yaml", "sequences/000000.gif"):
        (cut / name).unlink()
    render_dataset(tiny("render.workers=1", scene=BARE), cut, progress=False)
    assert _files(cut) == _files(bare)


def test_same_config_same_bytes_with_lesions(seq, tmp_path):
    """With lesions too, normals included: one worker renders the bytes two workers did. (Until the lesion and
    clutter meshes had their faces sorted, `nodes.mesh_in_order`, a lesion's normals differed between processes
    by a float32 ulp at a few pixels; docs/render.md, "Work, resume, determinism".)"""
    render_dataset(tiny("render.workers=1"), tmp_path, progress=False)
    assert _files(tmp_path) == _files(seq)


def test_num_frames_must_be_whole_sequences(tmp_path):
    with pytest.raises(RenderConfigError, match="render.num_frames"):
        render_dataset(tiny(f"render.num_frames={FRAMES + 1}"), tmp_path, progress=False)
    assert not (tmp_path / "frames").exists()


def test_still_mode_ignores_the_sequence_knobs(tmp_path):
    """Still frames never see the sequence knobs: no sequence columns or passes, and the same images and masks
    whatever the sequence knobs say."""
    still = ["render.resolution=32", "render.num_frames=2", "render.samples=1", "render.workers=1"]
    render_dataset(compose_render(still), tmp_path / "a", progress=False)
    render_dataset(compose_render([*still, "render.sequence.length=3",
                                   "++render.overrides={sequence.step_mm: 9.0, sequence.roll_deg: 5.0}"]),
                   tmp_path / "b", progress=False)
    header = (tmp_path / "a" / "manifest.csv").read_text().splitlines()[0].split(",")
    assert "sequence" not in header and "frame_in_sequence" not in header and "camera.frame_axial_mm" not in header
    assert not any((tmp_path / "a" / d).exists() for d in ("normals", "flow", "flow_valid", "sequences", "depth"))
    for sub in ("images", "masks"):
        for p in sorted((tmp_path / "a" / sub).glob("*.png")):
            assert p.read_bytes() == (tmp_path / "b" / sub / p.name).read_bytes()
    assert math.isfinite(float(_rows(tmp_path / "a")[0]["camera.offset_mm"]))
