"""OmegaConf resolvers used by the configs. Registered when `synthmed` is imported, so they exist before
any config is composed: `python -m synthmed`, tests composing `synthmed.conf`, benchmarks, launchers'
worker processes.

- `${len:${data.modalities}}`: the length of a list, e.g. input channels that follow the modalities.
- `${index:${data.modalities},t1,-1}`: the position of an item in a list (the third argument when it is absent;
  without one an absent item is an error naming it).
- `${slurm_devices:${trainer.devices}}`: GPUs (= DDP tasks) per SLURM node; refuses "all" (-1, "auto"),
  which a scheduler cannot reserve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf


def length(value: Any) -> int:
    """`len` of a list; a string or a scalar is refused (len("flair") would silently be 5)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"${{len:...}} needs a list, got {type(value).__name__} {value!r}")
    return len(value)


_NO_DEFAULT = object()


def index(values: Any, item: Any, missing: Any = _NO_DEFAULT) -> Any:
    """The position of `item` in the list `values`; `missing` when it is not there (an error if not given)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"${{index:...}} needs a list, got {type(values).__name__} {values!r}")
    if item in list(values):
        return list(values).index(item)
    if missing is _NO_DEFAULT:
        raise ValueError(f"${{index:...}}: {item!r} is not in {list(values)}")
    return missing


def slurm_devices(value: Any) -> int:
    """A number of devices a SLURM job can ask for."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"trainer.devices={value!r} asks for every GPU of the machine, which SLURM cannot reserve: "
                         "give the number of GPUs per node, e.g. trainer.devices=4")
    return value


def register_resolvers() -> None:
    """Register synthmed's resolvers (idempotent)."""
    OmegaConf.register_new_resolver("len", length, replace=True)
    OmegaConf.register_new_resolver("slurm_devices", slurm_devices, replace=True)
    OmegaConf.register_new_resolver("index", index, replace=True)
