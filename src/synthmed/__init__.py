"""synthmed: synthetic medical imaging data and reproducible experiments that measure whether it helps."""

from synthmed.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # before any config is composed: `${len:...}` in conf/
