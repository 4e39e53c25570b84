"""The steps SimOTA and DynamicSoftLabel share: candidates, pair costs, dynamic k, conflicts.

Both rules (mmdet 3.3.0 ``SimOTAAssigner`` and ``DynamicSoftLabelAssigner``) work per
image on its *candidate* priors (inside some ground truth, or in some ground truth's
centre region): every real ground truth ``g`` of the image gets a cost and an IoU with
every candidate; ``k_g = max(1, int(sum of g's top-``topk`` IoUs))``; ``g`` picks its
``k_g`` cheapest candidates; a prior picked by several ground truths goes to the one of
*all* the image's ground truths for which it is cheapest.

Layout
------
Ground truths are *rows* ``(img, row)``: in eager mode the real rows only (two host
reads: their number per image, and the rows), under ``torch.compile``/``torch.export``
every padded row with a mask. Candidates are *columns* of a per-image layout ``(B, L)``:
in eager mode each image's candidate priors, in prior order, padded to the largest count
``L`` (two host reads: the count per image, and the candidates); traced, ``L = N`` and
every prior is a column with a mask. The rule evaluates its cost and IoU on blocks of
rows x columns: in eager mode consecutive images' rows against as many columns as the
widest of those images has (:data:`CHUNK_ELEMENTS` pairs at a time), traced every row
against all ``L``, so working memory grows with the real ground truths times
the candidates, never with ``B x M x N x C``: the class part of a cost needs only the
ground truth's class column and one per-candidate sum over classes.

Selection
---------
Each block's top-``k`` runs on unique int64 keys, ``(order-preserving bits of the
float32 cost) << 32 | prior index``, so equal costs go to the lower prior index, and the
static bound ``k <= topk`` (an IoU is at most 1) keeps shapes static. Conflicts take the
per-column minimum of ``cost bits << 32 | ground-truth row`` over every row of the image
(a scatter-min into ``(B, L)``), so equal costs go to the lower row. Both paths (eager
and traced) run the same operations on the same values and pick the same pairs.

Native kernel
-------------
In eager mode on CPU, ``detblocks._native_dynk`` (when built; ``DETBLOCKS_NATIVE=0``
turns it off) computes a block's IoUs with each row's k (:func:`block_iou`) and a
block's keys, selection and conflict keys (:func:`dynamic_k_match`) in one pass each,
with the same float32 and integer operations as the PyTorch path: the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detblocks import _kernels
from detblocks._checks import (
    check_batch,
    check_boxes,
    check_dim,
    check_float,
    check_in_range,
    check_rank,
    eager_cpu,
    shape_str,
    tracing,
)
from detblocks.assign._common import BACKGROUND, Assignment, check_ground_truth, real_rows

#: The native kernel of a block's IoUs and dynamic k (``None``: not built, or turned off).
_native = _kernels.load("_native_dynk")
#: The largest ``topk`` the native kernel takes.
_NATIVE_TOPK = 64

#: Pairs (ground truth x candidate) evaluated at once by the eager path: 4 MiB per
#: float32 plane of a block. Smaller blocks fit the cache better on an idle machine but
#: multiply the parallel regions, each of which waits for both threads on a busy one.
CHUNK_ELEMENTS: int = 1 << 20

#: Key of a pair that is not a candidate: above every real key.
_NO_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


class Rows(NamedTuple):
    """Ground-truth rows taking part: ``img``, ``row`` (Tensor[R] int64) and ``ok``
    (Tensor[R] bool, traced only; ``None`` when every row is real); ``per_image`` the
    number of rows of each image (eager only, on the host)."""

    img: Tensor
    row: Tensor
    ok: Tensor | None
    per_image: list[int] | None = None


class Columns(NamedTuple):
    """Per-image candidate layout: ``prior (Tensor[B, L] int64)`` the prior of each column,
    ``ok (Tensor[B, L] bool)`` whether it is a candidate; the flat candidate list ``img``,
    ``slot`` (Tensor[K] int64: image and column) and ``prior_k`` (Tensor[K]), with ``ok_k``
    (Tensor[K] bool, or ``None`` when every listed column is a candidate)."""

    prior: Tensor
    ok: Tensor
    img: Tensor
    slot: Tensor
    prior_k: Tensor
    ok_k: Tensor | None
    widths: list[int] | None = None  # candidates per image (eager only, on the host)


def gt_rows(valid: Tensor) -> Rows:
    """The rows of ``valid (Tensor[B, M] bool)``: the true ones (eager, one host read) or
    all of them with ``valid`` as the mask (traced)."""
    b, m = valid.shape
    if tracing():
        img = torch.arange(b, device=valid.device)[:, None].expand(b, m).reshape(-1)
        row = torch.arange(m, device=valid.device).expand(b, m).reshape(-1)
        return Rows(img, row, valid.reshape(-1))
    per_image = valid.sum(1).tolist()  # host read: the rows of each image
    flat = valid.reshape(-1).nonzero().squeeze(1)  # host read: the rows
    return Rows(flat // m, flat % m, None, per_image)


def row_blocks(rows: Rows, width: int) -> list[slice]:
    """Slices of rows evaluated together against ``width`` columns."""
    r = rows.img.shape[0]
    if tracing():
        return [slice(0, r)]
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(i, min(i + step, r)) for i in range(0, r, step)]


def column_blocks(rows: Rows, cols: Columns) -> list[tuple[slice, int]]:
    """Blocks of rows evaluated together, each with the number of leading columns that
    holds every candidate of its images: eager, consecutive images (rows come image by
    image) while a block stays within :data:`CHUNK_ELEMENTS` pairs, so an image with few
    candidates is not evaluated against the widest image's columns; traced, every row
    against every column."""
    width = cols.prior.shape[1]
    if tracing() or rows.per_image is None or cols.widths is None:
        return [(blk, width) for blk in row_blocks(rows, width)]
    blocks: list[tuple[slice, int]] = []
    start, taken, cols_needed = 0, 0, 0
    for count, w in zip(rows.per_image, cols.widths):
        if count == 0:
            continue
        w = min(max(w, 1), width)
        if taken and (taken + count) * max(cols_needed, w) > CHUNK_ELEMENTS:
            blocks.append((slice(start, start + taken), cols_needed))
            start, taken, cols_needed = start + taken, 0, 0
        if count * w > CHUNK_ELEMENTS:  # one image alone is too large: its rows in steps
            step = max(1, CHUNK_ELEMENTS // max(w, 1))
            blocks.extend(
                (slice(i, min(i + step, start + count)), w) for i in range(start, start + count, step)
            )
            start += count
            continue
        taken, cols_needed = taken + count, max(cols_needed, w)
    if taken:
        blocks.append((slice(start, start + taken), cols_needed))
    return blocks


def region_mask(rows: Rows, inside: Callable[[slice], Tensor], b: int, n: int) -> Tensor:
    """``Tensor[B, N] bool``: priors for which ``inside(block) (Tensor[R_block, N] bool)``
    holds for some row of their image."""
    hits = torch.zeros((b, n), dtype=torch.int32, device=rows.img.device)
    for blk in row_blocks(rows, n):
        mask = inside(blk)
        if rows.ok is not None:
            mask = mask & rows.ok[blk, None]
        hits.index_add_(0, rows.img[blk], mask.to(torch.int32))
    return hits > 0


def candidate_columns(region: Tensor) -> Columns:
    """The per-image column layout of the candidate priors ``region (Tensor[B, N] bool)``."""
    b, n = region.shape
    dev = region.device
    if tracing():
        prior = torch.arange(n, device=dev).expand(b, n)
        img = torch.arange(b, device=dev)[:, None].expand(b, n).reshape(-1)
        flat_prior = prior.reshape(-1)
        return Columns(prior, region, img, flat_prior, flat_prior, region.reshape(-1))
    counts = region.sum(1)  # (B,)
    widths = counts.tolist()  # host read: the candidates of each image
    width = max(widths, default=0)
    idx = region.nonzero()  # (K, 2) in (image, prior) order
    img, prior_k = idx[:, 0], idx[:, 1]
    starts = torch.cumsum(counts, 0) - counts  # (B,)
    slot = torch.arange(img.shape[0], device=dev) - starts[img]
    prior = torch.zeros((b, width), dtype=torch.int64, device=dev)
    prior[img, slot] = prior_k
    ok = torch.arange(width, device=dev) < counts[:, None]
    return Columns(prior, ok, img, slot, prior_k, None, widths)


def per_candidate(
    cols: Columns, scores: Tensor, fn: Callable[[Tensor], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """``fn`` over the float32 class scores of the candidates, ``(Tensor[K_block, C])`` ->
    two ``Tensor[K_block]``, in blocks of :data:`CHUNK_ELEMENTS` scores in eager mode
    (``fn`` may work in place); returns the two ``Tensor[K]``."""
    b, n, c = scores.shape
    flat = cols.img * n + cols.prior_k  # (K,)
    table = scores.reshape(b * n, c)
    if tracing():
        return fn(table.index_select(0, flat).to(torch.float32))
    k = flat.shape[0]
    step = max(1, CHUNK_ELEMENTS // max(c, 1))
    parts = [
        fn(table.index_select(0, flat[i : i + step]).to(torch.float32)) for i in range(0, max(k, 1), step)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def scatter_columns(cols: Columns, values: Tensor, fill: float) -> Tensor:
    """``Tensor[B, L]`` of the per-candidate ``values (Tensor[K])``, ``fill`` elsewhere."""
    b, width = cols.prior.shape
    out = torch.full((b, width), fill, dtype=values.dtype, device=values.device)
    out[cols.img, cols.slot] = values
    return out


def cost_bits(cost: Tensor) -> Tensor:
    """Order-preserving int64 image of float32 ``cost`` (``-0.0`` as ``+0.0``): comparing
    the results compares the costs, ``+inf`` above every finite cost."""
    bits = (cost + 0.0).view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)


def _smallest(keys: Tensor, k: int, largest: bool = False) -> tuple[Tensor, Tensor]:
    """``topk`` over the last axis (sorted) with ``k`` possibly above its size: traced,
    ``k`` entries that lose to every real one are appended (the sizes are symbolic); eager,
    ``k`` is clipped to the size."""
    if tracing():
        fill = (-1.0 if keys.is_floating_point() else -1) if largest else _NO_KEY
        pad = torch.full((keys.shape[0], k), fill, dtype=keys.dtype, device=keys.device)
        return torch.cat([keys, pad], 1).topk(k, dim=1, largest=largest, sorted=True)
    return keys.topk(min(k, keys.shape[1]), dim=1, largest=largest, sorted=True)


#: ``pair_costs(block, w)``: ``(iou, cost_of, k)``, ``k`` the rows' dynamic k when
#: already computed (by :func:`block_iou`), else ``None``.
PairFn = Callable[[slice, int], tuple[Tensor, Callable[[Tensor], Tensor], Tensor | None]]


def block_iou(
    gt: Tensor, img: Tensor, boxes: Tensor, ok: Tensor, w: int, topk: int
) -> tuple[Tensor, Tensor | None]:
    """The IoU (:func:`pair_iou`) of the rows ``gt (Tensor[R, 4])`` of images ``img
    (Tensor[R])`` with the predicted boxes of the first ``w`` columns of their images,
    ``boxes (Tensor[B, L, 4])``: ``Tensor[R, w]``. With the native kernel (eager float32
    CPU, ``topk`` up to 64) also each row's dynamic k over the candidate columns ``ok
    (Tensor[B, L] bool)``, exactly as :func:`dynamic_k_match` computes it; else ``None``
    in its place."""
    if (
        _native is None
        or topk > _NATIVE_TOPK
        or not (gt.dtype == boxes.dtype == torch.float32)
        or not eager_cpu(gt, boxes)
    ):
        planes = boxes[:, :w].index_select(0, img).unbind(-1)  # 4 x (R, w)
        return pair_iou(*planes, *(gt[:, i : i + 1] for i in range(4))), None
    gt, img, boxes, ok = gt.contiguous(), img.contiguous(), boxes.contiguous(), ok.contiguous()
    rows = gt.shape[0]
    iou = torch.empty((rows, w), dtype=torch.float32)
    k = torch.empty(rows, dtype=torch.int32)
    _native.iou_k(
        gt.data_ptr(),
        img.data_ptr(),
        boxes.data_ptr(),
        ok.data_ptr(),
        rows,
        boxes.shape[1],
        w,
        topk,
        iou.data_ptr(),
        k.data_ptr(),
        torch.get_num_threads(),
    )
    return iou, k


def dynamic_k_match(
    rows: Rows,
    cols: Columns,
    pair_costs: PairFn,
    topk: int,
    stand_ins: Sequence[float] = (),
    recheck: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Dynamic-k matching: ``Tensor[B, L]`` int64, the ground-truth row each candidate
    column goes to, ``-1`` for none.

    ``pair_costs(block, w)`` gives ``(iou, cost_of, k)`` for the rows ``block`` (a slice of
    ``rows``) against the first ``w`` columns of their images: ``iou (Tensor[R_block, w])``
    float32, ``cost_of(k)`` the float32 costs ``Tensor[R_block, w]`` given the rows' dynamic k
    (``Tensor[R_block]``), and ``k`` itself when already computed (else ``None``); values
    at non-candidate columns are never read. Per row:
    ``k = max(1, int(sum of the top-topk IoUs))`` (summed in descending order, one after
    another, as mmdet's ``sum(0)`` over ``topk``'s output), then the ``k`` lowest costs
    (lower prior on ties). A column picked by several rows goes to the lowest cost over
    every row of its image (lower row on ties), one picked once to its picker.

    Eager fast paths may leave costs they can prove irrelevant uncomputed, as one of the
    ``stand_ins``: a value at or below every true cost it stands for and above every
    cost its row's selection reaches. A column picked several times whose lowest cost is
    such a stand-in gets its exact key ``cost bits << 32 | row`` from ``recheck(flat
    columns)`` (one host read per call).
    """
    b, width = cols.prior.shape
    dev = cols.prior.device
    best = torch.full((b, width), _NO_KEY, dtype=torch.int64, device=dev)  # conflict keys
    picks_at, picks_row, picks_ok = [], [], []
    native = _native is not None and topk <= _NATIVE_TOPK and rows.ok is None and eager_cpu(cols.prior)
    for blk, w in column_blocks(rows, cols):
        img, row = rows.img[blk], rows.row[blk]
        ok = cols.ok[:, :w].index_select(0, img)  # (R, w)
        if rows.ok is not None:
            ok = ok & rows.ok[blk, None]
        iou, cost_of, k = pair_costs(blk, w)  # (R, w), k (R,) or None
        if k is None:
            top = _smallest(torch.where(ok, iou, -1.0), topk, largest=True).values.clamp(min=0)
            total = top[:, 0] if top.shape[1] else torch.zeros_like(iou[:, 0])
            for i in range(1, top.shape[1]):
                total = total + top[:, i]
            k = total.to(torch.int32).clamp(min=1)  # (R,) mmdet's int() then clamp(min=1)
        cost = cost_of(k)
        if native and cost.dtype == torch.float32:
            indices, chosen = _native_select(cost, img, row, cols, w, k, min(topk, w), best)
        else:
            # (R, w) cost bits above 32 bits of prior or row; _NO_KEY (all ones) where not
            # a candidate, which an OR leaves as it is
            high = cost_bits(cost).bitwise_left_shift_(32).masked_fill_(~ok, _NO_KEY)
            sel = _smallest(high | cols.prior[:, :w].index_select(0, img), topk)
            chosen = (torch.arange(sel.values.shape[1], device=dev) < k[:, None]) & (sel.values != _NO_KEY)
            indices = sel.indices
            conflict = high.bitwise_or_(row[:, None])
            best.scatter_reduce_(0, img[:, None].expand_as(conflict), conflict, "amin")
        at = img[:, None] * width + indices  # (R, topk) flat column
        picks_at.append(at.clamp(max=b * width - 1))  # traced padding entries are never chosen
        picks_row.append(row[:, None].expand_as(at))
        picks_ok.append(chosen)
    at = torch.cat(picks_at).reshape(-1)
    chosen = torch.cat(picks_ok).reshape(-1)
    picker = torch.where(chosen, torch.cat(picks_row).reshape(-1), -1)
    count = torch.zeros(b * width, dtype=torch.int32, device=dev).index_add_(0, at, chosen.to(torch.int32))
    single = torch.full((b * width,), -1, dtype=torch.int64, device=dev)
    single = single.scatter_reduce(0, at, picker, "amax")
    best = best.reshape(-1)
    if stand_ins and recheck is not None and not tracing():
        values = cost_bits(torch.tensor(list(stand_ins), dtype=torch.float32, device=dev)) << 32
        lowest = (best & ~_LOW32)[:, None] == values  # (B * L, stand-ins)
        need = ((count > 1) & lowest.any(1)).nonzero().squeeze(1)  # host read
        if need.numel():
            best = best.index_put((need,), recheck(need))
    cheapest = (best & _LOW32).to(torch.int64)
    owner = torch.where(count > 1, cheapest, single)
    return owner.view(b, width)


def _native_select(
    cost: Tensor, img: Tensor, row: Tensor, cols: Columns, w: int, k: Tensor, t: int, best: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`dynamic_k_match`'s keys, selection and conflict keys of one block by the
    native kernel (the same integers): the ``t`` selected columns of each row in key
    order and which of them are chosen; ``best`` is lowered in place."""
    cost, k = cost.contiguous(), k.to(torch.int32).contiguous()
    img, row = img.contiguous(), row.contiguous()
    indices = torch.empty((cost.shape[0], t), dtype=torch.int64)
    chosen = torch.empty((cost.shape[0], t), dtype=torch.bool)
    _native.select(
        cost.data_ptr(),
        img.data_ptr(),
        row.data_ptr(),
        cols.ok.data_ptr(),
        cols.prior.data_ptr(),
        k.data_ptr(),
        cost.shape[0],
        cols.prior.shape[1],
        w,
        t,
        indices.data_ptr(),
        chosen.data_ptr(),
        best.data_ptr(),
        torch.get_num_threads(),
    )
    return indices, chosen


def to_priors(cols: Columns, owner: Tensor, n: int) -> Tensor:
    """``Tensor[B, N]`` int64: the column values ``owner (Tensor[B, L])`` at their priors,
    ``-1`` at priors that are not candidates."""
    b = owner.shape[0]
    src = torch.where(cols.ok, owner, -1)
    out = torch.full((b, n), -1, dtype=torch.int64, device=owner.device)
    return out.scatter_reduce(1, cols.prior, src, "amax")


def aligned_iou(a: Tensor, g: Tensor) -> Tensor:
    """mmdet's ``bbox_overlaps`` (``eps=1e-6``) of boxes ``a`` and ``g`` (broadcast,
    ``Tensor[..., 4]``), in mmdet's order of float operations."""
    return pair_iou(*a.unbind(-1), *g.unbind(-1))


def pair_iou(ax1: Tensor, ay1: Tensor, ax2: Tensor, ay2: Tensor, gx1: Tensor, gy1: Tensor, gx2: Tensor,
             gy2: Tensor) -> Tensor:  # fmt: skip
    """mmdet's ``bbox_overlaps`` from coordinate planes (broadcast), in its operation order:
    areas, clamped intersection, ``union = max(area_a + area_g - overlap, 1e-6)``."""
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_g = (gx2 - gx1) * (gy2 - gy1)
    w = (torch.minimum(ax2, gx2) - torch.maximum(ax1, gx1)).clamp(min=0)
    h = (torch.minimum(ay2, gy2) - torch.maximum(ay1, gy1)).clamp(min=0)
    overlap = w * h
    union = (area_a + area_g - overlap).clamp(min=_UNION_EPS)
    return overlap / union


#: mmdet's floor of the union in ``bbox_overlaps`` (``eps=1e-6``).
_UNION_EPS = 1e-6


class Inputs(NamedTuple):
    """Checked inputs of a dynamic-k rule, detached, in float32 where noted."""

    priors: Tensor  # (N, 4) float32
    scores: Tensor  # (B, N, C) as given (gathered before any conversion)
    boxes: Tensor  # (B, N, 4) float32
    gt_labels: Tensor  # (B, M) int64
    gt_boxes: Tensor  # (B, M, 4) float32
    out_dtype: torch.dtype


def check_inputs(
    priors: object, scores_name: str, scores: object, pred_boxes: object, gt_labels: object, gt_boxes: object
) -> Inputs:
    """Shapes, dtypes, devices and label range of a dynamic-k rule's arguments."""
    priors = check_boxes("priors", priors, 2, "(N, 4)")
    scores = check_float(scores_name, scores)
    check_rank(scores_name, scores, 3, "(B, N, C)")
    pred_boxes = check_boxes("pred_boxes", pred_boxes, 3, "(B, N, 4)")
    gt_labels, gt_boxes = check_ground_truth(gt_labels, gt_boxes)
    check_batch((scores_name, scores), ("pred_boxes", pred_boxes), ("gt_boxes", gt_boxes))
    n = priors.shape[0]
    check_dim(scores_name, scores, 1, n, "N", "priors")
    check_dim("pred_boxes", pred_boxes, 1, n, "N", "priors")
    if scores.shape[2] == 0:
        raise ValueError(f"{scores_name} must have at least one class, got shape {shape_str(scores)}")
    devices = {t.device for t in (priors, scores, pred_boxes, gt_labels, gt_boxes)}
    if len(devices) > 1:
        names = f"priors, {scores_name}, pred_boxes and the ground truth"
        raise ValueError(f"{names} must share one device, got {sorted(str(d) for d in devices)}")
    c = scores.shape[2]
    check_in_range("gt_labels", gt_labels, -1, c, f"C = {c} classes, -1 for padding")
    out_dtype = torch.promote_types(pred_boxes.dtype, gt_boxes.dtype)
    f32 = torch.float32
    return Inputs(
        priors.detach().to(f32),
        scores.detach(),
        pred_boxes.detach().to(f32),
        gt_labels,
        gt_boxes.detach().to(f32),
        out_dtype,
    )


def background(b: int, n: int, dtype: torch.dtype, device: torch.device) -> Assignment:
    """Every prior background."""
    matches = torch.full((b, n), BACKGROUND, dtype=torch.int64, device=device)
    return Assignment(matches, matches.clone(), torch.zeros((b, n), dtype=dtype, device=device))


def finish(inp: Inputs, matches: Tensor) -> Assignment:
    """``Assignment`` from ``matches (Tensor[B, N])``: the labels, and the quality (IoU of
    each positive's predicted box with its ground truth, as mmdet's ``max_overlaps``)."""
    pos = matches >= 0
    at = matches.clamp(min=0)
    labels = torch.where(pos, inp.gt_labels.gather(1, at), BACKGROUND)
    g = inp.gt_boxes.gather(1, at[..., None].expand(-1, -1, 4))  # (B, N, 4)
    iou = aligned_iou(inp.boxes, g)
    quality = torch.where(pos, iou, 0.0).to(inp.out_dtype)
    return Assignment(matches, labels, quality)


def ground_truth_rows(inp: Inputs) -> tuple[Rows, Tensor]:
    """The rows of the real ground truths with finite boxes, and their boxes
    ``Tensor[R, 4]`` float32 (zeros at masked traced rows)."""
    valid = real_rows(inp.gt_labels) & torch.isfinite(inp.gt_boxes).all(-1)  # (B, M)
    rows = gt_rows(valid)
    g = inp.gt_boxes[rows.img, rows.row]  # (R, 4)
    if rows.ok is not None:
        g = torch.where(rows.ok[:, None], g, 0.0)
    return rows, g
