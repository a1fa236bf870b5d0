"""The frame every experiment uses: configs, runner, logging, sweep tables, launchers, errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import run_synthmed
from omegaconf import OmegaConf
from wandb_records import logged_history, read_records, run_info

from synthmed.utils import pin_cpu_isa

CONF = Path(__file__).resolve().parents[1] / "conf"  # the top-level conf/, shipped as synthmed.conf
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
CI = ["scale=ci", "logger=csv"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(compose_config, experiment, tmp_path):
    for scale in ("ci", "cpu", "paper"):
        cfg = compose_config([f"experiment={experiment}", f"scale={scale}"], output_dir=tmp_path)
        del cfg.hydra  # the job's own config must resolve; Hydra's node is resolved by Hydra
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved["name"] == experiment
        assert resolved["scale"]["name"] == scale
        assert "_target_" in resolved["data"]


def test_command_line_beats_experiment(compose_config, tmp_path):
    cfg = compose_config(["experiment=colon_cls", "scale=ci", "trainer.max_epochs=7", "model.lr=0.01"], output_dir=tmp_path)
    assert cfg.trainer.max_epochs == 7 and cfg.model.lr == 0.01
    cfg = compose_config(["experiment=colon_cls", "scale=ci"], output_dir=tmp_path)
    assert cfg.trainer.max_epochs == cfg.scale.colon.max_epochs


def test_scales_change_sizes_not_code(compose_config, tmp_path):
    targets = {}
    for scale in ("ci", "cpu", "paper"):
        cfg = compose_config(["experiment=colon_cls", f"scale={scale}"], output_dir=tmp_path)
        targets[scale] = (cfg.data._target_, cfg.model._target_, cfg.model.net._target_, cfg.data.image_size)
    assert len({t[:3] for t in targets.values()}) == 1
    assert targets["paper"][3] == 50


def test_run_writes_metrics_csv_and_wandb(frames_dir, tmp_path):
    out = tmp_path / "run"
    run_synthmed(["experiment=colon_cls", f"data.root={frames_dir}", "scale=ci", f"hydra.run.dir={out}"], cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["seed"] == 0 and metrics["scale"] == "ci"
    if pin_cpu_isa({}).get("ATEN_CPU_CAPABILITY") and "ATEN_CPU_CAPABILITY" not in os.environ:
        assert metrics["cpu_kernels"] == "AVX2"  # the entry point pinned torch's kernels (an AVX2 host)
    assert isinstance(metrics["cpu_model"], str) and metrics["cpu_model"] not in ("", "unknown")
    assert set(metrics["test"]) >= {"test/acc", "test/auroc", "test/f1", "test/loss"}
    assert "val/loss" in metrics["best_val"] and metrics["wall_time_s"] > 0
    assert f"data.root={frames_dir}" in metrics["overrides"]
    assert (out / "images" / "test_confusion_matrix.png").stat().st_size > 0
    assert (out / "images" / "loss_curves.png").stat().st_size > 0
    # every test frame's prediction, consistent with the logged accuracy; a picture of the misclassified ones
    with (out / "test_predictions.csv").open() as f:
        preds = list(csv.DictReader(f))
    with (frames_dir / "manifest.csv").open() as f:
        manifest_ids = {r["id"] for r in csv.DictReader(f)}
    assert preds and {r["id"] for r in preds} <= manifest_ids and len({r["id"] for r in preds}) == len(preds)
    for r in preds:
        assert int(r["predicted"]) == int(float(r["score"]) >= 0.5)
    accuracy = sum(r["label"] == r["predicted"] for r in preds) / len(preds)
    assert accuracy == pytest.approx(metrics["test"]["test/acc"])
    assert (out / "images" / "test_errors.png").exists() == (accuracy < 1.0)
    # CSV log holds the per-epoch validation loss
    with (out / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r for r in rows if r.get("val/loss")], "no val/loss in the CSV log"
    # the offline W&B run holds the same test metrics
    run_files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history = logged_history(run_files[0])
    test_rows = [h for h in history if "test/acc" in h]
    assert test_rows and test_rows[-1]["test/acc"] == pytest.approx(metrics["test"]["test/acc"])
    config = run_info(run_files[0])["config"]  # the resolved config as hyperparameters
    assert config["seed"] == 0 and config["scale"]["name"] == "ci" and config["data"]["root"] == str(frames_dir)
    kinds = {r.WhichOneof("record_type") for r in read_records(run_files[0])}
    assert {"run", "history", "exit"} <= kinds  # wandb.finish() was called
    # checkpoints load with weights_only=True
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert "state_dict" in ckpt


def test_same_seed_same_numbers(frames_dir, tmp_path):
    results = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        run_synthmed(["experiment=colon_cls", f"data.root={frames_dir}", *CI, "seed=0", f"hydra.run.dir={out}"],
                     cwd=tmp_path)
        metrics = json.loads((out / "metrics.json").read_text())
        results.append((metrics["test"], metrics["best_val"]))
    assert results[0] == results[1]


def test_multirun_with_a_failed_job_still_writes_summary(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_synthmed(["-m", "experiment=colon_cls", *CI, f"data.root={frames_dir},{tmp_path / 'missing'}",
                         "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0  # the failure is not hidden
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    good = next(r for r in rows if r["data.root"] == str(frames_dir))
    assert good["n"] == "2" and float(good["test/acc mean"]) >= 0
    bad = next(r for r in rows if r["data.root"] != str(frames_dir))
    assert bad["n"] == "0" and bad["failed"] == "2"
    md = (sweep / "summary.md").read_text()
    assert "Failed jobs" in md and "does not exist" in md
    assert (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"
    # the report rebuilds the same table from disk
    csv_before = (sweep / "summary.csv").read_text()
    (sweep / "summary.csv").unlink()
    subprocess.run([sys.executable, "-m", "synthmed.report", str(sweep)], check=True, capture_output=True)
    assert (sweep / "summary.csv").read_text() == csv_before


def test_parallel_launcher_sweep(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run_synthmed(["-m", "experiment=colon_cls", "scale=ci", f"data.root={frames_dir}", "model.lr=1e-3,3e-4",
                  "hydra/launcher=local_parallel", "threads=1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    for job in ("0", "1"):
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == "ok" and record["threads"] == 1  # one torch thread each, side by side
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["model.lr"]) for r in rows) == [3e-4, 1e-3]
    # the table also went to W&B: a summary run grouped with the sweep, holding a wandb.Table
    summary_runs = list(sweep.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(summary_runs) == 1
    info = run_info(summary_runs[0])
    assert info["group"] == sweep.name and info["name"] == "colon_cls summary"
    assert any(row.get("summary/_type") == "table-file" for row in logged_history(summary_runs[0]))
    table = json.loads(next(summary_runs[0].parent.glob("files/media/table/summary_*.table.json")).read_text())
    assert "model.lr" in table["columns"] and len(table["data"]) == 2
    job_run = next((sweep / "0").glob("wandb/offline-run-*/run-*.wandb"))
    assert run_info(job_run)["group"] == sweep.name  # jobs are grouped by sweep


def test_bad_override_names_the_key(tmp_path):
    proc = run_synthmed(["experiment=colon_cls", "model.lrr=0.1"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "lrr" in proc.stderr
    proc = run_synthmed(["experiment=colon_clss"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "colon_clss" in proc.stderr
    proc = run_synthmed(["experiment=brats_seg", "scale=ci", "threads=0"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "threads=0" in proc.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "data" / "brats_phantom").exists()


def test_missing_or_empty_data_root_says_how_to_make_one(tmp_path):
    proc = run_synthmed(["experiment=colon_cls", *CI, f"data.root={tmp_path / 'nope'}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "experiment=colon_render" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.csv").write_text("id,label\n")
    proc = run_synthmed(["experiment=colon_cls", *CI, f"data.root={empty}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "holds no frames" in proc.stderr and str(empty) in proc.stderr
    assert not list(tmp_path.glob("outputs/runs/*/*/metrics.json"))  # nothing half-written


def test_report_refuses_a_dir_without_jobs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "synthmed.report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no job dirs" in proc.stderr
    assert not (tmp_path / "summary.csv").exists()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this checkout, as `pip wheel .` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(Path(__file__).resolve().parents[1])], check=True, capture_output=True)
    return next(out.glob("synthmed-*.whl"))


def test_wheel_ships_the_configs(wheel):
    root = Path(__file__).resolve().parents[1]
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"synthmed/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert "synthmed/conf/config.yaml" in configs and configs <= names
    # every subpackage of src/synthmed is listed in pyproject.toml's packages (find cannot map conf/)
    src = root / "src"
    modules = {p.relative_to(src).as_posix() for p in src.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)


def test_installed_wheel_runs_from_an_unrelated_directory(wheel, tmp_path):
    """A plain (non-editable) install in its own environment finds its configs as pkg://synthmed.conf: the
    colon experiment renders, trains and tests from a directory that has nothing of the checkout."""
    env_dir = tmp_path / "venv"
    # the dependencies come from this interpreter's site-packages; synthmed itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import synthmed.conf, synthmed; print(synthmed.__file__); "
                            "print(synthmed.conf.__file__)"], cwd=work, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(env_dir)) for line in where.stdout.split()), where.stdout
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(python), "-m", "synthmed", "experiment=colon_cls", "scale=ci", "logger=csv"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(next(work.glob("outputs/runs/*/*/metrics.json")).read_text())
    assert metrics["status"] == "ok" and 0.0 <= metrics["test"]["test/acc"] <= 1.0
    assert list(work.glob("data/colon/frames_*/images/*.png"))  # the stage rendered into the working folder


def _spawn_pool_in_this_process() -> list[float]:
    import math

    from synthmed.utils import spawn_context

    with spawn_context() as ctx, ctx.Pool(2) as pool:
        return pool.map(math.sqrt, [4.0, 9.0])


def test_spawn_pools_work_inside_parallel_sweep_workers():
    """A job of `hydra/launcher=local_parallel` runs in a joblib (loky) worker; the pools it starts (phantom
    generation, render workers) must still spawn children there."""
    from joblib import Parallel, delayed

    results = Parallel(n_jobs=2, backend="loky")(delayed(_spawn_pool_in_this_process)() for _ in range(2))
    assert results == [[2.0, 3.0]] * 2


def test_pin_cpu_isa(tmp_path):
    avx512 = tmp_path / "cpuinfo_avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    old = tmp_path / "cpuinfo_sse"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx\n")
    fixed = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}
    env: dict[str, str] = {}
    assert pin_cpu_isa(env, avx512) == env == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                               "MKL_CBWR": "AVX2", **fixed}
    env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_DYNAMIC": "TRUE"}  # the user's own choices stay
    pin_cpu_isa(env, avx512)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_DYNAMIC"] == "TRUE" and env["OMP_DYNAMIC"] == "FALSE"
    # thread teams of a fixed size everywhere; the instruction set only where AVX2 is (a CPU without it would
    # fault on AVX2 kernels), and not with SYNTHMED_CPU_ISA=native
    assert pin_cpu_isa({}, old) == fixed
    assert pin_cpu_isa({"SYNTHMED_CPU_ISA": "native"}, avx512) == fixed
    assert pin_cpu_isa({}, tmp_path / "missing") == fixed


def test_pinned_kernels_are_used(tmp_path):
    """In a fresh interpreter, the pin set before torch's first operation takes effect."""
    if not pin_cpu_isa({}):
        pytest.skip("this CPU has no AVX2")
    code = "from synthmed.utils import pin_cpu_isa; pin_cpu_isa(); import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "SYNTHMED_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Files written atomically (manifests, metrics.json, dataset.yaml) are readable by whoever shares the
    dir, as any new file under the umask would be; mkstemp alone would leave them private (0600)."""
    from synthmed.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.txt").read_text() == "x"


def test_piped_script_gets_an_error_not_a_hung_pool(tmp_path):
    """A script piped to python cannot be re-imported by spawned workers: the render (whose Pool would restart
    them forever) stops at once with an error saying so, and renders nothing."""
    code = ("from synthmed.render import compose_render, render_dataset\n"
            "render_dataset(compose_render(['render.num_frames=1', 'render.resolution=48']), 'piped', progress=False)\n")
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode != 0
    assert "not a file (a script piped to python?)" in out.stderr
    assert not list((tmp_path / "piped" / "images").glob("*.png"))


def test_unguarded_script_names_the_fix_instead_of_hanging(tmp_path):
    """A script that calls render_dataset at its top level (no `if __name__ == "__main__":`) is re-run by
    every spawned worker; each waited forever for the shard lock its parent holds (a silent hang). Now each
    worker stops with an error that names the fix (`utils.file_lock`, so the phantom cohort, slice cache and
    generators get it too)."""
    script = tmp_path / "unguarded.py"
    script.write_text("from synthmed.render import compose_render, render_dataset\n"
                      "render_dataset(compose_render(['render.num_frames=1', 'render.resolution=48']), 'out', "
                      "progress=False)\n")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)  # never blocks the test
    reader.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not any("if __name__" in line for line in list(seen)):
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = "".join(seen)
    assert "a spawned worker process is importing the main script, and that script makes data" in text, text[-2000:]
    assert not list((tmp_path / "out" / "images").glob("*.png"))
