"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020).

Reproduces mmdet 3.3.0 ``mmdet/models/task_modules/assigners/atss_assigner.py``
``ATSSAssigner`` (``alpha=None``, no ignored boxes), batched over a padded batch.

For every ground truth, on every pyramid level, the ``min(topk, level size)`` anchors
whose centres are nearest the ground truth's centre are its candidates. Their IoUs with
the ground truth give a threshold, mean plus (unbiased) standard deviation; a candidate
is positive when its IoU reaches the threshold and its centre lies inside the ground
truth by more than 0.01 on every side. An anchor positive for several ground truths goes
to the one it overlaps most (the lower row on equal IoU).

How it is batched
-----------------
The work is done per *pair* (image, real ground-truth row), never per padded row: in
eager mode on CPU the real rows are gathered first (one host read per call, the number of
real rows, which costs nothing there), so memory and time grow with the real ground truths
of the batch, not with ``B x M``. Under ``torch.compile``/``torch.export``, and on
accelerators (where a read would make the device wait), every row is a pair (static
shapes), padding is masked, and nothing is read back. Per level, the centre distances
of a block of pairs to the level's anchors are reduced to the candidates at once (blocks of
:data:`CHUNK_ELEMENTS` distances in eager mode); IoU, threshold and inside test only ever
see the ``(pairs, K)`` candidates, ``K = sum_l min(topk, n_l)``. Conflicts between ground
truths are scatter reductions of those candidates straight into the ``(B, N)`` outputs.

On CPU in eager mode, float32 distances and their per-level top-k go through the native
kernel ``detblocks._native_atss`` when it is built (one pass over the anchors per pair, no
distance matrix); it performs the same float32 operations and picks the same candidates,
in the same order, as the PyTorch path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detblocks import _alloc, _kernels
from detblocks._checks import (
    check_boxes,
    check_in_range,
    check_number,
    eager_cpu,
    host_reads_free,
    shape_str,
    tracing,
)
from detblocks.assign._common import BACKGROUND, Assignment, check_ground_truth, real_rows

__all__ = ["atss_assign", "ATSSAssigner"]

_native = _kernels.load("_native_atss")

#: Distances held at once by the eager PyTorch path (pairs x anchors of one level, with
#: their int64 sort keys: 24 MiB): the distance matrix of a crowded image never exists
#: whole.
CHUNK_ELEMENTS: int = 1 << 21

#: mmdet's margin of the centre-inside-the-box test, in pixels (``> 0.01`` on each side).
_INSIDE_MARGIN = 0.01
#: mmdet's floor of the union in ``bbox_overlaps`` (``eps=1e-6``).
_UNION_EPS = 1e-6


def _filled(size: int, value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.full((size,), value)`` in reused memory when large (see ``detblocks._alloc``)."""
    if tracing():  # (empty_large would compare the symbolic size with its threshold)
        return torch.full((size,), value, dtype=dtype, device=device)
    return _alloc.empty_large((size,), dtype, device).fill_(value)


def _check_levels(num_level_anchors: object, n: int) -> list[int]:
    """``num_level_anchors``: a sequence of non-negative ints summing to N."""
    if isinstance(num_level_anchors, Tensor):
        if num_level_anchors.dim() != 1 or num_level_anchors.is_floating_point():
            raise TypeError(
                f"num_level_anchors must be a list of ints, got a tensor {shape_str(num_level_anchors)} "
                f"of {num_level_anchors.dtype}"
            )
        if tracing():
            raise TypeError("num_level_anchors must be a list of ints (static per model), got a tensor")
        num_level_anchors = num_level_anchors.tolist()
    if isinstance(num_level_anchors, (str, bytes)) or not isinstance(num_level_anchors, Sequence):
        raise TypeError(f"num_level_anchors must be a list of ints, got {type(num_level_anchors).__name__}")
    levels = []
    for i, v in enumerate(num_level_anchors):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"num_level_anchors[{i}] must be an int, got {v!r}")
        if v < 0:
            raise ValueError(f"num_level_anchors[{i}] must be >= 0, got {v}")
        levels.append(v)
    if not levels:
        raise ValueError("num_level_anchors must name at least one level, got []")
    if not tracing() and sum(levels) != n:
        raise ValueError(
            f"num_level_anchors must sum to the N of anchors ({n}), got {levels} (sum {sum(levels)})"
        )
    return levels


def _centres(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Centres as mmdet computes them, ``(x1 + x2) / 2``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def _nearest_block(acx: Tensor, acy: Tensor, gcx: Tensor, gcy: Tensor, k: int) -> Tensor:
    """The ``k`` anchors nearest each centre: ``Tensor[P, k]`` int64 indices into ``acx``.

    ``acx, acy (Tensor[n])`` anchor centres (``+inf`` where the anchor is not finite),
    ``gcx, gcy (Tensor[P])`` finite centres. Distances are mmdet's,
    ``sqrt(dx * dx + dy * dy)`` in the working dtype; equal distances go to the lower
    anchor index, and the result is in ascending (distance, index) order. In float32 the
    distance bits (non-negative floats order as their bit patterns) and the index make one
    unique int64 key; in float64 a stable sort does the same.
    """
    dx = acx - gcx[:, None]  # (P, n)
    dy = acy - gcy[:, None]
    dist = (dx * dx).add_(dy * dy).sqrt_()  # (P, n)
    dist = torch.where(torch.isnan(dist), torch.inf, dist)  # a non-finite anchor: last
    if dist.dtype == torch.float32:
        n = dist.shape[1]
        key = dist.view(torch.int32).to(torch.int64).bitwise_left_shift_(32)
        key.bitwise_or_(torch.arange(n, device=dist.device))
        return key.topk(k, dim=1, largest=False, sorted=True).indices
    return dist.sort(dim=1, stable=True).indices[:, :k]


def _candidates(acx: Tensor, acy: Tensor, levels: list[int], topk: int, gcx: Tensor, gcy: Tensor) -> Tensor:
    """``Tensor[P, K]`` int64: every pair's candidates, level by level, each level's in
    ascending (distance, index) order."""
    p = gcx.shape[0]
    if _native is not None and acx.dtype == torch.float32 and eager_cpu(acx, gcx) and p > 0:
        return _native_candidates(acx, acy, levels, topk, gcx, gcy)
    parts = []
    start = 0
    for size in levels:
        k = min(topk, size)
        if k > 0:
            lx, ly = acx[start : start + size], acy[start : start + size]
            rows = p if tracing() else max(1, CHUNK_ELEMENTS // size)
            if rows >= p:
                parts.append(_nearest_block(lx, ly, gcx, gcy, k) + start)
            else:
                blocks = [
                    _nearest_block(lx, ly, gcx[i : i + rows], gcy[i : i + rows], k) for i in range(0, p, rows)
                ]
                parts.append(torch.cat(blocks) + start)
        start += size
    return torch.cat(parts, dim=1)


def _native_candidates(
    acx: Tensor, acy: Tensor, levels: list[int], topk: int, gcx: Tensor, gcy: Tensor
) -> Tensor:
    """:func:`_candidates` by the native kernel (same float32 operations, same result)."""
    k_total = sum(min(topk, s) for s in levels)
    acx, acy, gcx, gcy = (t.contiguous() for t in (acx, acy, gcx, gcy))
    sizes = torch.tensor(levels, dtype=torch.int64)
    out = torch.empty((gcx.shape[0], k_total), dtype=torch.int64)
    _native.nearest(
        acx.data_ptr(),
        acy.data_ptr(),
        sizes.data_ptr(),
        len(levels),
        topk,
        gcx.data_ptr(),
        gcy.data_ptr(),
        gcx.shape[0],
        out.data_ptr(),
        k_total,
        torch.get_num_threads(),
    )
    return out


def _aligned_iou(a: Tensor, g: Tensor) -> Tensor:
    """mmdet's ``bbox_overlaps`` of each anchor ``a (Tensor[..., 4])`` with its ground truth
    ``g`` (broadcast), in mmdet's order of float operations."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    lt = torch.maximum(a[..., :2], g[..., :2])
    rb = torch.minimum(a[..., 2:], g[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area_a + area_g - overlap).clamp(min=_UNION_EPS)
    return overlap / union


def atss_assign(
    anchors: Tensor,
    num_level_anchors: Sequence[int],
    gt_labels: Tensor,
    gt_boxes: Tensor,
    topk: int = 9,
) -> Assignment:
    """ATSS target assignment: mmdet 3.3.0 ``ATSSAssigner`` (``alpha=None``), batched.

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/atss_assigner.py``,
    ``ATSSAssigner.assign`` with ``alpha=None`` and no ignored boxes. See the module notes.

    Rule, per image and ground truth ``g``: on each level the ``min(topk, n_l)`` anchors
    whose centres are nearest ``g``'s centre (Euclidean distance in float32 as mmdet
    computes it; equal distances go to the lower anchor index) are candidates; the
    threshold is ``mean + std`` (unbiased) of the candidates' IoUs with ``g``; a candidate
    is positive for ``g`` when its IoU is at least the threshold and its centre is inside
    ``g`` by more than 0.01 on every side. An anchor positive for several ground truths goes
    to the one with the highest IoU, the lower row on equal IoU.

    Args:
        anchors (Tensor[N, 4]): corner anchors, the same for every image, level after
            level in the order of ``num_level_anchors``.
        num_level_anchors (Sequence[int]): anchors per pyramid level (static per model);
            they must sum to N.
        gt_labels (Tensor[B, M]): int64 class ids, ``-1`` for a padding row (anywhere).
        gt_boxes (Tensor[B, M, 4]): corner ground-truth boxes, pixels.
        topk (int): candidates per level and ground truth.

    Returns:
        Assignment: ``matches (Tensor[B, N])`` int64, the assigned ground-truth row or
        ``-1``; ``labels (Tensor[B, N])`` its class or ``-1``; ``quality (Tensor[B, N])``
        the IoU with the assigned ground truth (mmdet's ``max_overlaps`` at positives), 0
        elsewhere, in the promoted dtype of ``anchors`` and ``gt_boxes``.

    Numerics and special cases: float16/bfloat16 boxes are computed in float32 (pixel
    coordinates need it), float64 in float64. A padding row, or a ground truth with a NaN
    or infinite coordinate, has no candidates. An anchor with a non-finite coordinate is
    never positive: its distance counts as infinite (it is a candidate only on a level
    with fewer than ``topk`` finite anchors) and its IoU as 0. With a single candidate in
    all (``K = 1``) the standard deviation is undefined and, as in mmdet, nothing is
    positive. Eager mode on CPU reads the number of real ground-truth rows back to the host
    once per call (free there); on accelerators and while tracing nothing is read back.

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16], [0, 0, 32, 32]])
        >>> gt_boxes = torch.tensor([[[2.0, 2, 14, 14], [-1, -1, -1, -1]]])  # one object, one padding row
        >>> gt_labels = torch.tensor([[3, -1]])
        >>> a = atss_assign(anchors, [3, 1], gt_labels, gt_boxes, topk=2)  # candidates: anchors 0, 1, 3
        >>> a.matches, a.labels, a.quality
        (tensor([[ 0, -1, -1, -1]]), tensor([[ 3, -1, -1, -1]]), tensor([[0.5625, 0.0000, 0.0000, 0.0000]]))
    """
    anchors = check_boxes("anchors", anchors, 2, "(N, 4)")
    gt_labels, gt_boxes = check_ground_truth(gt_labels, gt_boxes)
    topk = check_number("topk", topk, low=1, integer=True)
    levels = _check_levels(num_level_anchors, anchors.shape[0])
    check_in_range("gt_labels", gt_labels, -1, 2**62, "class ids, -1 for padding")
    if anchors.device != gt_boxes.device:
        raise ValueError(f"anchors ({anchors.device}) and gt_boxes ({gt_boxes.device}) must be on one device")

    out_dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    work = torch.float64 if out_dtype == torch.float64 else torch.float32  # halves: float32
    b, m = gt_labels.shape
    n = anchors.shape[0]
    dev = anchors.device
    anchors, gt_boxes = anchors.detach().to(work), gt_boxes.detach().to(work)

    matches = torch.full((b, n), BACKGROUND, dtype=torch.int64, device=dev)
    if not tracing() and (b * n * m == 0):
        zeros = torch.zeros((b, n), dtype=out_dtype, device=dev)
        return Assignment(matches, matches.clone(), zeros)

    # Pairs (image, ground-truth row): the real ones only in eager mode on CPU, where reading
    # their number costs nothing; every row while tracing or on an accelerator (no host read).
    valid = real_rows(gt_labels) & torch.isfinite(gt_boxes).all(-1)  # (B, M)
    if not host_reads_free(gt_labels, gt_boxes, anchors):  # traced or on an accelerator: every row
        pair_ok = valid.reshape(-1)
        img = torch.arange(b, device=dev)[:, None].expand(b, m).reshape(-1)
        row = torch.arange(m, device=dev).expand(b, m).reshape(-1)
        g = torch.where(pair_ok[:, None], gt_boxes.reshape(-1, 4), 0.0)  # (P, 4)
    else:
        pair = valid.reshape(-1).nonzero().squeeze(1)  # the one host read
        pair_ok = None
        if pair.numel() == 0:  # no real ground truth anywhere: all background
            return Assignment(matches, matches.clone(), torch.zeros((b, n), dtype=out_dtype, device=dev))
        img, row = pair // m, pair % m  # (P,)
        g = gt_boxes.reshape(-1, 4)[pair]  # (P, 4)
    gcx, gcy = _centres(g)

    finite = torch.isfinite(anchors).all(-1)  # (N,)
    acx, acy = _centres(anchors)
    acx = torch.where(finite, acx, torch.inf)
    acy = torch.where(finite, acy, torch.inf)

    cand = _candidates(acx, acy, levels, topk, gcx, gcy)  # (P, K)
    iou = _aligned_iou(anchors[cand], g[:, None, :])  # (P, K)
    cand_ok = finite[cand]
    iou = torch.where(cand_ok, iou, 0.0)
    k_total = cand.shape[1]
    if k_total > 1:
        thr = iou.mean(1) + iou.std(1)  # (P,)
    else:  # one candidate: no standard deviation (mmdet: NaN, nothing positive)
        thr = torch.full((cand.shape[0],), torch.inf, dtype=work, device=dev)
    cx, cy = acx[cand], acy[cand]  # (P, K)
    gx1, gy1, gx2, gy2 = (v[:, None] for v in g.unbind(-1))
    inside = torch.stack([cx - gx1, cy - gy1, gx2 - cx, gy2 - cy], dim=-1).amin(-1) > _INSIDE_MARGIN
    pos = (iou >= thr[:, None]) & inside & cand_ok  # (P, K)
    if pair_ok is not None:
        pos = pos & pair_ok[:, None]

    # Conflicts: the highest IoU over the ground truths an anchor is positive for, then
    # the lowest row among those with that IoU. Scatters into (B * N + 1,): the entries
    # that take no part go to the last slot, which is dropped.
    bn = b * n
    flat = (img[:, None] * n + cand).reshape(-1)  # (P * K,)
    pos = pos.reshape(-1)
    iou = iou.reshape(-1)
    rows = row[:, None].expand(-1, cand.shape[1]).reshape(-1)
    best = _filled(bn + 1, 0.0, work, dev)  # also the quality: 0 wherever nothing won
    best.scatter_reduce_(0, torch.where(pos, flat, bn), iou, "amax", include_self=False)
    wins = pos & (iou == best[flat])
    matches = _filled(bn + 1, BACKGROUND, torch.int64, dev)
    matches.scatter_reduce_(0, torch.where(wins, flat, bn), rows, "amin", include_self=False)
    won = wins & (rows == matches[flat])  # one entry per positive anchor
    label = gt_labels.reshape(-1)[img * m + row]  # (P,)
    labels = _filled(bn + 1, BACKGROUND, torch.int64, dev)
    labels.scatter_(0, torch.where(won, flat, bn), label[:, None].expand(-1, cand.shape[1]).reshape(-1))
    matches, labels = matches[:bn].view(b, n), labels[:bn].view(b, n)
    quality = best[:bn].view(b, n).to(out_dtype)
    return Assignment(matches, labels, quality)


class ATSSAssigner(nn.Module):
    """Adaptive training sample selection: mmdet 3.3.0 ``ATSSAssigner`` (``alpha=None``).

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/atss_assigner.py``.
    A thin module over :func:`atss_assign`; see it for the rule, shapes and numerics.

    Args:
        topk (int): candidates per level and ground truth (mmdet's ``topk``; ATSS uses 9).

    Example:
        >>> import torch
        >>> assigner = ATSSAssigner(topk=2)
        >>> anchors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16], [0, 0, 32, 32]])
        >>> out = assigner(anchors, [3, 1], torch.tensor([[0]]), torch.tensor([[[2.0, 2, 14, 14]]]))
        >>> out.matches
        tensor([[ 0, -1, -1, -1]])
    """

    def __init__(self, topk: int = 9) -> None:
        super().__init__()
        self.topk = check_number("topk", topk, low=1, integer=True)

    def forward(
        self, anchors: Tensor, num_level_anchors: Sequence[int], gt_labels: Tensor, gt_boxes: Tensor
    ) -> Assignment:
        return atss_assign(anchors, num_level_anchors, gt_labels, gt_boxes, topk=self.topk)

    def extra_repr(self) -> str:
        return f"topk={self.topk}"
