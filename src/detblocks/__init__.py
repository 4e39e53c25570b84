"""detblocks: object-detection building blocks for PyTorch.

Box operators (:mod:`detblocks.bbox`), target encoders and decoders
(:mod:`detblocks.coder`), anchor matchers (:mod:`detblocks.matcher`), sample
selectors (:mod:`detblocks.sampler`), prediction heads
(:mod:`detblocks.predictor`) and feature extractors (:mod:`detblocks.feature`)
with the semantics of GluonCV's ``gluoncv.nn``, batched over a leading axis;
anchor generators (:mod:`detblocks.anchor`) and the inference tail of GluonCV's
detectors (:mod:`detblocks.postprocess`: ``box_nms``, RPN proposals, SSD's output).

Submodules are imported on first use, so ``import detblocks`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from detblocks._alloc import empty_cache
from detblocks._checks import set_value_checks
from detblocks._kernels import native as _native
from detblocks.conventions import NO_MATCH, Sample

__version__ = "0.1.0"

NATIVE: bool = _native is not None
"""Whether detblocks' native CPU kernels are in use. They are built at install time when
a C compiler is there (``pip install`` goes on without them otherwise) and turned off by
the environment variable ``DETBLOCKS_NATIVE=0``. Without them every function gives the
same results, bit for bit, computed with PyTorch ops; only eager float32 work on CPU
uses them (:func:`detblocks.bbox.box_iou`, :func:`detblocks.matcher.bipartite_match`,
:func:`detblocks.sampler.ohem_sample`, :func:`detblocks.coder.decode_per_class`).
The optimal matching (:func:`detblocks.matcher.linear_sum_assignment`, the cost of
:class:`detblocks.matcher.HungarianMatcher`) has its own extension, ``detblocks._native_lsa``,
under the same rule; without it the same assignment comes from a Python loop."""

_SUBMODULES = (
    "bbox",
    "coder",
    "matcher",
    "sampler",
    "predictor",
    "feature",
    "anchor",
    "postprocess",
    "assign",
    "conventions",
)

__all__ = ["__version__", "NATIVE", "NO_MATCH", "Sample", "empty_cache", "set_value_checks", *_SUBMODULES]

if TYPE_CHECKING:  # pragma: no cover
    from detblocks import (  # noqa: F401
        anchor,
        assign,
        bbox,
        coder,
        feature,
        matcher,
        postprocess,
        predictor,
        sampler,
    )


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"detblocks.{name}")
    raise AttributeError(f"module 'detblocks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
