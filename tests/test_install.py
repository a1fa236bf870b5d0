"""Installing and scaling out: console scripts, rendering as an extra, launcher and sweeper presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
BIN = Path(sys.executable).parent


def test_console_scripts_run_an_experiment_and_the_report(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run([str(BIN / "synthmed"), "-m", "experiment=colon_cls", "scale=ci", "logger=csv",
                           f"data.root={frames_dir}", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "ok"
    (sweep / "summary.md").unlink()
    report = subprocess.run([str(BIN / "synthmed-report"), str(sweep)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and (sweep / "summary.md").exists() and "test/acc" in report.stdout


def test_a_render_without_bpy_says_how_to_install_it(tmp_path):
    """Without the [render] extra, asking for frames fails with one line naming the extra; nothing is written."""
    code = ("import runpy, sys; sys.modules['bpy'] = None; "
            "sys.argv = ['synthmed', 'experiment=colon_cls', 'scale=ci', 'logger=csv']; "
            "runpy.run_module('synthmed', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'pip install "synthmed[render]"' in proc.stderr
    assert not list(tmp_path.glob("data/colon/frames_*/images/*.png"))


@pytest.mark.parametrize("launcher", sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_preset_composes(compose_config, tmp_path, launcher):
    trainer = ["trainer=ddp", "trainer.devices=4"] if launcher == "slurm" else []
    cfg = compose_config(["experiment=colon_cls", f"hydra/launcher={launcher}", *trainer], output_dir=tmp_path)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert node["_target_"].startswith("hydra_plugins.")
    if launcher == "slurm":  # Lightning's DDP wants one task per device
        assert node["tasks_per_node"] == node["gpus_per_node"] == 4
    if launcher == "slurm_cpu":
        assert node["gpus_per_node"] == 0


def test_slurm_refuses_every_gpu_of_the_machine(compose_config, tmp_path):
    cfg = compose_config(["experiment=colon_cls", "hydra/launcher=slurm", "trainer=ddp"], output_dir=tmp_path)
    with pytest.raises(Exception, match="trainer.devices=-1 asks for every GPU"):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_submitit_local_launcher_runs_jobs(frames_dir, tmp_path):
    from conftest import run_synthmed

    sweep = tmp_path / "sweep"
    run_synthmed(["-m", "experiment=colon_cls", "scale=ci", "logger=csv", f"data.root={frames_dir}", "seed=0,1",
                  "hydra/launcher=local_processes", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "ok"
    assert list(sweep.glob(".submitit/*"))  # each job went through submitit's executor


def test_optuna_preset_tunes_on_the_validation_loss(frames_dir, tmp_path):
    from conftest import run_synthmed

    sweep = tmp_path / "sweep"
    run_synthmed(["-m", "experiment=colon_cls", "scale=ci", "logger=csv", f"data.root={frames_dir}",
                  "hydra/sweeper=optuna_lr_batch", "optimized_metric=val/loss", "hydra.sweeper.n_trials=2",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.lr", "data.batch_size"}
    trials = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert result["best_value"] == pytest.approx(min(t["best_val"]["val/loss"] for t in trials))


@pytest.mark.slow
def test_a_fresh_environment_without_bpy_runs_the_brain_study_and_names_the_render_extra(tmp_path):
    """A new virtual environment (nothing from this interpreter's site-packages), synthmed from its wheel
    without the [render] extra: the brain experiment runs; a render request fails with one line. Minutes:
    every dependency is installed (torch's CPU build first, then the versions of constraints.txt)."""
    root = Path(__file__).resolve().parents[1]
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=1800)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(root)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("synthmed-*.whl"))
    subprocess.run([*pip, str(wheel), "-c", str(root / "constraints.txt")], check=True, timeout=1800)
    assert subprocess.run([python, "-c", "import bpy"], capture_output=True).returncode != 0  # no bpy here
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    brain = subprocess.run([python, "-m", "synthmed", "experiment=brats_seg", "scale=ci", "logger=csv"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=1800)
    assert brain.returncode == 0, brain.stderr[-3000:]
    assert json.loads(next(work.glob("outputs/runs/*/*/metrics.json")).read_text())["status"] == "ok"
    colon = subprocess.run([python, "-m", "synthmed", "experiment=colon_cls", "scale=ci", "logger=csv"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=600)
    assert colon.returncode != 0 and 'pip install "synthmed[render]"' in colon.stderr
