"""Write constraints.txt: the exact versions of synthmed's dependencies (with the [dev] and [render] extras,
transitively) as installed in this environment. `.ci/run` installs with `-c constraints.txt`, so CI tests
the versions recorded here; re-run this script after an intended upgrade and commit the file.

    python scripts/write_constraints.py
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "synthmed", extras: tuple[str, ...] = ("dev", "render")) -> dict[str, str]:
    """{distribution name: installed version} of everything `root[extras]` pulls in."""
    pinned: dict[str, str] = {}
    todo = [(root, set(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, frozenset(wanted)) in seen:
            continue
        seen.add((name, frozenset(wanted)))
        dist = metadata.distribution(name)
        if _canonical(name) != root:
            pinned[_canonical(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            ok = any(req.marker is None or req.marker.evaluate({**default_environment(), "extra": e})
                     for e in (wanted or {""}))
            if not ok:
                continue
            if _canonical(req.name) == root:  # synthmed[render] inside [dev]
                todo.append((root, set(req.extras)))
                continue
            try:
                metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                sys.exit(f"{req.name} (required by {name}) is not installed: install synthmed[dev] first")
            todo.append((req.name, set(req.extras)))
    return dict(sorted(pinned.items()))


if __name__ == "__main__":
    lines = [f"{name}=={version.split('+')[0]}" for name, version in closure().items()]
    header = "# Exact versions CI installs (pip install -c constraints.txt ...). Made by scripts/write_constraints.py.\n"
    out = Path(__file__).resolve().parents[1] / "constraints.txt"
    out.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} packages)")
