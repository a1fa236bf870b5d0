"""What a run tells W&B beyond Lightning's scalars: tags, summary rules, tables and artefact lineage.

Every function here is a no-op without a W&B logger, so CSV-only runs (`logger=csv`) never import wandb.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger

log = logging.getLogger(__name__)

# the metadata file an artefact writes last: synthmed.artifacts' own, or the renderer's dataset.yaml
METADATA_FILES = ("artifact.yaml", "dataset.yaml")


def wandb_runs(loggers: Iterable[Any]) -> list[Any]:
    """The W&B runs behind `loggers` (Lightning loggers or a Trainer's `loggers`)."""
    return [logger.experiment for logger in loggers or [] if type(logger).__name__ == "WandbLogger"]


def run_tags(overrides: Sequence[str]) -> list[str]:
    """W&B tags of a job: its command-line choices that tell regimes apart (`aug=gan`, `scale=cpu`), not the
    seed or paths, so runs can be grouped and filtered by regime."""
    skip = ("seed=", "paths.", "hydra", "data.root=", "ckpt_path=", "pretrained=", "experiment=")
    return [o for o in overrides if "=" in o and not o.startswith(skip) and len(o) <= 64]


def define_summaries(loggers: Iterable[Any], monitor: str | None, mode: str) -> None:
    """The summaries that matter: the best value of the monitored metric, the final test metrics."""
    for run in wandb_runs(loggers):
        if monitor:
            run.define_metric(str(monitor), summary="min" if mode == "min" else "max")
        run.define_metric("test/*", summary="last")


def log_table(loggers: Iterable[Any], key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              images: Mapping[str, Sequence[Any]] | None = None) -> None:
    """Log a table to every W&B run; `images` maps a column name to one image (HxWx3 uint8 array, or None) a
    row, shown as pictures in the W&B table (so rows can be filtered and grouped, and looked at)."""
    runs = wandb_runs(loggers)
    if not runs:
        return
    import wandb

    image_columns = list(images or {})
    table = wandb.Table(columns=[*columns, *image_columns])
    for k, row in enumerate(rows):
        pictures = [None if images[c][k] is None else wandb.Image(images[c][k]) for c in image_columns]
        table.add_data(*row, *pictures)
    for run in runs:
        run.log({key: table})


def _metadata(path: Path) -> tuple[str, dict[str, Any]] | None:
    from omegaconf import OmegaConf

    for name in METADATA_FILES:
        if (path / name).is_file():
            meta = OmegaConf.to_container(OmegaConf.load(path / name), resolve=False)
            return name, meta if isinstance(meta, dict) else {}
    return None


def declare_artifacts(loggers: Iterable[Any], resolved: Mapping[str, str], since: float) -> list[dict[str, Any]]:
    """Declare in W&B the artefacts a job resolved (`{config key: path}`): an artefact whose metadata was
    written after `since` was made by this job and is logged as its output; one that existed is an input.

    W&B records inputs (`use_artifact`) only online; offline runs keep the list in their config
    (`artifacts`), which `wandb sync` uploads. Artefacts are logged by reference to their metadata file (a
    cohort of gigabytes is never walked or copied), with their metadata and path."""
    records = []
    for key, value in resolved.items():
        path = Path(value)
        found = _metadata(path)
        if found is None:
            continue
        meta_name, meta = found
        stage = str(meta.get("stage") or ("colon_render" if meta_name == "dataset.yaml" else "artefact"))
        digest = str(meta.get("hash") or meta.get("name") or path.name)
        made = (path / meta_name).stat().st_mtime >= since
        records.append({"key": key, "name": f"{stage}-{path.name}", "type": _kind(stage), "path": str(path),
                        "hash": digest, "made_by_this_run": made, "metadata": meta, "metadata_file": meta_name})
    runs = wandb_runs(loggers)
    if not runs or not records:
        return records
    import wandb

    for run in runs:
        listed = [{k: r[k] for k in ("key", "name", "type", "path", "hash", "made_by_this_run")} for r in records]
        # a stage may have declared what it used first (the GAN pairs stage: its generators): keep those
        earlier = [a for a in run.config.get("artifacts") or [] if a.get("key") not in {r["key"] for r in listed}]
        run.config.update({"artifacts": [*earlier, *listed]}, allow_val_change=True)
        for record in records:
            artifact = wandb.Artifact(record["name"], type=record["type"],
                                      metadata={"path": record["path"], **{k: v for k, v in record["metadata"].items()
                                                                          if k != "config"}})
            # by reference to the metadata file alone: its digest names the artefact, and a folder of 8000
            # frames or a cohort of gigabytes is never walked or copied
            artifact.add_reference((Path(record["path"]) / record["metadata_file"]).resolve().as_uri())
            if record["made_by_this_run"]:
                run.log_artifact(artifact)
            elif not run.settings._offline:
                run.use_artifact(artifact)
    return records


def log_checkpoint(loggers: Iterable[Any], path: str | None, name: str, metadata: Mapping[str, Any]) -> None:
    """The best checkpoint as a `model` artefact of the run (by reference)."""
    runs = wandb_runs(loggers)
    if not runs or not path or not os.path.isfile(path):
        return
    import wandb

    for run in runs:
        artifact = wandb.Artifact(f"{name}-{run.id}", type="model", metadata=dict(metadata))
        artifact.add_reference(Path(path).resolve().as_uri(), checksum=False)
        run.log_artifact(artifact, aliases=["best"])


def _kind(stage: str) -> str:
    return "model" if "generator" in stage or stage in ("brats_dcgan", "brats_pix2pix") else "dataset"


class PrefixedLogger(Logger):
    """One of the run's loggers seen through a metric prefix (`gan/dcgan/train/d_loss`), so a generator trained
    inside a run logs beside the U-Net's curves without mixing into them. It never finalises the run's logger."""

    def __init__(self, inner: Logger, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.inner.version

    @property
    def save_dir(self) -> str | None:
        return getattr(self.inner, "save_dir", None)

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.inner.log_metrics({f"{self.prefix}/{key}": value for key, value in metrics.items()}, step)

    @property
    def forwards_images(self) -> bool:  # read by synthmed.visual.log_image
        return type(self.inner).__name__ == "WandbLogger"

    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Pictures (a generator's sample grids) to the run's W&B logger, under the prefix."""
        if self.forwards_images:
            self.inner.log_image(key=f"{self.prefix}/{key}", images=images, step=step, **kwargs)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run logs its whole config (the generators' included) itself

    def save(self) -> None:
        self.inner.save()

    def finalize(self, status: str) -> None:
        self.inner.save()  # the run's logger stays open for the U-Net
