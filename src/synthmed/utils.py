"""Small helpers shared by every part of synthmed: hashing configs, atomic file writes, git info."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def to_plain(obj: Any) -> Any:
    """Turn an OmegaConf node (or anything JSON-like) into plain dicts/lists, resolving interpolations."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any, length: int = 10) -> str:
    """A short, stable hash of a config (key order does not matter). Used to key caches on disk."""
    text = json.dumps(to_plain(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, racing other threads' file writes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): set and restore
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` in one step.

    A crash (or kill -9) leaves either the old file or no file, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    # mkstemp makes the file private (0600); the result should get the mode any new file gets (readable by
    # the others who share a dataset or a sweep dir, as the umask allows)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# Instruction set of torch's CPU kernels, pinned so that hosts of one kind of machine give the same numbers
CPU_ISA_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
# Thread teams of the size asked for: MKL (and OpenMP) may otherwise run a call on fewer threads on a busy host,
# and a sum split otherwise rounds otherwise (MKL's documented conditions for reproducible results)
FIXED_THREADS_ENV = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}


def pin_cpu_isa(environ: dict | None = None, cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, str]:
    """Make torch's CPU kernels give the same numbers run after run, and on x86-64 hosts with and without
    AVX-512. Sets, where not set already: the variables of `FIXED_THREADS_ENV` (MKL and OpenMP keep the number
    of threads asked for, busy host or not), and, only where /proc/cpuinfo lists avx2 and fma, those of
    `CPU_ISA_ENV`: AVX2 for ATen's kernels, oneDNN (convolutions) and MKL (matrix products), which otherwise
    pick the widest instructions the CPU has and round differently (what each was measured to change:
    docs/running.md, "Parallel and cluster sweeps"). `SYNTHMED_CPU_ISA=native` leaves the instruction set to
    the libraries. Must run before torch's first operation (the `python -m synthmed` entry point calls it
    first). Returns what it set."""
    env = os.environ if environ is None else environ
    pinned = {k: v for k, v in FIXED_THREADS_ENV.items() if k not in env}
    env.update(pinned)
    if env.get("SYNTHMED_CPU_ISA", "avx2").lower() == "native":
        return pinned
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), "")
    except OSError:  # not Linux: leave the choice to the libraries
        return pinned
    if not {"avx2", "fma"} <= set(flags.split()):
        return pinned
    isa = {k: v for k, v in CPU_ISA_ENV.items() if k not in env}
    env.update(isa)
    return {**pinned, **isa}


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if missing) while the block runs (the `filelock`
    package: an OS lock released if the holder dies; a lock file where the file system has no `flock`).

    Parallel sweep jobs (`hydra/launcher=local_parallel`) that would make the same cached data (the phantom
    cohort, the slice cache, a trained generator, a rendered dataset) take turns: the later one waits (and says
    so in the log), then finds the data made. `timeout` (seconds; None waits for ever) raises
    `filelock.Timeout` naming the lock file.

    Refused in a spawned worker that is still importing the main script: a script that makes data at its top
    level (no `if __name__ == "__main__":`) is re-run by every worker, which would wait forever for the lock
    its parent holds (a silent hang)."""
    import multiprocessing

    import filelock

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(f"a spawned worker process is importing the main script, and that script makes data "
                           f"(lock {path}) at its top level: put that call under `if __name__ == \"__main__\":`")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock: filelock.BaseFileLock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:  # say why the job sits still, then wait
        logging.getLogger(__name__).info("waiting for %s: another job is making the same data", path)
        lock.acquire(timeout=-1 if timeout is None else timeout)
    except NotImplementedError:  # no flock on this file system (some network mounts): a lock file instead
        lock = filelock.SoftFileLock(f"{path}.soft")
        lock.acquire(timeout=-1 if timeout is None else timeout)
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def spawn_context() -> Iterator[Any]:
    """A "spawn" multiprocessing context for a pool used inside the block, also inside a worker of a
    parallel sweep. A spawned child restores its parent's global start method first; in a joblib (loky)
    worker that is "loky", which a fresh child does not know ("cannot find context for 'loky'"), so for
    the block the global start method is "spawn", then restored.

    A spawned child re-runs the main script's imports; a script piped to python cannot be re-read, so its
    children die as they start (a multiprocessing.Pool restarts them forever, an executor breaks): refused
    here with an error that says so."""
    import multiprocessing
    import sys

    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main is not None and not os.path.exists(main):
        raise RuntimeError(f"worker processes are spawned and re-import the main script, and {main!r} is not "
                           "a file (a script piped to python?): save it to a file, or use python -c")

    method = multiprocessing.get_start_method(allow_none=True)
    standard = method in (None, *multiprocessing.get_all_start_methods())
    if not standard:
        multiprocessing.set_start_method("spawn", force=True)
    try:
        yield multiprocessing.get_context("spawn")
    finally:
        if not standard:
            multiprocessing.set_start_method(method, force=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: JSON has no NaN, and a strict parser (or any
    tool but Python's) refuses `NaN`. An undefined metric is `null`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON (NaN and infinities as null) atomically."""
    text = json.dumps(strict_json(to_plain(obj)), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current git commit of the synthmed checkout, or None outside a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's, else platform's), for the run record: runs on CPUs of other models can
    round differently even with torch's kernels pinned (docs/running.md), so a record says where it ran."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def compose_config(overrides: list[str] | tuple[str, ...] = (), output_dir: str | os.PathLike | None = None) -> Any:
    """The config `python -m synthmed <overrides>` would run, composed from the shipped `synthmed.conf`
    (for tests, benchmarks and scripts). With `output_dir`, Hydra's runtime node is set too, so
    `${paths.output_dir}` resolves to it, and the config is left unlocked for the runner."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module("synthmed.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=output_dir is not None)
    if output_dir is not None:
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        OmegaConf.set_struct(cfg, False)
    return cfg
