"""synthmed: synthetic medical imaging data and reproducible experiments that measure whether it helps."""

__version__ = "0.1.0"
