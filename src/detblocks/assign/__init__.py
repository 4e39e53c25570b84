"""Target assigners of today's detectors, batched over a padded batch.

Each rule reproduces its reference exactly (named in its docstring) and returns an
:class:`Assignment`; see SPEC "detblocks.assign" for the shared conventions.
"""

from __future__ import annotations

from detblocks.assign._common import Assignment

__all__ = ["Assignment"]
