"""Anchor generators of GluonCV's detectors: SSD default boxes and RPN anchors; and the
anchor points of today's anchor-free detectors (:func:`anchor_points`).

GluonCV's generators (``gluoncv.model_zoo.ssd.anchor.SSDAnchorGenerator`` and
``gluoncv.model_zoo.rcnn.rpn.anchor.RPNAnchorGenerator``, 0.10.5) pre-compute a
grid of ``alloc_size`` cells once and crop it to each feature map. Here the
anchors are computed for the feature map's own size at every call, from its
(possibly symbolic) height and width, so one traced or exported program serves
every input size and no size limit exists; the values equal GluonCV's crop.

Anchors are not cached. A map's anchors are an ``arange`` per axis and one broadcast:
about 0.5 ms for SSD300's 38 x 38 map and 0.9 ms for a 50 x 76 RPN map with 9 shapes
on one busy CPU core, a few percent of even a small detector's forward. A cache keyed by
size, device and dtype would hand the same tensor to every caller (an in-place edit by
one would change the others' anchors) and would have to be bypassed under tracing,
where sizes are symbolic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detblocks import _checks

__all__ = [
    "anchor_points",
    "ssd_anchors",
    "rpn_anchors",
    "rpn_base_anchors",
    "SSDAnchorGenerator",
    "RPNAnchorGenerator",
]


def _numbers(
    name: str, value: object, *, count: int | None = None, positive: bool = True
) -> tuple[float, ...]:
    """A number or a non-empty sequence of numbers (``count`` of them when given), each finite
    (and > 0 with ``positive``); returns them as floats."""
    items = value if isinstance(value, (list, tuple)) else None
    if items is None:
        if count is None and isinstance(value, (int, float)) and not isinstance(value, bool):
            items = (value,)  # GluonCV wraps a single ratio or scale into a list
        else:
            kind = f"a sequence of {count} numbers" if count else "a number or a sequence of numbers"
            raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if count is not None and len(items) != count:
        raise ValueError(f"{name} must have {count} values, got {len(items)}: {value!r}")
    if not items:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold numbers, got {v!r} in {value!r}")
        if not math.isfinite(v) or (positive and v <= 0):
            raise ValueError(
                f"{name} must hold {'positive ' if positive else ''}finite numbers, got {value!r}"
            )
        out.append(float(v))
    return tuple(out)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Anchors are computed in float64 for float64 output, else in float32 (16-bit floats
    cannot hold pixel centres such as 300.5 exactly)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_out_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def _ssd_shapes(sizes: tuple[float, float], ratios: tuple[float, ...]) -> list[tuple[float, float]]:
    """The ``A = len(ratios) + 1`` (width, height) pairs of every SSD cell, in GluonCV's order."""
    s0, s1 = sizes[0], math.sqrt(sizes[0] * sizes[1])
    shapes = [(s0, s0), (s1, s1)]
    shapes += [(s0 * math.sqrt(r), s0 / math.sqrt(r)) for r in ratios[1:]]
    return shapes


def ssd_anchors(
    height: int,
    width: int,
    im_size: Sequence[float],
    sizes: Sequence[float],
    ratios: Sequence[float],
    step: float,
    offsets: Sequence[float] = (0.5, 0.5),
    clip: bool = False,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """SSD default boxes of a ``height x width`` feature map, as GluonCV's ``SSDAnchorGenerator``.

    The cell in row ``i`` and column ``j`` is centred at
    ``cx = (j + offsets[1]) * step``, ``cy = (i + offsets[0]) * step`` and carries
    ``A = len(ratios) + 1`` boxes: a square of side ``sizes[0]``, a square of side
    ``sqrt(sizes[0] * sizes[1])``, then ``(sizes[0] * sqrt(r), sizes[0] / sqrt(r))``
    for every ``r`` in ``ratios[1:]`` (``ratios[0]`` stands for the two squares).
    With ``clip``, ``cx`` and widths are clipped to ``[0, W]`` and ``cy`` and heights
    to ``[0, H]`` of ``im_size = (H, W)``.

    Args:
        height, width (int): size of the feature map (symbolic sizes trace).
        im_size (sequence of 2 numbers): ``(H, W)`` of the image, read only by ``clip``.
        sizes (sequence of 2 numbers): ``(size_min, size_max)`` in pixels.
        ratios (sequence of numbers): aspect ratios, the first for the squares.
        step (number): distance between cell centres, in pixels.
        offsets (sequence of 2 numbers): ``(y, x)`` offset of the centres within a cell.
        clip (bool): clip the anchors to the image as above.
        dtype (torch.dtype): floating dtype of the result.
        device: device of the result.

    Returns:
        Tensor[1, height * width * A, 4]: center-format ``(cx, cy, w, h)`` anchors ordered
        by row, column, then the ``A`` shapes.

    Example:
        >>> ssd_anchors(1, 2, (300, 300), (30, 60), (1, 2), step=8)
        tensor([[[ 4.0000,  4.0000, 30.0000, 30.0000],
                 [ 4.0000,  4.0000, 42.4264, 42.4264],
                 [ 4.0000,  4.0000, 42.4264, 21.2132],
                 [12.0000,  4.0000, 30.0000, 30.0000],
                 [12.0000,  4.0000, 42.4264, 42.4264],
                 [12.0000,  4.0000, 42.4264, 21.2132]]])
    """
    im_h, im_w = _numbers("im_size", im_size, count=2)
    sizes_t = _numbers("sizes", sizes, count=2)
    ratios_t = _numbers("ratios", ratios)
    step = float(_checks.check_number("step", step, low=0, low_open=True))
    off_y, off_x = _numbers("offsets", offsets, count=2, positive=False)
    clip = _checks.check_bool("clip", clip)
    dtype = _check_out_dtype(dtype)
    work = _work_dtype(dtype)
    shapes = _ssd_shapes(sizes_t, ratios_t)
    if clip:
        shapes = [(min(max(w, 0.0), im_w), min(max(h, 0.0), im_h)) for w, h in shapes]
    cy = (torch.arange(height, dtype=work, device=device) + off_y) * step  # (h,)
    cx = (torch.arange(width, dtype=work, device=device) + off_x) * step  # (w,)
    if clip:
        cy, cx = cy.clamp(0.0, im_h), cx.clamp(0.0, im_w)
    a = len(shapes)
    wh = _checks.constant(shapes, work, device)  # (A, 2)
    grid = torch.stack(
        [
            cx[None, :, None].expand(height, width, a),
            cy[:, None, None].expand(height, width, a),
            wh[None, None, :, 0].expand(height, width, a),
            wh[None, None, :, 1].expand(height, width, a),
        ],
        dim=-1,
    )  # (h, w, A, 4)
    return grid.reshape(1, -1, 4).to(dtype)


def rpn_base_anchors(
    stride: float, base_size: float, ratios: Sequence[float], scales: Sequence[float]
) -> Tensor:
    """The ``A = len(ratios) * len(scales)`` corner anchors of the cell at the origin, as
    GluonCV's (Detectron's) ``generate_base_anchors``.

    The reference window is ``(0, 0, stride - 1, stride - 1)``; for each ratio ``r`` its
    area is kept with sides ``w = round(sqrt(stride**2 / r))``, ``h = round(w * r)``
    (half to even), then for each scale ``s`` the sides are multiplied by
    ``s * base_size / stride`` around the window's centre (the "+1 pixel" convention:
    ``xmax = xc + (w - 1) / 2``). Order: ratio-major, scale inner.

    Returns:
        Tensor[A, 4]: float64 corner boxes.

    Example:
        >>> rpn_base_anchors(16, 16, (1,), (2,))
        tensor([[-8., -8., 23., 23.]], dtype=torch.float64)
    """
    return torch.tensor(_rpn_base_rows(stride, base_size, ratios, scales), dtype=torch.float64)


def _rpn_base_rows(
    stride: float, base_size: float, ratios: Sequence[float], scales: Sequence[float]
) -> list[tuple[float, float, float, float]]:
    """:func:`rpn_base_anchors` as Python numbers (checked arguments)."""
    stride = float(_checks.check_number("stride", stride, low=0, low_open=True))
    base_size = float(_checks.check_number("base_size", base_size, low=0, low_open=True))
    ratios_t = _numbers("ratios", ratios)
    scales_t = _numbers("scales", scales)
    ctr = 0.5 * (stride - 1.0)  # centre of the (0, 0, stride - 1, stride - 1) window
    rows = []
    for r in ratios_t:
        w_r = float(round(math.sqrt(stride * stride / r)))
        h_r = float(round(w_r * r))
        for s in scales_t:
            f = s * base_size / stride
            w, h = w_r * f, h_r * f
            rows.append(
                (ctr - 0.5 * (w - 1.0), ctr - 0.5 * (h - 1.0), ctr + 0.5 * (w - 1.0), ctr + 0.5 * (h - 1.0))
            )
    return rows


def rpn_anchors(
    height: int,
    width: int,
    base: Tensor,
    stride: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """RPN anchors of a ``height x width`` feature map: the base anchors shifted to every cell.

    Anchor ``(i * width + j) * A + a`` is ``base[a] + (j, i, j, i) * stride``.

    Args:
        height, width (int): size of the feature map (symbolic sizes trace).
        base (Tensor[A, 4]): corner anchors of the cell at the origin (:func:`rpn_base_anchors`).
        stride (number): feature-map stride in pixels.
        dtype (torch.dtype): floating dtype of the result.
        device: device of the result.

    Returns:
        Tensor[1, height * width * A, 4]: corner anchors ordered by row, column, then base anchor.

    Example:
        >>> rpn_anchors(1, 2, rpn_base_anchors(16, 16, (1,), (2,)), 16)
        tensor([[[-8., -8., 23., 23.],
                 [ 8., -8., 39., 23.]]])
    """
    base = _checks.check_boxes("base", base, 2, "(A, 4)")
    stride = float(_checks.check_number("stride", stride, low=0, low_open=True))
    dtype = _check_out_dtype(dtype)
    work = _work_dtype(dtype)
    sy = torch.arange(height, dtype=work, device=device) * stride  # (h,)
    sx = torch.arange(width, dtype=work, device=device) * stride  # (w,)
    a = base.shape[0]
    shift = torch.stack(
        [
            sx[None, :].expand(height, width),
            sy[:, None].expand(height, width),
            sx[None, :].expand(height, width),
            sy[:, None].expand(height, width),
        ],
        dim=-1,
    )  # (h, w, 4)
    out = shift[:, :, None, :] + base.to(dtype=work, device=device)[None, None, :, :]  # (h, w, A, 4)
    return out.reshape(1, height * width * a, 4).to(dtype)


def _feature_map(x: object) -> tuple[Tensor, torch.dtype]:
    """``x`` is a ``(B, C, h, w)`` tensor; returns it and the anchors' dtype (x's when floating)."""
    x = _checks.check_tensor("x", x)
    _checks.check_rank("x", x, 4, "(B, C, h, w)")
    return x, (x.dtype if x.is_floating_point() else torch.float32)


class SSDAnchorGenerator(nn.Module):
    """SSD default boxes of a feature map (see :func:`ssd_anchors`).

    GluonCV's ``index`` (a parameter name) and ``alloc_size`` (the pre-allocated grid)
    are dropped: anchors are computed for each feature map's own size.

    forward ``x (B, C, h, w)`` (only ``h`` and ``w`` are read) -> ``(1, h * w * A, 4)``
    center-format anchors in the dtype of ``x`` (float32 for an integer ``x``).

    Example:
        >>> import torch
        >>> gen = SSDAnchorGenerator((300, 300), sizes=(30, 60), ratios=(1, 2, 0.5), step=8)
        >>> gen(torch.zeros(1, 16, 38, 38)).shape
        torch.Size([1, 5776, 4])
    """

    def __init__(
        self,
        im_size: Sequence[float],
        sizes: Sequence[float],
        ratios: Sequence[float],
        step: float,
        offsets: Sequence[float] = (0.5, 0.5),
        clip: bool = False,
    ) -> None:
        super().__init__()
        self.im_size = _numbers("im_size", im_size, count=2)
        self.sizes = _numbers("sizes", sizes, count=2)
        self.ratios = _numbers("ratios", ratios)
        self.step = float(_checks.check_number("step", step, low=0, low_open=True))
        self.offsets = _numbers("offsets", offsets, count=2, positive=False)
        self.clip = _checks.check_bool("clip", clip)

    @property
    def num_depth(self) -> int:
        """Number ``A`` of anchors per cell."""
        return len(self.ratios) + 1

    def forward(self, x: Tensor) -> Tensor:
        x, dtype = _feature_map(x)
        return ssd_anchors(
            x.shape[-2],
            x.shape[-1],
            self.im_size,
            self.sizes,
            self.ratios,
            self.step,
            self.offsets,
            self.clip,
            dtype=dtype,
            device=x.device,
        )

    def extra_repr(self) -> str:
        return (
            f"im_size={self.im_size}, sizes={self.sizes}, ratios={self.ratios}, step={self.step}, "
            f"offsets={self.offsets}, clip={self.clip}"
        )


class RPNAnchorGenerator(nn.Module):
    """Region-proposal anchors of a feature map (see :func:`rpn_anchors`, :func:`rpn_base_anchors`).

    GluonCV's ``alloc_size`` (the pre-allocated grid) is dropped: anchors are computed
    for each feature map's own size. A single number for ``ratios`` or ``scales`` is
    taken as a list of one, as GluonCV does.

    forward ``x (B, C, h, w)`` (only ``h`` and ``w`` are read) -> ``(1, h * w * A, 4)``
    corner anchors, ``A = len(ratios) * len(scales)``, in the dtype of ``x`` (float32 for
    an integer ``x``).

    Example:
        >>> import torch
        >>> gen = RPNAnchorGenerator(stride=16, base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32))
        >>> gen(torch.zeros(1, 256, 50, 76)).shape
        torch.Size([1, 34200, 4])
    """

    def __init__(
        self, stride: float, base_size: float, ratios: Sequence[float], scales: Sequence[float]
    ) -> None:
        super().__init__()
        self.stride = float(_checks.check_number("stride", stride, low=0, low_open=True))
        self.base_size = float(_checks.check_number("base_size", base_size, low=0, low_open=True))
        self.ratios = _numbers("ratios", ratios)
        self.scales = _numbers("scales", scales)
        # Kept as Python numbers, not a buffer: ``module.half()`` would round a floating buffer.
        base = _rpn_base_rows(self.stride, self.base_size, self.ratios, self.scales)
        self._base: tuple[tuple[float, ...], ...] = tuple(base)

    @property
    def num_depth(self) -> int:
        """Number ``A`` of anchors per cell."""
        return len(self.ratios) * len(self.scales)

    def forward(self, x: Tensor) -> Tensor:
        x, dtype = _feature_map(x)
        base = _checks.constant(
            self._base, torch.float64 if dtype == torch.float64 else torch.float32, x.device
        )
        return rpn_anchors(x.shape[-2], x.shape[-1], base, self.stride, dtype=dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, base_size={self.base_size}, ratios={self.ratios}, scales={self.scales}"


# ------------------------------------------------------------------ anchor points
def anchor_points(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[float],
    offset: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Anchor points of an anchor-free detector (YOLOv8, YOLOX, RTMDet, FCOS): one per cell.

    The point of cell ``(i, j)`` of a map of stride ``s`` is ``((j + offset) * s, (i +
    offset) * s)`` in input pixels; maps come in the order given, cells row-major within
    each (the layout of ``(B, C, H, W)`` heads flattened after ``permute(0, 2, 3, 1)``).
    These are ultralytics 8.4.190's ``make_anchors`` (``utils/tal.py``) times the stride
    (it returns them in cells, with ``grid_cell_offset=0.5``), with the stride of each point
    beside it.

    Args:
        feature_sizes: ``(H_k, W_k)`` of each feature map.
        strides: the stride of each map, in input pixels (> 0).
        offset: position of the point inside its cell, in cells (0.5: the centre; mmdet's
            ``MlvlPointGenerator`` uses 0).
        dtype: floating dtype of the result; computed in float32 (float64 for float64).
        device: device of the result.

    Returns:
        (Tensor[N, 2], Tensor[N]): the points ``(x, y)`` and the stride of each,
        ``N = sum(H_k * W_k)``.

    Example:
        >>> points, stride = anchor_points([(2, 2), (1, 1)], [8, 16])
        >>> points
        tensor([[ 4.,  4.],
                [12.,  4.],
                [ 4., 12.],
                [12., 12.],
                [ 8.,  8.]])
        >>> stride
        tensor([ 8.,  8.,  8.,  8., 16.])
    """
    dtype = _check_out_dtype(dtype)
    sizes, strides = list(feature_sizes), list(strides)
    if len(strides) != len(sizes):
        raise ValueError(
            f"strides must have one value per feature map ({len(sizes)}), got {len(strides)}: {strides!r}"
        )
    steps = _numbers("strides", strides) if sizes else ()
    offset = float(_checks.check_number("offset", offset))
    work = _work_dtype(dtype)
    points, point_strides = [], []
    for k, size in enumerate(sizes):
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f"feature_sizes must hold (H, W) pairs, got {size!r} at position {k}")
        h = int(_checks.check_number("feature_sizes height", size[0], low=0, integer=True))
        w = int(_checks.check_number("feature_sizes width", size[1], low=0, integer=True))
        ys = (torch.arange(h, dtype=work, device=device) + offset) * steps[k]  # (H,)
        xs = (torch.arange(w, dtype=work, device=device) + offset) * steps[k]  # (W,)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
        points.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2))
        point_strides.append(torch.full((h * w,), steps[k], dtype=work, device=device))
    if not points:
        return torch.zeros(0, 2, dtype=dtype, device=device), torch.zeros(0, dtype=dtype, device=device)
    return torch.cat(points).to(dtype), torch.cat(point_strides).to(dtype)
