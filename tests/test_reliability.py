"""Fails loudly and safely: diverged runs, unsafe checkpoints, malformed manifests, failed sweeps.

Each test is one row of docs/reliability.md."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_synthmed
from wandb_records import logged_history, run_info

from synthmed.data.colon import read_frame_index

CI = ["experiment=colon_cls", "scale=ci", "logger=csv"]


def test_diverged_training_is_a_failure_never_a_result(frames_dir, tmp_path):
    proc = run_synthmed([*CI, f"data.root={frames_dir}", "model.lr=1e6"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "the run diverged" in proc.stderr and "model.lr=1000000.0" in proc.stderr
    job = next(tmp_path.glob("outputs/runs/*/*"))
    assert not (job / "metrics.json").exists()
    error = (job / "error.txt").read_text()
    assert "FloatingPointError" in error and "at step" in error


def test_a_sweep_counts_a_diverged_job_as_failed(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_synthmed(["-m", *CI, f"data.root={frames_dir}", "model.lr=1e-3,1e6", f"hydra.sweep.dir={sweep}"],
                        cwd=tmp_path, check=False)
    assert proc.returncode != 0
    with (sweep / "summary.csv").open() as f:
        rows = {r["model.lr"]: r for r in csv.DictReader(f)}
    assert rows["0.001"]["n"] == "1" and rows["0.001"]["failed"] == "0"
    assert rows["1000000.0"]["n"] == "0" and rows["1000000.0"]["failed"] == "1"
    assert rows["1000000.0"]["test/acc mean"] in ("", "nan")  # never a number from a diverged run
    assert "the run diverged" in (sweep / "summary.md").read_text()


@pytest.mark.parametrize("key", ["ckpt_path", "pretrained"])
def test_checkpoint_urls_are_refused(frames_dir, tmp_path, key):
    proc = run_synthmed([*CI, f"data.root={frames_dir}", f"{key}=http://127.0.0.1:9/evil.ckpt"], cwd=tmp_path,
                        check=False)
    assert proc.returncode != 0
    assert f"{key}=http://127.0.0.1:9/evil.ckpt is a URL" in proc.stderr and "Download it first" in proc.stderr


class _RunsCode:
    """Unpickling this object would create a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("key", ["ckpt_path", "pretrained"])
def test_a_checkpoint_that_would_run_code_is_refused(frames_dir, tmp_path, key):
    marker = tmp_path / "code_ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(str(marker))}, crafted)
    proc = run_synthmed([*CI, f"data.root={frames_dir}", f"{key}={crafted}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "weights_only=True" in proc.stderr
    assert not marker.exists()


def _dataset_with_manifest(frames_dir: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "set"
    shutil.copytree(frames_dir, root)
    with (root / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.parametrize("label, shown", [("lesion", "'lesion'"), ("", "''"), ("2", "'2'")])
def test_a_bad_label_names_the_file_and_line(frames_dir, tmp_path, label, shown):
    def edit(rows):
        rows[2]["label"] = label

    root = _dataset_with_manifest(frames_dir, tmp_path, edit)
    with pytest.raises(ValueError) as err:
        read_frame_index(root)
    assert f"{root / 'manifest.csv'}, line 4" in str(err.value) and f"has label {shown}" in str(err.value)


def test_a_short_row_names_the_file_and_line(frames_dir, tmp_path):
    root = _dataset_with_manifest(frames_dir, tmp_path, lambda rows: None)
    lines = (root / "manifest.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0]  # the id alone: no label
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"manifest.csv, line 4: frame \S+ has label no value"):
        read_frame_index(root)


@pytest.mark.parametrize("frame_id", ["../../x/images/000002", "sub/000002", "..", "C:\\x"])
def test_ids_that_leave_the_dataset_are_refused(frames_dir, tmp_path, frame_id):
    def edit(rows):
        rows[0]["id"] = frame_id

    root = _dataset_with_manifest(frames_dir, tmp_path, edit)
    with pytest.raises(ValueError, match="line 2: frame id .* is not a plain file name"):
        read_frame_index(root)


def test_ids_with_commas_survive_the_predictions_csv(frames_dir, tmp_path):
    """test_predictions.csv is written with a CSV writer: an id holding a comma or a quote reads back whole."""
    root = tmp_path / "set"
    shutil.copytree(frames_dir, root)
    with (root / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    renamed = {}
    for k, row in enumerate(rows):
        new = f'frame,{k} "x"'
        for sub in ("images", "masks"):
            (root / sub / f"{row['id']}.png").rename(root / sub / f"{new}.png")
        renamed[new] = row["label"]
        row["id"] = new
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run_synthmed([*CI, f"data.root={root}"], cwd=tmp_path)
    with next(tmp_path.glob("outputs/runs/*/*/test_predictions.csv")).open(newline="") as f:
        predictions = list(csv.DictReader(f))
    assert predictions and all(p["id"] in renamed and p["label"] == renamed[p["id"]] for p in predictions)


def test_a_sweep_with_a_failed_job_still_writes_its_wandb_summary(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_synthmed(["-m", "experiment=colon_cls", "scale=ci", f"data.root={frames_dir},{tmp_path / 'missing'}",
                         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, check=False, env={"WANDB_MODE": "offline"})
    assert proc.returncode != 0
    runs = [(run_info(f), logged_history(f)) for f in sweep.glob("wandb/offline-run-*/run-*.wandb")]
    assert len(runs) == 1, "the sweep's W&B summary run is missing"
    info, history = runs[0]
    assert info["name"].endswith("summary") and info["group"] == sweep.name
    row = next(r for r in history if "failed_jobs/path" in r)
    assert row["failed_jobs/nrows"] == 1 and row["summary/nrows"] == 2
    assert row["seeds/nrows"] == 1  # one point a finished job, for a chart per regime
    table = json.loads(next(sweep.glob(f"wandb/offline-run-*/files/{row['failed_jobs/path']}")).read_text())
    assert "does not exist" in table["data"][0][3]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "ok"


def test_the_report_cli_lists_the_failed_job(frames_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run_synthmed(["-m", *CI, f"data.root={frames_dir},{tmp_path / 'missing'}", f"hydra.sweep.dir={sweep}"],
                 cwd=tmp_path, check=False)
    out = subprocess.run([sys.executable, "-m", "synthmed.report", str(sweep)], capture_output=True, text=True,
                         check=True).stdout
    assert "Failed jobs" in out and "does not exist" in out


def test_an_interrupted_run_resumes_from_its_last_checkpoint(frames_dir, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_synthmed([*CI, f"data.root={frames_dir}", "trainer.max_epochs=1", f"hydra.run.dir={first}"], cwd=tmp_path)
    run_synthmed([*CI, f"data.root={frames_dir}", "trainer.max_epochs=2", f"hydra.run.dir={second}",
                  f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"], cwd=tmp_path)
    once = json.loads((first / "metrics.json").read_text())
    resumed = json.loads((second / "metrics.json").read_text())
    assert resumed["status"] == "ok" and resumed["steps"] == 2 * once["steps"]  # it went on, not from scratch


def test_last_checkpoint_is_the_last_epoch_even_after_the_best_one(tmp_path):
    """checkpoints/last.ckpt holds the final state, also when the monitored metric stopped improving (Lightning's
    own save_last writes it only alongside best.ckpt, so it stayed at the best epoch: a resume lost the epochs
    after it). The callbacks are the shipped ones (conf/callbacks/default.yaml), on a net whose val/loss rises."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from synthmed.utils import compose_config

    class Rising(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", float(self.current_epoch))  # the best epoch is the first

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = compose_config(["experiment=colon_cls", f"paths.output_dir={tmp_path}"])
    checkpoints = [instantiate(cfg.callbacks[k]) for k in ("model_checkpoint", "last_checkpoint")]
    data = torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=checkpoints, default_root_dir=tmp_path)
    trainer.fit(Rising(), data, data)
    assert trainer.checkpoint_callback is checkpoints[0]  # best.ckpt is still what the runner tests
    best, last = (torch.load(tmp_path / "checkpoints" / f"{n}.ckpt", weights_only=True) for n in ("best", "last"))
    assert best["epoch"] == 0 and last["epoch"] == 2 and last["global_step"] == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
