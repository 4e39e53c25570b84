"""Max-IoU assignment: RetinaNet's and the R-CNNs' rule.

Reproduces mmdet 3.3.0 ``mmdet/models/task_modules/assigners/max_iou_assigner.py``
``MaxIoUAssigner`` (no ignored boxes, no ``gpu_assign_thr``, no ``perm_repeat_gt_cfg``),
batched over a padded batch.

Every anchor starts ignored (``-2``); one whose largest IoU over the ground truths is
below ``neg_iou_thr`` (in ``[low, high)`` for a pair) becomes a negative (``-1``); one
whose largest IoU reaches ``pos_iou_thr`` goes to that ground truth. Then, with
``match_low_quality``, every ground truth in index order takes its best anchor(s) (all
anchors with exactly its best IoU when ``gt_max_assign_all``, else the lowest-index one)
when that IoU reaches ``min_pos_iou``; a later ground truth overwrites an earlier one, so
an anchor that is a best anchor of several ends with the highest row among them. That
loop is vectorised: for each anchor, the last ground truth it is a best anchor of.

How it is batched
-----------------
The IoU matrix ``(B, N, M)`` is :func:`detblocks.bbox.box_iou`'s. Up to
:data:`detblocks.matcher.DENSE_LIMIT` entries (and always under ``torch.compile`` /
``torch.export``) it is computed whole; above it, eager mode reads it in chunks of anchors
(:data:`detblocks.matcher.CHUNK_ELEMENTS` entries each) and keeps only per-anchor and
per-ground-truth maxima between chunks, reading the chunks a second time for the
low-quality step when ``gt_max_assign_all``. No host read.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detblocks._checks import check_bool, check_boxes, check_number, shape_str, tracing
from detblocks.assign._common import BACKGROUND, IGNORE, Assignment, check_ground_truth, real_rows
from detblocks.bbox import box_iou
from detblocks.matcher import CHUNK_ELEMENTS, DENSE_LIMIT

__all__ = ["max_iou_assign", "MaxIoUAssigner"]


def _check_neg(neg_iou_thr: object) -> float | tuple[float, float]:
    """A number, or a pair ``(low, high)`` of numbers (a tuple; a list is accepted too)."""
    if isinstance(neg_iou_thr, (tuple, list)):
        if len(neg_iou_thr) != 2:
            raise ValueError(f"neg_iou_thr must be a number or a (low, high) pair, got {neg_iou_thr!r}")
        low = check_number("neg_iou_thr[0]", neg_iou_thr[0])
        high = check_number("neg_iou_thr[1]", neg_iou_thr[1])
        return float(low), float(high)
    if isinstance(neg_iou_thr, Tensor):
        raise TypeError(
            f"neg_iou_thr must be a number or a (low, high) pair, got a tensor {shape_str(neg_iou_thr)}"
        )
    return float(check_number("neg_iou_thr", neg_iou_thr))


def _iou(anchors: Tensor, gt_boxes: Tensor, valid: Tensor, anchor_ok: Tensor) -> Tensor:
    """``Tensor[B, n, M]``: IoU, -1 at padding (and non-finite) ground-truth columns, 0 for
    non-finite anchors (box_iou already gives them 0)."""
    iou = box_iou(anchors, gt_boxes, eps=0.0)  # (B, n, M)
    return torch.where(valid[:, None, :], iou, -1.0)


def _last_true(mask: Tensor) -> Tensor:
    """Index of the last True along the last axis, -1 when none: ``Tensor[...]`` int64."""
    m = mask.shape[-1]
    idx = torch.arange(m, device=mask.device)
    return torch.where(mask, idx, -1).amax(-1) if m else mask.new_full(mask.shape[:-1], -1, dtype=torch.int64)


def max_iou_assign(
    anchors: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    pos_iou_thr: float,
    neg_iou_thr: float | tuple[float, float],
    min_pos_iou: float = 0.0,
    gt_max_assign_all: bool = True,
    match_low_quality: bool = True,
) -> Assignment:
    """Max-IoU target assignment: mmdet 3.3.0 ``MaxIoUAssigner``, batched.

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/max_iou_assigner.py``,
    ``MaxIoUAssigner.assign`` / ``assign_wrt_overlaps`` (no ignored boxes). See the module
    notes for the rule.

    Args:
        anchors (Tensor[N, 4] or Tensor[B, N, 4]): corner anchors shared by the batch, or
            per image (proposals of an R-CNN stage).
        gt_labels (Tensor[B, M]): int64 class ids, ``-1`` for a padding row (anywhere).
        gt_boxes (Tensor[B, M, 4]): corner ground-truth boxes.
        pos_iou_thr (float): an anchor whose largest IoU reaches it is positive.
        neg_iou_thr (float | tuple[float, float]): an anchor whose largest IoU is below it
            is negative; with ``(low, high)`` only largest IoUs in ``[low, high)`` are,
            and lower ones stay ignored. An int, or a list of two, is accepted as well
            (mmdet would assign no negatives then: a documented deviation).
        min_pos_iou (float): a ground truth takes its best anchors in the low-quality step
            only when their IoU reaches it.
        gt_max_assign_all (bool): the low-quality step gives a ground truth every anchor
            with exactly its best IoU (``True``) or only the lowest-index one.
        match_low_quality (bool): run the low-quality step.

    Returns:
        Assignment: ``matches (Tensor[B, N])`` int64, the ground-truth row, ``-1``
        negative, ``-2`` ignored; ``labels (Tensor[B, N])`` int64, its class, ``-1``
        elsewhere; ``quality (Tensor[B, N])`` every anchor's largest IoU over the real
        ground truths (mmdet's ``max_overlaps``, also at negatives and ignored anchors; 0
        in an image without ground truth), in the promoted dtype of the boxes (float16 and
        bfloat16 IoUs are computed in float32).

    Special cases: an image without real ground truth is all negative (``-1``) with
    quality 0. A padding row, or a ground truth with a non-finite coordinate, matches
    nothing. An anchor with a non-finite coordinate has IoU 0 with everything and is never
    positive. Deviation from mmdet: a ground truth whose best IoU is 0 gets nothing in the
    low-quality step (mmdet with ``min_pos_iou=0`` hands it every anchor it does not
    overlap). Ties: the threshold step takes the lowest ground-truth row among equal IoUs;
    the low-quality step the highest (mmdet's order).

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 30, 30]])
        >>> gt = torch.tensor([[[0.0, 0, 10, 9]]])
        >>> a = max_iou_assign(anchors, torch.tensor([[4]]), gt, 0.5, 0.1)
        >>> a.matches, a.labels
        (tensor([[ 0, -1, -2]]), tensor([[ 4, -1, -1]]))
    """
    anchors = check_boxes("anchors", anchors, (2, 3), "(N, 4) or (B, N, 4)")
    gt_labels, gt_boxes = check_ground_truth(gt_labels, gt_boxes)
    if anchors.dim() == 3 and anchors.shape[0] not in (1, gt_boxes.shape[0]):
        raise ValueError(
            f"anchors {shape_str(anchors)} must have the batch size of gt_boxes {shape_str(gt_boxes)} (or 1)"
        )
    pos_iou_thr = float(check_number("pos_iou_thr", pos_iou_thr))
    neg = _check_neg(neg_iou_thr)
    min_pos_iou = float(check_number("min_pos_iou", min_pos_iou))
    check_bool("gt_max_assign_all", gt_max_assign_all)
    check_bool("match_low_quality", match_low_quality)
    if anchors.device != gt_boxes.device:
        raise ValueError(f"anchors ({anchors.device}) and gt_boxes ({gt_boxes.device}) must be on one device")

    out_dtype = torch.promote_types(anchors.dtype, gt_boxes.dtype)
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    a = (anchors if anchors.dim() == 3 else anchors[None]).detach()  # (B or 1, N, 4)
    gt_boxes = gt_boxes.detach()
    b, m = gt_labels.shape
    n = a.shape[1]
    dev = a.device
    valid = real_rows(gt_labels) & torch.isfinite(gt_boxes).all(-1)  # (B, M)
    anchor_ok = torch.isfinite(a).all(-1)  # (B or 1, N)
    has_gt = valid.any(1) if m else torch.zeros(b, dtype=torch.bool, device=dev)  # (B,)

    if m == 0 or (not tracing() and b * n == 0):
        return Assignment(
            torch.full((b, n), BACKGROUND, dtype=torch.int64, device=dev),
            torch.full((b, n), BACKGROUND, dtype=torch.int64, device=dev),
            torch.zeros((b, n), dtype=out_dtype, device=dev),
        )

    lowq = None
    if tracing() or b * n * m <= DENSE_LIMIT:
        rows = None  # the whole matrix at once
        iou = _iou(a, gt_boxes, valid, anchor_ok).to(work)  # (B, N, M)
        best, arg = iou.amax(-1), iou.argmax(-1)  # each anchor's largest IoU and first gt
        gmax, garg = iou.amax(1), iou.argmax(1)  # each gt's largest IoU and first anchor
    else:
        rows = max(1, CHUNK_ELEMENTS // (b * m))
        best = torch.empty((b, n), dtype=work, device=dev)
        arg = torch.empty((b, n), dtype=torch.int64, device=dev)
        gmax = torch.full((b, m), -1.0, dtype=work, device=dev)
        garg = torch.zeros((b, m), dtype=torch.int64, device=dev)
        for start in range(0, n, rows):
            part = _iou(a[:, start : start + rows], gt_boxes, valid, anchor_ok).to(work)  # (B, c, M)
            stop = start + part.shape[1]
            best[:, start:stop], arg[:, start:stop] = part.amax(-1), part.argmax(-1)
            cmax, carg = part.amax(1), part.argmax(1) + start  # (B, M)
            better = cmax > gmax  # strictly: ties keep the earlier (lower) anchor
            gmax = torch.where(better, cmax, gmax)
            garg = torch.where(better, carg, garg)

    if match_low_quality:
        gt_ok = valid & (gmax >= min_pos_iou) & (gmax > 0)  # (B, M); IoU 0: nothing (deviation)
        if gt_max_assign_all:
            if rows is None:
                lowq = _last_true((iou == gmax[:, None, :]) & gt_ok[:, None, :])  # (B, N)
            else:
                lowq = torch.empty((b, n), dtype=torch.int64, device=dev)
                for start in range(0, n, rows):
                    part = _iou(a[:, start : start + rows], gt_boxes, valid, anchor_ok).to(work)
                    tops = (part == gmax[:, None, :]) & gt_ok[:, None, :]
                    lowq[:, start : start + part.shape[1]] = _last_true(tops)
        else:
            # Each gt's first best anchor; an anchor that is several gts' takes the last.
            col = torch.arange(m, device=dev).expand(b, m)
            lowq = torch.full((b, n + 1), -1, dtype=torch.int64, device=dev)
            lowq = lowq.scatter_reduce(1, torch.where(gt_ok, garg, n), torch.where(gt_ok, col, -1), "amax")
            lowq = lowq[:, :n]

    anchor_ok = anchor_ok.expand(b, n)
    if isinstance(neg, tuple):
        negative = (best >= neg[0]) & (best < neg[1])
    else:
        negative = (best >= 0) & (best < neg)
    matches = torch.where(negative, BACKGROUND, IGNORE)
    matches = torch.where((best >= pos_iou_thr) & anchor_ok, arg, matches)
    if lowq is not None:
        matches = torch.where(lowq >= 0, lowq, matches)
    matches = torch.where(has_gt[:, None], matches, BACKGROUND)  # no ground truth: all negative
    labels = torch.where(matches >= 0, gt_labels.gather(1, matches.clamp(min=0)), BACKGROUND)
    quality = torch.where(has_gt[:, None], best.clamp(min=0), 0.0).to(out_dtype)
    return Assignment(matches, labels, quality)


class MaxIoUAssigner(nn.Module):
    """Max-IoU assignment: mmdet 3.3.0 ``MaxIoUAssigner`` (RetinaNet, RPN, R-CNN heads).

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/max_iou_assigner.py``.
    A thin module over :func:`max_iou_assign`; see it for the rule, shapes and the
    documented deviations.

    Args:
        pos_iou_thr (float): IoU at or above which an anchor is positive.
        neg_iou_thr (float | tuple[float, float]): IoU below which an anchor is negative,
            or a ``(low, high)`` range of negatives.
        min_pos_iou (float): smallest IoU of a low-quality match.
        gt_max_assign_all (bool): every anchor tied at a ground truth's best IoU goes to it.
        match_low_quality (bool): give each ground truth its best anchor(s).

    Example:
        >>> import torch
        >>> retinanet = MaxIoUAssigner(0.5, 0.4)
        >>> anchors = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20]])
        >>> retinanet(anchors, torch.tensor([[1]]), torch.tensor([[[0.0, 0, 10, 9]]])).matches
        tensor([[ 0, -1]])
    """

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float | tuple[float, float],
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        match_low_quality: bool = True,
    ) -> None:
        super().__init__()
        self.pos_iou_thr = float(check_number("pos_iou_thr", pos_iou_thr))
        self.neg_iou_thr = _check_neg(neg_iou_thr)
        self.min_pos_iou = float(check_number("min_pos_iou", min_pos_iou))
        self.gt_max_assign_all = check_bool("gt_max_assign_all", gt_max_assign_all)
        self.match_low_quality = check_bool("match_low_quality", match_low_quality)

    def forward(self, anchors: Tensor, gt_labels: Tensor, gt_boxes: Tensor) -> Assignment:
        return max_iou_assign(
            anchors,
            gt_labels,
            gt_boxes,
            self.pos_iou_thr,
            self.neg_iou_thr,
            self.min_pos_iou,
            self.gt_max_assign_all,
            self.match_low_quality,
        )

    def extra_repr(self) -> str:
        return (
            f"pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
            f"min_pos_iou={self.min_pos_iou}, "
            f"gt_max_assign_all={self.gt_max_assign_all}, match_low_quality={self.match_low_quality}"
        )
