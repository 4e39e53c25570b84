"""Optimal one-to-one matching: an exact assignment solver and the DETR-family matcher.

:mod:`detblocks.matcher` re-exports the public names; read them there.

* :func:`linear_sum_assignment`: the minimum-cost one-to-one assignment of every image of
  a padded batch, as the registered operator ``detblocks::linear_sum_assignment``.
* :func:`hungarian_match` / :class:`HungarianMatcher`: the query-to-object matching of
  DETR-family detectors (RT-DETR's cost: class, L1 and GIoU terms), solved by it.

The solver
----------
Shortest augmenting paths with dual variables, the Jonker-Volgenant family in the
rectangular form of D. F. Crouse ("On implementing 2D rectangular assignment
algorithms", IEEE TAES 2016), the algorithm of SciPy's ``linear_sum_assignment``. Each
image's valid columns form a dense matrix with no more rows than columns (transposed
when there are more rows than valid columns). The duals start at ``u`` = the row minima,
``v = 0``, and every row whose first cheapest column is still free takes it (most rows,
on a detector's costs); each other row then joins the matching along a shortest
augmenting path (Dijkstra's method on the reduced costs ``cost - u - v``), after which
the duals are updated so that every reduced cost stays non-negative and the matched
ones are 0 (columns left unmatched keep ``v = 0``). The result is an exact optimum:
the total cost equals SciPy's, and the pairs are the same wherever the optimum is
unique. Costs are read as float64 (float32 and half costs convert exactly), so the
arithmetic adds no rounding to the comparison of assignments beyond float64's.

The native kernel (``detblocks._native_lsa``, C, built at install time) solves the
images in parallel on PyTorch's OpenMP threads. Without it (not built, or
``DETBLOCKS_NATIVE=0``) the same algorithm runs as a Python loop, with the same float64
operations in the same order, so the same assignment; it is much slower (a 300 x 50
image takes milliseconds instead of microseconds).

The solver is sequential and data-dependent, so it runs on the CPU: each call reads
the cost matrix to the host once (no copy for a contiguous float32/float64 CPU tensor)
and returns its result on the cost's device. Traced, it is one opaque call of the
operator (a fake implementation gives the output's shape); eager calls run the
operator's implementation directly. It has no gradient: its output is integer.

The matcher's cost is built batched with PyTorch ops on the inputs' device; for eager
float32 CPU inputs the same extension adds up its box terms and weighted sum in one
pass, operation for operation the PyTorch path's (same values, tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detblocks._checks import (
    check_batch,
    check_bool,
    check_boxes,
    check_float,
    check_in_range,
    check_index,
    check_number,
    check_rank,
    check_tensor,
    eager_cpu,
    shape_str,
    tracing,
)
from detblocks._kernels import load
from detblocks.conventions import NO_MATCH

__all__ = ["linear_sum_assignment", "hungarian_match", "HungarianMatcher"]

_lsa = load("_native_lsa")

#: Status of an image in the native kernel's report (``detblocks._native_lsa``).
_SOLVED, _INVALID, _INFEASIBLE, _NO_MEMORY = 0, 1, 2, 3

#: ultralytics' ``bbox_iou`` epsilon, added to the union and the enclosing area.
GIOU_EPS = 1e-7
#: The epsilon inside the focal cost's logarithms (ultralytics' ``HungarianMatcher``).
FOCAL_EPS = 1e-8


# ----------------------------------------------------------------------------- the solver
def _check_lsa_inputs(cost: object, valid: object) -> tuple[Tensor, Tensor | None]:
    cost = check_float("cost", cost)
    check_rank("cost", cost, 3, "(B, N, M)")
    if valid is None:
        return cost, None
    valid = check_tensor("valid", valid)
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a bool tensor (B, M) or None, got {valid.dtype}")
    check_rank("valid", valid, 2, "(B, M)")
    check_batch(("cost", cost), ("valid", valid))
    if valid.shape[1] != cost.shape[2]:
        raise ValueError(
            f"valid must be (B, M) with M = {cost.shape[2]} (from cost {shape_str(cost)}), "
            f"got shape {shape_str(valid)}"
        )
    return cost, valid


def _solve_rows(a: list[list[float]]) -> list[int] | None:
    """The assignment of the dense float64 matrix ``a`` (rows <= columns) as the column of
    every row, or ``None`` when it is infeasible. The same operations, in the same order,
    as ``solve`` in ``_native_lsa.c``."""
    nr, nc = len(a), len(a[0])
    inf = math.inf
    u, v = [0.0] * nr, [0.0] * nc
    col_of_row, row_of_col, path = [-1] * nr, [-1] * nc, [-1] * nc
    for i, line in enumerate(a):  # u = row minima; a row takes its first cheapest column if free
        best = 0
        for j in range(1, nc):
            if line[j] < line[best]:
                best = j
        if line[best] == inf:
            return None
        u[i] = line[best]
        if row_of_col[best] < 0:
            row_of_col[best], col_of_row[i] = i, best
    for start in range(nr):
        if col_of_row[start] >= 0:
            continue
        dist = [inf] * nc
        todo = list(range(nc - 1, -1, -1))
        left = nc
        row_seen, col_seen = [False] * nr, [False] * nc
        base, row, sink = 0.0, start, -1
        while sink < 0:
            row_seen[row] = True
            line, ur = a[row], u[row]
            lowest, pick = inf, -1
            for k in range(left):
                j = todo[k]
                d = base + line[j] - ur - v[j]
                if d < dist[j]:
                    dist[j] = d
                    path[j] = row
                if dist[j] < lowest or (dist[j] == lowest and row_of_col[j] < 0):
                    lowest, pick = dist[j], k
            base = lowest
            if pick < 0 or lowest == inf:
                return None
            col = todo[pick]
            col_seen[col] = True
            left -= 1
            todo[pick] = todo[left]
            if row_of_col[col] < 0:
                sink = col
            else:
                row = row_of_col[col]
        u[start] += base
        for i in range(nr):
            if row_seen[i] and i != start:
                u[i] += base - dist[col_of_row[i]]
        for j in range(nc):
            if col_seen[j]:
                v[j] -= base - dist[j]
        col = sink
        while True:
            row = path[col]
            row_of_col[col] = row
            col_of_row[row], col = col, col_of_row[row]
            if row == start:
                break
    return col_of_row


def _solve_python(cost: Tensor, valid: Tensor | None) -> tuple[Tensor, list[int]]:
    """The native kernel's work as a Python loop: matches (B, N) and every image's status."""
    B, N, M = cost.shape
    matches = [[NO_MATCH] * N for _ in range(B)]
    status = [_SOLVED] * B
    rows = cost.double().tolist()  # (B, N, M) nested lists of float64
    keep = valid.tolist() if valid is not None else [[True] * M for _ in range(B)]
    for b in range(B):
        cols = [j for j in range(M) if keep[b][j]]
        k = len(cols)
        if k == 0 or N == 0:
            continue
        transpose = k < N  # rows are then the valid columns
        if transpose:
            a = [[rows[b][q][c] for q in range(N)] for c in cols]
        else:
            a = [[line[c] for c in cols] for line in rows[b]]
        if any(x != x or x == -math.inf for line in a for x in line):
            status[b] = _INVALID
            continue
        col_of_row = _solve_rows(a)
        if col_of_row is None:
            status[b] = _INFEASIBLE
            continue
        for r, c in enumerate(col_of_row):
            if transpose:
                matches[b][c] = cols[r]
            else:
                matches[b][r] = cols[c]
    return torch.tensor(matches, dtype=torch.int64).reshape(B, N), status


def _solve_native(cost: Tensor, valid: Tensor | None) -> tuple[Tensor, list[int]]:
    B, N, M = cost.shape
    if cost.dtype not in (torch.float32, torch.float64):
        cost = cost.double()  # half costs convert exactly
    cost = cost.contiguous()
    valid = valid.contiguous() if valid is not None else None
    matches = torch.empty((B, N), dtype=torch.int64)
    status = torch.zeros(B, dtype=torch.int8)
    _lsa.lsa(
        cost.data_ptr(),
        cost.dtype == torch.float64,
        valid.data_ptr() if valid is not None else 0,
        B,
        N,
        M,
        matches.data_ptr(),
        status.data_ptr(),
        torch.get_num_threads(),
    )
    return matches, status.tolist()


def _raise_for(status: list[int], cost: Tensor, valid: Tensor | None) -> None:
    """ValueError naming the first image the solver could not solve."""
    for b, s in enumerate(status):
        if s == _SOLVED:
            continue
        if s == _INVALID:
            raise ValueError(
                f"cost of image {b} holds NaN or -inf among its valid columns (cost {shape_str(cost)}); "
                "clean it first, e.g. torch.nan_to_num, or mark the columns invalid"
            )
        if s == _INFEASIBLE:
            m_b = int(valid[b].sum()) if valid is not None else cost.shape[2]
            raise ValueError(
                f"image {b} is infeasible: no assignment of min(N, M_b) = {min(cost.shape[1], m_b)} pairs "
                f"avoids its +inf costs (cost {shape_str(cost)})"
            )
        raise MemoryError(f"linear_sum_assignment: out of memory for cost {shape_str(cost)}")


def _operator(qualname: str) -> Callable[[Callable[..., Tensor]], Any]:
    """``torch.library.custom_op(qualname, mutates_args=())`` that keeps the function's docstring."""

    def register(fn: Callable[..., Tensor]) -> Any:
        op = torch.library.custom_op(qualname, mutates_args=())(fn)
        op.__doc__ = fn.__doc__
        return op

    return register


def _solve(cost: Tensor, valid: Tensor | None) -> Tensor:
    """The operator's implementation: one host read, the native kernel or the Python loop."""
    cost, valid = _check_lsa_inputs(cost, valid)
    device = cost.device
    host = cost.detach().to("cpu")  # the one host read of the call
    host_valid = valid.to("cpu") if valid is not None else None
    solve = _solve_native if _lsa is not None else _solve_python
    matches, status = solve(host, host_valid)
    _raise_for(status, host, host_valid)
    return matches.to(device)


@_operator("detblocks::linear_sum_assignment")
def _lsa_op(cost: Tensor, valid: Tensor | None) -> Tensor:
    """The registered operator ``detblocks::linear_sum_assignment``
    (``torch.ops.detblocks.linear_sum_assignment``), arguments as :func:`linear_sum_assignment`.

    Its fake implementation gives the output's shape, so ``torch.compile`` and
    ``torch.export`` keep the solve as one opaque call; it has no gradient (integer
    output). :func:`linear_sum_assignment` and the matcher call it when traced, and its
    implementation :func:`_solve` directly when eager (the same function, without the
    dispatcher's first-call set-up, which imports much of ``torch._dynamo``).

    Example:
        >>> import torch
        >>> _lsa_op(torch.tensor([[[1.0, 0.0], [0.0, 3.0]]]), None)
        tensor([[1, 0]])
    """
    return _solve(cost, valid)


@_lsa_op.register_fake
def _lsa_fake(cost: Tensor, valid: Tensor | None) -> Tensor:
    cost, _ = _check_lsa_inputs(cost, valid)
    return cost.new_empty(cost.shape[:2], dtype=torch.int64)


def _assign(cost: Tensor, valid: Tensor | None) -> Tensor:
    """The operator when traced (one opaque node), its implementation when eager."""
    if tracing():
        return _lsa_op(cost, valid)
    return _solve(cost, valid)


def linear_sum_assignment(cost: Tensor, valid: Tensor | None = None) -> Tensor:
    """Minimum-cost one-to-one assignment of rows to columns, for every image of a batch.

    For image ``b``, over its valid columns (``M_b`` of them), ``min(N, M_b)`` rows are
    each given a different column so that the sum of their costs is as small as
    possible; the other rows get ``-1``. The total cost equals SciPy's
    ``scipy.optimize.linear_sum_assignment`` on ``cost[b][:, valid[b]]``, and the pairs
    are the same wherever that optimum is unique (among equal optima the choice is
    deterministic, but may differ from SciPy's). A ``+inf`` cost forbids a pair.

    Algorithm: shortest augmenting paths with dual variables (Jonker-Volgenant, in
    Crouse's rectangular form, as SciPy), exact, in float64. It runs in the registered
    operator ``detblocks::linear_sum_assignment``: a native C kernel solving the images
    in parallel on PyTorch's threads, or, when that is not built, the same algorithm in
    Python (same result, slower). The operator is opaque to ``torch.compile`` and
    ``torch.export`` (it has a fake implementation) and has no gradient.

    Host read: the solve runs on the CPU, so each call reads ``cost`` to the host once
    (a device-to-host copy for a CUDA tensor; none for a contiguous float32/float64 CPU
    tensor), and the result is copied back to ``cost``'s device.

    Args:
        cost (Tensor[B, N, M]): floating costs (any float dtype; read as float64). Entries
            in invalid columns are never read.
        valid (Tensor[B, M], optional): bool, ``False`` for a padded column; ``None``:
            every column is valid.

    Returns:
        Tensor[B, N] int64: the column assigned to each row, ``-1`` for none.

    Raises:
        ValueError: an image's valid costs hold NaN or ``-inf``, or an image is
            infeasible (``+inf`` costs leave no assignment of ``min(N, M_b)`` pairs);
            the message names the image.

    Example:
        >>> import torch
        >>> cost = torch.tensor([[[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]])
        >>> linear_sum_assignment(cost)
        tensor([[1, 0, 2]])
        >>> linear_sum_assignment(cost, valid=torch.tensor([[True, False, True]]))
        tensor([[-1,  0,  2]])
    """
    cost, valid = _check_lsa_inputs(cost, valid)
    return _assign(cost.detach(), valid)


# ----------------------------------------------------------------------------- the matcher
def _check_matcher_params(
    cost_class: object,
    cost_bbox: object,
    cost_giou: object,
    use_focal_loss: object,
    alpha: object,
    gamma: object,
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in (("cost_class", cost_class), ("cost_bbox", cost_bbox), ("cost_giou", cost_giou)):
        params[name] = float(check_number(name, value))
        if not math.isfinite(params[name]):
            raise ValueError(f"{name} must be finite, got {value!r}")
    params["use_focal_loss"] = check_bool("use_focal_loss", use_focal_loss)
    params["alpha"] = float(check_number("alpha", alpha, low=0.0, high=1.0))
    params["gamma"] = float(check_number("gamma", gamma, low=0.0))
    if not math.isfinite(params["gamma"]):
        raise ValueError(f"gamma must be finite, got {gamma!r}")
    return params


def _check_matcher_inputs(
    pred_boxes: object, pred_logits: object, gt_boxes: object, gt_labels: object
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    pred_boxes = check_boxes("pred_boxes", pred_boxes, 3, "(B, Q, 4)")
    pred_logits = check_float("pred_logits", pred_logits)
    check_rank("pred_logits", pred_logits, 3, "(B, Q, C)")
    gt_boxes = check_boxes("gt_boxes", gt_boxes, 3, "(B, M, 4)")
    gt_labels = check_index("gt_labels", gt_labels, 2, "(B, M)")
    check_batch(("pred_boxes", pred_boxes), ("pred_logits", pred_logits), ("gt_boxes", gt_boxes))
    check_batch(("pred_boxes", pred_boxes), ("gt_labels", gt_labels))
    if pred_logits.shape[1] != pred_boxes.shape[1]:
        raise ValueError(
            f"pred_logits must be (B, Q, C) with Q = {pred_boxes.shape[1]} (from pred_boxes "
            f"{shape_str(pred_boxes)}), got shape {shape_str(pred_logits)}"
        )
    if pred_logits.shape[2] < 1:
        raise ValueError(f"pred_logits must have at least one class, got shape {shape_str(pred_logits)}")
    if gt_labels.shape[1] != gt_boxes.shape[1]:
        raise ValueError(
            f"gt_labels must be (B, M) with M = {gt_boxes.shape[1]} (from gt_boxes "
            f"{shape_str(gt_boxes)}), got shape {shape_str(gt_labels)}"
        )
    check_in_range("gt_labels", gt_labels, -1, pred_logits.shape[2], "a class of pred_logits, or -1 padding")
    return pred_boxes, pred_logits, gt_boxes, gt_labels


def _center_giou(pred: Tensor, gt: Tensor) -> Tensor:
    """ultralytics' ``bbox_iou(..., xywh=True, GIoU=True)`` of every pair: center boxes
    ``pred (Tensor[B, Q, 4])``, ``gt (Tensor[B, M, 4])`` -> ``Tensor[B, Q, M]``, with
    :data:`GIOU_EPS` added to the union and to the enclosing box's area. (The native
    ``hungarian_cost`` repeats these operations in this order.)"""
    px, py, pw, ph = (t[:, :, None] for t in pred.unbind(-1))  # (B, Q, 1) each
    gx, gy, gw, gh = (t[:, None, :] for t in gt.unbind(-1))  # (B, 1, M) each
    px1, px2, py1, py2 = px - pw / 2, px + pw / 2, py - ph / 2, py + ph / 2
    gx1, gx2, gy1, gy2 = gx - gw / 2, gx + gw / 2, gy - gh / 2, gy + gh / 2
    iw = (torch.minimum(px2, gx2) - torch.maximum(px1, gx1)).clamp_(min=0)  # (B, Q, M)
    ih = (torch.minimum(py2, gy2) - torch.maximum(py1, gy1)).clamp_(min=0)
    inter = iw.mul_(ih)
    union = (pw * ph + gw * gh).sub_(inter).add_(GIOU_EPS)  # (B, Q, M)
    cw = torch.maximum(px2, gx2) - torch.minimum(px1, gx1)
    ch = torch.maximum(py2, gy2) - torch.minimum(py1, gy1)
    hull = cw.mul_(ch).add_(GIOU_EPS)
    return (inter / union).sub_((hull - union).div_(hull))


def _center_l1(pred: Tensor, gt: Tensor) -> Tensor:
    """``sum_k |pred_k - gt_k|`` of every pair, ``Tensor[B, Q, M]``, summed in coordinate order."""
    p = [t[:, :, None] for t in pred.unbind(-1)]  # (B, Q, 1) each
    g = [t[:, None, :] for t in gt.unbind(-1)]  # (B, 1, M) each
    l1 = (p[0] - g[0]).abs_()
    for k in (1, 2, 3):
        l1 = l1.add_((p[k] - g[k]).abs_())
    return l1


def _class_cost(logits: Tensor, gt_labels: Tensor, p: dict[str, Any]) -> Tensor:
    """The class term ``Tensor[B, Q, M]``: focal cost of each object's class probability, or
    its negated softmax probability (padded columns read class 0)."""
    B, Q, _ = logits.shape
    labels = gt_labels.clamp(min=0)[:, None, :].expand(B, Q, gt_labels.shape[1])  # (B, Q, M)
    if not p["use_focal_loss"]:
        return F.softmax(logits, dim=-1).gather(2, labels).neg_()
    alpha, gamma = p["alpha"], p["gamma"]
    prob = logits.gather(2, labels).sigmoid_()  # (B, Q, M)
    miss = 1 - prob
    log_hit = (prob + FOCAL_EPS).log_()
    log_miss = (miss + FOCAL_EPS).log_()
    # alpha (1-p)^g (-log(p+eps)) - (1-alpha) p^g (-log(1-p+eps)), in fewer passes
    hit_term = miss.pow_(gamma).mul_(log_hit)  # (1-p)^g log(p+eps)
    miss_term = prob.pow_(gamma).mul_(log_miss)  # p^g log(1-p+eps)
    return miss_term.mul_(1 - alpha).sub_(hit_term, alpha=alpha)


def _native_cost_applies(*tensors: Tensor) -> bool:
    """Whether the native kernel adds up the cost: float32 on CPU, eagerly."""
    return _lsa is not None and all(t.dtype == torch.float32 for t in tensors) and eager_cpu(*tensors)


def _matching_cost(
    pred_boxes: Tensor, pred_logits: Tensor, gt_boxes: Tensor, gt_labels: Tensor, p: dict[str, Any]
) -> Tensor:
    """The cost ``Tensor[B, Q, M]`` of ultralytics' RT-DETR ``HungarianMatcher``, with
    non-finite entries set to 0 (padded columns hold arbitrary values), in float32
    (float64 when an input is float64)."""
    dtype = torch.float64 if torch.float64 in (pred_boxes.dtype, pred_logits.dtype) else torch.float32
    pred = pred_boxes.detach().to(dtype)
    gt = gt_boxes.detach().to(dtype)
    cost_class = _class_cost(pred_logits.detach().to(dtype), gt_labels, p)  # (B, Q, M)
    if _native_cost_applies(pred, gt, cost_class):
        # The box terms and the sum in one pass, with the operations below: the same values.
        pred, gt, cost_class = pred.contiguous(), gt.contiguous(), cost_class.contiguous()
        out = torch.empty_like(cost_class)
        B, Q, M = out.shape
        _lsa.hungarian_cost(
            pred.data_ptr(),
            gt.data_ptr(),
            cost_class.data_ptr(),
            B,
            Q,
            M,
            p["cost_class"],
            p["cost_bbox"],
            p["cost_giou"],
            GIOU_EPS,
            out.data_ptr(),
            torch.get_num_threads(),
        )
        return out
    cost_bbox = _center_l1(pred, gt)
    cost_giou = _center_giou(pred, gt).neg_().add_(1)
    cost = (
        cost_class.mul_(p["cost_class"])
        .add_(cost_bbox.mul_(p["cost_bbox"]))
        .add_(cost_giou.mul_(p["cost_giou"]))
    )
    return torch.where(torch.isfinite(cost), cost, 0.0)


def hungarian_match(
    pred_boxes: Tensor,
    pred_logits: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    cost_class: float = 1.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    use_focal_loss: bool = True,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Match DETR-style queries to ground-truth objects one-to-one at minimum cost.

    The cost of query ``q`` and object ``m`` is RT-DETR's, as ultralytics 8.4.190 computes
    it (``ultralytics/models/utils/ops.py``, ``HungarianMatcher``), in float32 (float64
    for float64 input)::

        cost_class * class_cost + cost_bbox * L1(pred, gt) + cost_giou * (1 - GIoU(pred, gt))

    ``class_cost`` is the focal cost ``alpha (1 - p)^gamma (-log(p + 1e-8)) - (1 - alpha)
    p^gamma (-log(1 - p + 1e-8))`` of ``p = sigmoid(logit)`` of the object's class, or
    with ``use_focal_loss=False`` ``-softmax(logits)`` of that class (DETR's); L1 is over
    the center boxes; GIoU is ultralytics' ``bbox_iou(xywh=True, GIoU=True)`` from the
    center boxes, ``1e-7`` added to the union and to the enclosing area. Non-finite costs
    are set to 0, as ultralytics does. Every image is then solved by
    :func:`linear_sum_assignment` over its real objects (``gt_labels >= 0``): with
    ``M_b`` objects, ``min(Q, M_b)`` queries are matched and a padded row never is.

    The cost is computed batched on the inputs' device (one ``(B, Q, M)`` tensor, no
    per-image loop); the solve reads it to the host once per call (see
    :func:`linear_sum_assignment`). Inputs are detached: no gradient flows through the
    matching. Under ``torch.compile``/``torch.export`` the cost is traced and the solver
    is one opaque operator.

    Args:
        pred_boxes (Tensor[B, Q, 4]): predicted center boxes ``(cx, cy, w, h)``,
            normalised to the image.
        pred_logits (Tensor[B, Q, C]): class logits.
        gt_boxes (Tensor[B, M, 4]): ground-truth center boxes, normalised; padded rows
            hold anything.
        gt_labels (Tensor[B, M]): class in ``[0, C)``, ``-1`` for a padded row.
        cost_class (float): weight of the class cost.
        cost_bbox (float): weight of the L1 cost.
        cost_giou (float): weight of the GIoU cost.
        use_focal_loss (bool): focal class cost (RT-DETR) or ``-softmax`` (DETR).
        alpha (float): focal weight of the positive term, in ``[0, 1]``.
        gamma (float): focal exponent, ``>= 0``.

    Returns:
        Tensor[B, Q] int64: the object (row of ``gt_boxes``) matched to each query,
        ``-1`` for none.

    Example:
        >>> import torch
        >>> pred = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
        >>> logits = torch.zeros(1, 3, 2)
        >>> gt = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [-1.0, -1.0, -1.0, -1.0]]])
        >>> hungarian_match(pred, logits, gt, torch.tensor([[0, 1, -1]]))
        tensor([[ 1,  0, -1]])
    """
    p = _check_matcher_params(cost_class, cost_bbox, cost_giou, use_focal_loss, alpha, gamma)
    return _hungarian(pred_boxes, pred_logits, gt_boxes, gt_labels, p)


def _hungarian(
    pred_boxes: Tensor, pred_logits: Tensor, gt_boxes: Tensor, gt_labels: Tensor, p: dict[str, Any]
) -> Tensor:
    pred_boxes, pred_logits, gt_boxes, gt_labels = _check_matcher_inputs(
        pred_boxes, pred_logits, gt_boxes, gt_labels
    )
    cost = _matching_cost(pred_boxes, pred_logits, gt_boxes, gt_labels, p)  # (B, Q, M)
    return _assign(cost, gt_labels >= 0)


class HungarianMatcher(nn.Module):
    """RT-DETR's optimal query-to-object matcher on a padded batch (ultralytics 8.4.190).

    Module form of :func:`hungarian_match` (see there for the cost). forward
    ``(pred_boxes Tensor[B, Q, 4], pred_logits Tensor[B, Q, C], gt_boxes Tensor[B, M, 4],
    gt_labels Tensor[B, M])`` returns ``Tensor[B, Q]`` int64: the matched ground-truth
    row of each query, ``-1`` for none. Boxes are normalised center boxes; ``gt_labels``
    is ``-1`` on padded rows, which are never matched.

    ultralytics takes the ground truth concatenated with ``gt_groups`` and returns a list
    of ``(query_indices, gt_indices)`` pairs per image; here the batch is padded and the
    result is one tensor (``matches[b, q] = m`` for the pair ``(q, m)``).

    Args:
        cost_class (float): weight of the class cost (ultralytics ``cost_gain['class']``).
        cost_bbox (float): weight of the L1 cost (``cost_gain['bbox']``).
        cost_giou (float): weight of the GIoU cost (``cost_gain['giou']``).
        use_focal_loss (bool): focal class cost (ultralytics ``use_fl``), else ``-softmax``.
        alpha (float): focal alpha.
        gamma (float): focal gamma.

    Example:
        >>> import torch
        >>> matcher = HungarianMatcher()
        >>> pred = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
        >>> gt = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [-1.0, -1.0, -1.0, -1.0]]])
        >>> matcher(pred, torch.zeros(1, 2, 80), gt, torch.tensor([[3, -1]]))
        tensor([[-1,  0]])
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        use_focal_loss: bool = True,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self._params = _check_matcher_params(cost_class, cost_bbox, cost_giou, use_focal_loss, alpha, gamma)

    def forward(self, pred_boxes: Tensor, pred_logits: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
        return _hungarian(pred_boxes, pred_logits, gt_boxes, gt_labels, self._params)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._params.items())
