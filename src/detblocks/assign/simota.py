"""SimOTA: YOLOX's dynamic-k assignment (Ge et al., 2021).

Reproduces mmdet 3.3.0 ``mmdet/models/task_modules/assigners/sim_ota_assigner.py``
``SimOTAAssigner`` (``iou_calculator=BboxOverlaps2D``), batched over a padded batch.

Per image: a prior is a *candidate* when its centre lies inside some ground truth's box
or inside some ground truth's centre region (the square of half-side ``center_radius``
strides around the box centre). For every real ground truth ``g`` and candidate ``p``,
``cost = cls_weight * BCE + iou_weight * -log(IoU + 1e-7) + 1e5`` where ``p`` is not both
inside ``g``'s box and its centre region, with ``BCE`` mmdet's ``F.binary_cross_entropy``
of ``p``'s class probabilities against ``g``'s one-hot class, summed over classes (log
clamped at -100). ``g`` takes its ``max(1, int(sum of its top candidate_topk IoUs))``
cheapest candidates; a prior taken by several ground truths goes to the one of all the
image's ground truths with the lowest cost for it.

The class cost is a per-candidate sum ``sum_c -log(1 - p_c)`` (one pass over the
candidates' scores) corrected at the ground truth's class column, so no ``candidates x
ground truths x C`` tensor exists; the batching is ``detblocks.assign._dynamic_k``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from detblocks._checks import check_number, eager_cpu, tracing
from detblocks.assign import _dynamic_k as dk
from detblocks.assign._common import Assignment

__all__ = ["simota_assign", "SimOTAAssigner"]

#: mmdet's cost of a pair outside the ground truth's box-and-centre region (``INF``).
_OUTSIDE = 100000.0
#: Stands in for the uncomputed cost of a pair outside the region in the eager shortcut:
#: below every such cost (>= 1e5), above every cost inside the region (checked).
_FLOOR = _OUTSIDE - 1.0
#: mmdet's ``EPS`` in ``-log(IoU + EPS)``.
_LOG_EPS = 1e-7
#: ``F.binary_cross_entropy`` clamps each log at -100.
_LOG_FLOOR = -100.0


def _neg_log_1m(p: Tensor) -> Tensor:
    """``-max(log(1 - p), -100)``: the binary cross-entropy of probability ``p`` against 0."""
    return torch.log1p(-p).clamp(min=_LOG_FLOOR).neg()


def _neg_log(p: Tensor) -> Tensor:
    """``-max(log(p), -100)``: the binary cross-entropy of probability ``p`` against 1."""
    return torch.log(p).clamp(min=_LOG_FLOOR).neg()


def simota_assign(
    priors: Tensor,
    pred_scores: Tensor,
    pred_boxes: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    center_radius: float = 2.5,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
) -> Assignment:
    """SimOTA target assignment: mmdet 3.3.0 ``SimOTAAssigner``, batched.

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/sim_ota_assigner.py``,
    ``SimOTAAssigner.assign`` as ``YOLOXHead`` calls it, per image on its real ground
    truths. See the module notes for the rule.

    Args:
        priors (Tensor[N, 4]): ``(cx, cy, stride_w, stride_h)`` per prior, pixels (YOLOX:
            cell centres, ``(i + 0.5) * stride``), the same for every image.
        pred_scores (Tensor[B, N, C]): class probabilities (YOLOX:
            ``sqrt(sigmoid(cls) * sigmoid(obj))``).
        pred_boxes (Tensor[B, N, 4]): predicted corner boxes, pixels.
        gt_labels (Tensor[B, M]): int64 class ids in ``[0, C)``, ``-1`` for a padding row
            (anywhere).
        gt_boxes (Tensor[B, M, 4]): corner ground-truth boxes, pixels.
        center_radius (float): half-side of the centre region, in strides.
        candidate_topk (int): IoUs summed for each ground truth's dynamic k.
        iou_weight (float): weight of the ``-log(IoU + 1e-7)`` cost.
        cls_weight (float): weight of the classification cost.

    Returns:
        Assignment: ``matches (Tensor[B, N])`` int64, the assigned ground-truth row or
        ``-1``; ``labels (Tensor[B, N])`` its class or ``-1``; ``quality (Tensor[B, N])``
        the IoU of the prior's predicted box with its ground truth (mmdet's
        ``max_overlaps`` at positives), 0 elsewhere, in the promoted dtype of
        ``pred_boxes`` and ``gt_boxes``.

    Ties: equal costs go to the lower prior index in a ground truth's selection, and to
    the lower ground-truth row when a prior picked by several is resolved.

    Numerics and special cases: every cost is computed in float32 (float16/bfloat16 and
    float64 inputs too, and under autocast), the binary cross-entropy never in half
    precision. A prior whose predicted box is not finite, or whose scores are not all in
    ``[0, 1]`` (NaN included), is not a candidate, so it is never positive and does not
    count in any dynamic k. A padding row, or a ground truth with a non-finite
    coordinate, takes no part. Eager mode reads the layout back to the host (four reads
    per call: ground truths and candidates per image, and their lists), evaluates the
    pairs in blocks of ``detblocks.assign._dynamic_k.CHUNK_ELEMENTS`` pairs, and computes
    only the costs the picks depend on (a few more reads per block of rows and one for
    the conflicts: about 30 in all on the yardstick's batch of 16 images); the traceable path
    reads nothing and evaluates every (row, prior) pair.

    Example:
        >>> import torch
        >>> priors = torch.tensor([[4.0, 4, 8, 8], [12, 4, 8, 8], [20, 4, 8, 8], [28, 4, 8, 8]])
        >>> scores = torch.full((1, 4, 2), 0.1)
        >>> boxes = torch.tensor([[[0.0, 0, 16, 8], [1, 0, 16, 8], [16, 0, 24, 8], [40, 0, 48, 8]]])
        >>> gt_labels = torch.tensor([[1, -1]])  # one object, one padding row
        >>> gt_boxes = torch.tensor([[[0.0, 0, 16, 8], [-1, -1, -1, -1]]])
        >>> a = simota_assign(priors, scores, boxes, gt_labels, gt_boxes)  # k = int(1 + 0.9375) = 1
        >>> a.matches, a.labels, a.quality
        (tensor([[ 0, -1, -1, -1]]), tensor([[ 1, -1, -1, -1]]), tensor([[1., 0., 0., 0.]]))
    """
    inp = dk.check_inputs(priors, "pred_scores", pred_scores, pred_boxes, gt_labels, gt_boxes)
    center_radius = float(check_number("center_radius", center_radius, low=0))
    candidate_topk = check_number("candidate_topk", candidate_topk, low=1, integer=True)
    iou_weight = float(check_number("iou_weight", iou_weight))
    cls_weight = float(check_number("cls_weight", cls_weight))
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
    px, py, sw, sh = inp.priors.unbind(-1)  # (N,)
    rx, ry = center_radius * sw, center_radius * sh  # (N,) centre-region half-sides

    # Eager shortcut: a pair outside the box-and-centre region costs at least 1e5, more
    # than any pair inside it can (weights permitting); a row with at least k pairs
    # inside picks among those, so the others' costs are needed only in rows with fewer
    # (and there, while they are not proven too dear, see ``cost_of``) and for conflicts
    # no inside pair decides (``recheck``). The pairs inside are listed by the region
    # test.
    c = inp.scores.shape[2]
    ceiling = cls_weight * c * -_LOG_FLOOR + iou_weight * -math.log(_LOG_EPS)
    sparse = not tracing() and cls_weight >= 0 and iou_weight >= 0 and ceiling < _FLOOR - 1.0
    inside_pairs: list[Tensor] = []  # (row, prior) pairs in the box and the centre region

    def region(blk: slice) -> Tensor:  # (R_blk, N): in the box or in the centre region
        x1, y1, x2, y2, cx, cy = gx1[blk], gy1[blk], gx2[blk], gy2[blk], gcx[blk], gcy[blk]
        in_box = (px > x1) & (py > y1) & (x2 > px) & (y2 > py)
        in_ctr = (px > cx - rx) & (py > cy - ry) & (cx + rx > px) & (cy + ry > py)
        if sparse:  # (one host read per block)
            pairs = (in_box & in_ctr).nonzero()
            pairs[:, 0] += blk.start
            inside_pairs.append(pairs)
        return in_box.logical_or_(in_ctr)

    box_ok = torch.isfinite(inp.boxes).all(-1) & torch.isfinite(inp.priors).all(-1)  # (B, N)
    if sparse and dk._native is not None and eager_cpu(g, inp.priors):  # the same test, natively
        in_region = _native_region(rows, g, gcx, gcy, inp.priors, rx, ry, b, inside_pairs)
    else:
        in_region = dk.region_mask(rows, region, b, n)
    cols = dk.candidate_columns(in_region & box_ok)

    # Per candidate: whether its scores are probabilities (the class cost below is finite
    # exactly then), and the class cost against an all-zero target, sum_c -log(1 - p_c):
    # for every candidate at once, or (eager shortcut) only for the candidates a cost is
    # asked of, each once.
    def probabilities(s: Tensor) -> tuple[Tensor, Tensor]:  # (K_blk, C) -> valid, valid
        valid = (s.amin(-1) >= 0) & (s.amax(-1) <= 1)
        return valid, valid

    def class_sum(s: Tensor) -> tuple[Tensor, Tensor]:  # (K_blk, C) -> sum_c -log(1 - p_c), valid
        valid = s.amin(-1) >= 0
        total = s.neg_().log1p_().clamp_(min=_LOG_FLOOR).sum(-1).neg_()
        return total, valid & torch.isfinite(total)

    per_candidate = probabilities if sparse else class_sum
    zero_target, good = dk.per_candidate(cols, inp.scores, per_candidate)  # (K,) each
    if cols.ok_k is not None:
        good = good & cols.ok_k
    cols = cols._replace(ok=dk.scatter_columns(cols, good, False))
    width = cols.prior.shape[1]
    if sparse:
        zero_flat = torch.zeros(b * width, dtype=torch.float32, device=dev)
        known = torch.zeros(b * width, dtype=torch.bool, device=dev)
        table = inp.scores.reshape(b * n, c)
        step = max(1, dk.CHUNK_ELEMENTS // c)

        def zero_at(img: Tensor, j: Tensor) -> Tensor:  # the zero-target cost at columns (img, j)
            flat = img * width + j
            todo = (
                torch.zeros_like(known).index_fill_(0, flat, True).logical_and_(~known).nonzero().squeeze(1)
            )
            for i in range(0, todo.shape[0], step):  # (one host read above; none if all are known)
                at = todo[i : i + step]
                picked = table.index_select(0, (at // width) * n + cols.prior.view(-1).index_select(0, at))
                zero_flat[at] = class_sum(picked.to(torch.float32))[0]
            known[todo] = True
            return zero_flat[flat]
    else:
        zero_col = dk.scatter_columns(cols, torch.where(good, zero_target, 0.0), 0.0)  # (B, L)

        def zero_at(img: Tensor, j: Tensor) -> Tensor:
            return zero_col[img, j]

    cp = cols.prior
    cpx, cpy, crx, cry = px[cp], py[cp], rx[cp], ry[cp]  # (B, L)
    cb = inp.boxes.gather(1, cp[..., None].expand(-1, -1, 4))  # (B, L, 4)
    bx1, by1, bx2, by2 = cb.unbind(-1)
    gtx1, gty1, gtx2, gty2, gtcx, gtcy = (v[:, 0] for v in (gx1, gy1, gx2, gy2, gcx, gcy))  # (R,)
    labels = inp.gt_labels[rows.img, rows.row].clamp(min=0)  # (R,)

    def pair_iou(r: Tensor, take: Callable[[Tensor], Tensor]) -> Tensor:
        """IoU of rows ``r`` with the predicted boxes of the columns read by ``take`` from
        a ``(B, L)`` plane (broadcast together)."""
        x1, y1, x2, y2 = gtx1[r], gty1[r], gtx2[r], gty2[r]
        return dk.pair_iou(take(bx1), take(by1), take(bx2), take(by2), x1, y1, x2, y2)

    def geometry(r: Tensor, take: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """:func:`pair_iou`, and whether the prior is in the box and the centre region."""
        x1, y1, x2, y2, cx, cy = gtx1[r], gty1[r], gtx2[r], gty2[r], gtcx[r], gtcy[r]
        qx, qy, qrx, qry = take(cpx), take(cpy), take(crx), take(cry)
        in_box = (qx > x1) & (qy > y1) & (x2 > qx) & (y2 > qy)
        in_ctr = (qx > cx - qrx) & (qy > cy - qry) & (cx + qrx > qx) & (cy + qry > qy)
        return pair_iou(r, take), in_box & in_ctr

    if sparse:  # the pairs inside as (row, column), and where each row's pairs start
        slot_of = torch.full((b, n), -1, dtype=torch.int64, device=dev)
        slot_of[cols.img, cols.prior_k] = cols.slot
        pairs = (
            torch.cat(inside_pairs) if inside_pairs else torch.zeros((0, 2), dtype=torch.int64, device=dev)
        )
        in_row = pairs[:, 0].contiguous()
        in_col = slot_of[rows.img[in_row], pairs[:, 1]]
        starts = torch.searchsorted(in_row, torch.arange(rows.img.shape[0] + 1, device=dev)).tolist()

    def cost(r: Tensor, img: Tensor, j: Tensor, iou: Tensor, inside: Tensor) -> Tensor:
        """mmdet's cost of the pairs of rows ``r`` and columns ``j`` of images ``img``
        (broadcast together)."""
        p_cls = inp.scores[img, cp[img, j], labels[r]].to(torch.float32)
        cls = zero_at(img, j) - _neg_log_1m(p_cls) + _neg_log(p_cls)
        iou_cost = torch.log(iou + _LOG_EPS).neg()
        return cls * cls_weight + iou_cost * iou_weight + torch.where(inside, 0.0, _OUTSIDE)

    # Below the cost of every pair outside the region whose predicted box misses the ground
    # truth (IoU 0: its IoU cost, -log(1e-7) in float32, is the largest there is; its class
    # cost is >= 0 up to rounding: the margin of 1 covers both).
    dear = iou_weight * -math.log(_LOG_EPS) - (1.0 + cls_weight * c * 1e-3) + _OUTSIDE

    def pair_costs(blk: slice, w: int) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor | None]:
        r = torch.arange(blk.start, blk.stop, device=dev)[:, None]  # (R_blk, 1)
        img = rows.img[blk]

        def rows_of(plane: Tensor) -> Tensor:
            return plane[:, :w].index_select(0, img)

        if not sparse:
            iou, inside = geometry(r, rows_of)  # (R_blk, w)
            return iou, lambda k: cost(r, img[:, None], torch.arange(w, device=dev), iou, inside), None
        iou, known_k = dk.block_iou(g[blk], img, cb, cols.ok, w, candidate_topk)  # (R_blk, w)
        inside = torch.zeros(iou.shape, dtype=torch.bool, device=dev)
        at = slice(starts[blk.start], starts[blk.stop])
        col = in_col[at]
        listed = col >= 0  # (a prior inside the region whose box is not finite: no column)
        inside[(in_row[at] - blk.start)[listed], col[listed]] = True

        def fill(out: Tensor, pairs: Tensor, within: Tensor) -> None:  # exact costs at pairs
            ri, ji = pairs.nonzero().unbind(1)
            out[ri, ji] = cost(ri + blk.start, img[ri], ji, iou[ri, ji], within[ri, ji])

        def cost_of(k: Tensor) -> Tensor:
            """Exact costs inside the region; the rest of the row stands in as ``_FLOOR``
            unless the row has fewer than ``k`` pairs inside. Such a row picks its others
            among the candidates outside: those its predicted boxes overlap first; when
            enough of them cost less than ``dear``, the rest (>= ``dear``) stand in as
            ``dear``, otherwise they are computed too."""
            ok = rows_of(cols.ok)
            within = inside & ok
            inside_count = within.sum(1)
            short = (inside_count < k)[:, None]
            out = torch.full_like(iou, _FLOOR)
            first = within | (short & ok & (iou > 0))
            fill(out, first, within)
            cheap = (first & ~within & (out < dear)).sum(1)
            lacking = (short[:, 0] & (cheap < k - inside_count))[:, None]
            rest = short & ok & ~first
            out = torch.where(rest & ~lacking, dear, out)
            fill(out, rest & lacking, within)
            return out

        return iou, cost_of, known_k

    def recheck(flat: Tensor) -> Tensor:  # exact key of conflicted columns over all rows
        q, r = (rows.img[None, :] == (flat // width)[:, None]).nonzero().unbind(1)  # (pairs,)
        img, j = flat[q] // width, flat[q] % width

        def pairs_of(plane: Tensor) -> Tensor:
            return plane[img, j]

        iou, inside = geometry(r, pairs_of)
        key = dk.cost_bits(cost(r, img, j, iou, inside)).bitwise_left_shift(32) | rows.row[r]
        best = torch.full((flat.shape[0],), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
        return best.scatter_reduce(0, q, key, "amin")

    owner = dk.dynamic_k_match(
        rows, cols, pair_costs, candidate_topk, stand_ins=(_FLOOR, dear) if sparse else (), recheck=recheck
    )
    return dk.finish(inp, dk.to_priors(cols, owner, n))


def _native_region(
    rows: dk.Rows, g: Tensor, gcx: Tensor, gcy: Tensor, priors: Tensor, rx: Tensor, ry: Tensor, b: int,
    inside_pairs: list[Tensor],
) -> Tensor:  # fmt: skip
    """``simota_assign``'s region test by the native kernel, in the same blocks of rows
    and with the same float32 comparisons: ``Tensor[B, N] bool``, and the (row, prior)
    pairs in both a box and its centre region appended to ``inside_pairs``."""
    n = priors.shape[0]
    x1, y1, x2, y2 = (v.contiguous() for v in g.unbind(-1))
    cx, cy = gcx.reshape(-1).contiguous(), gcy.reshape(-1).contiguous()
    px, py = priors[:, 0].contiguous(), priors[:, 1].contiguous()
    rx, ry = rx.contiguous(), ry.contiguous()
    hits = torch.zeros((b, n), dtype=torch.uint8)
    for blk in dk.row_blocks(rows, n):
        img = rows.img[blk].contiguous()
        both = torch.empty((img.shape[0], n), dtype=torch.uint8)
        part = [v[blk] for v in (x1, y1, x2, y2, cx, cy)]
        dk._native.region(
            *(v.data_ptr() for v in part),
            img.data_ptr(),
            img.shape[0],
            px.data_ptr(),
            py.data_ptr(),
            rx.data_ptr(),
            ry.data_ptr(),
            n,
            hits.data_ptr(),
            both.data_ptr(),
            torch.get_num_threads(),
        )
        pairs = both.nonzero()  # (one host read per block)
        pairs[:, 0] += blk.start
        inside_pairs.append(pairs)
    return hits.bool()


class SimOTAAssigner(nn.Module):
    """SimOTA (YOLOX): mmdet 3.3.0 ``SimOTAAssigner``.

    Reference: mmdet 3.3.0, ``mmdet/models/task_modules/assigners/sim_ota_assigner.py``.
    A thin module over :func:`simota_assign`; see it for the rule, shapes and numerics.

    Args:
        center_radius (float): half-side of the centre region, in strides.
        candidate_topk (int): IoUs summed for each ground truth's dynamic k.
        iou_weight (float): weight of the IoU cost.
        cls_weight (float): weight of the classification cost.

    Example:
        >>> import torch
        >>> assigner = SimOTAAssigner()
        >>> priors = torch.tensor([[4.0, 4, 8, 8], [12, 4, 8, 8]])
        >>> boxes = torch.tensor([[[0.0, 0, 8, 8], [8, 0, 16, 8]]])
        >>> gt_labels, gt_boxes = torch.tensor([[2]]), torch.tensor([[[0.0, 0, 9, 8]]])
        >>> out = assigner(priors, torch.full((1, 2, 3), 0.2), boxes, gt_labels, gt_boxes)
        >>> out.matches, out.labels
        (tensor([[ 0, -1]]), tensor([[ 2, -1]]))
    """

    def __init__(
        self,
        center_radius: float = 2.5,
        candidate_topk: int = 10,
        iou_weight: float = 3.0,
        cls_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.center_radius = float(check_number("center_radius", center_radius, low=0))
        self.candidate_topk = check_number("candidate_topk", candidate_topk, low=1, integer=True)
        self.iou_weight = float(check_number("iou_weight", iou_weight))
        self.cls_weight = float(check_number("cls_weight", cls_weight))

    def forward(
        self, priors: Tensor, pred_scores: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor
    ) -> Assignment:
        return simota_assign(
            priors,
            pred_scores,
            pred_boxes,
            gt_labels,
            gt_boxes,
            center_radius=self.center_radius,
            candidate_topk=self.candidate_topk,
            iou_weight=self.iou_weight,
            cls_weight=self.cls_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"center_radius={self.center_radius}, candidate_topk={self.candidate_topk}, "
            f"iou_weight={self.iou_weight}, cls_weight={self.cls_weight}"
        )
