"""Large output buffers that fill quickly on first write.

A tensor of tens of megabytes comes from a fresh ``mmap`` on every call
(glibc never caches blocks above 32 MiB), so the first write into it takes one
page fault per 4 KiB page: about 0.23 ms per MiB on a 2-core x86 machine, often
more than the arithmetic that fills it. :func:`empty_large` asks the kernel for
transparent huge pages on such a buffer (``madvise(MADV_HUGEPAGE)``, what
PyTorch's own ``THP_MEM_ALLOC_ENABLE=1`` does for every allocation), which cuts
that cost about fourfold. It is advice only: where transparent huge pages are
off, on other systems, on accelerators and while tracing it is a plain
:func:`torch.empty`. The values and the memory used are the same either way.
"""

from __future__ import annotations

import ctypes
import sys

import torch
from torch import Tensor

# Buffers from this size on get the advice: at least a few whole 2 MiB pages, and
# far above what glibc's heap serves, so the advised range is the buffer's own mapping.
_MIN_BYTES = 8 << 20
_PAGE = 4096
_MADV_HUGEPAGE = 14


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def empty_large(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, backed by huge pages when it is large.

    The caller must write every element (it is uninitialised, like any ``empty``).
    """
    out = torch.empty(shape, dtype=dtype, device=device)
    if (
        _madvise is None
        or out.device.type != "cpu"
        or out.nbytes < _MIN_BYTES
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    ):
        return out
    ptr = out.data_ptr()
    start = (ptr + _PAGE - 1) & ~(_PAGE - 1)
    end = (ptr + out.nbytes) & ~(_PAGE - 1)
    if end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)  # advice: a failure changes nothing
    return out


def where_large(condition: Tensor, input: Tensor, other: Tensor) -> Tensor:
    """``torch.where(condition, input, other)``, written into :func:`empty_large` memory.

    The buffer is only used in eager mode, on CPU, without autograd recording; otherwise
    this is plain :func:`torch.where`. ``other`` may be a 0-d tensor.
    """
    if (
        _madvise is None
        or condition.device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or (torch.is_grad_enabled() and (input.requires_grad or other.requires_grad))
    ):
        return torch.where(condition, input, other)
    shape = torch.broadcast_shapes(condition.shape, input.shape, other.shape)
    dtype = torch.result_type(input, other)
    out = empty_large(shape, dtype, condition.device)
    return torch.where(condition, input, other, out=out)
