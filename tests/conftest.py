"""Shared fixtures: the test device, golden-case location, dtypes and their tolerances.

The device: ``DETBLOCKS_TEST_DEVICE`` (default ``cpu``; ``cuda``, ``cuda:1``, ``meta``, ...).
On any device but the CPU, every tensor a test creates goes there: a session-wide
:class:`torch.overrides.TorchFunctionMode` gives factory functions (``torch.rand``,
``torch.tensor``, ``torch.zeros`` ...) that device when they name none, and a factory
drawing from a CPU ``torch.Generator`` draws on the CPU and moves the result, so a seeded
test sees the same numbers on every device. Tests of CPU-only machinery (native kernels,
reused host memory, resident-set measurements, the demo) carry ``@pytest.mark.cpu_only(
reason)`` and are skipped elsewhere. ``meta`` (shapes without data) runs only the tests
marked ``@pytest.mark.meta_ok``: the paths that never read a tensor value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DETBLOCKS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "gluoncv"))
#: The folder of every golden suite (``gluoncv``, ``gluoncv_plumbing``, ``modern``).
FIXTURES_ROOT = FIXTURES.parent

#: Where the tests' tensors live (``DETBLOCKS_TEST_DEVICE``, default ``cpu``).
DEVICE = torch.device(os.environ.get("DETBLOCKS_TEST_DEVICE", "cpu"))

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


# ------------------------------------------------------------------ the test device
#: Factory functions that take ``device=`` (those :func:`torch.set_default_device` covers).
_FACTORIES = {
    torch.empty, torch.empty_strided, torch.empty_like, torch.zeros, torch.ones, torch.full,
    torch.eye, torch.arange, torch.range, torch.linspace, torch.logspace, torch.tensor,
    torch.as_tensor, torch.rand, torch.randn, torch.randint, torch.randperm, torch.normal,
    torch.scalar_tensor, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like,
    torch.randn_like, torch.randint_like, torch.tril_indices, torch.triu_indices,
}  # fmt: skip


class OnDevice(TorchFunctionMode):
    """Factory functions that name no device create on ``device``; with a CPU generator they
    draw on the CPU (the same numbers as a CPU run) and move the result."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and kwargs.get("device") is None:
            if func.__name__.endswith("_like") and args and isinstance(args[0], torch.Tensor):
                return func(*args, **kwargs)  # follows its input
            generator = kwargs.get("generator")
            if generator is not None and generator.device.type == "cpu":
                return func(*args, **kwargs).to(self.device)
            kwargs["device"] = self.device
        return func(*args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cpu_only(reason): tests CPU-only machinery; skipped on other devices")
    config.addinivalue_line("markers", "meta_ok: reads no tensor value, so it also runs on the meta device")
    if DEVICE.type != "cpu":
        OnDevice(DEVICE).__enter__()  # for the whole session, module-level tensors included


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if DEVICE.type == "cpu":
        return
    # The docstring examples print CPU tensors: documentation, run on CPU only (deselected,
    # as a skip marker cannot point at a line of a module's __test__ entry).
    doctests = [item for item in items if isinstance(item, pytest.DoctestItem)]
    if doctests:
        config.hook.pytest_deselected(items=doctests)
        items[:] = [item for item in items if not isinstance(item, pytest.DoctestItem)]
    for item in items:
        mark = item.get_closest_marker("cpu_only")
        if mark is not None:
            reason = mark.args[0] if mark.args else "CPU-only machinery"
            item.add_marker(pytest.mark.skip(reason=f"CPU only: {reason}"))
        elif DEVICE.type == "meta" and item.get_closest_marker("meta_ok") is None:
            item.add_marker(pytest.mark.skip(reason="reads tensor values (the meta device has none)"))


@pytest.fixture
def device() -> torch.device:
    """The device the test's tensors live on (``DETBLOCKS_TEST_DEVICE``)."""
    return DEVICE
