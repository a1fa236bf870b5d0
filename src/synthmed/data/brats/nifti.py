"""Writing NIfTI files: nibabel's own writer, into a temporary file of the same folder renamed in one step.

nibabel gzips `.nii.gz` deterministically (its `DeterministicGzipFile`: gzip mtime 0, no file name in the
gzip header, compression level 1), so the same image gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmed.utils import atomic_path


def save_nifti(img: Any, path: str | Path) -> Path:
    """Write the nibabel image `img` to `path` (`.nii` or `.nii.gz`) atomically: a crash leaves the old file
    or none, never a truncated one. Same image -> same bytes."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    with atomic_path(path) as tmp:  # the temporary name ends like `path` (.gz or .nii): the same format
        # what nib.save(img, path) does, aimed at the temporary name (whose ending nib.save would not accept)
        img.to_file_map(type(img).make_file_map({"image": str(tmp)}))
    return path
