"""Dynamic soft-label assignment: RTMDet's rule (Lyu et al., 2022).

Reproduces mmdet 3.3.0
``mmdet/models/task_modules/assigners/dynamic_soft_label_assigner.py``
``DynamicSoftLabelAssigner`` (``iou_calculator=BboxOverlaps2D``, box ground truth, no
masks), batched over a padded batch.

Per image: a prior is a *candidate* when its point lies strictly inside some ground
truth's box. For every real ground truth ``g`` and candidate ``p``,
``cost = soft_cls + -log(IoU + 1e-7) * iou_weight + 10 ** (d / stride - soft_center_radius)``
with ``d`` the distance from ``p``'s point to ``g``'s box centre, ``stride`` the prior's
``stride_w``, and ``soft_cls = sum_c BCEWithLogits(x_c, t_c) * |t_c - sigmoid(x_c)|^2``
for the soft target ``t = one_hot(g's class) * IoU``. ``g`` takes its
``max(1, int(sum of its top topk IoUs))`` cheapest candidates; a prior taken by several
ground truths goes to the one of all the image's ground truths with the lowest cost for it.

Every class but the ground truth's has target 0, so ``soft_cls`` is a per-candidate sum
over classes (one pass over the candidates' logits) corrected at the ground truth's
class column: no ``candidates x ground truths x C`` tensor exists. The batching is
``detblocks.assign._dynamic_k``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detblocks._checks import check_number, tracing
from detblocks.assign import _dynamic_k as dk
from detblocks.assign._common import Assignment

__all__ = ["dsl_assign", "DynamicSoftLabelAssigner"]

#: mmdet's ``EPS`` in ``-log(IoU + EPS)``.
_LOG_EPS = 1e-7


def _soft_bce(x: Tensor, t: Tensor | float) -> Tensor:
    """mmdet's per-class soft-label cost ``BCEWithLogits(x, t) * |t - sigmoid(x)| ** 2``,
    in PyTorch's operation order (``(1 - t) * x - logsigmoid(x)``)."""
    return ((1 - t) * x - F.logsigmoid(x)) * (t - torch.sigmoid(x)).abs().pow(2.0)


def dsl_assign(
    priors: Tensor,
    pred_logits: Tensor,
    pred_boxes: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    soft_center_radius: float = 3.0,
    topk: int = 13,
    iou_weight: float = 3.0,
) -> Assignment:
    """Dynamic soft-label target assignment: mmdet 3.3.0 ``DynamicSoftLabelAssigner``, batched.

    Reference: mmdet 3.3.0,
    ``mmdet/models/task_modules/assigners/dynamic_soft_label_assigner.py``,
    ``DynamicSoftLabelAssigner.assign`` as ``RTMDetHead`` calls it, per image on its real
    ground truths (boxes, no masks). See the module notes for the rule.

    Args:
        priors (Tensor[N, 4]): ``(x, y, stride_w, stride_h)`` per prior, pixels (RTMDet:
            ``x = i * stride``, no offset), the same for every image.
        pred_logits (Tensor[B, N, C]): class logits (the rule applies the sigmoid).
        pred_boxes (Tensor[B, N, 4]): predicted corner boxes, pixels.
        gt_labels (Tensor[B, M]): int64 class ids in ``[0, C)``, ``-1`` for a padding row
            (anywhere).
        gt_boxes (Tensor[B, M, 4]): corner ground-truth boxes, pixels.
        soft_center_radius (float): the centre prior is ``10 ** (d / stride - radius)``.
        topk (int): IoUs summed for each ground truth's dynamic k.
        iou_weight (float): weight of the ``-log(IoU + 1e-7)`` cost.

    Returns:
        Assignment: ``matches (Tensor[B, N])`` int64, the assigned ground-truth row or
        ``-1``; ``labels (Tensor[B, N])`` its class or ``-1``; ``quality (Tensor[B, N])``
        the IoU of the prior's predicted box with its ground truth (mmdet's
        ``max_overlaps`` at positives), 0 elsewhere, in the promoted dtype of
        ``pred_boxes`` and ``gt_boxes``.

    Ties: equal costs go to the lower prior index in a ground truth's selection, and to
    the lower ground-truth row when a prior picked by several is resolved.

    Numerics and special cases: every cost is computed in float32 (float16/bfloat16 and
    float64 inputs too, and under autocast). A prior whose predicted box is not finite,
    or whose logits are not all finite (or so large that its class cost overflows
    float32), is not a candidate, so it is never positive and does not count in any
    dynamic k. A padding row, or a ground truth with a non-finite coordinate, takes no
    part. Eager mode reads the layout back to the host (four reads per call: ground
    truths and candidates per image, and their lists) and evaluates the pairs in blocks
    of ``detblocks.assign._dynamic_k.CHUNK_ELEMENTS`` pairs; the traceable path reads
    nothing and evaluates every (row, prior) pair.

    Example:
        >>> import torch
        >>> priors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 8, 8], [16, 0, 8, 8], [24, 0, 8, 8]])
        >>> logits = torch.full((1, 4, 2), -4.0)
        >>> boxes = torch.tensor([[[0.0, 0, 8, 8], [4, 0, 14, 8], [16, 0, 24, 8], [40, 0, 48, 8]]])
        >>> gt_labels = torch.tensor([[1, -1]])  # one object, one padding row
        >>> gt_boxes = torch.tensor([[[2.0, -4, 16, 8], [-1, -1, -1, -1]]])
        >>> a = dsl_assign(priors, logits, boxes, gt_labels, gt_boxes)
        >>> a.matches, a.labels
        (tensor([[-1,  0, -1, -1]]), tensor([[-1,  1, -1, -1]]))
    """
    inp = dk.check_inputs(priors, "pred_logits", pred_logits, pred_boxes, gt_labels, gt_boxes)
    soft_center_radius = float(check_number("soft_center_radius", soft_center_radius))
    topk = check_number("topk", topk, low=1, integer=True)
    iou_weight = float(check_number("iou_weight", iou_weight))
    b, n, _ = inp.scores.shape
    m = inp.gt_labels.shape[1]
    dev = inp.boxes.device
    if not tracing() and b * n * m == 0:
        return dk.background(b, n, inp.out_dtype, dev)

    rows, g = dk.ground_truth_rows(inp)
    if not tracing() and rows.img.shape[0] == 0:
        return dk.background(b, n, inp.out_dtype, dev)
    gx1, gy1, gx2, gy2 = (v[:, None] for v in g.unbind(-1))  # (R, 1) each
    gcx, gcy = (gx1 + gx2) / 2.0, (gy1 + gy2) / 2.0
    px, py, stride = inp.priors[:, 0], inp.priors[:, 1], inp.priors[:, 2]  # (N,)

    def region(blk: slice) -> Tensor:  # (R_blk, N): the point strictly inside the box
        return (px > gx1[blk]) & (py > gy1[blk]) & (gx2[blk] > px) & (gy2[blk] > py)

    box_ok = torch.isfinite(inp.boxes).all(-1) & torch.isfinite(inp.priors).all(-1)  # (B, N)
    cols = dk.candidate_columns(dk.region_mask(rows, region, b, n) & box_ok)

    # Per candidate: the class cost against an all-zero target (finite only for finite
    # logits).
    def class_sum(x: Tensor) -> tuple[Tensor, Tensor]:  # (K_blk, C) -> the zero-target cost, finite
        total = _soft_bce(x, 0.0).sum(-1)
        return total, torch.isfinite(total)

    zero_target, good = dk.per_candidate(cols, inp.scores, class_sum)  # (K,) each
    if cols.ok_k is not None:
        good = good & cols.ok_k
    cols = cols._replace(ok=dk.scatter_columns(cols, good, False))
    zero_col = dk.scatter_columns(cols, torch.where(good, zero_target, 0.0), 0.0)  # (B, L)

    cp = cols.prior
    cpx, cpy, cstride = px[cp], py[cp], stride[cp]  # (B, L)
    cb = inp.boxes.gather(1, cp[..., None].expand(-1, -1, 4))  # (B, L, 4)
    labels = inp.gt_labels[rows.img, rows.row].clamp(min=0)  # (R,)

    def pair_costs(blk: slice, w: int) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor | None]:
        img = rows.img[blk]

        def take(plane: Tensor) -> Tensor:
            return plane[:, :w].index_select(0, img)

        iou, k = dk.block_iou(g[blk], img, cb, cols.ok, w, topk)
        dist = ((take(cpx) - gcx[blk]).pow(2) + (take(cpy) - gcy[blk]).pow(2)).sqrt() / take(cstride)
        center = torch.pow(10, dist - soft_center_radius)
        x_cls = inp.scores[img[:, None], take(cp), labels[blk, None]].to(torch.float32)
        cls = take(zero_col) - _soft_bce(x_cls, 0.0) + _soft_bce(x_cls, iou)
        iou_cost = torch.log(iou + _LOG_EPS).neg() * iou_weight
        cost = cls + iou_cost + center
        return iou, lambda _: cost, k

    owner = dk.dynamic_k_match(rows, cols, pair_costs, topk)
    return dk.finish(inp, dk.to_priors(cols, owner, n))


class DynamicSoftLabelAssigner(nn.Module):
    """Dynamic soft-label assignment (RTMDet): mmdet 3.3.0 ``DynamicSoftLabelAssigner``.

    Reference: mmdet 3.3.0,
    ``mmdet/models/task_modules/assigners/dynamic_soft_label_assigner.py``. A thin module
    over :func:`dsl_assign`; see it for the rule, shapes and numerics.

    Args:
        soft_center_radius (float): radius of the soft centre prior, in strides.
        topk (int): IoUs summed for each ground truth's dynamic k.
        iou_weight (float): weight of the IoU cost.

    Example:
        >>> import torch
        >>> assigner = DynamicSoftLabelAssigner()
        >>> priors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 8, 8]])
        >>> out = assigner(priors, torch.zeros(1, 2, 3), torch.tensor([[[0.0, 0, 8, 8], [2, -2, 14, 6]]]),
        ...                torch.tensor([[2]]), torch.tensor([[[2.0, -4, 14, 8]]]))
        >>> out.matches, out.labels
        (tensor([[-1,  0]]), tensor([[-1,  2]]))
    """

    def __init__(self, soft_center_radius: float = 3.0, topk: int = 13, iou_weight: float = 3.0) -> None:
        super().__init__()
        self.soft_center_radius = float(check_number("soft_center_radius", soft_center_radius))
        self.topk = check_number("topk", topk, low=1, integer=True)
        self.iou_weight = float(check_number("iou_weight", iou_weight))

    def forward(
        self, priors: Tensor, pred_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor
    ) -> Assignment:
        return dsl_assign(
            priors,
            pred_logits,
            pred_boxes,
            gt_labels,
            gt_boxes,
            soft_center_radius=self.soft_center_radius,
            topk=self.topk,
            iou_weight=self.iou_weight,
        )

    def extra_repr(self) -> str:
        return f"soft_center_radius={self.soft_center_radius}, topk={self.topk}, iou_weight={self.iou_weight}"
