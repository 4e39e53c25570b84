"""The optional native CPU kernels (C extensions, built at install time).

:data:`native` is ``detblocks._native`` (IoU, bipartite matching, OHEM, per-class
decoding), or ``None`` when it was not built or when the environment variable
``DETBLOCKS_NATIVE=0`` turns the native kernels off; then every function computes the
same results with PyTorch ops. :func:`load` gives the other extensions the same rule.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The extension module ``detblocks.<name>``, or ``None`` (not built, or turned off)."""
    if os.environ.get("DETBLOCKS_NATIVE", "1").strip() == "0":
        return None
    try:
        return importlib.import_module(f"detblocks.{name}")
    except ImportError:  # not built: no C compiler at install time, or a source checkout
        return None


native: ModuleType | None = load("_native")
