"""Find BraTS subjects on disk and check that each one is usable.

Layouts found under a root (any depth):

- 2018/2019: ``HGG|LGG/<subject>/<subject>_{flair,t1,t1ce,t2,seg}.nii.gz`` (grade from the parent folder)
- 2020/2021: flat ``<subject>/<subject>_{flair,t1,t1ce,t2,seg}.nii[.gz]``
- 2023:      ``<subject>/<subject>-{t2f,t1n,t1c,t2w,seg}.nii[.gz]``; its enhancing tumour is labelled 3,
             mapped to the classic 4 by :func:`to_brats_labels`.

Discovery only lists files (no NIfTI is opened); :func:`check_subject` opens headers (and, with
``load_labels``, the segmentation) and raises an error that names the offending file.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthmed.data.brats import labels

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
KINDS: tuple[str, ...] = (*MODALITIES, "seg")
# BraTS 2023 file suffixes -> the classic names.
ALIASES_2023 = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}
BRATS_LABELS = frozenset(labels.BRATS_LABELS)  # NCR/NET, ED, ET (classic numbering)
LABELS_2023 = frozenset(labels.LABELS_2023)  # ET is 3 from 2023 on
GRADES = ("HGG", "LGG")

_NAME = re.compile(r"^(?P<stem>.+?)[_-](?P<kind>flair|t1ce|t1|t2|seg|t2f|t1n|t1c|t2w)\.nii(\.gz)?$", re.I)


@dataclass
class BratsSubject:
    """One subject: its id, where it came from and the file of each modality (and of the segmentation)."""

    id: str
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)
    grade: str | None = None  # HGG/LGG in the 2018/2019 layout, else None
    source: str = "2020/2021"  # "2018/2019", "2020/2021" or "2023"

    @property
    def missing(self) -> list[str]:
        return [kind for kind in KINDS if kind not in self.files]

    @property
    def convention(self) -> str:
        """The label convention of its files (labels.CONVENTIONS): ET 3 in the 2023 layout, 4 before."""
        return labels.convention_of(self.source)

    @property
    def known_labels(self) -> frozenset[int]:
        return frozenset(labels.CONVENTIONS[self.convention])

    def signature(self) -> list[list]:
        """What identifies the subject's data for caches: file names, sizes and modification times."""
        out = []
        for kind in KINDS:
            path = self.files.get(kind)
            if path is not None:
                stat = path.stat()
                out.append([kind, path.name, stat.st_size, stat.st_mtime_ns])
        return out


def discover_subjects(root: str | Path) -> list[BratsSubject]:
    """All subject folders under `root` (sorted by id). Folders with no BraTS-named NIfTI are ignored.

    Raises FileNotFoundError when `root` does not exist, ValueError when it holds no subject.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: BraTS folder not found: {root}")
    by_dir: dict[Path, BratsSubject] = {}
    for path in sorted(root.rglob("*.nii*")):
        match = _NAME.match(path.name)
        if match is None or not path.is_file() or path.name.startswith("."):
            continue
        raw_kind = match["kind"].lower()
        kind = ALIASES_2023.get(raw_kind, raw_kind)
        subject = by_dir.get(path.parent)
        if subject is None:
            parent = path.parent.parent.name.upper()
            grade = parent if parent in GRADES else None
            subject = BratsSubject(
                id=path.parent.name, directory=path.parent, grade=grade,
                source="2018/2019" if grade else "2020/2021",
            )
            by_dir[path.parent] = subject
        if raw_kind in ALIASES_2023:
            subject.source = "2023"
        if kind in subject.files:
            raise ValueError(f"two files for {kind!r} in {path.parent}: {subject.files[kind].name}, {path.name}")
        subject.files[kind] = path
    subjects = sorted(by_dir.values(), key=lambda s: (s.id, str(s.directory)))
    if not subjects:
        raise ValueError(f"data.root: no BraTS subject (files like <id>_flair.nii.gz) under {root}")
    ids = Counter(s.id for s in subjects)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"data.root: subject ids found in more than one folder under {root}: {dupes[:5]}")
    return subjects


def summarize(subjects: Iterable[BratsSubject]) -> dict[str, dict[str, int]]:
    """Counts of subjects per source layout and per grade, e.g. {"source": {"2023": 5}, "grade": {...}}."""
    subjects = list(subjects)
    return {
        "source": dict(Counter(s.source for s in subjects)),
        "grade": dict(Counter(s.grade or "unknown" for s in subjects)),
        "total": {"subjects": len(subjects)},
    }


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise ValueError(f"cannot read NIfTI {path}: {err}") from err


def read_volume(path: Path, dtype=np.float32) -> np.ndarray:
    """The voxel data of one NIfTI file; any decoding problem becomes a ValueError naming the file."""
    img = _load(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise ValueError(f"cannot decode NIfTI {path}: {err}") from err
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume in {path}, got shape {data.shape}")
    return data.astype(dtype, copy=False)


def to_brats_labels(seg: np.ndarray, subject: BratsSubject, path: Path | None = None) -> np.ndarray:
    """Segmentation in the classic numbering 0/1/2/4 (uint8); unknown values raise ValueError naming the file."""
    seg = np.rint(seg).astype(np.int16, copy=False)
    # the values present, by counting (np.unique sorts the whole volume: ~40x slower). (seg - min) as uint16
    # is exact: int16 differences lie in 0..65535 and wrap to themselves
    low = int(seg.min()) if seg.size else 0
    counts = np.bincount((seg.ravel() - np.int16(low)).view(np.uint16))
    values = set((np.flatnonzero(counts) + low).tolist())
    unknown = sorted(values - subject.known_labels)
    if unknown:
        where = path or subject.files.get("seg")
        raise ValueError(
            f"unknown label values {unknown} in {where} (expected {sorted(subject.known_labels)})"
        )
    out = seg.astype(np.uint8)
    if subject.convention == labels.BRATS_2023:
        out[seg == labels.ET_2023] = labels.ET
    return out


def check_subject(subject: BratsSubject, load_labels: bool = True) -> None:
    """Raise FileNotFoundError/ValueError naming the file when `subject` is unusable.

    Checks: all four modalities and the segmentation exist, every header is readable, all shapes are
    equal, and (with `load_labels`) the segmentation holds only known label values.
    """
    if subject.missing:
        expected = [subject.directory / f"{subject.id}_{kind}.nii.gz" for kind in subject.missing]
        raise FileNotFoundError(
            f"subject {subject.id}: missing {', '.join(subject.missing)} (expected e.g. {expected[0]})"
        )
    shapes = {}
    for kind in KINDS:
        img = _load(subject.files[kind])
        shape = tuple(int(n) for n in img.shape[:3])
        shapes[kind] = shape
    reference = shapes[MODALITIES[0]]
    for kind, shape in shapes.items():
        if shape != reference:
            raise ValueError(
                f"shape mismatch in subject {subject.id}: {subject.files[kind]} is {shape}, "
                f"{subject.files[MODALITIES[0]].name} is {reference}"
            )
    if load_labels:
        to_brats_labels(read_volume(subject.files["seg"]), subject)


def validate_subjects(
    subjects: Sequence[BratsSubject], skip_invalid: bool = False, load_labels: bool = True
) -> list[BratsSubject]:
    """The usable subjects. An invalid one raises (naming the file) or, with `skip_invalid`, is left out
    with one warning that lists every skipped subject and why."""
    valid, skipped = [], []
    for subject in subjects:
        try:
            check_subject(subject, load_labels=load_labels)
        except (FileNotFoundError, ValueError) as err:
            if not skip_invalid:
                raise
            skipped.append(f"{subject.id}: {err}")
            continue
        valid.append(subject)
    if skipped:
        message = f"data.skip_invalid=true: skipped {len(skipped)} invalid subject(s):\n  " + "\n  ".join(skipped)
        warnings.warn(message, stacklevel=2)
        log.warning(message)
    if not valid:
        raise ValueError("no valid BraTS subject left after validation")
    return valid
