"""Shared fixtures: golden-case location, dtypes and their tolerances."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DETBLOCKS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "gluoncv"))
#: The folder of every golden suite (``gluoncv``, ``gluoncv_plumbing``, ``modern``).
FIXTURES_ROOT = FIXTURES.parent

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# (rtol, atol) per dtype for comparisons against a float64 reference.
TOLERANCES = {
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-10, 1e-10),
}

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def load_manifest(suite: str = "gluoncv") -> list[dict]:
    """The cases of one golden suite, each with the path of its npz under ``"path"``."""
    folder = FIXTURES if suite == "gluoncv" else FIXTURES_ROOT / suite
    path = folder / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"golden cases not found at {path}; put the shared folder beside the repository "
            "or set DETBLOCKS_FIXTURES"
        )
    with open(path) as fh:
        cases = json.load(fh)
    for case in cases:
        case["path"] = folder / case["file"]
    return cases


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype):
    return TOLERANCES[dtype]
