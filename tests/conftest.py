from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from frames import make_frames  # noqa: E402

from synthmed.utils import compose_config as _compose  # noqa: E402

# Tests never talk to a W&B server; offline runs are written to disk and read back.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def compose_config():
    """The one way tests get a config: `compose_config(["experiment=colon_cls", "scale=ci"], output_dir=...)`
    composes the shipped configs as `python -m synthmed` would (synthmed.utils.compose_config, which the
    benchmarks use too)."""
    return _compose


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory) -> Path:
    return make_frames(tmp_path_factory.mktemp("frames") / "set", n=40, size=40)


def run_synthmed(args: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 600):
    """Run `python -m synthmed ...` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "synthmed", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"synthmed {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    for metrics in Path(cwd).rglob("metrics.json"):  # every experiment a test runs writes strict JSON
        json.loads(metrics.read_text(), parse_constant=_refuse_constant)
    return proc


def _refuse_constant(name: str):
    raise AssertionError(f"metrics.json holds {name}: not valid JSON (an undefined metric is null)")
