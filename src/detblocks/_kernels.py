"""The optional native CPU kernels (``detblocks._native``, C, built at install time).

:data:`native` is the module, or ``None`` when it was not built or when the environment
variable ``DETBLOCKS_NATIVE=0`` turns it off; then every function computes the same
results with PyTorch ops.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("DETBLOCKS_NATIVE", "1").strip() == "0":
        return None
    try:
        from detblocks import _native
    except ImportError:  # not built: no C compiler at install time, or a source checkout
        return None
    return _native


native: ModuleType | None = _load()
