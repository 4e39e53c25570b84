"""Argument checking shared by every component.

Shape and dtype checks are plain Python on tensor metadata: free, and traced
away by ``torch.compile``/``torch.export``. Checks on tensor *values* (for
example an out-of-range match index) need a device-to-host read; they run
only when :func:`value_checks_enabled` says so (see :func:`set_value_checks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["set_value_checks", "value_checks_enabled"]

_FMT_ALIASES = {"corner": "corner", "xyxy": "corner", "center": "center", "cxcywh": "center"}

_VALUE_CHECKS: bool | None = None  # None = automatic: on for CPU tensors in eager mode


def set_value_checks(enabled: bool | None) -> None:
    """Turn checks on tensor values on (``True``), off (``False``) or automatic (``None``).

    Value checks (out-of-range match indices, labels outside ``[0, num_class)``)
    read a reduction back to the host. In the automatic default they run for
    CPU tensors only, where that read costs nothing, so GPU training steps never
    synchronise behind the user's back. They never run under ``torch.compile``
    or ``torch.export``.

    Example:
        >>> import detblocks
        >>> detblocks.set_value_checks(True)   # also check CUDA inputs
        >>> detblocks.set_value_checks(None)   # back to the default
    """
    global _VALUE_CHECKS
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool or None, got {type(enabled).__name__}")
    _VALUE_CHECKS = enabled


def tracing() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing the current call (eager-only
    shortcuts, host reads and value checks are skipped then)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def eager_cpu(*tensors: Tensor) -> bool:
    """Whether work on ``tensors`` runs eagerly on CPU with nothing for autograd to record:
    the condition of the CPU fast paths (reused output memory, blocked IoU, native kernels)."""
    if tracing() or any(t.device.type != "cpu" for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def host_reads_free(*tensors: Tensor) -> bool:
    """Whether reading values of ``tensors`` back to the host costs nothing: eager mode with
    every tensor on CPU. Elsewhere (an accelerator, or tracing) code that could size its
    work from such a read takes its static-shape path instead, so the device never waits
    on the host."""
    return not tracing() and all(t.device.type == "cpu" for t in tensors)


#: Constants already on an accelerator, by (values, dtype, device); see :func:`constant`.
_CONSTANTS: dict[tuple[object, torch.dtype, torch.device], Tensor] = {}
_MAX_CONSTANTS = 256


def on_host(device: torch.device) -> bool:
    """Whether ``device`` is the host's memory (a copy of Python numbers there never waits)."""
    return device.type in ("cpu", "meta")


def constant(values: Sequence[object], dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    """A small tensor of Python numbers (``stds``, ``means``, base anchors) on ``device``.

    ``torch.tensor(values, device=cuda)`` is a blocking host-to-device copy: the host waits
    until the device has finished its queued work. Off the host, each ``(values, dtype,
    device)`` is therefore copied once and the same tensor is returned afterwards (callers
    never write to it); on the host, and while tracing (where it is a graph constant), it is
    made afresh.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    if tracing() or on_host(device):
        return torch.tensor(values, dtype=dtype, device=device)
    key = (_frozen(values), dtype, device)
    hit = _CONSTANTS.get(key)
    if hit is None:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        with torch.inference_mode(False):  # usable by autograd even when first made in inference mode
            hit = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return hit


def _frozen(values: object) -> object:
    if isinstance(values, (list, tuple)):
        return tuple(_frozen(v) for v in values)
    return values


def value_checks_enabled(x: Tensor) -> bool:
    """Whether value checks should run for tensor ``x`` now."""
    if tracing():
        return False
    if _VALUE_CHECKS is None:
        return x.device.type == "cpu"
    return _VALUE_CHECKS


def shape_str(x: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float(name: str, x: object) -> Tensor:
    """``x`` must be a floating-point tensor."""
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}"
        )
    return x


def check_rank(name: str, x: Tensor, ndim: int | Sequence[int], layout: str) -> None:
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.dim() not in ndims:
        raise ValueError(f"{name} must be {layout}, got shape {shape_str(x)}")


def check_boxes(name: str, x: object, ndim: int | Sequence[int] = 3, layout: str = "(B, N, 4)") -> Tensor:
    """``x`` must be a floating tensor of rank ``ndim`` whose last axis has size 4."""
    x = check_float(name, x)
    check_rank(name, x, ndim, layout)
    if x.shape[-1] != 4:
        raise ValueError(f"{name} must be {layout} with a last axis of 4, got shape {shape_str(x)}")
    return x


def check_index(name: str, x: object, ndim: int, layout: str) -> Tensor:
    """``x`` holds integer indices or labels (any integer dtype, or integral floats as
    GluonCV passed them); returns it as ``torch.int64``."""
    x = check_tensor(name, x)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold integer values (int64 preferred), got {x.dtype}")
    check_rank(name, x, ndim, layout)
    return x if x.dtype == torch.int64 else x.to(torch.int64)


def check_batch(*named: tuple[str, Tensor]) -> None:
    """Every tensor must share the leading (batch) size of the first."""
    (n0, t0), rest = named[0], named[1:]
    for n, t in rest:
        if t.shape[0] != t0.shape[0]:
            raise ValueError(f"batch size of {n} {shape_str(t)} does not match {n0} {shape_str(t0)}")


def check_pair_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """``a`` and ``b`` must share their batch size, or either may have batch size 1 (broadcast)."""
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"batch size of {name_b} {shape_str(b)} does not match {name_a} {shape_str(a)} "
            "(equal sizes, or 1 to broadcast)"
        )


def check_dim(name: str, x: Tensor, axis: int, size: int, what: str, ref: str) -> None:
    if x.shape[axis] != size:
        raise ValueError(f"{name} must have {what} = {size} (from {ref}), got shape {shape_str(x)}")


def check_in_range(name: str, x: Tensor, low: int, high: int, what: str) -> None:
    """Value check: every element of integer ``x`` lies in ``[low, high)`` (skipped
    when value checks are off)."""
    if x.numel() == 0 or not value_checks_enabled(x):
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < low or hi >= high:
        raise ValueError(f"{name} must lie in [{low}, {high}) ({what}), got values in [{lo}, {hi}]")


def parse_fmt(fmt: object) -> str:
    """``'corner'``/``'xyxy'`` -> ``'corner'``; ``'center'``/``'cxcywh'`` -> ``'center'``."""
    if not isinstance(fmt, str) or fmt.lower() not in _FMT_ALIASES:
        raise ValueError(f"fmt must be one of {sorted(_FMT_ALIASES)}, got {fmt!r}")
    return _FMT_ALIASES[fmt.lower()]


def check_bool(name: str, value: object) -> bool:
    """``value`` must be a Python bool; returns it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> float:
    """A Python number within bounds; returns it (as float or int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1 and not integer:
            raise TypeError(f"{name} must be a Python number, got a tensor")
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value != value:  # NaN
        raise ValueError(f"{name} must not be NaN")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def check_four(name: str, value: object) -> tuple[float, float, float, float]:
    """A sequence of four numbers (``stds``/``means``)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        vals = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of 4 numbers, got {value!r}") from None
    if len(vals) != 4:
        raise ValueError(f"{name} must have 4 values, got {len(vals)}: {value!r}")
    return vals  # type: ignore[return-value]
