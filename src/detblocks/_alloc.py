"""Large CPU output buffers that are cheap to fill.

A tensor of tens of megabytes comes from a fresh ``mmap`` on every call (glibc
never caches blocks above 32 MiB), so the first write into it takes a page fault
per page: about 0.23 ms per MiB with 4 KiB pages on a 2-core x86 machine, often
more than the arithmetic that fills it, and several times that on virtual
machines whose host takes freed memory back. :func:`empty_large` therefore

* reuses the memory of earlier outputs that nothing references any more (a small
  cache, like PyTorch's CUDA caching allocator but only for these outputs): at
  most :data:`CACHE_BYTES` of idle buffers are kept, and :func:`empty_cache`
  releases them;
* asks the kernel for transparent huge pages on new buffers
  (``madvise(MADV_HUGEPAGE)``, what PyTorch's own ``THP_MEM_ALLOC_ENABLE=1`` does
  for every allocation).

Only eager calls on CPU take this path; on accelerators and while tracing it is a
plain :func:`torch.empty`. A tensor from the cache is an ordinary CPU tensor
except that its storage cannot be resized (``resize_`` to a larger size raises).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import sys
import threading

import torch
from torch import Tensor

from detblocks._checks import eager_cpu, tracing

__all__ = ["empty_cache"]

# Buffers from this size on take this path: at least one whole 2 MiB page. (glibc serves
# smaller and mid-sized blocks from fresh mmaps too, once its heap has been trimmed.)
_MIN_BYTES = 2 << 20
# Buffers up to this size are kept for reuse once idle (larger ones are unmapped when freed).
_MAX_CACHED_BYTES = 1 << 30
#: Idle buffers kept for reuse, in bytes at most; the oldest go first beyond it.
CACHE_BYTES = 1 << 30
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

# Every buffer handed out and not yet released, oldest first. A tensor made from a buffer
# holds a reference to it (torch.frombuffer), so a buffer is idle exactly when its
# reference count is that of a buffer held by this list alone.
_buffers: list[mmap.mmap] = []
_lock = threading.Lock()


def _references(buf: mmap.mmap) -> int:
    return sys.getrefcount(buf)


def _idle_flags(buffers: list[mmap.mmap]) -> list[bool]:
    """Which buffers nothing but ``buffers`` references (always called on a list that holds
    each buffer once, so the count to compare with is the same every time)."""
    return [_references(buf) == _IDLE for buf in buffers]


_IDLE = [_references(buf) for buf in [mmap.mmap(-1, _PAGE)]][0]


def _anonymous(nbytes: int) -> mmap.mmap:
    """Zero-filled private memory: copy-on-write in a forked child (a DataLoader worker never
    shares a buffer with its parent)."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, nbytes)  # pragma: no cover - Windows: no fork


def _take(nbytes: int) -> mmap.mmap:
    """An idle cached buffer of ``nbytes`` to ``2 * nbytes`` bytes, or a new one."""
    with _lock:
        idle = _idle_flags(_buffers)
        found = next(
            (i for i, buf in enumerate(_buffers) if idle[i] and nbytes <= len(buf) <= 2 * nbytes), None
        )
        reuse = None if found is None else _buffers.pop(found)
        if found is not None:
            del idle[found]
        _release_idle(idle, CACHE_BYTES)
        if reuse is not None:
            _buffers.append(reuse)  # most recently used last
            return reuse
    buf = _anonymous(nbytes)
    if _madvise is not None:
        address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        _madvise(address, nbytes & ~(_PAGE - 1), _MADV_HUGEPAGE)  # advice: a failure changes nothing
    if nbytes <= _MAX_CACHED_BYTES:
        with _lock:
            _buffers.append(buf)
    return buf


def _release_idle(idle: list[bool], keep_bytes: int) -> int:
    """Close the oldest idle buffers (``idle`` flags ``_buffers``) until at most ``keep_bytes``
    of idle ones remain; returns the bytes released. Call with ``_lock`` held."""
    excess = sum(len(buf) for i, buf in enumerate(_buffers) if idle[i]) - keep_bytes
    released = 0
    keep = []
    for i, buf in enumerate(_buffers):
        if released < excess and idle[i]:
            released += len(buf)
            buf.close()
        else:
            keep.append(buf)
    _buffers[:] = keep
    return released


def empty_cache() -> int:
    """Release the idle buffers kept for reuse by large CPU outputs; returns the bytes released.

    Example:
        >>> import detblocks
        >>> detblocks.empty_cache() >= 0
        True
    """
    with _lock:
        return _release_idle(_idle_flags(_buffers), 0)


def empty_large(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, from reused or huge-page memory
    when it is a large CPU tensor made in eager mode.

    The caller must write every element (it is uninitialised, like any ``empty``).
    """
    device = torch.device(device)
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or nbytes < _MIN_BYTES or tracing():
        return torch.empty(shape, dtype=dtype, device=device)
    buf = _take(nbytes)
    # A uint8 view first: frombuffer needs the byte count to be a multiple of the dtype size.
    return torch.frombuffer(buf, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)


def where_large(condition: Tensor, input: Tensor, other: Tensor) -> Tensor:
    """``torch.where(condition, input, other)``, written into :func:`empty_large` memory.

    The buffer is only used in eager mode, on CPU, without autograd recording; otherwise
    this is plain :func:`torch.where`. ``other`` may be a 0-d tensor.
    """
    if not eager_cpu(condition, input, other):
        return torch.where(condition, input, other)
    shape = torch.broadcast_shapes(condition.shape, input.shape, other.shape)
    dtype = torch.result_type(input, other)
    out = empty_large(shape, dtype, condition.device)
    return torch.where(condition, input, other, out=out)
