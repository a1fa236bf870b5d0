"""What a killed stage leaves behind, and how its worker processes avoid outliving it.

A stage writes every file through `synthmed.utils.atomic_path`: a temporary file next to the target
(`.<name>.<8 random characters>.tmp<suffix>`, e.g. `.image.npy.k2j4x_9a.tmp.npy`), renamed onto the target
when complete. A kill -9 leaves the temporary file. A stage that starts holds its artefact's lock, so no
living process writes into that folder: every temporary file there is a dead writer's, and is removed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# the names utils.atomic_path gives its temporary files (tempfile.mkstemp: 8 characters of [a-z0-9_]);
# `target` is the name of the file being written
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(\.[^./]+)?$")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def remove_stale_temp_files(folder: str | Path, recursive: bool = True,
                            owned: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the `atomic_path` temporary files under `folder` (whose target name satisfies `owned`, when
    given) and return them. Call it only while holding the lock under which those targets are written: then
    no living process owns one of them."""
    removed = []
    folder = Path(folder)
    walk = os.walk(folder) if recursive else [(str(folder), [], [p.name for p in folder.iterdir() if p.is_file()])]
    for root, _dirs, files in walk if folder.is_dir() else []:
        for name in files:
            match = TEMP_NAME.match(name)
            if match and (owned is None or owned(match["target"])):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left by an interrupted run under %s", len(removed), folder)
    return removed


def die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Make this (worker) process end when process `parent` ends, also when it is killed with SIGKILL.

    On Linux the kernel sends SIGKILL to this process when its parent dies (prctl PR_SET_PDEATHSIG); as a
    fallback everywhere (and against the parent dying before prctl took effect), a daemon thread checks every
    `poll_s` seconds that the parent is still `parent` (an orphan is adopted by another process) and exits
    at once if not."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError) as err:  # no prctl: the thread below still watches
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", err)
    if os.getppid() != parent:  # the parent died before this process got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)  # no cleanup: the next run's stage removes what this one left

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
