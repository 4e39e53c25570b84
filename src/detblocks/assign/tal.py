"""Task-aligned assignment (TOOD, as YOLOv8-11 train): :func:`task_aligned_assign` and
:class:`TaskAlignedAssigner`.

Reproduces ultralytics 8.4.190, ``ultralytics/utils/tal.py``, ``TaskAlignedAssigner``
(called as ``v8DetectionLoss`` calls it), on detblocks' padded batch:

1. *Candidates*: the anchor points strictly inside a ground-truth box (``x - x1 > 1e-9``
   and so on), where a side shorter than ``stride[1]`` (``stride[0]`` with one stride) is
   widened to it about the box centre for this test only (``stride=(0,)`` disables it).
2. *Metric* of each candidate pair: ``score ** alpha * ciou.clamp(0) ** beta``, with the
   predicted probability of the ground truth's class and ultralytics' CIoU (``bbox_iou(gt,
   pred, xywh=False, CIoU=True)``, eps ``1e-7`` where ultralytics puts it); 0 elsewhere.
3. *Top-k per ground truth* over all ``N`` anchors by metric, ties to the lower anchor
   index; the selected anchors inside the box are its positives. With fewer than ``topk``
   positive metrics the top-k is filled with metric-0 anchors, so the lowest-index metric-0
   anchors inside the box become positives of quality 0 (as ultralytics does).
4. *Conflicts*: an anchor positive for several ground truths goes to the one of largest
   CIoU over every ground truth whose box contains it (ties: lower row).
5. ``topk2`` (when set and different from ``topk``): a second top-k of each ground truth
   over its remaining positives.
6. *Quality*: ``metric * max_ciou / (max_metric + eps)`` with the maxima over the ground
   truth's final positives: ultralytics' normalised ``target_scores``, so
   ``Assignment.score_targets(num_classes)`` equals them.

Two paths give bit-identical results for float32 and lower-precision inputs (tested; in
float64 the transcendental functions may differ in the last bit): a dense ``(B, M, N)``
one with static shapes, taken under ``torch.compile``/``torch.export``, and in eager mode
a sparse one whose work and memory follow the real candidate pairs, not ``B x M x N``. The sparse path
finds each ground truth's candidates without a dense inside test: it splits the anchor
points into *rows* (runs of equal ``y`` and non-decreasing ``x``, which is how
``make_anchors`` lays them out; any other layout still works, with shorter rows), tests
``y`` once per row and finds the ``x`` range of each row by bisection. It then ranks the
pairs of each ground truth with one sort of packed ``(gt, -metric)`` keys and resolves
conflicts with scatter reductions over anchors.

Deviations, where ultralytics' result is an accident rather than a choice:

- A prediction that is not finite (box, score, CIoU or metric) is never a candidate
  (ultralytics ranks a NaN metric first).
- A conflict whose largest CIoU is 0 goes to the lowest row among the ground truths that
  contain the anchor (ultralytics' ``overlaps.max(1)`` returns row 0 of the padded batch
  then, even when that row is padding or does not contain the anchor).
- ``torch.topk`` leaves the order of equal metrics unspecified; detblocks applies the
  tie rule (lower anchor index first) everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detblocks._checks import (
    check_batch,
    check_boxes,
    check_dim,
    check_float,
    check_in_range,
    check_number,
    check_rank,
    shape_str,
    tracing,
)
from detblocks.assign._common import BACKGROUND, Assignment, check_ground_truth, real_rows

__all__ = ["TaskAlignedAssigner", "task_aligned_assign"]

#: ultralytics ``bbox_iou`` eps (added to heights, union and enclosing diagonal).
_CIOU_EPS = 1e-7
#: ultralytics ``select_candidates_in_gts`` margin: strictly inside by more than this.
_INSIDE_EPS = 1e-9
#: ``4 / pi**2`` of the CIoU aspect term, as ultralytics writes it.
_V_SCALE = 4 / math.pi**2
#: Elements of one ``(ground truths, anchor rows)`` block of the sparse inside test.
_ROW_BLOCK = 1 << 22


# --------------------------------------------------------------------------- shared steps
def _widened_corners(gt_boxes: Tensor, stride_val: float) -> tuple[Tensor, Tensor]:
    """ultralytics' inside-test box: through ``(cx, cy, w, h)``, sides ``< stride_val``
    set to it, back to corners (the round trip is kept: it rounds). Returns the left-top
    and right-bottom corners, ``Tensor[..., 2]`` each."""
    lt, rb = gt_boxes[..., :2], gt_boxes[..., 2:]
    centre = (lt + rb) / 2
    size = rb - lt
    size = torch.where(size < stride_val, torch.full_like(size, stride_val), size)
    half = size / 2
    return centre - half, centre + half


def _inside(px: Tensor, py: Tensor, lt: Tensor, rb: Tensor) -> Tensor:
    """ultralytics' strict inside test, broadcast over ``px``/``py`` and the corners."""
    inside = px - lt[..., 0] > _INSIDE_EPS
    inside &= py - lt[..., 1] > _INSIDE_EPS
    inside &= rb[..., 0] - px > _INSIDE_EPS
    inside &= rb[..., 1] - py > _INSIDE_EPS
    return inside


def _in_float64(x: Tensor, fn) -> Tensor:
    """``fn(x)`` evaluated in float64 and rounded back: a transcendental whose float32 value
    would depend on the kernel's memory layout (vector body vs scalar tail) gives the same
    bits for the same input on every path, so exact ties stay exact."""
    if x.dtype == torch.float64:
        return fn(x)
    return fn(x.double()).to(x.dtype)


def _aspect_atan(box: Sequence[Tensor]) -> Tensor:
    """``atan(w / h)`` of corner boxes given as ``(x1, y1, x2, y2)`` tensors, with
    ultralytics' ``h + eps``."""
    x1, y1, x2, y2 = box
    return _in_float64((x2 - x1) / (y2 - y1 + _CIOU_EPS), torch.atan)


def _ciou(gt: Sequence[Tensor], pred: Sequence[Tensor], gt_atan: Tensor, pred_atan: Tensor) -> Tensor:
    """ultralytics' ``bbox_iou(gt, pred, xywh=False, CIoU=True)``, operation for operation
    (float rounding included), broadcast over the coordinate tensors ``(x1, y1, x2, y2)``
    of each side; ``*_atan`` from :func:`_aspect_atan`. Not clamped."""
    b1_x1, b1_y1, b1_x2, b1_y2 = gt
    b2_x1, b2_y1, b2_x2, b2_y2 = pred
    # In-place steps only on fresh full-size results (fewer buffers, same operations).
    w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).add_(_CIOU_EPS)
    w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).add_(_CIOU_EPS)
    inter = torch.minimum(b1_x2, b2_x2).sub_(torch.maximum(b1_x1, b2_x1)).clamp_(min=0)
    inter.mul_(torch.minimum(b1_y2, b2_y2).sub_(torch.maximum(b1_y1, b2_y1)).clamp_(min=0))
    union = (w1 * h1 + w2 * h2).sub_(inter).add_(_CIOU_EPS)
    iou = inter.div_(union)
    cw = torch.maximum(b1_x2, b2_x2).sub_(torch.minimum(b1_x1, b2_x1))
    ch = torch.maximum(b1_y2, b2_y2).sub_(torch.minimum(b1_y1, b2_y1))
    c2 = cw.mul_(cw).add_(ch.mul_(ch)).add_(_CIOU_EPS)
    dx = (b2_x1 + b2_x2 - b1_x1).sub_(b1_x2)
    dy = (b2_y1 + b2_y2 - b1_y1).sub_(b1_y2)
    rho2 = dx.mul_(dx).add_(dy.mul_(dy)).div_(4)
    d = pred_atan - gt_atan
    v = d.mul_(d).mul_(_V_SCALE)
    alpha = v / (1 - iou).add_(v).add_(_CIOU_EPS)
    return iou.sub_(rho2.div_(c2).add_(v.mul_(alpha)))


def _power(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent``, the same bits wherever ``x`` sits in memory: exact shortcuts for 1
    and 0.5 (a correctly rounded square root), repeated multiplication in float64 for small
    integers (YOLO's ``beta = 6``), else float64 ``pow``; rounded once to ``x``'s dtype."""
    if exponent == 1.0:
        return x
    if exponent == 0.5:
        return torch.sqrt(x)
    if exponent == int(exponent) and 2 <= exponent <= 16:

        def by_squaring(v: Tensor) -> Tensor:
            result, base, n = None, v, int(exponent)
            while n:
                if n & 1:
                    result = base if result is None else result * base
                n >>= 1
                if n:
                    base = base * base
            return result

        return _in_float64(x, by_squaring)
    return _in_float64(x, lambda v: v.pow(exponent))


def _metric(score: Tensor, ciou: Tensor, alpha: float, beta: float) -> Tensor:
    """``score ** alpha * ciou ** beta`` (see :func:`_power`); not yet cleaned of
    non-finite or non-positive values."""
    return _power(score, alpha) * _power(ciou, beta)


def _positive_part(x: Tensor) -> Tensor:
    """``x`` where positive, else ``+0`` (NaN and ``-0`` too): the sparse path orders
    metrics by their bit patterns."""
    return torch.where(x > 0, x, torch.zeros_like(x))


# --------------------------------------------------------------------------- dense path
def _stable_topk_mask(values: Tensor, k: int) -> Tensor:
    """``(..., N)`` bool: the ``k`` largest along the last axis, ties to the lower index."""
    order = torch.argsort(values, dim=-1, descending=True, stable=True)
    rank = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    return torch.zeros(values.shape, dtype=torch.bool, device=values.device).scatter(-1, order, rank < k)


def _assign_dense(
    scores: Tensor,
    boxes: Tensor,
    points: Tensor,
    labels: Tensor,
    gts: Tensor,
    topk: int,
    topk2: int,
    alpha: float,
    beta: float,
    stride_val: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The traceable path: ultralytics' dense ``(B, M, N)`` formulation with static shapes
    and the tie rule. Arguments already checked and in the working dtype."""
    batch, n = boxes.shape[:2]
    m = gts.shape[1]
    real = real_rows(labels)  # (B, M)
    lt, rb = _widened_corners(gts, stride_val)  # (B, M, 2)
    px, py = points[:, 0], points[:, 1]  # (N,)
    inside = _inside(px, py, lt.unsqueeze(2), rb.unsqueeze(2))  # (B, M, N)
    index = labels.clamp(min=0).unsqueeze(1).expand(batch, n, m)
    score = scores.gather(2, index).transpose(1, 2)  # (B, M, N)
    gt = gts.unsqueeze(2).unbind(-1)  # (B, M, 1) each
    pred = boxes.unsqueeze(1).unbind(-1)  # (B, 1, N) each
    raw = _ciou(gt, pred, _aspect_atan(gt), _aspect_atan(pred))  # (B, M, N)
    ciou = _positive_part(raw)
    raw_metric = _metric(score, ciou, alpha, beta)
    # a non-finite box, score or CIoU makes the CIoU or the metric non-finite
    candidate = inside & real.unsqueeze(2) & torch.isfinite(raw) & torch.isfinite(raw_metric)
    metric = _positive_part(raw_metric)
    zero = torch.zeros((), dtype=metric.dtype, device=metric.device)
    metric = torch.where(candidate, metric, zero)
    ciou = torch.where(candidate, ciou, zero)

    positive = _stable_topk_mask(metric, topk) & candidate  # (B, M, N)
    count = positive.sum(1)  # (B, N)
    best = torch.where(candidate, ciou, torch.full_like(ciou, -1.0)).argmax(1)  # (B, N)
    rows = torch.arange(m, device=boxes.device).view(1, m, 1)
    positive = torch.where((count > 1).unsqueeze(1), rows == best.unsqueeze(1), positive)
    if topk2 != topk:
        positive &= _stable_topk_mask(torch.where(positive, metric, zero), topk2)

    fg = positive.any(1)  # (B, N)
    gt_index = positive.to(torch.uint8).argmax(1)  # (B, N)
    top_metric = torch.where(positive, metric, zero).amax(-1, keepdim=True)  # (B, M, 1)
    top_ciou = torch.where(positive, ciou, zero).amax(-1, keepdim=True)
    norm = metric * top_ciou / (top_metric + eps)  # (B, M, N)
    quality = norm.gather(1, gt_index.unsqueeze(1)).squeeze(1)
    matches = torch.where(fg, gt_index, torch.full_like(gt_index, BACKGROUND))
    out_labels = torch.where(fg, labels.gather(1, gt_index), torch.full_like(gt_index, BACKGROUND))
    quality = torch.where(fg, quality, torch.zeros_like(quality))
    return matches, out_labels, quality


# --------------------------------------------------------------------------- sparse path
def _point_rows(points: Tensor) -> tuple[Tensor, Tensor]:
    """Split the anchor points into rows: maximal runs of equal ``y`` with non-decreasing
    ``x`` (a non-finite point is a row of its own). Returns ``(starts (R,), ends (R,))``."""
    n = points.shape[0]
    x, y = points.unbind(-1)
    finite = torch.isfinite(points).all(-1)
    cut = torch.ones(n, dtype=torch.bool, device=points.device)
    cut[1:] = (y[1:] != y[:-1]) | (x[1:] < x[:-1]) | ~finite[1:] | ~finite[:-1]
    starts = cut.nonzero().squeeze(1)
    ends = torch.cat([starts[1:], starts.new_tensor([n])])
    return starts, ends


def _first_true(pred, lo: Tensor, hi: Tensor, steps: int) -> Tensor:
    """Per query the first index in ``[lo, hi)`` where the monotone (False..True)
    predicate ``pred(index)`` holds, ``hi`` if none: a vectorised bisection."""
    for _ in range(steps):
        active = lo < hi
        mid = (lo + hi) // 2
        ok = pred(torch.where(active, mid, torch.zeros_like(mid)))
        hi = torch.where(active & ok, mid, hi)
        lo = torch.where(active & ~ok, mid + 1, lo)
    return lo


def _candidate_pairs(points: Tensor, lt: Tensor, rb: Tensor) -> tuple[Tensor, Tensor]:
    """The anchors strictly inside each box, as pairs ``(box, anchor)`` ordered by box then
    anchor: the same test as :func:`_inside`, row by row (see the module docstring)."""
    device = points.device
    starts, ends = _point_rows(points)
    if starts.numel() == 0 or lt.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    px, py = points.unbind(-1)
    row_y = py[starts]  # (R,)
    steps = int(ends.sub(starts).max()).bit_length()
    block = max(1, _ROW_BLOCK // row_y.numel())
    boxes, first, last = [], [], []
    for g0 in range(0, lt.shape[0], block):
        lt_c, rb_c = lt[g0 : g0 + block], rb[g0 : g0 + block]
        hit = (row_y - lt_c[:, 1:2] > _INSIDE_EPS) & (rb_c[:, 1:2] - row_y > _INSIDE_EPS)  # (g, R)
        g, r = hit.nonzero().unbind(1)
        q = g.numel()
        # both ends of each row's range in one bisection: the first x inside the left side,
        # the first x no longer inside the right side
        bound = torch.cat([lt_c[g, 0], rb_c[g, 0]])
        is_left = torch.arange(2 * q, device=device) < q

        def past(i: Tensor, bound: Tensor = bound, is_left: Tensor = is_left) -> Tensor:
            x = px[i]
            return torch.where(is_left, x - bound > _INSIDE_EPS, ~(bound - x > _INSIDE_EPS))

        ends_r = ends[r]
        lo_hi = _first_true(past, starts[r].repeat(2), torch.cat([ends_r, ends_r]), steps)
        lo, hi = lo_hi[:q], lo_hi[q:]
        boxes.append(g + g0)
        first.append(lo)
        last.append(torch.maximum(hi, lo))
    box, lo, hi = torch.cat(boxes), torch.cat(first), torch.cat(last)
    length = hi - lo
    total = int(length.sum())
    shift = lo - (length.cumsum(0) - length)  # anchor = pair position + shift of its run
    anchor = torch.arange(total, device=device)
    anchor += torch.repeat_interleave(shift, length, output_size=total)
    return torch.repeat_interleave(box, length, output_size=total), anchor


_LOW31 = (1 << 31) - 1  # a non-negative float32's bit pattern fits in 31 bits


def _segment_topk(seg: Tensor, anchor: Tensor, metric: Tensor, k: int, segments: int) -> Tensor:
    """Per segment (a ground truth) its stable top-``k`` over all anchors, where anchors not
    listed have metric 0; returns the indices of the listed pairs it selects. Pairs come
    ordered by segment, then anchor; metrics are ``>= +0``.

    Positive metrics: one stable sort by ``(segment, -metric)`` (packed into one int64 key
    for float32), the first ``k`` of each segment. A pair of metric 0 is selected when its
    segment has ``p < k`` positive metrics and fewer than ``k - p`` metric-0 anchors precede
    it: ``anchor - (positives of the segment before it) < k - p``, which needs ``anchor < k``.
    """
    device = seg.device
    positive = metric > 0
    count = torch.bincount(seg, minlength=segments)
    start = count.cumsum(0) - count
    # the pairs are grouped by segment already, so sorting within segments keeps each
    # position's segment: the rank is the position minus the segment's start
    rank = torch.arange(seg.numel(), device=device) - start[seg]
    if metric.dtype == torch.float32:  # non-negative floats order as their bit patterns
        key = seg * (1 << 31) + (_LOW31 - metric.view(torch.int32).to(torch.int64))
        key, order = torch.sort(key, stable=True)
        top = (rank < k) & (key.bitwise_and(_LOW31) != _LOW31)
    else:
        order = torch.argsort(metric, descending=True, stable=True)
        order = order[torch.argsort(seg[order], stable=True)]
        top = (rank < k) & positive[order]
    chosen = order[top]
    pos_count = torch.zeros_like(count).index_add_(0, seg, positive.to(torch.int64))
    # metric-0 fill: only pairs with anchor < k can take part
    low = (anchor < k).nonzero().squeeze(1)
    low_seg, low_pos = seg[low], positive[low].to(torch.int64)
    low_count = torch.bincount(low_seg, minlength=segments)
    before = low_pos.cumsum(0) - low_pos  # positives in front of each pair ...
    before = before - before[(low_count.cumsum(0) - low_count)[low_seg]]  # ... within its segment
    fill = (low_pos == 0) & (anchor[low] - before < k - pos_count[low_seg])
    return torch.cat([chosen, low[fill]])


def _assign_sparse(
    scores: Tensor,
    boxes: Tensor,
    points: Tensor,
    labels: Tensor,
    gts: Tensor,
    topk: int,
    topk2: int,
    alpha: float,
    beta: float,
    stride_val: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The eager path: the same result as :func:`_assign_dense` from the candidate pairs
    only. Arguments already checked and in the working dtype."""
    batch, n = boxes.shape[:2]
    device = boxes.device
    classes = scores.shape[2]
    img, row = real_rows(labels).nonzero().unbind(1)  # (G,) the real ground truths
    real = gts[img, row]  # (G, 4)
    real_labels = labels[img, row]
    lt, rb = _widened_corners(real, stride_val)
    g, a = _candidate_pairs(points, lt, rb)  # (P,) pairs, by gt then anchor
    flat = img.index_select(0, g) * n + a  # (P,) anchor in the flattened batch
    # coordinates as contiguous (P,) rows: the CIoU's element-wise work vectorises
    gt = real.t().index_select(1, g).unbind(0)
    pred = boxes.reshape(-1, 4).t().contiguous().index_select(1, flat).unbind(0)
    score = scores.reshape(-1).index_select(0, flat * classes + real_labels.index_select(0, g))
    gt_atan = _aspect_atan(real.t().unbind(0)).index_select(0, g)
    raw = _ciou(gt, pred, gt_atan, _aspect_atan(pred))
    ciou = _positive_part(raw)
    raw_metric = _metric(score, ciou, alpha, beta)
    metric = _positive_part(raw_metric)
    ok = torch.isfinite(raw) & torch.isfinite(raw_metric)  # as in the dense path
    if not bool(ok.all()):
        keep = ok.nonzero().squeeze(1)
        g, a, flat, ciou, metric = g[keep], a[keep], flat[keep], ciou[keep], metric[keep]

    segments = real.shape[0]
    keep = _segment_topk(g, a, metric, topk, segments)  # (S,) selected pairs
    count = torch.zeros(batch * n, dtype=torch.int64, device=device)
    count.index_add_(0, flat[keep], torch.ones_like(keep))
    if bool((count > 1).any()):  # conflicts: the largest CIoU over every gt containing the anchor
        keep = keep[count[flat[keep]] == 1]
        at = (count[flat] > 1).nonzero().squeeze(1)  # every candidate pair of a contested anchor
        c_flat, c_ciou = flat[at], ciou[at]
        best = torch.full((batch * n,), -1.0, dtype=ciou.dtype, device=device)
        best.scatter_reduce_(0, c_flat, c_ciou, "amax")
        at = at[c_ciou == best[c_flat]]
        winner = torch.full((batch * n,), gts.shape[1], dtype=torch.int64, device=device)
        winner.scatter_reduce_(0, flat[at], row[g[at]], "amin")
        keep = torch.cat([keep, at[row[g[at]] == winner[flat[at]]]]).sort().values
    g, flat, ciou, metric = g[keep], flat[keep], ciou[keep], metric[keep]
    if topk2 != topk:
        keep = _segment_topk(g, a[keep], metric, topk2, segments).sort().values
        g, flat, ciou, metric = g[keep], flat[keep], ciou[keep], metric[keep]

    top_metric = torch.zeros(segments, dtype=metric.dtype, device=device)
    top_metric.scatter_reduce_(0, g, metric, "amax")
    top_ciou = torch.zeros(segments, dtype=ciou.dtype, device=device)
    top_ciou.scatter_reduce_(0, g, ciou, "amax")
    quality = metric * top_ciou[g] / (top_metric[g] + eps)

    matches = torch.full((batch * n,), BACKGROUND, dtype=torch.int64, device=device)
    out_labels = torch.full((batch * n,), BACKGROUND, dtype=torch.int64, device=device)
    out_quality = torch.zeros(batch * n, dtype=quality.dtype, device=device)
    matches[flat] = row[g]
    out_labels[flat] = real_labels[g]
    out_quality[flat] = quality
    return matches.view(batch, n), out_labels.view(batch, n), out_quality.view(batch, n)


# --------------------------------------------------------------------------- public API
def _check_stride(stride: object) -> tuple[float, ...]:
    if isinstance(stride, (int, float)) and not isinstance(stride, bool):
        stride = (stride,)
    if not isinstance(stride, Sequence) or isinstance(stride, str) or len(stride) == 0:
        raise TypeError(f"stride must be a non-empty sequence of numbers, got {stride!r}")
    return tuple(float(check_number(f"stride[{i}]", s, low=0)) for i, s in enumerate(stride))


def task_aligned_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    anchor_points: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    topk: int = 13,
    num_classes: int = 80,
    alpha: float = 1.0,
    beta: float = 6.0,
    stride: Sequence[float] = (8, 16, 32),
    eps: float = 1e-9,
    topk2: int | None = None,
) -> Assignment:
    """Task-aligned assignment of ultralytics 8.4.190 (``ultralytics/utils/tal.py``,
    ``TaskAlignedAssigner``), batched; the rule is in the module docstring.

    Args:
        pred_scores (Tensor[B, N, C]): predicted class probabilities (after the sigmoid).
        pred_boxes (Tensor[B, N, 4]): predicted corner boxes, pixels.
        anchor_points (Tensor[N, 2]): anchor points ``(x, y)``, pixels.
        gt_labels (Tensor[B, M] int): classes in ``[0, num_classes)``, ``-1`` for padding.
        gt_boxes (Tensor[B, M, 4]): corner boxes, pixels (padding rows are ignored).
        topk (int): candidates per ground truth.
        num_classes (int): C; ``pred_scores`` must have C classes.
        alpha, beta (float): exponents of score and CIoU in the metric.
        stride (sequence of numbers): the strides; sides below ``stride[1]`` (or
            ``stride[0]`` with one stride) are widened to it for the inside test.
        eps (float): added to each ground truth's largest metric in the normalisation.
        topk2 (int or None): a second top-k after conflicts (``None``/0: ``topk``).

    Returns:
        Assignment: ``matches (Tensor[B, N] int64)`` the gt row or ``-1``, ``labels
        (Tensor[B, N] int64)`` its class or ``-1``, ``quality (Tensor[B, N])`` the
        normalised metric (0 for background) in the floating dtype of the predictions.
        Computed in float32 (float64 for float64 inputs); no gradient flows.

    In eager mode the result is computed from the candidate pairs only (memory follows
    the real pairs, not ``B x M x N``), with about fifteen host reads of sizes per call;
    under ``torch.compile``/``torch.export`` a dense ``(B, M, N)`` path with static shapes
    gives the same result without host reads.

    Example:
        >>> import torch
        >>> points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
        >>> scores = torch.full((1, 4, 2), 0.5)
        >>> boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]).expand(1, 4, 4)
        >>> a = task_aligned_assign(scores, boxes, points, torch.tensor([[1]]),
        ...                         torch.tensor([[[0.0, 0.0, 9.0, 9.0]]]), topk=2, num_classes=2)
        >>> a.matches, a.labels
        (tensor([[ 0,  0, -1, -1]]), tensor([[ 1,  1, -1, -1]]))
    """
    topk = int(check_number("topk", topk, low=1, integer=True))
    num_classes = int(check_number("num_classes", num_classes, low=1, integer=True))
    alpha = float(check_number("alpha", alpha))
    beta = float(check_number("beta", beta))
    eps = float(check_number("eps", eps, low=0))
    if topk2 is not None:
        topk2 = int(check_number("topk2", topk2, low=0, integer=True))
    strides = _check_stride(stride)
    stride_val = strides[1] if len(strides) > 1 else strides[0]

    pred_scores = check_float("pred_scores", pred_scores)
    check_rank("pred_scores", pred_scores, 3, "(B, N, C)")
    pred_boxes = check_boxes("pred_boxes", pred_boxes, 3, "(B, N, 4)")
    anchor_points = check_float("anchor_points", anchor_points)
    check_rank("anchor_points", anchor_points, 2, "(N, 2)")
    # (not while tracing: a batch of 2 would share the symbol of this 2 and be frozen by it)
    if not tracing() and anchor_points.shape[1] != 2:
        raise ValueError(f"anchor_points must be (N, 2), got shape {shape_str(anchor_points)}")
    gt_labels, gt_boxes = check_ground_truth(gt_labels, gt_boxes)
    check_batch(("pred_scores", pred_scores), ("pred_boxes", pred_boxes), ("gt_boxes", gt_boxes))
    check_dim("pred_boxes", pred_boxes, 1, pred_scores.shape[1], "N", "pred_scores")
    check_dim("anchor_points", anchor_points, 0, pred_scores.shape[1], "N", "pred_scores")
    check_dim("pred_scores", pred_scores, 2, num_classes, "C", "num_classes")
    check_in_range("gt_labels", gt_labels, -1, num_classes, "a class, or -1 for padding")

    out_dtype = torch.promote_types(pred_scores.dtype, pred_boxes.dtype)
    work = torch.promote_types(out_dtype, torch.float32)
    work = torch.promote_types(work, torch.promote_types(anchor_points.dtype, gt_boxes.dtype))
    args = (
        pred_scores.detach().to(work),
        pred_boxes.detach().to(work),
        anchor_points.detach().to(work),
        gt_labels,
        gt_boxes.detach().to(work),
    )
    batch, n = pred_boxes.shape[:2]
    if n == 0 or gt_boxes.shape[1] == 0:
        background = torch.full((batch, n), BACKGROUND, dtype=torch.int64, device=pred_boxes.device)
        return Assignment(background, background.clone(), pred_boxes.new_zeros((batch, n), dtype=out_dtype))
    path = _assign_dense if tracing() else _assign_sparse  # (a k above N selects all N)
    matches, labels, quality = path(*args, topk, topk2 or topk, alpha, beta, stride_val, eps)
    return Assignment(matches, labels, quality.to(out_dtype))


class TaskAlignedAssigner(nn.Module):
    """Task-aligned assigner of ultralytics 8.4.190 (``ultralytics/utils/tal.py``,
    ``TaskAlignedAssigner``): holds the hyper-parameters of :func:`task_aligned_assign`.

    Args:
        topk (int): candidates per ground truth.
        num_classes (int): C.
        alpha, beta (float): exponents of score and CIoU in the metric.
        stride (sequence of numbers): strides; sides below ``stride[1]`` (``stride[0]`` with
            one stride) are widened to it for the inside test; ``(0,)`` disables it.
        eps (float): normalisation epsilon.
        topk2 (int or None): a second top-k after conflicts.

    Forward: ``(pred_scores (Tensor[B, N, C]), pred_boxes (Tensor[B, N, 4]), anchor_points
    (Tensor[N, 2]), gt_labels (Tensor[B, M]), gt_boxes (Tensor[B, M, 4]))`` ->
    ``Assignment``.

    Example:
        >>> tal = TaskAlignedAssigner(topk=10, num_classes=80, alpha=0.5, beta=6.0)  # YOLOv8
    """

    def __init__(
        self,
        topk: int = 13,
        num_classes: int = 80,
        alpha: float = 1.0,
        beta: float = 6.0,
        stride: Sequence[float] = (8, 16, 32),
        eps: float = 1e-9,
        topk2: int | None = None,
    ) -> None:
        super().__init__()
        self.topk = int(check_number("topk", topk, low=1, integer=True))
        self.num_classes = int(check_number("num_classes", num_classes, low=1, integer=True))
        self.alpha = float(check_number("alpha", alpha))
        self.beta = float(check_number("beta", beta))
        self.stride = _check_stride(stride)
        self.eps = float(check_number("eps", eps, low=0))
        self.topk2 = None if topk2 is None else int(check_number("topk2", topk2, low=0, integer=True))

    def forward(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
    ) -> Assignment:
        return task_aligned_assign(
            pred_scores,
            pred_boxes,
            anchor_points,
            gt_labels,
            gt_boxes,
            topk=self.topk,
            num_classes=self.num_classes,
            alpha=self.alpha,
            beta=self.beta,
            stride=self.stride,
            eps=self.eps,
            topk2=self.topk2,
        )

    def extra_repr(self) -> str:
        return (
            f"topk={self.topk}, num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}, "
            f"stride={self.stride}, eps={self.eps}, topk2={self.topk2}"
        )
