"""The dataset writer: plans frames, spreads them over spawned worker processes (each builds the Blender
scene once), writes every frame atomically with a sidecar JSON, and has `outputs.finalize` assemble
manifest.csv, preview.png, (coco.json) and dataset.yaml once all frames of the dataset exist. No bpy here:
workers import it.

`mode: sequence` hands out whole sequences instead of frames (a worker renders a sequence's frames in order:
a frame's flow needs the next frame's depth) and writes the geometry passes and sequences/ besides.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.cleanup import die_with_parent, remove_stale_temp_files
from synthmed.render.config import dataset_name, frame_seed, pattern_lane, resolve_config, sample_params
from synthmed.render.outputs import (
    DERIVED_COLUMNS,
    SEQUENCES_DIR,
    SIDE_DIR,
    finalize,
    frame_id,
    frame_row,
    sidecar,
)
from synthmed.render.sequence import sequence_length
from synthmed.utils import atomic_path, atomic_write_json, file_lock, spawn_context

SCRATCH = ".scratch"  # the workers' per-frame EXR files, one folder per render process (<pid>@<host>)
PATTERNS = ".patterns"  # the baked mucosa patterns (textures.mode=baked); removed once the dataset is complete
SEQUENCE_DIRS = ("depth", "normals", "flow", "flow_valid")  # mode=sequence: the geometry passes, one file a frame

__all__ = ["dataset_name", "render_dataset", "frame_id"]

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The number of CPUs this process may run on: its affinity mask where the OS has one (SLURM, taskset and
    container CPU sets restrict it), else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _threads(cfg: Mapping, workers: int | None = None) -> int:
    """Cycles threads per worker: `threads` if set, else the usable CPUs split among the `workers`."""
    if cfg["threads"]:
        return int(cfg["threads"])
    return max(1, usable_cpus() // int(workers or cfg["workers"]))


def _frame_done(out: Path, index: int, length: int | None = None) -> bool:
    """Frame `index` is finished: its sidecar (written last) and its files exist. `length`: mode=sequence's
    frames per sequence (its frames have geometry passes, and flow unless last in their sequence)."""
    i = frame_id(index)
    done = (sidecar(out, index).exists() and (out / "images" / f"{i}.png").exists()
            and (out / "masks" / f"{i}.png").exists())
    if done and length:
        names = [f"depth/{i}.npy", f"normals/{i}.npy"]
        if index % length != length - 1:
            names += [f"flow/{i}.flo", f"flow_valid/{i}.png"]
        done = all((out / name).exists() for name in names)
    return done


# --------------------------------------------------------------------------------- left-overs of a kill
_HOST = socket.gethostname()


def _scratch_dir(out: Path) -> Path:
    # host and pid: another node rendering a shard into the same (shared) folder has its own pids
    return out / SCRATCH / f"{os.getpid()}@{_HOST}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_dead_scratch(out: Path) -> list[Path]:
    """Remove the scratch folders under `<out>/.scratch` whose render process (same host) no longer exists;
    a live process's folder is never touched. Returns the folders removed."""
    removed = []
    root = out / SCRATCH
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        pid, _, host = d.name.partition("@")
        if not pid.isdigit() or (host and host != _HOST) or _pid_alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    try:
        root.rmdir()  # only if no other process is using it
    except OSError:
        pass
    return removed


# --------------------------------------------------------------------------------- worker side
_STATE: dict[str, Any] = {}
def _pin_worker(threads: int, workers: int) -> None:
    """Give this worker its own `threads` cores before bpy is imported. Blender's task scheduler sizes itself
    from the affinity mask; unpinned, each worker keeps an idle scheduler thread spinning on a core the
    other workers need (measured: ~0.4 s of CPU per frame wasted at 1 thread a worker)."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    ident = mp.current_process()._identity
    if not ident or workers * threads > len(cores):
        return
    k = (ident[-1] - 1) % workers
    os.sched_setaffinity(0, cores[k * threads:(k + 1) * threads])


def _worker_init(cfg: dict, out: str, threads: int, scratch: str, workers: int = 1, parent: int | None = None) -> None:
    if parent is not None:
        die_with_parent(parent)
    # an exception here would make the Pool respawn workers forever: keep it and raise it per frame
    try:
        _pin_worker(threads, workers)
        # Blender prints a line per render ("Saved: ...") on stdout: keep the progress bar readable
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        from synthmed.render.scene import ColonScene

        _STATE["cfg"], _STATE["out"] = cfg, Path(out)
        _STATE["scene"] = ColonScene(cfg, threads=threads, tmp_root=scratch)
        import bpy

        _STATE["blender"] = bpy.app.version_string
    except Exception as e:  # noqa: BLE001
        _STATE["error"] = RuntimeError(f"render worker failed to build the scene: {type(e).__name__}: {e}")


def _pattern_path(out: Path, lane: int) -> Path:
    return out / PATTERNS / f"pattern{lane}.npy"


def _worker_bake(lane: int) -> int:
    """Bake one mucosa pattern and save it atomically (a killed bake leaves no half-written pattern)."""
    if "error" in _STATE:
        raise _STATE["error"]
    pattern = _STATE["scene"].bake_pattern(lane)
    with atomic_path(_pattern_path(_STATE["out"], lane)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, pattern)
    return lane


def _scene():
    """This worker's scene, the baked patterns loaded on first use (every pattern the run's frames show was
    baked before the first frame was handed out)."""
    if "error" in _STATE:
        raise _STATE["error"]
    scene, cfg = _STATE["scene"], _STATE["cfg"]
    if cfg["textures"]["mode"] == "baked" and not scene.pattern_lanes:
        paths = {k: _pattern_path(_STATE["out"], k) for k in range(int(cfg["textures"]["patterns"]))}
        scene.set_pattern({k: np.load(path) for k, path in paths.items() if path.exists()})
    return scene


def _worker_frame(index: int) -> int:
    render_frame(_scene(), _STATE["cfg"], _STATE["out"], index, _STATE["blender"])
    return index


def _worker_sequence(sequence: int) -> int:
    """Render the frames of `sequence` not finished yet; returns how many frames that was."""
    return render_sequence(_scene(), _STATE["cfg"], _STATE["out"], sequence, _STATE["blender"])


def render_frame(scene, cfg: Mapping, out: Path, index: int, blender: str) -> dict[str, Any]:
    """Render, post-process and write one frame (images, masks, [depth], then its sidecar last)."""
    from synthmed.render.post import finish_frame, write_png

    p = sample_params(cfg, index)
    seed = frame_seed(cfg["seed"], index)
    rendered = scene.render(p, seed)
    f = finish_frame(rendered, p, cfg)
    fid = frame_id(index)
    write_png(out / "images" / f"{fid}.png", f["image"])
    write_png(out / "masks" / f"{fid}.png", f["mask"])
    if cfg["depth"]:
        write_png(out / "depth" / f"{fid}.png", f["depth"])
    row = {**frame_row(fid, index, seed, f), **p}
    row.update({k: rendered["derived"].get(k) for k in DERIVED_COLUMNS})
    side = {"row": row, "blender": blender}
    atomic_write_json(sidecar(out, index), side)
    return side


def render_sequence(scene, cfg: Mapping, out: Path, sequence: int, blender: str) -> int:
    """Render sequence `sequence`'s unfinished frames, from the first of them to its end, in order: images,
    masks, depth, normals, then (once the next frame is rendered) the frame's flow, then its sidecar. Returns the
    number of frames rendered. The scene is posed once; only the camera moves."""
    from synthmed.render.camera import fisheye_intrinsics, fisheye_rays
    from synthmed.render.post import border_mask, finish_frame, write_png
    from synthmed.render.sequence import (
        camera_normals,
        camera_path,
        npy_bytes,
        write_bytes,
    )

    length = sequence_length(cfg)
    first = sequence * length
    todo = [k for k in range(length) if not _frame_done(out, first + k, length)]
    if not todo:
        return 0
    p = sample_params(cfg, first)  # the sequence's scene: its first frame's parameters
    placed = scene.pose_sequence(p)
    path = camera_path(p, cfg, length, scene.ray_cast, frame_seed(cfg["seed"], first))
    anchor, start = path[int(cfg["sequence"]["lesion_frame"])], path[0]  # the camera that places the lesion
    placed.update(scene.place_objects(p, (anchor.position, anchor.forward, anchor.up),
                                      (start.position, start.forward, start.up)))
    lesion_at = scene.lesion_location() if placed["lesion.placed"] else None
    size = int(cfg["resolution"])
    intrinsics = fisheye_intrinsics(float(p["camera.fov_deg"]), size)
    rays = fisheye_rays(size, intrinsics["f_px"])
    inside = border_mask(size, p["endoscope.border"], float(p["endoscope.border_radius"]),
                         float(cfg["endoscope"]["octagon_cut"]))
    previous = None  # (index, sidecar, depth, camera-to-world) of the frame whose flow waits for this one
    for k in range(todo[0], length):
        index, pose = first + k, path[k]
        fid, seed = frame_id(index), frame_seed(cfg["seed"], index)
        scene.move_camera(p, pose.position, pose.right, pose.up, pose.forward)
        rendered = scene.render_current(seed)
        f = finish_frame(rendered, p, cfg)
        surface = inside & (rendered["depth"] < 1e9)
        depth = np.where(surface, rendered["depth"], 0.0).astype(np.float32)
        c2w = pose.camera_to_world()
        write_png(out / "images" / f"{fid}.png", f["image"])
        write_png(out / "masks" / f"{fid}.png", f["mask"])
        write_bytes(out / "depth" / f"{fid}.npy", npy_bytes(depth))
        write_bytes(out / "normals" / f"{fid}.npy", npy_bytes(camera_normals(rendered["normal"], c2w, surface)))
        row = {**frame_row(fid, index, seed, f), "sequence": sequence, "frame_in_sequence": k, **p}
        row.update(placed)
        row.update({"camera.offset_mm": pose.offset_mm, "camera.frame_axial_mm": pose.axial_mm,
                    "lesion.distance_mm": -1.0 if lesion_at is None
                    else float(np.linalg.norm(lesion_at - pose.position))})
        side = {"row": row, "blender": blender, "camera_to_world": c2w.tolist(), "intrinsics": intrinsics,
                "lesion_mm": None if lesion_at is None else lesion_at.tolist()}
        if previous is not None:
            _finish_flow(out, previous, depth, c2w, rays, intrinsics["f_px"], cfg["sequence"])
        previous = (index, side, depth, c2w)
    atomic_write_json(sidecar(out, previous[0]), previous[1])  # the last frame: no flow
    return length - todo[0]


def _finish_flow(out: Path, previous: tuple, depth_next: np.ndarray, c2w_next: np.ndarray, rays: np.ndarray,
                 focal_px: float, sequence: Mapping) -> None:
    """Write the flow of the frame before (now that the next frame's depth is known), then its sidecar."""
    from synthmed.render.post import write_png
    from synthmed.render.sequence import flo_bytes, optical_flow, write_bytes

    index, side, depth, c2w = previous
    flow, seen = optical_flow(depth, c2w, depth_next, c2w_next, rays, focal_px,
                              float(sequence["flow_visible_tolerance_mm"]), float(sequence["flow_visible_tolerance_rel"]))
    write_bytes(out / "flow" / f"{frame_id(index)}.flo", flo_bytes(flow))
    write_png(out / "flow_valid" / f"{frame_id(index)}.png", seen.astype(np.uint8) * 255)
    atomic_write_json(sidecar(out, index), side)


# --------------------------------------------------------------------------------- main side
def render_dataset(cfg: Any, out_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Render the dataset of a `render` config into out_dir (resuming a partial one); return out_dir.
    `cfg`: the `render` node of a composed config (`compose_render([...])` outside a Hydra app).

    Writes images/, masks/ (0/255), frames/<id>.json sidecars, and, once every frame of the dataset exists
    (all shards), manifest.csv, preview.png, [coco.json] and finally dataset.yaml.
    """
    c = resolve_config(cfg)
    out = Path(out_dir)
    length = sequence_length(c) if c["mode"] == "sequence" else None  # frames a sequence; None: still frames
    if length:
        frame_dirs = ("images", "masks", SIDE_DIR) + SEQUENCE_DIRS
    else:
        frame_dirs = ("images", "masks", SIDE_DIR) + (("depth",) if c["depth"] else ())
    for sub in frame_dirs:
        (out / sub).mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(out)  # of renders killed before they could clean up
    n, shard, shards = int(c["num_frames"]), int(c["shard"]), int(c["num_shards"])
    # jobs that need the same frames (e.g. the seeds of a parallel sweep) take turns: the later one waits,
    # then finds them made; other shards of the dataset hold other locks and render side by side
    with file_lock(out / f".render-shard{shard}of{shards}.lock"):
        def mine(name: str) -> bool:  # a file of one of this shard's frames (a sequence's frames share a shard)
            stem = name.split(".", 1)[0]
            return stem.isdigit() and (int(stem) // (length or 1)) % shards == shard

        for sub in frame_dirs:
            remove_stale_temp_files(out / sub, recursive=False, owned=mine)
        if length:
            todo = [s for s in range(n // length) if s % shards == shard
                    and not all(_frame_done(out, i, length) for i in range(s * length, (s + 1) * length))]
            frames_todo = sum(not _frame_done(out, i, length) for s in todo for i in range(s * length, (s + 1) * length))
        else:
            todo = [i for i in range(n) if i % shards == shard and not _frame_done(out, i)]
            frames_todo = len(todo)
        if todo:
            log.info("rendering %d of the %d frames of shard %d/%d into %s", frames_todo, n, shard, shards, out)
            _render_frames(c, out, todo, progress, length)
    with file_lock(out / ".finalize.lock"):
        remove_stale_temp_files(out, recursive=False)  # manifest, preview, coco, dataset.yaml of a killed finalize
        if length:
            (out / SEQUENCES_DIR).mkdir(exist_ok=True)
            remove_stale_temp_files(out / SEQUENCES_DIR, recursive=False)
        if all(_frame_done(out, i, length) for i in range(n)):
            finalize(c, out, patterns=out / PATTERNS)
    return out


def _render_frames(c: dict, out: Path, todo: list[int], progress: bool, length: int | None = None) -> None:
    """Render the frames `todo` (or, with `length`, the sequences `todo`) over the workers."""
    from tqdm.auto import tqdm

    workers = max(1, min(int(c["workers"]), len(todo)))
    threads = _threads(c, workers)
    scratch = _scratch_dir(out)  # per process: concurrent shards never remove each other's
    with spawn_context() as ctx, ctx.Pool(workers, initializer=_worker_init,
                                          initargs=(c, str(out), threads, str(scratch), workers, os.getpid())) as pool:
        if c["textures"]["mode"] == "baked":
            firsts = [s * length for s in todo] if length else todo  # a sequence shows its first frame's pattern
            _bake_patterns(c, out, _lanes_shown(c, firsts), pool, progress)
        with tqdm(total=len(todo) * (length or 1), unit="frame", desc=f"render {out.name}", disable=not progress,
                  smoothing=0.1) as bar:
            if length:
                for _ in pool.imap_unordered(_worker_sequence, todo, chunksize=1):
                    bar.update(length)  # frames already made before a resume count as done
            else:
                for _ in pool.imap_unordered(_worker_frame, todo, chunksize=1):
                    bar.update(1)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        (out / SCRATCH).rmdir()  # only if no other shard is using it
    except OSError:
        pass


def _lanes_shown(c: dict, frames: list[int]) -> list[int]:
    """The mucosa patterns the frames show (a small dataset may not need all of them)."""
    lanes: set[int] = set()
    for i in frames:
        lanes.add(pattern_lane(c, sample_params(c, i, ["mucosa.pattern"])))
        if len(lanes) == int(c["textures"]["patterns"]):
            break
    return sorted(lanes)


def _bake_patterns(c: dict, out: Path, lanes: list[int], pool, progress: bool) -> None:
    """Bake the mucosa patterns `lanes` (those the frames to render show) that are not baked yet, spread over
    the render workers: once per dataset (shards rendering into the same dir take turns, the later one
    finds them made)."""
    from tqdm.auto import tqdm

    (out / PATTERNS).mkdir(exist_ok=True)
    with file_lock(out / PATTERNS / ".bake.lock"):
        remove_stale_temp_files(out / PATTERNS, recursive=False)  # of a bake that was killed
        missing = [k for k in lanes if not _pattern_path(out, k).exists()]
        if not missing:
            return
        log.info("baking %d mucosa patterns into %s", len(missing), out / PATTERNS)
        with tqdm(total=len(missing), unit="pattern", desc="bake mucosa patterns", disable=not progress) as bar:
            for _ in pool.imap_unordered(_worker_bake, missing, chunksize=1):
                bar.update(1)


