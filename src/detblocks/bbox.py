"""Bounding-box operators: format conversion, splitting, area, batched IoU, clipping.

Box formats: ``'corner'`` (alias ``'xyxy'``) is ``(xmin, ymin, xmax, ymax)``;
``'center'`` (alias ``'cxcywh'``) is ``(center_x, center_y, width, height)``.
Every function works on a leading batch axis and keeps the input's dtype and
device; the modules (GluonCV's names and constructor arguments) only hold
hyper-parameters and call the functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from detblocks import _alloc, _checks
from detblocks._kernels import load as _load_native
from detblocks._kernels import native as _native

__all__ = [
    "corner_to_center",
    "center_to_corner",
    "bbox_split",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "aligned_box_iou",
    "clip_to_image",
    "BBoxCornerToCenter",
    "BBoxCenterToCorner",
    "BBoxSplit",
    "BBoxArea",
    "BBoxBatchIOU",
    "BBoxClipToImage",
]

# GluonCV clips intersection widths and heights to float16's largest finite value.
_F16_MAX = 65504.0

# Elements of one (B, rows, M) block of the IoU matrix computed at a time in eager mode on
# CPU: the block's temporaries (2 MiB each in float32) stay in cache, only the result goes to
# memory, and each op is large enough to amortise its fixed cost and to split over threads.
_IOU_BLOCK_ELEMENTS = 1 << 19

_HALF_DTYPES = (torch.float16, torch.bfloat16)

# Integer dtype of each float dtype's width (for bit-pattern tricks: maxima of IoU >= 0,
# hardness ranks in the samplers).
_SAME_WIDTH_INT = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}

Boxes4 = tuple[Tensor, Tensor, Tensor, Tensor]

# The native kernel of the IoU family's pairwise functions, or None (see detblocks._kernels).
_native_ioufam = _load_native("_native_ioufam")


def _norm_axis(name: str, x: Tensor, axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"{name}={axis} is out of range for a tensor of shape {_checks.shape_str(x)}")
    return axis % x.dim()


def _check_box_axis(name: str, x: object, axis: int) -> tuple[Tensor, int]:
    """``x`` is a floating tensor whose ``axis`` has size 4; returns it and the axis made >= 0."""
    x = _checks.check_float(name, x)
    if x.dim() == 0:
        raise ValueError(f"{name} must have a box axis of size 4, got a 0-d tensor")
    dim = _norm_axis("axis", x, axis)
    if x.shape[dim] != 4:
        raise ValueError(f"{name} must have size 4 on axis {axis}, got shape {_checks.shape_str(x)}")
    return x, dim


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (areas of 1000-px boxes overflow float16)."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def corner_to_center(x: Tensor, axis: int = -1, split: bool = False) -> Tensor | Boxes4:
    """Convert corner boxes to center boxes.

    Args:
        x (Tensor[..., 4, ...]): ``(xmin, ymin, xmax, ymax)`` along ``axis``.
        axis (int): the axis of length 4.
        split (bool): return the four coordinates separately.

    Returns:
        Tensor[..., 4, ...]: ``(center_x, center_y, width, height)`` along ``axis``; with
        ``split=True`` a tuple of 4 tensors with size 1 on ``axis``.

    Example:
        >>> import torch
        >>> corner_to_center(torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
        tensor([[2., 1., 4., 2.]])
    """
    x, dim = _check_box_axis("x", x, axis)
    xmin, ymin, xmax, ymax = x.split(1, dim=dim)
    width = xmax - xmin
    height = ymax - ymin
    out = (xmin + width / 2, ymin + height / 2, width, height)
    return out if split else torch.cat(out, dim=dim)


def center_to_corner(x: Tensor, axis: int = -1, split: bool = False) -> Tensor | Boxes4:
    """Convert center boxes to corner boxes.

    Args:
        x (Tensor[..., 4, ...]): ``(center_x, center_y, width, height)`` along ``axis``.
        axis (int): the axis of length 4.
        split (bool): return the four coordinates separately.

    Returns:
        Tensor[..., 4, ...]: ``(xmin, ymin, xmax, ymax)`` along ``axis``; with
        ``split=True`` a tuple of 4 tensors with size 1 on ``axis``.

    Example:
        >>> import torch
        >>> center_to_corner(torch.tensor([[2.0, 1.0, 4.0, 2.0]]))
        tensor([[0., 0., 4., 2.]])
    """
    x, dim = _check_box_axis("x", x, axis)
    cx, cy, width, height = x.split(1, dim=dim)
    half_w = width / 2
    half_h = height / 2
    out = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    return out if split else torch.cat(out, dim=dim)


def bbox_split(x: Tensor, axis: int, squeeze_axis: bool = False) -> Boxes4:
    """Split boxes into their four coordinates.

    Args:
        x (Tensor[..., 4, ...]): boxes with the coordinates along ``axis`` (any format).
        axis (int): the axis of length 4.
        squeeze_axis (bool): drop ``axis`` from the outputs instead of keeping it with size 1.

    Returns:
        tuple of 4 Tensor: views of ``x``, each of size 1 on ``axis`` (or without it).

    Example:
        >>> import torch
        >>> xmin, ymin, xmax, ymax = bbox_split(torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]), axis=-1)
        >>> xmax
        tensor([[[2.]]])
    """
    x, dim = _check_box_axis("x", x, axis)
    return x.unbind(dim) if squeeze_axis else x.split(1, dim=dim)  # type: ignore[return-value]


def box_area(x: Tensor, axis: int = -1, fmt: str = "corner") -> Tensor:
    """Area of boxes; negative widths or heights count as 0.

    Args:
        x (Tensor[B, N, 4]): boxes (any leading dims; coordinates along ``axis``).
        axis (int): the axis of length 4.
        fmt (str): ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.

    Returns:
        Tensor[B, N, 1]: areas, size 1 on ``axis``, in the dtype of ``x`` (float16 overflows
        to ``inf`` above 65504, as any float16 value does).

    Example:
        >>> import torch
        >>> box_area(torch.tensor([[[0.0, 0.0, 4.0, 2.0], [3.0, 3.0, 1.0, 5.0]]]))
        tensor([[[8.],
                 [0.]]])
    """
    x, dim = _check_box_axis("x", x, axis)
    if _checks.parse_fmt(fmt) == "center":
        _, _, width, height = x.split(1, dim=dim)
    else:
        xmin, ymin, xmax, ymax = x.split(1, dim=dim)
        width, height = xmax - xmin, ymax - ymin
    return width.clamp(min=0) * height.clamp(min=0)


def _iou_block(
    a_t: Tensor,
    b_t: Tensor,
    area_a: Tensor,
    area_b: Tensor,
    offset: float,
    out: Tensor | None = None,
    space: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """IoU of every box of ``a`` against every box of ``b``: the maths of :func:`box_iou`.

    ``a_t (B, 4, n)`` and ``b_t (B, 4, M)`` are corner planes; ``area_a (B, n)`` already
    holds ``eps``, ``area_b (B, M)``. The x and y intersections are one op each on stacked
    planes. Writes into ``out (B, n, M)`` when given, and the intermediate results into
    ``space`` (two ``(B, 2, n, M)`` tensors and one ``(B, n, M)``) when given, instead of
    fresh temporaries. Every in-place op acts on a tensor of this function's own, so it is
    differentiable and traceable.
    """

    def into(i: int) -> Tensor | None:
        return None if space is None else space[i]

    side = torch.minimum(a_t[:, 2:, :, None], b_t[:, 2:, None, :], out=into(0))  # (B, 2, n, M)
    low = torch.maximum(a_t[:, :2, :, None], b_t[:, :2, None, :], out=into(1))  # left and top
    side.sub_(low)  # widths and heights of the intersections
    if offset:
        side.add_(offset)
    side.clamp_(0.0, _F16_MAX)
    inter = torch.mul(side[:, 0], side[:, 1], out=None if space is None else low[:, 0])  # (B, n, M)
    union = torch.add(area_a[:, :, None], area_b[:, None, :], out=into(2)).sub_(inter)  # eps via area_a
    return torch.div(inter, union, out=out)


def _iou_block_rows(a: Tensor, b: Tensor) -> int | None:
    """Rows of ``a`` per block of the eager CPU fast path, or None for a single block: under
    compile/export, on accelerators, when autograd records, or when one block covers everything."""
    if not _checks.eager_cpu(a, b):
        return None
    rows = _IOU_BLOCK_ELEMENTS // max(1, max(a.shape[0], b.shape[0]) * b.shape[1])
    return rows if 1 <= rows < a.shape[1] else None


def _planes_and_areas(t: Tensor, offset: float) -> tuple[Tensor, Tensor]:
    """Corner planes ``t (B, 4, K)`` and their areas ``(B, K)`` as :func:`_iou_block` reads them.

    Negative areas (a box inverted on one axis) count as 0: such a box intersects nothing,
    so no IoU changes except ``0 / 0``. A box with a NaN or infinite coordinate (or an area
    beyond the dtype's range) intersects nothing either: its planes become 0 and its area
    ``+inf``, so its IoU with every box is 0.
    """
    area = (t[:, 2] - t[:, 0] + offset) * (t[:, 3] - t[:, 1] + offset)
    finite = torch.isfinite(area)
    if _checks.eager_cpu(t) and bool(finite.all()):  # the usual case on CPU: no copy, and the read is free
        return t, area.clamp(min=0)
    return torch.where(finite[:, None], t, 0.0), torch.where(finite, area.clamp(min=0), math.inf)


def _pairwise_inputs(a: object, b: object, fmt: object) -> tuple[Tensor, Tensor, bool]:
    """The checked corner boxes of a pairwise IoU: ``a (B, N, 4)``, ``b (B, M, 4)`` (a 2-d pair
    gets a batch axis of 1) and whether the inputs were 2-d."""
    a = _checks.check_boxes("a", a, (2, 3), "(B, N, 4) or (N, 4)")
    b = _checks.check_boxes("b", b, (2, 3), "(B, M, 4) or (M, 4)")
    if a.dim() != b.dim():
        raise ValueError(
            f"a and b must both be batched (3-d) or both single images (2-d), "
            f"got a {_checks.shape_str(a)} and b {_checks.shape_str(b)}"
        )
    single = a.dim() == 2
    if single:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    _checks.check_pair_batch("a", a, "b", b)
    if _checks.parse_fmt(fmt) == "center":
        a, b = center_to_corner(a), center_to_corner(b)
    return a, b, single


def box_iou(a: Tensor, b: Tensor, fmt: str = "corner", offset: float = 0, eps: float = 1e-15) -> Tensor:
    """Intersection over union of every box of ``a`` with every box of ``b``, per image.

    GluonCV's formula: intersection sides are ``min(right) - max(left) + offset`` clipped
    to ``[0, 65504]``; areas are ``(xmax - xmin + offset) * (ymax - ymin + offset)`` (not
    clipped); the result is ``inter / (area_a + area_b - inter + eps)``. The result is
    always in ``[0, 1]``: a pair that does not intersect gives 0 (also for inverted or
    zero-area boxes with ``eps=0``), and a box with a NaN or infinite coordinate has IoU 0
    with every box, like a padded row.

    Args:
        a (Tensor[B, N, 4]): boxes, or ``Tensor[N, 4]`` for a single image.
        b (Tensor[B, M, 4]): boxes, or ``Tensor[M, 4]``. A batch size of 1 on either side
            broadcasts against the other.
        fmt (str): format of both inputs, ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.
        offset (float): added to widths and heights (1 for the "+1 pixel" convention).
        eps (float): added to the union to avoid division by zero.

    Returns:
        Tensor[B, N, M] (``Tensor[N, M]`` for 2-d inputs): IoU in the promoted dtype of
        ``a`` and ``b``; float16/bfloat16 are computed in float32.

    On CPU in eager mode (without autograd), float32 (and half, computed in float32) goes
    through detblocks' native kernel when it is built (:data:`detblocks.NATIVE`): one
    pass over the result, on ``torch.get_num_threads()`` threads. Otherwise (and for
    float64) the matrix is computed with PyTorch ops in cache-sized blocks of rows written
    straight into the result. Both fill the columns of references that cannot overlap
    anything (padding rows, zero-area or non-finite boxes) with their exact 0 instead of
    computing them. A result of 2 MiB or more reuses the memory of an earlier result
    that nothing references any more (see :func:`detblocks.empty_cache`). Each anchor's best
    IoU is recorded for the samplers and ``MaximumMatcher``; the record is valid while the
    result is not modified in place (writes that bypass PyTorch's version counter, through
    ``.data`` or a NumPy view, are not seen: pass a copy after those). Under
    ``torch.compile``, ``torch.export``, autograd or on other devices it is one broadcast
    computation. Both give the same values.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]]])
        >>> b = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]]])
        >>> box_iou(a, b)
        tensor([[[1.0000, 0.0000],
                 [0.1429, 0.1429]]])
    """
    a, b, single = _pairwise_inputs(a, b, fmt)
    offset = _checks.check_number("offset", offset)
    eps = _checks.check_number("eps", eps, low=0)
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    work = _compute_dtype(out_dtype)
    if _native_iou_applies(a, b, work):
        out = _iou_native(a, b, offset, eps, out_dtype)
        return out.squeeze(0) if single else out
    # Coordinate planes, (B, 4, N) and (B, 4, M): contiguous rows for the broadcasts below.
    a_t = a.to(work).transpose(1, 2).contiguous()
    b_t = b.to(work).transpose(1, 2).contiguous()
    a_t, area_a = _planes_and_areas(a_t, offset)  # (B, 4, N), (B, N)
    b_t, area_b = _planes_and_areas(b_t, offset)  # (B, 4, M), (B, M)
    area_a = area_a + max(eps, torch.finfo(work).tiny)  # every union > 0: no 0 / 0

    if _iou_block_rows(a, b) is None:
        # One block: traceable (compile/export) and differentiable.
        out = _iou_block(a_t, b_t, area_a, area_b, offset).to(out_dtype)
    else:
        out = _iou_blocked(a_t, b_t, area_a, area_b, offset, out_dtype)
    return out.squeeze(0) if single else out


def _native_iou_applies(a: Tensor, b: Tensor, work: torch.dtype) -> bool:
    """Whether the native kernel computes this IoU: eager float32 maths on CPU without
    autograd, and at least one pair."""
    if _native is None or work != torch.float32 or not _checks.eager_cpu(a, b):
        return False  # (shapes are read only when not tracing: they may be symbolic)
    return 0 not in a.shape and 0 not in b.shape


def _iou_native(a: Tensor, b: Tensor, offset: float, eps: float, out_dtype: torch.dtype) -> Tensor:
    """:func:`box_iou` of corner boxes ``a (B, N, 4)`` and ``b (B, M, 4)`` by the native kernel,
    in one pass over the result: every row's IoU with the references of its own image that
    can overlap anything (the other columns are 0), its maximum, and for up to
    :data:`_GROUPED_MAX_M` references the maxima of the matcher's groups of rows, which are
    recorded. The kernel performs :func:`_iou_block`'s float32 operations in the same order,
    so the values are the same bit for bit."""
    batch, n, m = max(a.shape[0], b.shape[0]), a.shape[1], b.shape[1]
    # One set of boxes for every image (an expanded batch) is read once.
    a, b = (t[:1] if t.shape[0] > 1 and t.stride(0) == 0 else t for t in (a, b))
    a, b = a.to(torch.float32).contiguous(), b.to(torch.float32).contiguous()
    if out_dtype == torch.float32:
        out = _alloc.empty_large((batch, n, m), torch.float32, a.device)
    else:  # half precision: computed in float32, rounded once
        out = torch.empty((batch, n, m), dtype=torch.float32)
    best = torch.empty((batch, n), dtype=torch.float32)
    groups = -(-n // _GROUP_FOLD)
    gmax = None
    if m <= _GROUPED_MAX_M and out_dtype == torch.float32:
        gmax = _alloc.empty_large((batch, groups, m), torch.float32, a.device)
    _native.box_iou(
        a.data_ptr(),
        a.shape[0],
        b.data_ptr(),
        b.shape[0],
        batch,
        n,
        m,
        float(offset),
        max(eps, torch.finfo(torch.float32).tiny),
        out.data_ptr(),
        best.data_ptr(),
        0 if gmax is None else gmax.data_ptr(),
        groups,
        torch.get_num_threads(),
    )
    if out_dtype != torch.float32:
        out, best = out.to(out_dtype), best.to(out_dtype)
    _remember(out, best, gmax)
    return out


def _live_columns(b_t: Tensor, offset: float) -> Tensor:
    """The columns of the IoU matrix worth computing: ``Tensor[K]`` of indices, ascending.

    A reference with a non-finite coordinate (its planes are 0 by now) or a width or height
    ``+ offset`` of at most 0 (padding rows of -1, zero-area and inverted boxes) has an
    intersection of exactly 0 with every box, so its IoU column is exactly 0 and need not be
    computed. The columns that may not be 0 in some image are kept, followed by as many
    columns that are (computed, as 0) as make their count a multiple of the CPU's vector
    width: the row-wise ops then run without a scalar tail. Beyond 3/4 of the columns, all
    of them.
    """
    m = b_t.shape[2]
    live = ((b_t[:, 2] - b_t[:, 0] + offset > 0) & (b_t[:, 3] - b_t[:, 1] + offset > 0)).any(0)  # (M,)
    lanes = _vector_lanes(b_t.dtype)
    k = -(-int(live.sum()) // lanes) * lanes
    if k > 0.75 * m:
        return torch.arange(m, device=b_t.device)
    return _true_first(live)[:k].sort().values


def _true_first(mask: Tensor) -> Tensor:
    """Indices along the last axis of bool ``mask``: where it holds first, then the others,
    each part ascending. (Unique keys and a plain sort: it also exports to ONNX, which has no
    stable sort.)"""
    m = mask.shape[-1]
    key = (~mask).to(torch.int64) * m + torch.arange(m, device=mask.device)
    return key.sort(dim=-1).indices


def _vector_lanes(dtype: torch.dtype) -> int:
    """Elements of ``dtype`` in one SIMD register of this CPU (for the IoU's row length)."""
    width = 64 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 32
    return max(1, width // dtype.itemsize)


def _iou_blocked(
    a_t: Tensor, b_t: Tensor, area_a: Tensor, area_b: Tensor, offset: float, out_dtype: torch.dtype
) -> Tensor:
    """The eager CPU path of :func:`box_iou`: blocks of rows, written into the result.

    Only the columns of :func:`_live_columns` are computed; the others are exactly 0 and
    are filled. A block's x and y intersections are one op each on stacked planes, and
    every op writes into a workspace reused from block to block: fresh multi-MiB
    temporaries would each cost the kernel a page fill.
    """
    batch, n, m = max(a_t.shape[0], b_t.shape[0]), a_t.shape[2], b_t.shape[2]
    out = _alloc.empty_large((batch, n, m), out_dtype, a_t.device)
    best_bits = torch.empty((batch, n), dtype=_SAME_WIDTH_INT[out_dtype], device=a_t.device)
    cols = _live_columns(b_t, offset)
    k = cols.numel()
    if k == 0:  # nothing overlaps anything
        _remember(out.zero_(), best_bits.zero_().view(out_dtype))
        return out
    prefix = int(cols[-1]) == k - 1  # the first K columns (padding comes last)
    if k < m:
        b_t, area_b = b_t.index_select(2, cols), area_b.index_select(1, cols)
    work = a_t.dtype
    rows_per_block = max(1, _IOU_BLOCK_ELEMENTS // (batch * k))
    buffer = _alloc.empty_large((5 * batch * rows_per_block * k,), work, a_t.device)
    planes = buffer[: 4 * batch * rows_per_block * k].view(2, batch, 2, rows_per_block, k)
    union_ws = buffer[4 * batch * rows_per_block * k :].view(batch, rows_per_block, k)
    direct = prefix and out_dtype == work  # the IoU goes straight into the result
    bits = best_bits.dtype
    for start in range(0, n, rows_per_block):
        rows = slice(start, min(n, start + rows_per_block))
        r = rows.stop - rows.start
        side, low = planes[0, :, :, :r], planes[1, :, :, :r]  # (B, 2, r, K) each
        dest = out[:, rows]
        result = _iou_block(
            a_t[:, :, rows],
            b_t,
            area_a[:, rows],
            area_b,
            offset,
            out=dest[..., :k] if direct else low[:, 1],  # low[:, 1] is free by then
            space=(side, low, union_ws[:, :r]),
        )
        if prefix:  # the rows' first K columns, then 0 after them while they are in cache
            block = dest[..., :k]
            if not direct:
                block.copy_(result)
            if k < m:
                dest[..., k:].zero_()
        else:
            block = result.to(out_dtype)
            dest.zero_().index_copy_(2, cols, block)
        # Row maxima while the block is in cache. IoU >= 0 orders like its bit pattern, and
        # the integer maximum is vectorised for every K (the float one is not for short rows).
        torch.amax(block.view(bits), -1, out=best_bits[:, rows])
    _remember(out, best_bits.view(out_dtype))
    return out


# Row maxima (and group maxima) of results of the eager CPU paths, for the matchers and
# samplers (which need the best IoU of every anchor): keyed by the result tensor, valid
# while its version counter is unchanged.
_BEST_IOU = WeakIdKeyDictionary()

#: Rows of a group of the matcher's scan (``detblocks.matcher.FOLD``): row ``i`` of an image
#: is in group ``i % G`` with ``G = ceil(N / _GROUP_FOLD)``.
_GROUP_FOLD = 16
# The native kernel records group maxima for up to this many references (the matcher's
# fold is _GROUP_FOLD up to there).
_GROUPED_MAX_M = 256


def _remember(out: Tensor, best: Tensor, gmax: Tensor | None = None) -> None:
    if not out.is_inference():  # inference tensors have no version counter to check against
        _BEST_IOU[out] = (out._version, best, gmax)


def _record(ious: Tensor) -> tuple[int, Tensor, Tensor | None] | None:
    if _checks.tracing() or ious.is_inference():
        return None
    entry = _BEST_IOU.get(ious)
    if entry is None or entry[0] != ious._version:
        return None
    return entry


def _recorded_best_iou(ious: Tensor) -> Tensor | None:
    """``ious.amax(-1)`` when ``ious`` is a result of :func:`box_iou`'s eager CPU path that
    has not been modified since (``Tensor[B, N]``, its dtype), else ``None``.

    :func:`box_iou` records it while computing ``ious``, so the samplers (which need the
    best IoU of every anchor) do not read the whole matrix again.
    """
    entry = _record(ious)
    return None if entry is None else entry[1]


def _recorded_group_best(ious: Tensor) -> Tensor | None:
    """The matcher's group maxima of ``ious`` (``Tensor[B, G, M]``, ``G = ceil(N / 16)``:
    ``[b, g, m]`` is the maximum of ``ious[b, i, m]`` over the rows ``i % G == g``) when
    the native kernel recorded them for this unmodified result, else ``None``."""
    entry = _record(ious)
    return None if entry is None else entry[2]


# ------------------------------------------------------------------ the IoU family
#: The kinds of :func:`aligned_box_iou`.
IOU_KINDS = ("iou", "giou", "diou", "ciou")

# CIoU's aspect-ratio penalty is v = 4 / pi^2 * (arctan(w1 / h1) - arctan(w2 / h2))^2: the
# factor makes v span [0, 1] over every pair of aspect ratios.
_CIOU_V_SCALE = 4 / math.pi**2


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, and 0 wherever ``den == 0`` (a 0/0 term counts as 0).

    The divisor is replaced before dividing, not only the quotient afterwards (the double
    ``where``), so no NaN or infinite gradient reaches ``num`` or ``den`` from those pairs.
    """
    zero = den == 0
    return torch.where(zero, 0.0, num / torch.where(zero, 1.0, den))


def _aspect_angle(w: Tensor, h: Tensor) -> Tensor:
    """``arctan(w / h)`` with finite values and gradients everywhere: ``pi / 2`` (times the sign
    of ``w``) for ``h == 0`` as the reference's ``atan(inf)``, and 0 for a point box (0/0)."""
    point = (w == 0) & (h == 0)
    sign = torch.where(h < 0, -1.0, 1.0)  # atan(w / h) = atan2(-w, -h) for h < 0
    return torch.atan2(w * sign, torch.where(point, 1.0, h * sign))


def _box_terms(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor, kind: str) -> list[Tensor]:
    """The per-box terms :func:`_iou_pairs` reads: the corners and the area, then for DIoU and
    CIoU the centre, then for CIoU the aspect angle (the native kernel's planes, in order)."""
    w, h = x2 - x1, y2 - y1
    terms = [x1, y1, x2, y2, w * h]
    if kind in ("diou", "ciou"):
        terms += [(x1 + x2) / 2, (y1 + y2) / 2]
    if kind == "ciou":
        terms.append(_aspect_angle(w, h))
    return terms


def _iou_pairs(a: list[Tensor], b: list[Tensor], kind: str, eps: float, union_eps: float) -> Tensor:
    """IoU, GIoU, DIoU or CIoU of pairs of boxes from their :func:`_box_terms`.

    The terms of ``a`` and ``b`` broadcast against each other: only the pair terms are
    computed on the broadcast shape. ``union_eps`` is added to the union and the enclosing
    area (torchvision's losses) or not (0: its pairwise functions); ``eps`` to the enclosing
    diagonal and CIoU's ``alpha`` denominator. Every quotient with a zero divisor counts as
    0. (``_native_ioufam.c`` repeats the pairwise case operation for operation.)
    """
    ax1, ay1, ax2, ay2, a_area, *a_rest = a
    bx1, by1, bx2, by2, b_area, *b_rest = b
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = iw * ih
    union = (a_area + b_area) - inter
    iou = _safe_div(inter, union + union_eps if union_eps else union)
    if kind == "iou":
        return iou
    # The smallest enclosing box.
    cw = (torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)).clamp(min=0)
    ch = (torch.maximum(ay2, by2) - torch.minimum(ay1, by1)).clamp(min=0)
    if kind == "giou":
        area_c = cw * ch
        return iou - _safe_div(area_c - union, area_c + union_eps if union_eps else area_c)
    dx, dy = a_rest[0] - b_rest[0], a_rest[1] - b_rest[1]  # between the centres
    diagonal = cw * cw + ch * ch + eps
    diou = iou - _safe_div(dx * dx + dy * dy, diagonal)
    if kind == "diou":
        return diou
    dt = a_rest[2] - b_rest[2]
    v = _CIOU_V_SCALE * (dt * dt)
    alpha = _safe_div(v, 1 - iou + v + eps).detach()  # a constant for autograd, as in the paper
    return diou - alpha * v


def _pairwise_iou_of_kind(a: Tensor, b: Tensor, fmt: str, kind: str, eps: float) -> Tensor:
    """The pairwise functions of the IoU family: checks, dtype, and :func:`_iou_pairs` on
    every pair (no ``eps`` in the union, as torchvision's pairwise functions)."""
    a, b, single = _pairwise_inputs(a, b, fmt)
    eps = _checks.check_number("eps", eps, low=0)
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    work = _compute_dtype(out_dtype)
    # Coordinate planes (B, 4, N) and (B, 4, M): contiguous rows for the broadcasts.
    a_terms = _box_terms(*a.to(work).transpose(1, 2).contiguous().unbind(1), kind)  # (B, N) each
    b_terms = _box_terms(*b.to(work).transpose(1, 2).contiguous().unbind(1), kind)  # (B, M) each
    if _native_pairs_apply(a, b, work):
        out = _pairs_native(a_terms, b_terms, kind, eps, out_dtype)
        return out.squeeze(0) if single else out
    rows = [t[:, :, None] for t in a_terms]  # (B, N, 1) each
    cols = [t[:, None, :] for t in b_terms]  # (B, 1, M) each
    step = _iou_block_rows(a, b)
    if step is None:  # one broadcast computation: traceable and differentiable
        out = _iou_pairs(rows, cols, kind, eps, 0.0).to(out_dtype)  # (B, N, M)
    else:  # eager CPU: blocks of rows whose temporaries stay in cache (3x faster for 16M pairs)
        n = a.shape[1]
        out = _alloc.empty_large((max(a.shape[0], b.shape[0]), n, b.shape[1]), out_dtype, a.device)
        for start in range(0, n, step):
            block = [t[:, start : start + step] for t in rows]
            out[:, start : start + step] = _iou_pairs(block, cols, kind, eps, 0.0)
    return out.squeeze(0) if single else out


_NATIVE_KINDS = {"giou": 1, "diou": 2, "ciou": 3}


def _native_pairs_apply(a: Tensor, b: Tensor, work: torch.dtype) -> bool:
    """Whether the native kernel computes this pairwise GIoU/DIoU/CIoU: eager float32 maths on
    CPU without autograd, at least one pair, finite coordinates (the kernel's minimum and
    maximum do not propagate NaN as PyTorch's do)."""
    if _native_ioufam is None or work != torch.float32 or not _checks.eager_cpu(a, b):
        return False
    if 0 in a.shape or 0 in b.shape:
        return False
    return bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())


def _pairs_native(
    a_terms: list[Tensor], b_terms: list[Tensor], kind: str, eps: float, out_dtype: torch.dtype
) -> Tensor:
    """:func:`_iou_pairs` of every pair by the native kernel: the same float32 operations in
    the same order on the same per-box terms, so the same values bit for bit."""
    a_planes = torch.stack(a_terms, 1)  # (B, T, N)
    b_planes = torch.stack(b_terms, 1)  # (B, T, M)
    batch, n, m = max(a_planes.shape[0], b_planes.shape[0]), a_planes.shape[2], b_planes.shape[2]
    if out_dtype == torch.float32:
        out = _alloc.empty_large((batch, n, m), torch.float32, a_planes.device)
    else:  # half precision: computed in float32, rounded once
        out = torch.empty((batch, n, m), dtype=torch.float32)
    _native_ioufam.pairwise(
        _NATIVE_KINDS[kind],
        a_planes.data_ptr(),
        a_planes.shape[0],
        b_planes.data_ptr(),
        b_planes.shape[0],
        batch,
        n,
        m,
        eps,
        _CIOU_V_SCALE,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out if out_dtype == torch.float32 else out.to(out_dtype)


def generalized_box_iou(a: Tensor, b: Tensor, fmt: str = "corner") -> Tensor:
    """Generalized IoU of every box of ``a`` with every box of ``b``, per image.

    torchvision 0.29.1's ``generalized_box_iou`` (``ops/boxes.py``): ``IoU - (C - U) / C`` with the union
    ``U = area_a + area_b - inter`` and ``C`` the area of the smallest box enclosing both,
    no ``eps``. In ``[-1, 1]`` for boxes with ``xmin <= xmax`` and ``ymin <= ymax``. Where
    torchvision divides 0 by 0 (a pair of zero-area boxes: ``U = 0``, and ``C = 0`` when both
    are segments on one line) and returns NaN, that term counts as 0 here, so two identical
    points or segments have GIoU 0; gradients are finite there too.

    On CPU in eager mode without autograd, float32 (and half) goes through a native kernel
    when it is built, with the PyTorch path's values bit for bit. How torchvision,
    ultralytics and mmdet differ: the documentation's page on the IoU family.

    Args:
        a (Tensor[B, N, 4]): boxes, or ``Tensor[N, 4]`` for a single image.
        b (Tensor[B, M, 4]): boxes, or ``Tensor[M, 4]``. A batch size of 1 on either side
            broadcasts against the other.
        fmt (str): format of both inputs, ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.

    Returns:
        Tensor[B, N, M] (``Tensor[N, M]`` for 2-d inputs): in the promoted dtype of ``a`` and
        ``b``; float16/bfloat16 are computed in float32. Differentiable.

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
        >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
        >>> generalized_box_iou(a, b)
        tensor([[ 1.0000, -0.3333],
                [-0.0794, -0.4667]])
    """
    return _pairwise_iou_of_kind(a, b, fmt, "giou", 0.0)


def distance_box_iou(a: Tensor, b: Tensor, fmt: str = "corner", eps: float = 1e-7) -> Tensor:
    """Distance IoU of every box of ``a`` with every box of ``b``, per image.

    torchvision 0.29.1's ``distance_box_iou`` (``ops/boxes.py``): ``IoU - d^2 / (c^2 + eps)`` with ``d`` the
    distance between the boxes' centres and ``c`` the diagonal of the smallest box enclosing
    both; the IoU has no ``eps``. In ``[-1, 1]`` for boxes with ``xmin <= xmax``. Where
    torchvision's IoU is 0/0 (two zero-area boxes) and NaN, it counts as 0 here (so does the
    distance term with ``eps=0`` and two equal points); gradients are finite there too.

    On CPU in eager mode without autograd, float32 (and half) goes through a native kernel
    when it is built, with the PyTorch path's values bit for bit. How torchvision,
    ultralytics and mmdet differ: the documentation's page on the IoU family.

    Args:
        a (Tensor[B, N, 4]): boxes, or ``Tensor[N, 4]`` for a single image.
        b (Tensor[B, M, 4]): boxes, or ``Tensor[M, 4]``; a batch size of 1 broadcasts.
        fmt (str): ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.
        eps (float): added to the squared diagonal of the enclosing box (>= 0).

    Returns:
        Tensor[B, N, M] (``Tensor[N, M]`` for 2-d inputs): in the promoted dtype of ``a`` and
        ``b``; float16/bfloat16 are computed in float32. Differentiable.

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
        >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
        >>> distance_box_iou(a, b)
        tensor([[ 1.0000, -0.4000],
                [ 0.0317, -0.2941]])
    """
    return _pairwise_iou_of_kind(a, b, fmt, "diou", eps)


def complete_box_iou(a: Tensor, b: Tensor, fmt: str = "corner", eps: float = 1e-7) -> Tensor:
    """Complete IoU of every box of ``a`` with every box of ``b``, per image.

    torchvision 0.29.1's ``complete_box_iou`` (``ops/boxes.py``): the distance IoU (:func:`distance_box_iou`)
    minus ``alpha * v``, with ``v = 4 / pi^2 * (arctan(w_a / h_a) - arctan(w_b / h_b))^2`` and
    ``alpha = v / (1 - IoU + v + eps)`` treated as a constant by autograd (computed without
    gradient, as in torchvision and the CIoU paper). In ``(-2, IoU]`` for boxes with
    ``xmin <= xmax`` and ``ymin <= ymax`` (``0 <= v < 1``). A zero-height box has
    ``arctan(w / 0) = pi / 2`` as in torchvision; a point box (0/0, NaN in torchvision) has
    angle 0, and an IoU of 0/0 counts as 0; gradients are finite everywhere.

    On CPU in eager mode without autograd, float32 (and half) goes through a native kernel
    when it is built, with the PyTorch path's values bit for bit. How torchvision,
    ultralytics and mmdet differ: the documentation's page on the IoU family.

    Args:
        a (Tensor[B, N, 4]): boxes, or ``Tensor[N, 4]`` for a single image.
        b (Tensor[B, M, 4]): boxes, or ``Tensor[M, 4]``; a batch size of 1 broadcasts.
        fmt (str): ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.
        eps (float): added to the squared enclosing diagonal and to ``alpha``'s denominator
            (>= 0).

    Returns:
        Tensor[B, N, M] (``Tensor[N, M]`` for 2-d inputs): in the promoted dtype of ``a`` and
        ``b``; float16/bfloat16 are computed in float32. Differentiable.

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 3.0]])
        >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
        >>> complete_box_iou(a, b)
        tensor([[ 1.0000, -0.4000],
                [-0.0580, -0.0580]])
    """
    return _pairwise_iou_of_kind(a, b, fmt, "ciou", eps)


def aligned_box_iou(
    a: Tensor, b: Tensor, kind: str = "iou", fmt: str = "corner", eps: float = 1e-7
) -> Tensor:
    """IoU, GIoU, DIoU or CIoU of each box of ``a`` with the box of ``b`` at the same place.

    The element-wise form the box losses use: ``kind='giou'``, ``'diou'`` and ``'ciou'`` are
    ``1 -`` torchvision 0.29.1's ``generalized_box_iou_loss``, ``distance_box_iou_loss`` and
    ``complete_box_iou_loss`` (``ops/giou_loss.py``, ``diou_loss.py``, ``ciou_loss.py``,
    ``reduction='none'``): ``eps`` is added to the union, to the enclosing area (GIoU), to the
    squared enclosing diagonal (DIoU, CIoU) and to CIoU's ``alpha`` denominator; ``alpha`` is
    a constant for autograd. (torchvision's CIoU loss passes its ``eps`` to ``alpha`` only,
    keeping 1e-7 elsewhere: the two agree at the default ``eps``.) ``kind='iou'`` is
    torchvision's ``box_iou`` of each pair, ``inter / union`` (``eps`` unused). Where a
    divisor is 0 (zero-area pairs with ``eps=0``, point boxes in CIoU's ``arctan(w / h)``),
    the term counts as 0: the result and its gradients are finite.

    Args:
        a (Tensor[..., 4]): boxes.
        b (Tensor[..., 4]): boxes; the leading dims of ``a`` and ``b`` broadcast.
        kind (str): ``'iou'``, ``'giou'``, ``'diou'`` or ``'ciou'``.
        fmt (str): ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.
        eps (float): see above (>= 0).

    Returns:
        Tensor[...]: the broadcast leading dims, in the promoted dtype of ``a`` and ``b``;
        float16/bfloat16 are computed in float32. Differentiable.

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
        >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
        >>> aligned_box_iou(a, b, kind="giou")
        tensor([ 1.0000, -0.4667])
    """
    a = _checks.check_boxes("a", a, range(1, 9), "(..., 4)")
    b = _checks.check_boxes("b", b, range(1, 9), "(..., 4)")
    if not isinstance(kind, str) or kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {list(IOU_KINDS)}, got {kind!r}")
    fmt = _checks.parse_fmt(fmt)
    eps = _checks.check_number("eps", eps, low=0)
    try:
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"the leading dims of a {_checks.shape_str(a)} and b {_checks.shape_str(b)} do not broadcast"
        ) from None
    if fmt == "center":
        a, b = center_to_corner(a), center_to_corner(b)
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    work = _compute_dtype(out_dtype)
    union_eps = 0.0 if kind == "iou" else eps
    a_terms = _box_terms(*a.to(work).unbind(-1), kind)
    b_terms = _box_terms(*b.to(work).unbind(-1), kind)
    out = _iou_pairs(a_terms, b_terms, kind, eps, union_eps)
    return out.to(out_dtype)


def clip_to_image(
    x: Tensor,
    img: Tensor | None = None,
    *,
    height: int | float | Tensor | None = None,
    width: int | float | Tensor | None = None,
) -> Tensor:
    """Clip corner boxes to the image: x to ``[0, W]``, y to ``[0, H]``.

    Args:
        x (Tensor[B, N, 4]): corner boxes (any leading dims).
        img (Tensor[B, C, H, W]): the images; only their size is read (symbolically, so
            the bounds follow dynamic H and W under ``torch.export``).
        height, width (int | float | Tensor[B]): the bounds instead of ``img``; a tensor
            gives one bound per image.

    Returns:
        Tensor[B, N, 4]: clipped boxes, dtype of ``x``.

    Example:
        >>> import torch
        >>> boxes = torch.tensor([[[-5.0, 2.0, 70.0, 50.0]]])
        >>> clip_to_image(boxes, torch.zeros(1, 3, 48, 64))
        tensor([[[ 0.,  2., 64., 48.]]])
        >>> clip_to_image(boxes, height=40, width=60)
        tensor([[[ 0.,  2., 60., 40.]]])
    """
    x = _checks.check_boxes("x", x, range(1, 8), "(..., 4)")
    if img is not None:
        if height is not None or width is not None:
            raise ValueError("give either img or height and width, not both")
        img = _checks.check_tensor("img", img)
        _checks.check_rank("img", img, (3, 4), "(B, C, H, W)")
        h_max: int | float | Tensor = img.shape[-2]
        w_max: int | float | Tensor = img.shape[-1]
    else:
        if height is None or width is None:
            raise ValueError(
                f"clip_to_image needs img, or both height and width, got height={height!r}, width={width!r}"
            )
        h_max, w_max = (_bound(name, v, x) for name, v in (("height", height), ("width", width)))
    xmin, ymin, xmax, ymax = x.unbind(-1)
    return torch.stack(
        [_clip(xmin, w_max), _clip(ymin, h_max), _clip(xmax, w_max), _clip(ymax, h_max)], dim=-1
    )


def _clip(v: Tensor, high: int | float | Tensor) -> Tensor:
    """``min(max(v, 0), high)``; ``high`` a number (possibly symbolic) or a broadcastable tensor."""
    if isinstance(high, Tensor):
        return v.clamp(min=0).minimum(high)
    return v.clamp(0, high)


def _bound(name: str, value: object, x: Tensor) -> int | float | Tensor:
    """A clip bound: a Python number, or a tensor with one value per image of ``x``."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value.to(x.dtype)
        if value.dim() != 1 or x.dim() < 2 or value.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"{name} must be a number or a tensor of shape (B,) matching x {_checks.shape_str(x)}, "
                f"got shape {_checks.shape_str(value)}"
            )
        return value.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 2))
    return _checks.check_number(name, value, low=0)


class BBoxCornerToCenter(nn.Module):
    """Convert corner boxes to center boxes (see :func:`corner_to_center`).

    Example:
        >>> import torch
        >>> BBoxCornerToCenter()(torch.tensor([[[0.0, 0.0, 4.0, 2.0]]]))
        tensor([[[2., 1., 4., 2.]]])
    """

    def __init__(self, axis: int = -1, split: bool = False) -> None:
        super().__init__()
        self.axis = axis
        self.split = split

    def forward(self, x: Tensor) -> Tensor | Boxes4:
        return corner_to_center(x, axis=self.axis, split=self.split)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, split={self.split}"


class BBoxCenterToCorner(nn.Module):
    """Convert center boxes to corner boxes (see :func:`center_to_corner`).

    Example:
        >>> import torch
        >>> BBoxCenterToCorner()(torch.tensor([[[2.0, 1.0, 4.0, 2.0]]]))
        tensor([[[0., 0., 4., 2.]]])
    """

    def __init__(self, axis: int = -1, split: bool = False) -> None:
        super().__init__()
        self.axis = axis
        self.split = split

    def forward(self, x: Tensor) -> Tensor | Boxes4:
        return center_to_corner(x, axis=self.axis, split=self.split)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, split={self.split}"


class BBoxSplit(nn.Module):
    """Split boxes into their four coordinates (see :func:`bbox_split`).

    Example:
        >>> import torch
        >>> BBoxSplit(axis=-1, squeeze_axis=True)(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
        (tensor([0.]), tensor([1.]), tensor([2.]), tensor([3.]))
    """

    def __init__(self, axis: int, squeeze_axis: bool = False) -> None:
        super().__init__()
        self.axis = axis
        self.squeeze_axis = squeeze_axis

    def forward(self, x: Tensor) -> Boxes4:
        return bbox_split(x, axis=self.axis, squeeze_axis=self.squeeze_axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, squeeze_axis={self.squeeze_axis}"


class BBoxArea(nn.Module):
    """Area of boxes, ``(B, N, 4) -> (B, N, 1)`` (see :func:`box_area`).

    Example:
        >>> import torch
        >>> BBoxArea(fmt="center")(torch.tensor([[[5.0, 5.0, 4.0, 2.0]]]))
        tensor([[[8.]]])
    """

    def __init__(self, axis: int = -1, fmt: str = "corner") -> None:
        super().__init__()
        self.axis = axis
        self.fmt = _checks.parse_fmt(fmt)

    def forward(self, x: Tensor) -> Tensor:
        return box_area(x, axis=self.axis, fmt=self.fmt)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, fmt={self.fmt!r}"


class BBoxBatchIOU(nn.Module):
    """Batched IoU, ``a (B, N, 4), b (B, M, 4) -> (B, N, M)`` (see :func:`box_iou`).

    ``axis`` is the coordinate axis of both inputs (moved last before the computation).

    Example:
        >>> import torch
        >>> iou = BBoxBatchIOU(offset=1)
        >>> iou(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), torch.tensor([[[1.0, 0.0, 2.0, 1.0]]]))
        tensor([[[0.3333]]])
    """

    def __init__(self, axis: int = -1, fmt: str = "corner", offset: float = 0, eps: float = 1e-15) -> None:
        super().__init__()
        self.axis = axis
        self.fmt = _checks.parse_fmt(fmt)
        self.offset = _checks.check_number("offset", offset)
        self.eps = _checks.check_number("eps", eps, low=0)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if self.axis != -1:
            a, dim_a = _check_box_axis("a", a, self.axis)
            b, dim_b = _check_box_axis("b", b, self.axis)
            if dim_a != a.dim() - 1 or dim_b != b.dim() - 1:
                a, b = a.movedim(dim_a, -1), b.movedim(dim_b, -1)
        return box_iou(a, b, fmt=self.fmt, offset=self.offset, eps=self.eps)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, fmt={self.fmt!r}, offset={self.offset}, eps={self.eps}"


class BBoxClipToImage(nn.Module):
    """Clip corner boxes to ``[0, W] x [0, H]`` of ``img (B, C, H, W)`` (see :func:`clip_to_image`).

    Example:
        >>> import torch
        >>> BBoxClipToImage()(torch.tensor([[[-1.0, 2.0, 9.0, 9.0]]]), torch.zeros(1, 3, 6, 8))
        tensor([[[0., 2., 8., 6.]]])
    """

    def forward(self, x: Tensor, img: Tensor) -> Tensor:
        return clip_to_image(x, img)
