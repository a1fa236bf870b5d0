"""OmegaConf resolvers used by the configs. Registered when `synthmed` is imported, so they exist before
any config is composed: `python -m synthmed`, tests composing `synthmed.conf`, benchmarks, launchers'
worker processes.

- `${len:${data.modalities}}`: the length of a list, e.g. input channels that follow the modalities.
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


def register_resolvers() -> None:
    """Register synthmed's resolvers (idempotent)."""
    OmegaConf.register_new_resolver("len", length, replace=True)
