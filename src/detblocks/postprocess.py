"""The inference tail of GluonCV's detectors: MXNet's ``box_nms``, the RPN's proposal
step and SSD's detection output.

* :func:`box_nms` / :class:`BoxNMS` is MXNet 1.9.1's ``contrib.box_nms`` with every
  argument: rows whose score is above ``valid_thresh`` (and whose id is not
  ``background_id``) are sorted by descending score, the first ``topk`` are
  suppressed greedily, and the survivors come first in score order, every other row
  all -1.
* :class:`RPNProposal` is ``gluoncv.model_zoo.rcnn.rpn.proposal.RPNProposal``
  (GluonCV 0.10.5): decode, clip to the image, drop boxes below ``min_size``.
* :func:`ssd_detection_output` / :class:`SSDDetectionOutput` is what
  ``gluoncv.model_zoo.ssd.SSD`` returns at inference (softmax, decoders, per-class
  rows, ``box_nms``, the first ``post_nms`` rows), computed from the ``nms_topk`` best
  (anchor, class) entries alone: GluonCV's ``(B, N * C, 6)`` array is never built.

Score order is a stable descending sort: of two equal scores, the earlier row (for
SSD, the lower class, then the lower anchor) comes first. A row whose score is NaN
is never valid, so never kept. Overlap is MXNet's: ``inter / (area_i + area_j - inter)``
with negative sides counting as an empty intersection and a zero area; a box with a
NaN or infinite coordinate therefore overlaps nothing by more than any threshold, so
it never suppresses, nor is suppressed by, another box.

The greedy suppression is exact and batched: for the ``T`` sorted candidates of
every image the ``(T, T)`` matrix of "``i`` would suppress ``j``" is built once,
then ``keep = valid & ~any(suppress[i, j] & keep[i])`` is iterated from
``keep = valid`` until it no longer changes. Candidate ``j`` depends only on earlier
ones, so after ``t`` rounds the first ``t`` are final; the fixed point is greedy NMS
exactly, reached after as many rounds as the longest chain of suppressions (a handful
in practice, at most ``T``). Under ``torch.compile`` and ``torch.export`` the rounds
run in a ``torch.while_loop`` (ONNX ``Loop``); eagerly, in a Python loop. Memory is
``O(B * T^2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch._higher_order_ops.while_loop import while_loop_op

from detblocks import _checks
from detblocks.bbox import clip_to_image
from detblocks.coder import _check_stds_means, decode_boxes

__all__ = [
    "box_nms",
    "rpn_proposal",
    "ssd_detection_output",
    "BoxNMS",
    "RPNProposal",
    "SSDDetectionOutput",
]

_HALF_DTYPES = (torch.float16, torch.bfloat16)

#: Value of every element of an empty output row (MXNet's convention).
EMPTY = -1.0

# The eager CPU path of ssd_detection_output takes the softmax of this many class scores
# at a time (8 MiB of float32): 2 images of an SSD300 COCO batch. Smaller chunks keep the
# allocator from holding on to freed blocks (less resident memory), larger ones save nothing.
_SOFTMAX_CHUNK_ELEMENTS = 1 << 21


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (areas and softmax lose too much in 16 bits)."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


# ------------------------------------------------------------------ greedy suppression
def _corner_and_area(boxes: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    """``boxes (..., 4)`` in ``fmt`` -> corner boxes and MXNet's areas (0 where a side is
    negative; NaN stays NaN)."""
    if fmt == "center":
        cx, cy, w, h = boxes.unbind(-1)
        corner = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    else:
        x1, y1, x2, y2 = boxes.unbind(-1)
        corner, w, h = boxes, x2 - x1, y2 - y1
    area = torch.where((w < 0) | (h < 0), 0.0, w * h)
    return corner, area


def _suppression(corner: Tensor, area: Tensor, thresh: float, ids: Tensor | None) -> Tensor:
    """``(B, T, T)`` bool, ``[b, j, i]``: earlier candidate ``i`` suppresses ``j`` if it is kept.

    ``corner (B, T, 4)``, ``area (B, T)`` in score order; ``ids (B, T)`` restricts
    suppression to equal ids (``None``: any two boxes). MXNet's overlap: sides of the
    intersection below 0 count as 0 (NaN stays NaN and compares false).
    """
    x1, y1, x2, y2 = (c.unsqueeze(2) for c in corner.unbind(-1))  # (B, T, 1): row j
    u1, v1, u2, v2 = (c.unsqueeze(1) for c in corner.unbind(-1))  # (B, 1, T): column i
    w = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)  # (B, T, T)
    h = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    inter = w * h
    iou = inter / ((area.unsqueeze(1) + area.unsqueeze(2)) - inter)
    t = corner.shape[1]
    pos = torch.arange(t, device=corner.device)
    sup = (iou > thresh) & (pos[None, :, None] > pos[None, None, :])  # only earlier i
    if ids is not None:
        sup = sup & (ids.unsqueeze(2) == ids.unsqueeze(1))
    return sup


def _nms_keep(corner: Tensor, area: Tensor, thresh: float, ids: Tensor | None, valid: Tensor) -> Tensor:
    """Greedy NMS of candidates in score order: ``keep (B, T)`` bool.

    ``corner (B, T, 4)``, ``area (B, T)``, ``ids (B, T)`` or ``None`` as :func:`_suppression`
    takes them; ``valid (B, T)`` marks the candidates that take part. Eagerly on CPU only
    the pairs of valid candidates with equal ids are compared (:func:`_greedy_keep_pairs`);
    otherwise the whole ``(T, T)`` matrix. Both give the same result, bit for bit.
    """
    if _checks.eager_cpu(corner, area, valid):
        return _greedy_keep_pairs(corner, area, thresh, ids, valid)
    return _greedy_keep(_suppression(corner, area, thresh, ids), valid)


def _greedy_keep_pairs(
    corner: Tensor, area: Tensor, thresh: float, ids: Tensor | None, valid: Tensor
) -> Tensor:
    """:func:`_greedy_keep` of :func:`_suppression` computed on the pairs that can suppress
    at all: valid candidates of one image with equal ids (a few per class in a detector's
    top 400). Same overlap formula, element by element, and the same fixed point."""
    b, t = valid.shape
    img, pos = valid.nonzero(as_tuple=True)  # (M,), by image, then score order
    if ids is not None:  # group by (image, id), score order kept within a group
        order = ids[img, pos].argsort(stable=True)
        order = order[img[order].argsort(stable=True)]
        img, pos = img[order], pos[order]
        gid = ids[img, pos]
        new_group = (img[1:] != img[:-1]) | (gid[1:] != gid[:-1])  # NaN ids stand alone
    else:
        new_group = img[1:] != img[:-1]
    m = img.shape[0]
    starts = torch.cat([torch.ones(min(m, 1), dtype=torch.bool), new_group])  # (M,)
    group = starts.cumsum(0) - 1
    group_end = torch.zeros(int(starts.sum()), dtype=torch.int64).index_put_(
        (group,), torch.arange(1, m + 1), accumulate=False
    )  # end (exclusive) of each group: its last member's index + 1
    counts = group_end[group] - torch.arange(m) - 1  # later members of the same group
    first = torch.repeat_interleave(torch.arange(m), counts)  # (P,)
    offset = torch.arange(first.shape[0]) - (counts.cumsum(0) - counts)[first]
    second = first + 1 + offset  # (P,), after `first` in score order
    bi, pi, pj = img[first], pos[first], pos[second]
    x1, y1, x2, y2 = corner[bi, pj].unbind(-1)  # j, the later one
    u1, v1, u2, v2 = corner[bi, pi].unbind(-1)  # i, the earlier one
    w = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)
    h = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    inter = w * h
    hit = inter / ((area[bi, pi] + area[bi, pj]) - inter) > thresh
    src, dst = (bi * t + pi)[hit], (bi * t + pj)[hit]
    valid_flat = valid.reshape(-1)
    keep = valid_flat
    for _ in range(t + 1):  # converges in at most T rounds
        suppressed = torch.zeros(b * t, dtype=torch.int32).index_add_(0, dst, keep[src].to(torch.int32))
        new = valid_flat & (suppressed == 0)
        if torch.equal(new, keep):
            break
        keep = new
    return keep.reshape(b, t)


def _greedy_keep(suppress: Tensor, valid: Tensor) -> Tensor:
    """Greedy NMS on candidates in score order: ``keep (B, T)`` bool.

    ``suppress (B, T, T)`` as :func:`_suppression` returns it; ``valid (B, T)`` marks the
    candidates that take part (an invalid one is never kept and suppresses nothing).
    """
    if _checks.tracing():
        carried = (valid.clone(), torch.ones((), dtype=torch.bool, device=valid.device))
        if torch.compiler.is_dynamo_compiling():
            keep, _ = torch.while_loop(
                lambda k, c: _nms_round_pending(k, c, suppress, valid),
                lambda k, c: _nms_round(k, c, suppress, valid),
                carried,
            )
        else:
            # torch.export: the operator itself. torch.while_loop would run it through a
            # torch.compile whose cache, shared by every export in the process, adds the
            # guards of earlier exports to this one.
            keep, _ = while_loop_op(_nms_round_pending, _nms_round, carried, (suppress, valid))
        return keep
    keep = valid
    for _ in range(valid.shape[1] + 1):  # converges in at most T rounds
        new, _ = _nms_round(keep, keep, suppress, valid)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def _nms_round(keep: Tensor, changed: Tensor, suppress: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """One round of :func:`_greedy_keep`: the new ``keep`` and whether it changed."""
    new = valid & ~(suppress & keep.unsqueeze(1)).any(2)
    return new, (new != keep).any()


def _nms_round_pending(keep: Tensor, changed: Tensor, suppress: Tensor, valid: Tensor) -> Tensor:
    return changed.clone()


# ------------------------------------------------------------------ box_nms
def _check_index_arg(name: str, value: object, k: int, low: int) -> int:
    value = int(_checks.check_number(name, value, integer=True))
    if not low <= value < k:
        raise ValueError(f"{name} must be in [{low}, {k}) for rows of {k} values, got {value}")
    return value


def _check_format(name: str, value: object) -> str:
    try:
        return _checks.parse_fmt(value)
    except ValueError:
        raise ValueError(f"{name} must be 'corner'/'xyxy' or 'center'/'cxcywh', got {value!r}") from None


def _check_thresh(name: str, value: object) -> float:
    return float(_checks.check_number(name, value))


def _check_topk(value: object) -> int:
    value = int(_checks.check_number("topk", value, integer=True))
    if value == 0 or value < -1:
        raise ValueError(f"topk must be -1 (no limit) or >= 1, got {value}")
    return value


def box_nms(
    data: Tensor,
    overlap_thresh: float = 0.5,
    valid_thresh: float = 0.0,
    topk: int = -1,
    coord_start: int = 2,
    score_index: int = 1,
    id_index: int = -1,
    background_id: int = -1,
    force_suppress: bool = False,
    in_format: str = "corner",
    out_format: str = "corner",
) -> Tensor:
    """Non-maximum suppression of MXNet's ``contrib.box_nms``, batched.

    A row is valid when ``row[score_index] > valid_thresh`` and, with ``id_index >= 0``,
    ``row[id_index] != background_id``. Valid rows are sorted by descending score
    (stable: the earlier row first on ties) and the first ``topk`` (all with -1) are
    suppressed greedily: a row is dropped when a kept, higher-ranked row overlaps it by
    IoU ``> overlap_thresh`` (only rows with the same id count, unless
    ``force_suppress`` or ``id_index < 0``). The output holds the survivors first, in
    score order, with their coordinates in ``out_format``; every other row is all -1.

    Args:
        data (Tensor[B, N, K]): rows of ``K >= 5`` values (any leading dims, or ``(N, K)``).
        overlap_thresh (float): IoU above which the lower-scored box is suppressed.
        valid_thresh (float): rows with a score not above it are dropped.
        topk (int): number of sorted valid rows that take part, -1 for all.
        coord_start (int): column of the first of the 4 coordinates.
        score_index (int): column of the score.
        id_index (int): column of the class id, -1 for none (class-agnostic).
        background_id (int): id of rows to drop (with ``id_index >= 0``); -1 for none but
            rows whose id is -1.
        force_suppress (bool): suppress across ids.
        in_format, out_format (str): ``'corner'``/``'xyxy'`` or ``'center'``/``'cxcywh'``.

    Returns:
        Tensor[B, N, K]: dtype of ``data``; float16/bfloat16 are compared in float32.

    Host reads: the greedy suppression repeats keep-rounds until nothing changes (at most
    ``topk + 1``, usually a handful); eager mode reads one flag back per round, also on an
    accelerator. Under ``torch.compile``/``torch.export`` the rounds are a
    ``torch.while_loop``: no graph break, but PyTorch 2.14's compiled loop still reads its
    condition once per round on an accelerator (an exported ONNX ``Loop`` runs inside the
    runtime). torchvision's CUDA ``nms`` likewise copies its suppression mask to the host
    once per call.

    Example:
        >>> import torch
        >>> rows = torch.tensor([[[0, 0.9, 0, 0, 10, 10], [0, 0.8, 1, 1, 10, 10], [1, 0.7, 1, 1, 10, 10]]])
        >>> box_nms(rows, id_index=0)
        tensor([[[ 0.0000,  0.9000,  0.0000,  0.0000, 10.0000, 10.0000],
                 [ 1.0000,  0.7000,  1.0000,  1.0000, 10.0000, 10.0000],
                 [-1.0000, -1.0000, -1.0000, -1.0000, -1.0000, -1.0000]]])
    """
    data = _checks.check_float("data", data)
    if data.dim() < 2:
        raise ValueError(f"data must be (B, N, K) or (N, K), got shape {_checks.shape_str(data)}")
    k = data.shape[-1]
    if k < 5:
        raise ValueError(
            f"data must have rows of at least 5 values (score and box), got shape {_checks.shape_str(data)}"
        )
    overlap_thresh = _check_thresh("overlap_thresh", overlap_thresh)
    valid_thresh = _check_thresh("valid_thresh", valid_thresh)
    topk = _check_topk(topk)
    coord_start = _check_index_arg("coord_start", coord_start, k - 3, 0)
    score_index = _check_index_arg("score_index", score_index, k, 0)
    id_index = _check_index_arg("id_index", id_index, k, -1)
    background_id = int(_checks.check_number("background_id", background_id, integer=True))
    force_suppress = _checks.check_bool("force_suppress", force_suppress)
    in_fmt = _check_format("in_format", in_format)
    out_fmt = _check_format("out_format", out_format)

    shape = data.shape
    x = data.flatten(0, -3) if data.dim() > 2 else data.unsqueeze(0)  # (B, N, K)
    work = _compute_dtype(data.dtype)
    score = x[..., score_index].to(work)  # (B, N)
    valid = score > valid_thresh  # NaN is never valid
    if id_index >= 0:
        valid = valid & (x[..., id_index] != background_id)
    key = torch.where(valid, score, float("-inf"))
    n = x.shape[1]
    t, pad = _candidate_count(topk, n)
    if pad:  # topk rows of -1 that are never valid: there are always topk candidates
        key = torch.cat([key, key.new_full((x.shape[0], pad), float("-inf"))], dim=1)
        valid = torch.cat([valid, valid.new_zeros((x.shape[0], pad))], dim=1)
        x = torch.cat([x, x.new_full((x.shape[0], pad, k), EMPTY)], dim=1)
    rank = torch.arange(key.shape[1], device=x.device).expand(x.shape[0], -1)
    _, order = _stable_topk(key, rank, t)  # (B, T): row indices by descending score, stable
    rows = x.gather(1, order.unsqueeze(-1).expand(-1, -1, k))  # (B, T, K)
    valid = valid.gather(1, order)
    boxes = rows[..., coord_start : coord_start + 4].to(work)  # (B, T, 4)
    corner, area = _corner_and_area(boxes, in_fmt)
    ids = rows[..., id_index] if id_index >= 0 and not force_suppress else None
    keep = _nms_keep(corner, area, overlap_thresh, ids, valid)  # (B, T)

    if in_fmt != out_fmt:
        boxes = _convert(boxes, corner, out_fmt)
        rows = torch.cat([rows[..., :coord_start], boxes.to(x.dtype), rows[..., coord_start + 4 :]], dim=-1)
    rows = torch.where(keep.unsqueeze(-1), rows, EMPTY)
    # Survivors to the front in score order, the other candidates (now all -1) after them.
    dest = _survivors_first(keep)  # (B, T)
    out = x.new_full((x.shape[0], n + t, k), EMPTY).scatter(1, dest.unsqueeze(-1).expand(-1, -1, k), rows)
    return out[:, :n].reshape(shape)


def _candidate_count(topk: int, n: int) -> tuple[int, int]:
    """``(T, pad)``: how many sorted candidates take part, out of ``n`` rows and ``pad`` rows of
    padding. ``topk < 0`` takes all. With a concrete ``n`` (eager), ``T = min(topk, n)``; with
    a symbolic one (compile, export), ``T = topk`` over ``topk`` rows of padding, so that no
    size depends on a minimum the shape solver cannot reason about."""
    if topk < 0:
        return n, 0
    if isinstance(n, int):
        return min(topk, n), 0
    return topk, topk


def _survivors_first(keep: Tensor) -> Tensor:
    """Destination of each candidate, ``(B, T)``, a permutation of ``[0, T)`` per row: the kept
    ones in their order first, then the others in theirs."""
    kept_rank = keep.cumsum(1) - 1
    dropped_rank = keep.sum(1, keepdim=True) + (~keep).cumsum(1) - 1
    return torch.where(keep, kept_rank, dropped_rank)


def _convert(boxes: Tensor, corner: Tensor, out_fmt: str) -> Tensor:
    """Boxes in ``out_fmt`` from their input form and its corner form (MXNet's formulas)."""
    if out_fmt == "corner":
        return corner
    x1, y1, x2, y2 = corner.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


# ------------------------------------------------------------------ RPN proposals
def rpn_proposal(
    anchor: Tensor,
    score: Tensor,
    bbox_pred: Tensor,
    img: Tensor,
    clip: float | None,
    min_size: float,
    stds: Sequence[float],
) -> Tensor:
    """Region proposals before NMS, as GluonCV's ``RPNProposal``.

    Boxes are decoded from ``bbox_pred`` and corner ``anchor`` (:func:`~detblocks.coder.decode_boxes`
    with ``stds``, ``clip`` and ``convert_anchor=True``) and clipped to the image; a box
    whose width or height (``xmax - xmin + 1``) is below ``min_size`` gets score -1 and
    box -1. So does a row whose score or box is NaN (GluonCV let those through).

    Args:
        anchor (Tensor[B, N, 4]): corner anchors; batch size 1 broadcasts.
        score (Tensor[B, N, 1]): objectness scores.
        bbox_pred (Tensor[B, N, 4]): predicted offsets.
        img (Tensor[B, C, H, W]): the images; only their size is read.
        clip (float | None): cap of the scaled width/height deltas before ``exp``.
        min_size (float): smallest width and height kept, in pixels ("+1" convention).
        stds (sequence of 4 floats): scale of the offsets.

    Returns:
        Tensor[B, N, 5]: ``[score, xmin, ymin, xmax, ymax]`` per anchor, in the promoted dtype.

    Example:
        >>> import torch
        >>> anchor = torch.tensor([[[0.0, 0.0, 15.0, 15.0], [0.0, 0.0, 3.0, 3.0]]])
        >>> rpn_proposal(anchor, torch.tensor([[[0.9], [0.8]]]), torch.zeros(1, 2, 4),
        ...              torch.zeros(1, 3, 32, 32), clip=None, min_size=8, stds=(1.0, 1.0, 1.0, 1.0))
        tensor([[[ 0.9000,  0.0000,  0.0000, 15.0000, 15.0000],
                 [-1.0000, -1.0000, -1.0000, -1.0000, -1.0000]]])
    """
    bbox_pred = _checks.check_boxes("bbox_pred", bbox_pred, 3, "(B, N, 4)")
    anchor = _checks.check_boxes("anchor", anchor, 3, "(B, N, 4) or (1, N, 4)")
    score = _checks.check_float("score", score)
    _checks.check_rank("score", score, 3, "(B, N, 1)")
    if score.shape[-1] != 1:
        raise ValueError(f"score must be (B, N, 1), got shape {_checks.shape_str(score)}")
    _checks.check_batch(("bbox_pred", bbox_pred), ("score", score))
    _checks.check_dim("score", score, 1, bbox_pred.shape[1], "N", "bbox_pred")
    if anchor.shape[0] not in (1, bbox_pred.shape[0]):
        _checks.check_batch(("bbox_pred", bbox_pred), ("anchor", anchor))
    _checks.check_dim("anchor", anchor, 1, bbox_pred.shape[1], "N", "bbox_pred")
    img = _checks.check_tensor("img", img)
    _checks.check_rank("img", img, 4, "(B, C, H, W)")
    min_size = float(_checks.check_number("min_size", min_size))
    # Zero means written out: torch.compile(dynamic=True) cannot read the floats of a default tuple.
    roi = decode_boxes(
        bbox_pred, anchor, stds, (0.0, 0.0, 0.0, 0.0), convert_anchor=True, clip=clip
    )  # (B, N, 4)
    roi = clip_to_image(roi, img)
    xmin, ymin, xmax, ymax = roi.unbind(-1)
    invalid = ((xmax - xmin + 1.0) < min_size) | ((ymax - ymin + 1.0) < min_size)  # (B, N)
    invalid = invalid | roi.isnan().any(-1) | score[..., 0].isnan()
    dtype = torch.promote_types(roi.dtype, score.dtype)
    score = torch.where(invalid.unsqueeze(-1), EMPTY, score.to(dtype))
    roi = torch.where(invalid.unsqueeze(-1), EMPTY, roi.to(dtype))
    return torch.cat([score, roi], dim=-1)


# ------------------------------------------------------------------ SSD detection output
_INT64_MIN = torch.iinfo(torch.int64).min


def _stable_topk(key: Tensor, rank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of ``key (B, L)`` per row, ties to the lower ``rank``, in that order.

    ``key`` holds no NaN (-inf marks entries that are not valid); ``rank (B, L)`` int64 is
    distinct among the valid entries of a row. Every entry strictly above the ``k``-th
    largest value is taken, then the lowest-ranked entries equal to it; the ``k`` taken
    are ordered by descending key, then ascending rank, then position, by counting
    (no sort whose tie order could differ between backends).

    Returns:
        (Tensor[B, k], Tensor[B, k]): the keys and ranks taken, in order.
    """
    top, pos_top = key.topk(k, dim=1)  # (B, k), descending
    tau = top[:, -1:]  # (B, 1), the k-th largest
    above = (top > tau).sum(1, keepdim=True)  # (B, 1): all of these are taken
    tie_key = torch.where(key == tau, -rank, _INT64_MIN)  # ties by ascending rank
    pos_tie = tie_key.topk(k, dim=1).indices  # (B, k)
    slot = torch.arange(k, device=key.device)
    pos = torch.where(slot < above, pos_top, pos_tie.gather(1, (slot - above).clamp(min=0)))  # (B, k)
    val, rk = key.gather(1, pos), rank.gather(1, pos)
    if not _checks.tracing():  # eagerly, the same order by three sorts of unique or stable keys
        order = pos.argsort(dim=1)
        order = order.gather(1, rk.gather(1, order).argsort(dim=1, stable=True))
        order = order.gather(1, val.gather(1, order).argsort(dim=1, descending=True, stable=True))
        return val.gather(1, order), rk.gather(1, order)
    # Final place of each: how many of the others come before it.
    vi, vj = val.unsqueeze(2), val.unsqueeze(1)  # (B, k, 1) this one, (B, 1, k) another
    ri, rj = rk.unsqueeze(2), rk.unsqueeze(1)
    pi, pj = pos.unsqueeze(2), pos.unsqueeze(1)
    before = (vj > vi) | ((vj == vi) & ((rj < ri) | ((rj == ri) & (pj < pi))))  # (B, k, k)
    place = before.sum(2)  # (B, k), a permutation of [0, k)
    return torch.empty_like(val).scatter(1, place, val), torch.empty_like(rk).scatter(1, place, rk)


def _entries_dense(scores: Tensor, thresh: float, k: int, pad: int = 0) -> tuple[Tensor, Tensor]:
    """The ``k`` best (class, anchor) entries above ``thresh`` of foreground ``scores (B, N, C)``:
    their scores (-inf where there are fewer) and class-major indices ``c * N + n`` (``pad``
    entries of padding, never valid, follow the real ones)."""
    b, n, c = scores.shape
    key = torch.where(scores > thresh, scores, float("-inf"))  # NaN is never valid
    key = key.transpose(1, 2).reshape(b, c * n)  # (B, C * N), class-major as GluonCV's rows
    if pad:
        key = torch.cat([key, key.new_full((b, pad), float("-inf"))], dim=1)
    rank = torch.arange(key.shape[1], device=scores.device).expand(b, -1)
    return _stable_topk(key, rank, k)


def _entries_compact(cls_preds: Tensor, work: torch.dtype, thresh: float, k: int) -> tuple[Tensor, Tensor]:
    """:func:`_entries_dense` of the softmax of ``cls_preds`` on the entries above ``thresh``
    only (eager CPU: a few percent of the scores of a trained detector pass 0.01). The
    softmax is taken a few images at a time; each row's values are those of the whole
    batch's softmax, so the result is the same, bit for bit."""
    b, n, c1 = cls_preds.shape
    c = c1 - 1
    step = max(1, _SOFTMAX_CHUNK_ELEMENTS // max(1, n * c1))
    vals, flats = [cls_preds.new_empty(0, dtype=work)], [torch.zeros(0, dtype=torch.int64)]
    for b0 in range(0, b, step):
        prob = torch.softmax(cls_preds[b0 : b0 + step].to(work), dim=-1)  # (b', N, C + 1)
        hit = prob > thresh
        hit[..., 0] = False  # background
        flat = hit.view(-1).nonzero().squeeze(1)  # (i * N + a) * (C + 1) + j + 1
        vals.append(prob.view(-1)[flat])
        flats.append(flat.add_(b0 * n * c1))
    val, flat = torch.cat(vals), torch.cat(flats)
    cell, j = flat.div(c1, rounding_mode="floor"), flat.remainder(c1).sub_(1)  # cell = i * N + a
    img = cell.div(n, rounding_mode="floor")
    rank = j.mul_(n).add_(cell.sub_(img * n))  # class-major index c * N + n
    counts = torch.bincount(img, minlength=b)  # (B,)
    width = max(int(counts.max()) if b else 0, k)
    col = torch.arange(val.shape[0]) - (counts.cumsum(0) - counts)[img]
    key = torch.full((b, width), float("-inf"), dtype=work)
    key[img, col] = val
    # Padding ranks follow every real one (c * n + column), distinct within a row.
    ranks_b = torch.arange(width).expand(b, width) + c * n
    ranks_b = ranks_b.index_put((img, col), rank)
    return _stable_topk(key, ranks_b, k)


def _check_positive_int(name: str, value: object) -> int:
    return int(_checks.check_number(name, value, low=1, integer=True))


def _check_nms_thresh(value: object) -> float:
    value = float(_checks.check_number("nms_thresh", value))
    if not 0.0 < value < 1.0:
        raise ValueError(f"nms_thresh must be in (0, 1), got {value!r}")
    return value


def ssd_detection_output(
    cls_preds: Tensor,
    box_preds: Tensor,
    anchors: Tensor,
    stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
    nms_thresh: float = 0.45,
    nms_topk: int = 400,
    post_nms: int = 100,
    thresh: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor]:
    """SSD's inference output, as GluonCV's ``SSD.hybrid_forward`` computes it.

    GluonCV takes the softmax of ``cls_preds``, decodes every box
    (:func:`~detblocks.coder.decode_boxes` with ``stds``), forms one row
    ``[class, score, box]`` per (anchor, foreground class) with the score set to 0 where
    it is not above ``thresh`` (:func:`~detblocks.coder.decode_per_class`), concatenates
    the rows class by class, runs :func:`box_nms` with ``overlap_thresh=nms_thresh``,
    ``valid_thresh=thresh``, ``topk=nms_topk``, ``id_index=0`` (suppression within a
    class) and keeps the first ``post_nms`` rows. The result depends only on the
    ``nms_topk`` best entries above ``thresh``: they are taken straight from the scores
    (ties: lower class, then lower anchor first) and only their boxes are decoded.

    Args:
        cls_preds (Tensor[B, N, C + 1]): class logits, class 0 = background.
        box_preds (Tensor[B, N, 4]): predicted offsets.
        anchors (Tensor[B, N, 4]): center-format anchors; batch size 1 broadcasts.
        stds (sequence of 4 floats): scale of the offsets.
        nms_thresh (float): IoU above which a lower-scored box of the same class is
            suppressed, in ``(0, 1)``.
        nms_topk (int): entries that take part in the suppression.
        post_nms (int): rows returned per image.
        thresh (float): scores not above it are dropped.

    Returns:
        (Tensor[B, post_nms, 1], Tensor[B, post_nms, 1], Tensor[B, post_nms, 4]): ``ids``
        (foreground class ``0..C-1`` as a float, as GluonCV returns it), ``scores`` and
        corner ``bboxes``; rows past the detections are -1. Floating dtype: the promoted
        dtype of the inputs (float16/bfloat16 are computed in float32).

    On CPU in eager mode (without autograd) the entries above ``thresh`` are gathered
    first, a few images at a time; the result is the same (tested bit for bit).

    Host reads: as :func:`box_nms`, one flag per round of the suppression.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 3.0, 0.0], [0.0, 2.0, 0.0]]])  # 2 anchors, 2 classes
        >>> anchors = torch.tensor([[[5.0, 5.0, 10.0, 10.0], [6.0, 5.0, 10.0, 10.0]]])
        >>> ids, scores, boxes = ssd_detection_output(logits, torch.zeros(1, 2, 4), anchors, post_nms=3)
        >>> ids[..., 0], boxes[0, 0]
        (tensor([[ 0.,  1., -1.]]), tensor([ 0.,  0., 10., 10.]))
    """
    cls_preds = _checks.check_float("cls_preds", cls_preds)
    _checks.check_rank("cls_preds", cls_preds, 3, "(B, N, C + 1)")
    if cls_preds.shape[-1] < 2:
        raise ValueError(
            f"cls_preds must hold background and at least one class (C + 1 >= 2), "
            f"got shape {_checks.shape_str(cls_preds)}"
        )
    box_preds = _checks.check_boxes("box_preds", box_preds, 3, "(B, N, 4)")
    anchors = _checks.check_boxes("anchors", anchors, 3, "(B, N, 4) or (1, N, 4)")
    _checks.check_batch(("cls_preds", cls_preds), ("box_preds", box_preds))
    _checks.check_dim("box_preds", box_preds, 1, cls_preds.shape[1], "N", "cls_preds")
    if anchors.shape[0] not in (1, cls_preds.shape[0]):
        _checks.check_batch(("cls_preds", cls_preds), ("anchors", anchors))
    _checks.check_dim("anchors", anchors, 1, cls_preds.shape[1], "N", "cls_preds")
    stds, _ = _check_stds_means(stds, (0.0, 0.0, 0.0, 0.0))
    nms_thresh = _check_nms_thresh(nms_thresh)
    nms_topk = _check_positive_int("nms_topk", nms_topk)
    post_nms = _check_positive_int("post_nms", post_nms)
    thresh = _check_thresh("thresh", thresh)

    b, n, c1 = cls_preds.shape
    c = c1 - 1
    out_dtype = torch.promote_types(torch.promote_types(cls_preds.dtype, box_preds.dtype), anchors.dtype)
    work = _compute_dtype(out_dtype)
    k, pad = _candidate_count(nms_topk, c * n)
    if _checks.eager_cpu(cls_preds, box_preds, anchors):
        score, entry = _entries_compact(cls_preds, work, thresh, k)  # (B, k) each
    else:
        fg = torch.softmax(cls_preds.to(work), dim=-1)[..., 1:]  # (B, N, C)
        score, entry = _entries_dense(fg, thresh, k, pad)
    valid = score > float("-inf")
    # A 0-d divisor, at least 1: no division by zero without anchors (then every entry is padding).
    n1 = torch.full((), n, dtype=torch.int64, device=entry.device).clamp(min=1)
    cls, anchor_idx = entry // n1, entry % n1  # (B, k); padding entries give anchors in range
    pick = anchor_idx.unsqueeze(-1).expand(-1, -1, 4)
    preds = box_preds.gather(1, pick)  # (B, k, 4)
    anc = anchors.expand(b, -1, -1).gather(1, pick)
    boxes = decode_boxes(preds, anc, stds, (0.0, 0.0, 0.0, 0.0))  # (B, k, 4) corner, promoted dtype
    corner, area = _corner_and_area(boxes.to(work), "corner")
    keep = _nms_keep(corner, area, nms_thresh, cls, valid)  # (B, k)

    rows = torch.cat([cls.unsqueeze(-1).to(work), score.unsqueeze(-1), boxes.to(work)], dim=-1)  # (B, k, 6)
    rows = torch.where(keep.unsqueeze(-1), rows, EMPTY).to(out_dtype)
    # Survivors to the front in score order, the other candidates (now all -1) after them,
    # then post_nms rows of -1 so that there are always post_nms rows to take.
    dest = _survivors_first(keep)  # (B, k)
    out = rows.new_full((b, k + post_nms, 6), EMPTY)
    out = out.scatter(1, dest.unsqueeze(-1).expand(-1, -1, 6), rows)[:, :post_nms]  # (B, post_nms, 6)
    return out[..., 0:1], out[..., 1:2], out[..., 2:6]


# ------------------------------------------------------------------ modules
class BoxNMS(nn.Module):
    """MXNet's ``contrib.box_nms`` as a module (see :func:`box_nms`).

    forward ``data (B, N, K)`` -> ``(B, N, K)``: survivors first in score order, every
    other row -1.

    Example:
        >>> import torch
        >>> nms = BoxNMS(overlap_thresh=0.5, score_index=0, coord_start=1)
        >>> nms(torch.tensor([[[0.9, 0, 0, 10, 10], [0.8, 1, 1, 10, 10]]]))
        tensor([[[ 0.9000,  0.0000,  0.0000, 10.0000, 10.0000],
                 [-1.0000, -1.0000, -1.0000, -1.0000, -1.0000]]])
    """

    def __init__(
        self,
        overlap_thresh: float = 0.5,
        valid_thresh: float = 0.0,
        topk: int = -1,
        coord_start: int = 2,
        score_index: int = 1,
        id_index: int = -1,
        background_id: int = -1,
        force_suppress: bool = False,
        in_format: str = "corner",
        out_format: str = "corner",
    ) -> None:
        super().__init__()
        self.overlap_thresh = _check_thresh("overlap_thresh", overlap_thresh)
        self.valid_thresh = _check_thresh("valid_thresh", valid_thresh)
        self.topk = _check_topk(topk)
        self.coord_start = int(_checks.check_number("coord_start", coord_start, low=0, integer=True))
        self.score_index = int(_checks.check_number("score_index", score_index, low=0, integer=True))
        self.id_index = int(_checks.check_number("id_index", id_index, low=-1, integer=True))
        self.background_id = int(_checks.check_number("background_id", background_id, integer=True))
        self.force_suppress = _checks.check_bool("force_suppress", force_suppress)
        self.in_format = _check_format("in_format", in_format)
        self.out_format = _check_format("out_format", out_format)

    def forward(self, data: Tensor) -> Tensor:
        return box_nms(
            data,
            self.overlap_thresh,
            self.valid_thresh,
            self.topk,
            self.coord_start,
            self.score_index,
            self.id_index,
            self.background_id,
            self.force_suppress,
            self.in_format,
            self.out_format,
        )

    def extra_repr(self) -> str:
        return (
            f"overlap_thresh={self.overlap_thresh}, valid_thresh={self.valid_thresh}, topk={self.topk}, "
            f"coord_start={self.coord_start}, score_index={self.score_index}, id_index={self.id_index}, "
            f"background_id={self.background_id}, force_suppress={self.force_suppress}, "
            f"in_format={self.in_format!r}, out_format={self.out_format!r}"
        )


class RPNProposal(nn.Module):
    """Region proposals before NMS (see :func:`rpn_proposal`).

    forward ``(anchor (1 or B, N, 4) corner, score (B, N, 1), bbox_pred (B, N, 4), img (B, C, H, W))``
    -> ``(B, N, 5)`` rows ``[score, xmin, ymin, xmax, ymax]``, -1 for dropped boxes.

    Example:
        >>> import torch
        >>> prop = RPNProposal(clip=None, min_size=4, stds=(1.0, 1.0, 1.0, 1.0))
        >>> prop(torch.tensor([[[0.0, 0.0, 7.0, 7.0]]]), torch.tensor([[[0.7]]]), torch.zeros(1, 1, 4),
        ...      torch.zeros(1, 3, 16, 16))
        tensor([[[0.7000, 0.0000, 0.0000, 7.0000, 7.0000]]])
    """

    def __init__(self, clip: float | None, min_size: float, stds: Sequence[float]) -> None:
        super().__init__()
        self.clip = None if clip is None else float(_checks.check_number("clip", clip))
        self.min_size = float(_checks.check_number("min_size", min_size))
        self.stds, _ = _check_stds_means(stds, (0.0, 0.0, 0.0, 0.0))

    def forward(self, anchor: Tensor, score: Tensor, bbox_pred: Tensor, img: Tensor) -> Tensor:
        return rpn_proposal(anchor, score, bbox_pred, img, self.clip, self.min_size, self.stds)

    def extra_repr(self) -> str:
        return f"clip={self.clip}, min_size={self.min_size}, stds={self.stds}"


class SSDDetectionOutput(nn.Module):
    """SSD's inference output from logits, offsets and anchors (see :func:`ssd_detection_output`).

    forward ``(cls_preds (B, N, num_classes + 1), box_preds (B, N, 4), anchors (1 or B, N, 4) center)``
    -> ``(ids (B, post_nms, 1), scores (B, post_nms, 1), bboxes (B, post_nms, 4))``, -1 past
    the detections.

    Example:
        >>> import torch
        >>> tail = SSDDetectionOutput(num_classes=2, post_nms=4)
        >>> ids, scores, boxes = tail(torch.randn(1, 10, 3), torch.zeros(1, 10, 4), torch.rand(1, 10, 4))
        >>> ids.shape, scores.shape, boxes.shape
        (torch.Size([1, 4, 1]), torch.Size([1, 4, 1]), torch.Size([1, 4, 4]))
    """

    def __init__(
        self,
        num_classes: int,
        stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        nms_thresh: float = 0.45,
        nms_topk: int = 400,
        post_nms: int = 100,
        thresh: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.stds, _ = _check_stds_means(stds, (0.0, 0.0, 0.0, 0.0))
        self.nms_thresh = _check_nms_thresh(nms_thresh)
        self.nms_topk = _check_positive_int("nms_topk", nms_topk)
        self.post_nms = _check_positive_int("post_nms", post_nms)
        self.thresh = _check_thresh("thresh", thresh)

    def forward(self, cls_preds: Tensor, box_preds: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls_preds = _checks.check_float("cls_preds", cls_preds)
        _checks.check_rank("cls_preds", cls_preds, 3, "(B, N, C + 1)")
        _checks.check_dim("cls_preds", cls_preds, 2, self.num_classes + 1, "C + 1", "num_classes")
        return ssd_detection_output(
            cls_preds,
            box_preds,
            anchors,
            self.stds,
            self.nms_thresh,
            self.nms_topk,
            self.post_nms,
            self.thresh,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, stds={self.stds}, nms_thresh={self.nms_thresh}, "
            f"nms_topk={self.nms_topk}, post_nms={self.post_nms}, thresh={self.thresh}"
        )
