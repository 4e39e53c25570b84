"""Anchor matchers: pair N anchors with M references from a similarity matrix.

A matcher reads a similarity matrix ``x (Tensor[B, N, M])`` (N anchors, M
references, for example the IoU of every anchor with every ground-truth box)
and returns ``matches (Tensor[B, N])`` of ``torch.int64``: the reference index
matched to each anchor, or :data:`~detblocks.conventions.NO_MATCH` (``-1``).

* :func:`maximum_match` / :class:`MaximumMatcher`: every anchor takes its best
  reference when that score reaches a threshold.
* :func:`bipartite_match` / :class:`BipartiteMatcher`: greedy one-to-one
  matching (best pair first), then GluonCV's recovery step.
* :func:`composite_match` / :class:`CompositeMatcher`: a chain of matchers,
  each filling only the anchors every earlier one left unmatched.
* :func:`match_boxes`: IoU and a chain of matchers in one call, from the boxes;
  above :data:`DENSE_LIMIT` IoU entries it never holds the whole IoU matrix.
* :func:`linear_sum_assignment`: the exact minimum-cost one-to-one assignment of
  every image of a padded batch (SciPy's optimum), as the custom operator
  ``detblocks::linear_sum_assignment``; :func:`hungarian_match` /
  :class:`HungarianMatcher`: DETR-family matching of queries to objects with
  RT-DETR's cost, solved by it. Their cost is a cost (lower is better), not a
  similarity (the API page's section "Optimal matching" describes the solver).

How the bipartite matcher avoids sorting all ``N * M`` pairs
-------------------------------------------------------------
1. *One pass over x* cuts the N anchors into ``F`` consecutive blocks of
   ``S = ceil(N / F)`` anchors and takes, for every reference, the maximum
   over the blocks at each position: group ``g`` holds the anchors
   ``g, g + S, g + 2S, ...`` (``Tensor[B, S, M]``; a reduction over the outer
   axis, the cheapest there is). ``F`` is :data:`FOLD`, or up to 256 when
   M is large, so that the group maxima stay within ``8 N`` numbers. The
   column maxima follow from them.
2. *Candidates.* The greedy matching takes at most ``c`` pairs, ``c`` being the
   number of references whose column maximum is above the threshold, so a
   reference is matched to one of its first ``c`` anchors in the visiting
   order (score first, then anchor index), or to nothing. Every anchor with a
   score at least the ``k``-th largest group maximum lies in a group whose
   maximum is that high; so the first ``k`` groups of a reference (and any
   group tied with the ``k``-th) hold its first ``k`` anchors. Greedy
   matching restricted to the first ``k`` anchors of every reference takes
   exactly the pairs the full greedy matching takes when each reference it
   leaves unmatched had all its takeable pairs among them; eager mode starts
   with a small ``k`` and grows it until that holds, tracing uses
   ``k = min(M, N)``.
3. *Rounds.* With a strict order on pairs, the greedy matching is the fixed
   point of repeatedly taking every *mutually best* pair (the best free
   anchor of a free reference whose best free reference is that one), which
   runs batched over images; usually a handful of rounds.
4. *Recovery* only concerns anchors that reach a column maximum (within
   ``eps``); they lie in groups whose maximum does, so only those groups' rows
   are read again. :func:`maximum_match` likewise reads only groups whose
   maximum reaches its threshold.

Memory beyond ``x`` is ``O(N * M / F + c * k * F)``; no other
``(B, N, M)`` tensor is made, except one cleaned copy of ``x`` when it holds
NaN (a NaN score never matches: it counts as the worst possible score).

Under ``torch.compile``/``torch.export`` the sizes that eager mode reads from
the data (``c``, ``k``, the groups worth reading, the number of rounds) take
static values instead (``c = M``, ``k = min(M, N)``, one anchor per group,
every anchor, a ``torch.while_loop``), so the same code traces without
data-dependent shapes or Python control flow. In eager mode those sizes are
small values read back to the host (a handful per call, and one per round),
a deliberate trade: they let a call read ``x`` about once instead of many times.

Matching boxes without the whole IoU matrix
-------------------------------------------
:func:`match_boxes` returns ``composite_match(box_iou(anchors, refs), matchers)``
and the best IoU of every anchor. Above :data:`DENSE_LIMIT` entries (or when
asked to with ``chunk_size``) it reads the IoU matrix in chunks of anchor rows
(:data:`CHUNK_ELEMENTS` entries each) and keeps only ``O(B * (N + M * K))``
numbers between chunks:

1. *One pass* keeps, per anchor, its best IoU and the reference reaching it
   (first one on ties), the lowest ones too when a bipartite matcher has
   ``is_ascend``; per reference, its column maximum and its first ``K``
   anchors in the visiting order (score first, then anchor index, chosen
   exactly above the threshold), ``K = min(N, M, 64)``.
2. *Greedy matching* runs the rounds above on those lists, with the same
   check as step 2: it is exact when no reference left unmatched had all of
   its candidates taken; otherwise the lists grow, and past ``K`` the pass is
   repeated with eight times as many (a reference is always matched to one of
   its first ``min(N, M)`` anchors).
3. *Recovery* with ``share_max=False`` needs only each anchor's best reference.
   With ``share_max=True``, the anchors reaching a column maximum are in that
   reference's list unless the whole list reaches it (a large object holding
   many anchors of equal IoU); the IoU of those references alone is then read
   again. :class:`MaximumMatcher` needs only each anchor's best.
4. A chain of matchers takes, for every anchor, the first match any of them
   gives, which is what :func:`composite_match` computes.

Example:
    >>> import torch
    >>> from detblocks.matcher import BipartiteMatcher, CompositeMatcher, MaximumMatcher
    >>> iou = torch.tensor([[[0.9, 0.0], [0.6, 0.2], [0.1, 0.55]]])  # (B=1, N=3, M=2)
    >>> CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)])(iou)
    tensor([[0, 0, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detblocks import _alloc
from detblocks._checks import (
    check_bool,
    check_boxes,
    check_float,
    check_number,
    check_pair_batch,
    check_rank,
    eager_cpu,
    host_reads_free,
    parse_fmt,
    tracing,
)
from detblocks._kernels import native as _native
from detblocks._optimal import HungarianMatcher, hungarian_match, linear_sum_assignment
from detblocks.bbox import _GROUP_FOLD, _recorded_best_iou, _recorded_group_best, _true_first, box_iou
from detblocks.conventions import NO_MATCH

__all__ = [
    "maximum_match",
    "bipartite_match",
    "composite_match",
    "MaximumMatcher",
    "BipartiteMatcher",
    "CompositeMatcher",
    "match_boxes",
    "linear_sum_assignment",
    "hungarian_match",
    "HungarianMatcher",
]

#: Blocks the anchors are cut into for the one pass over ``x`` (for M <= 256):
#: the group maxima take 1/FOLD of ``x``'s memory, and torch's reduction over
#: 16 blocks runs at memory speed.
FOLD: int = _GROUP_FOLD


def _fold(m: int) -> int:
    """Blocks for M references: FOLD, or M / 8 (at most 256) for wide matrices."""
    return FOLD if m <= 256 else max(FOLD, min(256, m // 8))


# Eager mode first gives every reference this many candidate anchors (the
# lists grow when a reference might need more); tracing uses the bound min(M, N).
_FIRST_ANCHORS = 4

# The native bipartite kernel takes up to this many references.
_NATIVE_MAX_M = 1024

# When the scores worth reading again exceed this fraction of x, read all of x
# in place instead of gathering them (a gather costs more per score).
_DENSE_FRACTION = 0.25


def _check_x(x: object) -> Tensor:
    x = check_float("x", x)
    check_rank("x", x, 3, "(B, N, M)")
    return x


# --------------------------------------------------------------------------- summary
class _Scan(NamedTuple):
    """What every matcher needs from one pass over ``x``, in *score space*
    ``y = sign * x`` (so that larger is always better).

    Group ``g < G`` holds the anchors ``g + j * G`` for ``j < size`` that are ``< N``.
    """

    x: Tensor  # (B, N, M) the input, NaN replaced by the worst score when it had any
    sign: int  # +1: larger x is better; -1: smaller x is better (is_ascend)
    size: int  # anchors per group (the last position may run past N)
    gmax: Tensor  # (B, G, M) best y of every group
    colmax: Tensor  # (B, M) best y of every reference
    memo: dict  # results shared by the matchers of a CompositeMatcher


def _group_best(x: Tensor, sign: int, fold: int) -> tuple[Tensor, int]:
    """Best ``sign * x`` of every group, ``(Tensor[B, G, M], size)`` with
    ``G = ceil(N / fold)``: anchors ``n`` and ``n + G`` share a group."""
    b, n, m = x.shape
    g = -(-n // fold)
    full = n // g  # blocks of G anchors; the last n - full * g anchors are a partial block
    rest = n - full * g
    reduce, pairwise = (torch.amax, torch.maximum) if sign > 0 else (torch.amin, torch.minimum)
    blocks = x[:, : full * g].reshape(b, full, g, m)
    if full <= 16:  # (into reused memory: a fresh buffer costs the kernel a page fill)
        best = reduce(blocks, 1, out=_alloc.empty_large((b, g, m), x.dtype, x.device))  # (B, G, M)
    else:  # block by block: the running maximum stays small, torch's reduction would not
        best = pairwise(blocks[:, 0], blocks[:, 1])
        for j in range(2, full):
            pairwise(best, blocks[:, j], out=best)
    if rest:
        head = best[:, :rest]
        pairwise(head, x[:, full * g :], out=head)
    return (best if sign > 0 else best.neg_()), full + (1 if rest else 0)


def _scan(x: Tensor, sign: int) -> _Scan:
    recorded = None
    if sign > 0 and not tracing() and _fold(x.shape[2]) == FOLD:
        recorded = _recorded_group_best(x)
    x = x.detach().contiguous()  # matching is not differentiable; gathers index x's memory
    worst = -sign * float("inf")
    if not host_reads_free(x):
        # Shapes must not depend on N % FOLD (tracing), and no NaN check reads back (an
        # accelerator): every anchor is its own group.
        x = torch.where(torch.isnan(x), worst, x)
        y = x if sign > 0 else x.neg()
        return _Scan(x, sign, 1, y, y.amax(1), {})
    if recorded is not None:  # box_iou's native kernel found them already (IoU has no NaN)
        n, g = x.shape[1], recorded.shape[1]
        return _Scan(x, sign, -(-n // g), recorded, _group_best(recorded, 1, FOLD)[0].amax(1), {})
    gmax, size = _group_best(x, sign, _fold(x.shape[2]))
    colmax = _group_best(gmax, 1, FOLD)[0].amax(1)  # folding again beats one long reduction
    # A NaN anywhere shows up in its column maximum; clean a copy only then.
    if bool(torch.isnan(colmax).any()):
        x = torch.where(torch.isnan(x), worst, x)
        gmax, size = _group_best(x, sign, _fold(x.shape[2]))
        colmax = _group_best(gmax, 1, FOLD)[0].amax(1)
    return _Scan(x, sign, size, gmax, colmax, {})


class _ScanCache:
    """One :class:`_Scan` per sign, shared by the matchers of a :class:`CompositeMatcher`."""

    def __init__(self, x: Tensor) -> None:
        self.input = x
        self._scans: dict[int, _Scan] = {}

    def get(self, sign: int) -> _Scan:
        if sign not in self._scans:
            self._scans[sign] = _scan(self.input, sign)
        return self._scans[sign]


# --------------------------------------------------------------------------- columns
class _Columns(NamedTuple):
    """The references a matcher has to consider, first in every image."""

    cols: Tensor  # (B, Q) reference indices: those that pass first, ascending, then others
    ok: Tensor  # (B, Q) whether each passes
    gsc: Tensor  # (B, Q, G) their group maxima


def _columns(scan: _Scan, ok: Tensor) -> _Columns:
    """The references where ``ok (Tensor[B, M])`` holds. Eager mode keeps as many
    as the image with the most; tracing keeps all ``M`` (static shapes). A
    selection made before on the same scan is reused when it covers ``ok``."""
    b, g, m = scan.gmax.shape
    if "columns" in scan.memo:
        before, cs = scan.memo["columns"]
        if not host_reads_free(ok) or not bool((ok & ~before).any()):
            return _Columns(cs.cols, ok.gather(1, cs.cols), cs.gsc)
    q = int(ok.sum(1).max()) if host_reads_free(ok) else m
    cols = _true_first(ok)[:, :q]  # (B, Q) passing references first, each part ascending
    gsc = scan.gmax.gather(2, cols[:, None, :].expand(b, g, q)).transpose(1, 2).contiguous()
    cs = _Columns(cols, ok.gather(1, cols), gsc)  # gsc (B, Q, G)
    scan.memo["columns"] = (ok, cs)
    return cs


# --------------------------------------------------------------------------- rows
def _group_rows(groups: Tensor, scan: _Scan) -> Tensor:
    """Anchor indices of ``groups (Tensor[..., q])``: ``Tensor[..., size * q]``,
    ascending when ``groups`` is; entries ``>= N`` are past the last anchor."""
    g = scan.gmax.shape[1]
    step = torch.arange(scan.size, device=groups.device) * g  # (size,)
    return (groups[..., None, :] + step[:, None]).flatten(-2)


def _reaching(scan: _Scan, cs: _Columns, level: Tensor, eps: float) -> Tensor | None:
    """Anchors with a score reaching the level of a reference of ``cs``:
    ``y[n, m] + eps >= level[b, q]`` for ``m = cs.cols[b, q]``, ``level (Tensor[B, Q])``.

    Only groups whose maximum reaches the level are read. Returns the flat
    indices ``b * N + n`` (ascending, unique), or ``None`` for "every anchor"
    when reading all of ``x`` is the better deal (or while tracing).
    """
    x = scan.x
    b, n, m = x.shape
    if not host_reads_free(x):
        return None
    gsc = cs.gsc if eps == 0 else cs.gsc + eps
    pairs = (gsc >= level[..., None]).nonzero()  # (P, 3): image, reference, group
    if pairs.shape[0] * scan.size > _DENSE_FRACTION * b * n * m:
        return None
    bi, qi, gi = pairs.unbind(1)
    rows = _group_rows(gi[:, None], scan)  # (P, size)
    flat = bi[:, None] * n + rows.clamp_max(n - 1)
    y = x.view(-1).index_select(0, (flat * m + cs.cols[bi, qi][:, None]).view(-1)).view(flat.shape)
    if scan.sign < 0:
        y = y.neg()
    if eps != 0:
        y = y + eps
    reach = (rows < n) & (y >= level[bi, qi][:, None])
    return torch.unique(flat[reach])


def _rows(scan: _Scan, index: Tensor | None) -> Tensor:
    """The anchors of ``index`` from :func:`_reaching`: ``Tensor[R, 1, M]``, or
    ``x (Tensor[B, N, M])`` itself for every anchor."""
    x = scan.x
    if index is None:
        return x
    return x.view(-1, 1, x.shape[2]).index_select(0, index)


def _fill(out: Tensor, index: Tensor | None, values: Tensor) -> Tensor:
    """Write per-anchor ``values`` (from :func:`_rows`, ``-1`` = none) into the
    anchors of ``out (Tensor[B, N])`` that are still ``-1``, in place."""
    if index is None:
        return out.copy_(torch.where(out < 0, values.reshape(out.shape), out))
    flat = out.view(-1)
    now = flat[index]
    flat[index] = torch.where(now < 0, values.reshape(-1), now)
    return out


def _best(rows: Tensor, sign: int) -> tuple[Tensor, Tensor]:
    """Best score (in score space) along the last axis and its first index.

    (``argmax`` then ``gather`` rather than ``max(dim)``: the latter starts a
    parallel region however small its input, which costs dearly on a busy CPU.)
    """
    arg = rows.argmax(-1, keepdim=True) if sign > 0 else rows.argmin(-1, keepdim=True)
    best = rows.gather(-1, arg).squeeze(-1)
    return (best if sign > 0 else best.neg()), arg.squeeze(-1)


def _per_row(scan: _Scan, index: Tensor | None, colwise: Tensor) -> Tensor:
    """``colwise (Tensor[B, M])`` laid out to broadcast against the rows of
    :func:`_rows`: ``(B, 1, M)`` for every anchor, ``(R, 1, M)`` gathered."""
    if index is None:
        return colwise[:, None, :]
    n = scan.x.shape[1]
    return colwise.index_select(0, torch.div(index, n, rounding_mode="floor"))[:, None, :]


# --------------------------------------------------------------------------- maximum
def _maximum(scan: _Scan, threshold: float, out: Tensor) -> Tensor:
    x = scan.x
    thr = torch.full((), threshold, dtype=x.dtype, device=x.device)
    cs = _columns(scan, scan.colmax >= thr)
    # NaN levels are never reached: references that cannot match
    index = _reaching(scan, cs, torch.where(cs.ok, thr, float("nan")), 0.0)
    best, arg = _best(_rows(scan, index), 1)
    return _fill(out, index, torch.where(best >= thr, arg, NO_MATCH))


def _maximum_recorded(x: Tensor, threshold: float, out: Tensor) -> Tensor | None:
    """:func:`_maximum` from the row maxima :func:`~detblocks.bbox.box_iou` recorded for ``x``
    (None when it has none): only the anchors that pass are read, and no scan of ``x`` is needed."""
    best = _recorded_best_iou(x)
    if best is None:
        return None
    thr = torch.full((), threshold, dtype=x.dtype, device=x.device)
    index = (best >= thr).view(-1).nonzero().squeeze(1)  # flat b * N + n of the anchors that pass
    rows = x.detach().view(-1, 1, x.shape[2]).index_select(0, index)  # (R, 1, M)
    _, arg = _best(rows, 1)
    return _fill(out, index, arg)


def _no_match(x: Tensor) -> Tensor:
    return torch.full(x.shape[:2], NO_MATCH, dtype=torch.int64, device=x.device)


def maximum_match(x: Tensor, threshold: float) -> Tensor:
    """Match every anchor to its best reference when that score reaches ``threshold``.

    Args:
        x (Tensor[B, N, M]): similarity of every anchor with every reference,
            floating dtype. NaN counts as the worst score (never matched).
        threshold (float): an anchor is matched when its best score is
            ``>= threshold`` (compared in ``x``'s dtype).

    Returns:
        Tensor[B, N] (int64): ``argmax`` over M (the first one on ties) where
        the maximum is ``>= threshold``, else ``-1`` (:data:`~detblocks.conventions.NO_MATCH`).

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.2, 0.7], [0.4, 0.1]]])
        >>> maximum_match(x, 0.5)
        tensor([[ 1, -1]])
    """
    x = _check_x(x)
    threshold = check_number("threshold", threshold)
    out = _no_match(x)
    if 0 in x.shape:  # no image, anchor or reference: nothing to match
        return out
    recorded = _maximum_recorded(x, threshold, out)
    return recorded if recorded is not None else _maximum(_scan(x, 1), threshold, out)


# --------------------------------------------------------------------------- bipartite
def _first_k_exact(v: Tensor, k: int) -> Tensor:
    """:func:`_first_k` for any data, ties resolved everywhere."""
    size = v.shape[-1]
    kth = v.topk(k, -1).values[..., k - 1 :]  # (..., 1)
    above = v > kth
    at = v == kth
    take = above | (at & (at.cumsum(-1) <= k - above.sum(-1, keepdim=True)))  # exactly k entries
    rank = torch.arange(size, 0, -1, device=v.device)  # earlier index -> larger key
    return torch.where(take, rank, 0).topk(k, -1).indices  # unique keys: ascending index


def _first_k(v: Tensor, k: int, floor: Tensor) -> Tensor:
    """Indices of the ``k`` largest entries along the last axis, in ascending
    order; ties go to the lower index, except among entries not above ``floor``
    (they never match, so any of them will do). ``v`` must hold no NaN and
    ``1 <= k <= v.shape[-1]``."""
    if tracing():
        return _first_k_exact(v, k)
    size = v.shape[-1]
    vals, index = v.topk(min(k + 1, size), -1)  # sorted, ties in any order
    index = index[..., :k].sort(-1).values
    if k < size:
        # right unless the k-th value ties with a value left out
        kth = vals[..., k - 1]
        spill = (vals[..., k] == kth) & (kth > floor)
        if bool(spill.any()):
            index[spill] = _first_k_exact(v[spill], k)
    return index


def _candidates(scan: _Scan, cs: _Columns, thr: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first ``k`` anchors of every reference of ``cs`` in visiting order.

    Returns ``rows (Tensor[B, Q, k])`` anchor indices, ascending, and
    ``score (Tensor[B, Q, k])`` their scores, ``-inf`` where the pair cannot be
    taken (score not beyond ``thr``).
    """
    x, sign = scan.x, scan.sign
    b, n, m = x.shape
    g = cs.gsc.shape[2]
    # 1. groups holding the first k anchors of every reference.
    if scan.size == 1:  # one anchor per group
        groups = _first_k(cs.gsc, k, thr)
    else:
        # Every anchor scoring at least the k-th group maximum lies in a group that
        # reaches it, and only such anchors can be among the first k: take the
        # groups that reach it (more than k when groups tie with the k-th).
        kg = min(k, g)
        vals, groups = cs.gsc.topk(min(kg + 1, g), -1)  # ties in any order
        if kg < g:
            kth = vals[..., kg - 1]
            tied = (vals[..., kg] == kth) & (kth > thr)
            if bool(tied.any()):
                kg = int((cs.gsc[tied] >= kth[tied][:, None]).sum(-1).max())
                groups = cs.gsc.topk(kg, -1).indices
        groups = groups[..., :kg].sort(-1).values  # (B, Q, kg) ascending
    # 2. their anchors' scores, anchors ascending, as flat positions in x[b]; the
    # last anchor of a group may run past N (position >= N * M).
    step = torch.arange(scan.size, device=x.device) * (scan.gmax.shape[1] * m)  # (size,)
    flat = ((groups * m + cs.cols[..., None])[..., None, :] + step[:, None]).flatten(-2)
    inside = flat < n * m
    score = x.view(b, n * m).gather(1, flat.clamp_(max=n * m - 1).flatten(1)).view_as(flat)
    if sign < 0:
        score = score.neg()
    score = torch.where(inside, score, -float("inf"))  # (B, Q, size * kg)
    # 3. the first k anchors of every reference.
    pick = _first_k(score, k, thr)  # (B, Q, k) ascending
    rows = torch.div(flat.gather(2, pick), m, rounding_mode="floor")
    score = score.gather(2, pick)
    return rows, torch.where(score > thr, score, -float("inf"))


def _rounds(rows: Tensor, score: Tensor) -> Tensor:
    """Greedy matching of the candidate pairs by rounds of mutually best pairs.

    ``rows``, ``score (Tensor[B, Q, k])`` from :func:`_candidates`; references
    are ordered as their original indices. Returns ``Tensor[B, Q]``: the
    anchor index matched to every reference, ``-1`` when none.
    """
    b, q, k = rows.shape
    dev = rows.device
    length = q * k
    valid = score > -float("inf")  # (B, Q, k)
    # Compact anchor ids: equal anchor indices share an id in [0, length).
    sorted_rows, order = rows.reshape(b, length).sort(1)
    new = torch.ones_like(sorted_rows, dtype=torch.bool)
    new[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    rid_flat = torch.empty_like(order).scatter_(1, order, new.cumsum(1) - 1)  # (B, length)
    col_id = torch.arange(q, device=dev)
    col_key = col_id[:, None].expand(q, k).reshape(1, length)
    neg_inf = torch.full((b, length), -float("inf"), dtype=score.dtype, device=dev)
    no_col = torch.full((b, length), q, dtype=torch.int64, device=dev)
    sink = torch.full((b, q), length, dtype=torch.int64, device=dev)

    # The round reads sizes from tensors only (it also runs as a torch.while_loop body).
    def one_round(taken: Tensor, anchor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """taken (B, length + 1) bool per anchor id (the last slot is a sink);
        anchor (B, Q) matched anchor id per reference, -1 when free."""
        rid3 = rid_flat.view_as(score)  # (B, Q, k); closures must not alias each other
        free = ~taken.gather(1, rid_flat).view_as(score)
        avail = valid & free & (anchor < 0)[..., None]
        s = torch.where(avail, score, -float("inf"))
        j = s.argmax(2)  # best free anchor of every free reference (ties: lower anchor)
        s_flat = s.flatten(1)
        row_best = neg_inf.scatter_reduce(1, rid_flat, s_flat, "amax")
        is_best = avail.flatten(1) & (s_flat == row_best.gather(1, rid_flat))
        best_col = no_col.scatter_reduce(
            1, rid_flat, torch.where(is_best, col_key, no_col), "amin"
        )  # (B, length): best free reference of every anchor id (ties: lower reference)
        prop = rid3.gather(2, j[..., None]).squeeze(2)  # (B, Q) proposed anchor id
        accept = avail.any(2) & (best_col.gather(1, prop) == col_id)
        anchor = torch.where(accept, prop, anchor)
        taken = taken.scatter(1, torch.where(accept, prop, sink), True)
        return taken, anchor, accept.any()

    taken = torch.zeros((b, length + 1), dtype=torch.bool, device=dev)
    anchor = torch.full((b, q), -1, dtype=torch.int64, device=dev)
    # Every round that finds a takeable pair takes at least the best one, so at
    # most Q rounds take pairs, and the next one ends the loop.
    if tracing():

        def cond(go: Tensor, taken: Tensor, anchor: Tensor) -> Tensor:
            return go.clone()

        def body(go: Tensor, taken: Tensor, anchor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            taken, anchor, go = one_round(taken, anchor)
            return go, taken, anchor

        go0 = torch.ones((), dtype=torch.bool, device=dev)
        _, taken, anchor = torch.while_loop(cond, body, (go0, taken, anchor))
    else:
        for _ in range(q + 1):
            taken, anchor, go = one_round(taken, anchor)
            if not bool(go):
                break
    # Anchor id -> anchor index, via any candidate slot holding that id.
    id_to_row = torch.zeros((b, length), dtype=torch.int64, device=dev).scatter_(
        1, rid_flat, rows.reshape(b, length)
    )
    return torch.where(anchor >= 0, id_to_row.gather(1, anchor.clamp_min(0)), -1)


def _greedy(scan: _Scan, cs: _Columns, thr: Tensor, out: Tensor) -> Tensor:
    """The greedy one-to-one matching (before recovery), written into ``out``."""
    n = scan.x.shape[1]
    q = cs.cols.shape[1]
    if q == 0:
        return out
    bound = torch.sym_min(q, n)  # a reference's match is among its first `bound` anchors
    if tracing():
        row = _rounds(*_candidates(scan, cs, thr, bound))  # (B, Q)
        # Written through a dense (B, N + 1) buffer: no data-dependent shapes.
        buf = torch.full((out.shape[0], n + 1), NO_MATCH, dtype=torch.int64, device=out.device)
        buf.scatter_(1, torch.where(row >= 0, row, n), torch.where(row >= 0, cs.cols, NO_MATCH))
        return _fill(out, None, buf[:, :n])
    # Usually every reference is matched within its first few anchors. Greedy
    # matching restricted to the first k anchors of every reference is exact
    # when each reference left unmatched had all its takeable pairs among
    # them; otherwise the lists grow.
    k = min(_FIRST_ANCHORS, bound)
    while True:
        rows, score = _candidates(scan, cs, thr, k)
        row = _rounds(rows, score)
        if k == bound or not bool(((row < 0) & (score > -float("inf")).all(2)).any()):
            break
        k = min(2 * k, bound)
    image = torch.arange(row.shape[0], device=row.device)[:, None]
    matched = row >= 0  # (B, Q)
    index = (image * n + row.clamp_min(0))[matched]
    return _fill(out, index, cs.cols[matched])


def _native_matches(scan: _Scan, out: Tensor) -> bool:
    """Whether the native kernel does :func:`_bipartite`'s work: eager float32 scores on CPU,
    larger better, at most :data:`_NATIVE_MAX_M` references (it holds up to M x M candidate
    pairs per thread), the scan's tensors contiguous."""
    x = scan.x
    if _native is None or scan.sign < 0 or x.dtype != torch.float32 or not eager_cpu(x):
        return False  # (shapes are read only when not tracing: they may be symbolic)
    if 0 in x.shape or x.shape[2] > _NATIVE_MAX_M:
        return False
    return all(t.is_contiguous() for t in (x, scan.gmax, scan.colmax, out))


def _bipartite(
    scan: _Scan, threshold: float, eps: float, share_max: bool, out: Tensor, recover: bool = True
) -> Tensor:
    x, sign = scan.x, scan.sign
    if _native_matches(scan, out):
        _native.bipartite(
            x.data_ptr(),
            scan.gmax.data_ptr(),
            scan.colmax.data_ptr(),
            *x.shape,
            scan.gmax.shape[1],
            scan.size,
            threshold,
            eps,
            share_max,
            recover,
            out.data_ptr(),
            torch.get_num_threads(),
        )
        return out
    thr = torch.full((), sign * threshold, dtype=x.dtype, device=x.device)
    cs = _columns(scan, scan.colmax > thr)  # references that can be matched at all
    # Anchors still -1 in `out` after the greedy part are exactly those the
    # recovery may fill (anchors filled before this matcher stay as they are).
    out = _greedy(scan, cs, thr, out)
    if not recover:
        return out
    # Recovery: an anchor reaching (within eps) the column maximum of a reference
    # that can match takes its best reference. cmax = NaN (never reached) marks the others.
    cmax = torch.where(scan.colmax > thr, scan.colmax, float("nan"))  # (B, M)
    # Only anchors reaching some column maximum can pass (share_max=False asks it
    # of their best reference).
    index = _reaching(scan, cs, torch.where(cs.ok, cmax.gather(1, cs.cols), float("nan")), eps)
    rows = _rows(scan, index)
    best, arg = _best(rows, sign)  # (B, N) or (R, 1)
    cm = _per_row(scan, index, cmax)  # (B, 1, M) or (R, 1, M)
    if share_max:
        y = rows if sign > 0 else rows.neg()
        near = (y + eps >= cm).any(-1)
    else:
        near = best + eps >= cm.expand(*arg.shape, cm.shape[-1]).gather(-1, arg[..., None]).squeeze(-1)
    return _fill(out, index, torch.where(near, arg, NO_MATCH))


def _check_bipartite_args(threshold: object, is_ascend: object, eps: object, share_max: object) -> None:
    check_number("threshold", threshold)
    check_bool("is_ascend", is_ascend)
    check_number("eps", eps)
    check_bool("share_max", share_max)


def bipartite_match(
    x: Tensor,
    threshold: float = 1e-12,
    is_ascend: bool = False,
    eps: float = 1e-12,
    share_max: bool = True,
    *,
    recover: bool = True,
) -> Tensor:
    """Greedy one-to-one matching of anchors and references, then recovery.

    Pairs are visited from the highest score down (lowest up with
    ``is_ascend``), ties in row-major order (lower anchor, then lower
    reference); a pair is taken when its anchor and reference are both free
    and its score is strictly above ``threshold`` (strictly below with
    ``is_ascend``). Greedy, not Hungarian.

    Recovery (``recover=True``): an anchor left unmatched takes its best
    reference when its score ties (within ``eps``) the column maximum of a
    reference whose column maximum is above ``threshold``: of *any* such
    reference with ``share_max=True``, of its own best reference with
    ``share_max=False``. With ``is_ascend`` everything mirrors (best = lowest,
    column minima, below ``threshold``).

    Args:
        x (Tensor[B, N, M]): similarity of every anchor with every reference,
            floating dtype. NaN counts as the worst score (never matched).
        threshold (float): scores must be strictly beyond it to match.
        is_ascend (bool): lower scores are better (distances).
        eps (float): tolerance of the recovery's comparison with column maxima.
        share_max (bool): see recovery above.
        recover (bool): ``False`` returns the greedy one-to-one matching alone.

    Returns:
        Tensor[B, N] (int64): matched reference index per anchor, ``-1`` when
        none (:data:`~detblocks.conventions.NO_MATCH`). Without recovery every
        reference appears at most once per image.

    No sort of all N x M pairs: a reference can only be matched to one of its first
    ``Q`` anchors in visiting order (``Q`` references can match), and the greedy
    matching of each reference's first few candidates (found through the maxima of
    groups of anchors) is exact unless a reference ends unmatched with a full list,
    which then grows. In eager float32 on CPU (scores larger-better) detblocks' native
    kernel (:data:`detblocks.NATIVE`) does this per image; otherwise batched rounds of
    mutually best pairs do, with the same matches.

    Host reads: eager mode on an accelerator reads back one flag per round of mutually
    best pairs (every round takes a pair in each image that has one left, so at most
    ``Q + 1`` rounds, usually 2 to 4), one or two per candidate-list size (4, 8, ... up to
    ``min(Q, N)``; usually one size) and one count of the matched pairs: 7 reads on a
    typical batch. Under ``torch.compile``/``torch.export`` there are none (a
    ``torch.while_loop`` of rounds over static shapes).

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.5, 0.4], [0.9, 0.1], [0.0, 0.0]]])
        >>> bipartite_match(x)
        tensor([[ 1,  0, -1]])
        >>> bipartite_match(x, is_ascend=True, threshold=0.45, recover=False)  # lowest first
        tensor([[-1,  1,  0]])
    """
    x = _check_x(x)
    _check_bipartite_args(threshold, is_ascend, eps, share_max)
    check_bool("recover", recover)
    out = _no_match(x)
    if 0 in x.shape:  # no image, anchor or reference: nothing to match
        return out
    return _bipartite(_scan(x, -1 if is_ascend else 1), threshold, eps, share_max, out, recover)


# --------------------------------------------------------------------------- modules
class MaximumMatcher(nn.Module):
    """Match every anchor to its best reference when that score is ``>= threshold``.

    Args:
        threshold (float): minimum best score of a matched anchor.

    Forward:
        x (Tensor[B, N, M]) floating similarity -> Tensor[B, N] int64, ``-1`` = unmatched.
        See :func:`maximum_match`.

    Example:
        >>> import torch
        >>> MaximumMatcher(0.5)(torch.tensor([[[0.2, 0.7], [0.4, 0.1]]]))
        tensor([[ 1, -1]])
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = check_number("threshold", threshold)

    def forward(self, x: Tensor) -> Tensor:
        return maximum_match(x, self.threshold)

    def _match_into(self, cache: _ScanCache, out: Tensor) -> Tensor:
        recorded = _maximum_recorded(cache.input, self.threshold, out)
        return recorded if recorded is not None else _maximum(cache.get(1), self.threshold, out)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


class BipartiteMatcher(nn.Module):
    """Greedy one-to-one matching, then recovery of anchors that reach a column maximum.

    Args:
        threshold (float): scores must be strictly above it (below with
            ``is_ascend``) to be matched one-to-one. Default ``1e-12``.
        is_ascend (bool): lower scores are better. Default ``False``.
        eps (float): tolerance of the recovery step. Default ``1e-12``.
        share_max (bool): recovery against any reference's column maximum
            (``True``) or only the anchor's best reference's (``False``).

    Forward:
        x (Tensor[B, N, M]) floating similarity -> Tensor[B, N] int64, ``-1`` = unmatched.
        See :func:`bipartite_match`.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.5, 0.4], [0.9, 0.1], [0.0, 0.0]]])
        >>> BipartiteMatcher(share_max=False)(x)
        tensor([[ 1,  0, -1]])
    """

    def __init__(
        self, threshold: float = 1e-12, is_ascend: bool = False, eps: float = 1e-12, share_max: bool = True
    ) -> None:
        super().__init__()
        _check_bipartite_args(threshold, is_ascend, eps, share_max)
        self.threshold = threshold
        self.is_ascend = is_ascend
        self.eps = eps
        self.share_max = share_max

    def forward(self, x: Tensor) -> Tensor:
        return bipartite_match(x, self.threshold, self.is_ascend, self.eps, self.share_max)

    def _match_into(self, cache: _ScanCache, out: Tensor) -> Tensor:
        scan = cache.get(-1 if self.is_ascend else 1)
        return _bipartite(scan, self.threshold, self.eps, self.share_max, out)

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, is_ascend={self.is_ascend}, eps={self.eps}, "
            f"share_max={self.share_max}"
        )


def _check_matchers(matchers: object) -> list[nn.Module]:
    if isinstance(matchers, nn.Module) or not isinstance(matchers, (Sequence, nn.ModuleList)):
        raise TypeError(f"matchers must be a list of nn.Module matchers, got {type(matchers).__name__}")
    matchers = list(matchers)
    if not matchers:
        raise ValueError("matchers must hold at least one matcher, got an empty list")
    for i, mt in enumerate(matchers):
        if not isinstance(mt, nn.Module):
            raise TypeError(f"matchers[{i}] must be an nn.Module matcher, got {type(mt).__name__}")
    return matchers


def composite_match(x: Tensor, matchers: Sequence[nn.Module]) -> Tensor:
    """Run ``matchers`` in order on ``x``; each fills only anchors still unmatched.

    The matchers of this module share one pass over ``x``; any other module
    mapping ``Tensor[B, N, M]`` to ``Tensor[B, N]`` indices (``-1`` = none)
    can take part too.

    Args:
        x (Tensor[B, N, M]): floating similarity matrix.
        matchers (Sequence[nn.Module]): at least one matcher.

    Returns:
        Tensor[B, N] (int64): the first non-negative match over the chain,
        else ``-1``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.9, 0.0], [0.6, 0.2], [0.1, 0.55]]])
        >>> composite_match(x, [BipartiteMatcher(), MaximumMatcher(0.5)])
        tensor([[0, 0, 1]])
    """
    x = _check_x(x)
    matchers = _check_matchers(matchers)
    b, n, m = x.shape
    result = torch.full((b, n), NO_MATCH, dtype=torch.int64, device=x.device)
    if 0 in x.shape:  # no image, anchor or reference: nothing to match
        return result
    cache = _ScanCache(x)
    for mt in matchers:
        fill = getattr(mt, "_match_into", None)
        if callable(fill):
            result = fill(cache, result)
        else:
            result = torch.where(result < 0, mt(x).to(torch.int64), result)
    return result


class CompositeMatcher(nn.Module):
    """A chain of matchers: a later one only fills anchors every earlier one left at ``-1``.

    Args:
        matchers (list[nn.Module]): the matchers, in order; kept as an
            :class:`torch.nn.ModuleList`.

    Forward:
        x (Tensor[B, N, M]) floating similarity -> Tensor[B, N] int64, ``-1`` = unmatched.
        See :func:`composite_match`.

    Example:
        >>> import torch
        >>> m = CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(0.5)])
        >>> m(torch.tensor([[[0.9, 0.0], [0.6, 0.2], [0.1, 0.55]]]))
        tensor([[0, 0, 1]])
    """

    def __init__(self, matchers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.matchers = nn.ModuleList(_check_matchers(matchers))

    def forward(self, x: Tensor) -> Tensor:
        return composite_match(x, list(self.matchers))


# --------------------------------------------------------------------------- boxes
#: :func:`match_boxes` computes the whole IoU matrix and calls :func:`composite_match`
#: up to this many entries ``B * N * M`` (256 MiB in float32), and reads it in chunks of
#: anchors above (unless ``chunk_size`` says otherwise).
DENSE_LIMIT: int = 1 << 26

#: IoU entries ``B * rows * M`` of one chunk in :func:`match_boxes`' chunked path (16 MiB in
#: float32): enough work per chunk that the loop costs little, far below the whole matrix.
CHUNK_ELEMENTS: int = 1 << 22

# Candidate anchors kept per reference by the first pass over the chunks (the greedy
# matching asks for more only when some reference ran out of them).
_FIRST_CAPACITY = 64


def _flat_matchers(matchers: list[nn.Module], name: str) -> list[nn.Module]:
    flat: list[nn.Module] = []
    for i, mt in enumerate(matchers):
        where = f"{name}[{i}]"
        if isinstance(mt, CompositeMatcher):  # stands for its own chain
            flat.extend(_flat_matchers(list(mt.matchers), f"{where}.matchers"))
        elif isinstance(mt, (MaximumMatcher, BipartiteMatcher)):
            flat.append(mt)
        else:
            raise TypeError(
                f"{where} must be a MaximumMatcher, BipartiteMatcher or CompositeMatcher "
                f"for match_boxes, got {type(mt).__name__}"
            )
    return flat


def _check_box_matchers(matchers: object) -> list[nn.Module]:
    """The chain as a flat list of :class:`MaximumMatcher` / :class:`BipartiteMatcher`."""
    return _flat_matchers(_check_matchers(matchers), "matchers")


def _sign(mt: nn.Module) -> int:
    return -1 if getattr(mt, "is_ascend", False) else 1


class _Lists:
    """The first ``capacity`` anchors of every reference in the visiting order (score
    first, then lower anchor; ties among scores not above ``floor`` in any order),
    held in ascending anchor order: ``val``, ``idx (Tensor[B, M, L])``, ``L <= capacity``."""

    def __init__(self, b: int, m: int, capacity: int, floor: Tensor) -> None:
        self.capacity = capacity
        self.floor = floor
        self.val = torch.empty((b, m, 0), dtype=floor.dtype, device=floor.device)
        self.idx = torch.empty((b, m, 0), dtype=torch.int64, device=floor.device)

    def _merge(self, val: Tensor, idx: Tensor, sub: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Lists ``val``, ``idx (Tensor[..., L])`` merged with the scores ``sub
        (Tensor[..., c])`` of anchors ``start, ..., start + c - 1`` (all after the listed ones)."""
        pos = _first_k(sub, min(self.capacity, sub.shape[-1]), self.floor)  # ascending
        val = torch.cat([val, sub.gather(-1, pos)], -1)  # still ascending in anchor index
        idx = torch.cat([idx, pos + start], -1)
        pick = _first_k(val, min(self.capacity, val.shape[-1]), self.floor)
        return val.gather(-1, pick), idx.gather(-1, pick)

    def add(self, y: Tensor, col_best: Tensor, start: int) -> None:
        """Take in a chunk of scores ``y (Tensor[B, c, M])`` of anchors from ``start`` on,
        whose column maxima are ``col_best (Tensor[B, M])``."""
        yt = y.transpose(1, 2)  # (B, M, c)
        if self.val.shape[2] < self.capacity:
            self.val, self.idx = self._merge(self.val, self.idx, yt, start)
            return
        # Full lists: only references with a score above their last listed one change
        # (a tie loses to the lower, listed anchors).
        bi, mi = (col_best > self.val.amin(-1)).nonzero(as_tuple=True)
        if bi.numel() == 0:
            return
        val, idx = self._merge(self.val[bi, mi], self.idx[bi, mi], yt[bi, mi], start)
        self.val[bi, mi] = val
        self.idx[bi, mi] = idx

    def first(self, k: int, thr: Tensor) -> tuple[Tensor, Tensor]:
        """The first ``k`` anchors of every reference, as :func:`_candidates` returns them."""
        pick = _first_k(self.val, k, thr)  # (B, M, k) ascending
        score = self.val.gather(2, pick)
        return self.idx.gather(2, pick), torch.where(score > thr, score, -float("inf"))


class _Sweep(NamedTuple):
    """The IoU matrix of ``anchors`` and ``refs``, read ``rows`` anchors at a time."""

    anchors: Tensor  # (B or 1, N, 4)
    refs: Tensor  # (B or 1, M, 4)
    rows: int
    fmt: str
    offset: float
    eps: float

    def chunks(self):
        n = self.anchors.shape[1]
        for start in range(0, n, self.rows):
            part = self.anchors[:, start : start + self.rows]
            yield start, box_iou(part, self.refs, self.fmt, self.offset, self.eps)  # (B, c, M)


class _Summary(NamedTuple):
    """What the chunked path keeps from its pass over the IoU matrix, per sign (score
    space ``y = sign * iou``)."""

    best: dict  # sign -> (B, N) best y of every anchor
    arg: dict  # sign -> (B, N) its reference (the first one on ties)
    colmax: dict  # sign -> (B, M) best y of every reference
    lists: dict  # sign -> _Lists


def _scores(iou: Tensor, sign: int) -> Tensor:
    return iou if sign > 0 else iou.neg()


def _summarize(sweep: _Sweep, b: int, n: int, m: int, signs: set, lists: dict) -> _Summary:
    """One pass: per-anchor best and argbest, column maxima and candidate lists."""
    dtype = torch.promote_types(sweep.anchors.dtype, sweep.refs.dtype)
    dev = sweep.anchors.device
    best = {s: torch.empty((b, n), dtype=dtype, device=dev) for s in signs}
    arg = {s: torch.empty((b, n), dtype=torch.int64, device=dev) for s in signs}
    colmax = {s: torch.full((b, m), -float("inf"), dtype=dtype, device=dev) for s in signs}
    for start, iou in sweep.chunks():
        stop = start + iou.shape[1]
        for s in signs:
            y = _scores(iou, s)
            best[s][:, start:stop], arg[s][:, start:stop] = _best(iou, s)  # as the dense path
            col_best = y.amax(1)  # (B, M)
            torch.maximum(colmax[s], col_best, out=colmax[s])
            if s in lists:
                lists[s].add(y, col_best, start)
    return _Summary(best, arg, colmax, lists)


def _relist(sweep: _Sweep, lists: _Lists, sign: int, capacity: int) -> _Lists:
    """The candidate lists again, with a larger ``capacity`` (one more pass)."""
    b, m, _ = lists.val.shape
    new = _Lists(b, m, capacity, lists.floor)
    for start, iou in sweep.chunks():
        y = _scores(iou, sign)
        new.add(y, y.amax(1), start)
    return new


def _chunked_bipartite(sweep: _Sweep, summary: _Summary, mt: BipartiteMatcher, n: int) -> Tensor:
    """One bipartite matcher on its own, ``Tensor[B, N]``, from the pass's summary."""
    sign = _sign(mt)
    colmax, best, arg = summary.colmax[sign], summary.best[sign], summary.arg[sign]
    b, m = colmax.shape
    thr = torch.full((), sign * mt.threshold, dtype=colmax.dtype, device=colmax.device)
    ok = colmax > thr  # (B, M) references that can be matched at all
    out = torch.full((b, n + 1), NO_MATCH, dtype=torch.int64, device=colmax.device)
    q = int(ok.sum(1).max())
    if q:
        bound = min(q, n)  # a reference's match is among its first `bound` anchors
        k = min(_FIRST_ANCHORS, bound)
        while True:
            lists = summary.lists[sign]
            if k > lists.val.shape[2]:
                capacity = min(n, m, max(k, 8 * lists.capacity))
                lists = summary.lists[sign] = _relist(sweep, lists, sign, capacity)
            rows, score = lists.first(k, thr)  # (B, M, k)
            row = _rounds(rows, score)  # (B, M) anchor of every reference, -1 when none
            if k == bound or not bool(((row < 0) & (score > -float("inf")).all(2)).any()):
                break
            k = min(2 * k, bound)
        col = torch.arange(m, device=row.device).expand(b, m)
        out.scatter_(1, torch.where(row >= 0, row, n), torch.where(row >= 0, col, NO_MATCH))
    out = out[:, :n]
    # Recovery, as in _bipartite: NaN marks the references that cannot be reached.
    cmax = torch.where(ok, colmax, float("nan"))  # (B, M)
    if mt.share_max:
        near = _near(sweep, summary.lists[sign], cmax, mt.eps, sign)
    else:
        near = best + mt.eps >= cmax.gather(1, arg)
    return torch.where(out < 0, torch.where(near, arg, NO_MATCH), out)


def _near(sweep: _Sweep, lists: _Lists, cmax: Tensor, eps: float, sign: int) -> Tensor:
    """Anchors whose score reaches (within ``eps``) the column maximum ``cmax (Tensor[B, M])``
    of some reference (``NaN``: none), ``Tensor[B, N]`` bool.

    A reference's list holds every anchor reaching its maximum unless all its listed
    anchors reach it (ties at the maximum): only such references are read again.
    """
    b, m = cmax.shape
    n = sweep.anchors.shape[1]
    reach = lists.val + eps >= cmax[..., None]  # (B, M, L)
    near = torch.zeros((b, n + 1), dtype=torch.bool, device=cmax.device)
    near.scatter_(1, torch.where(reach, lists.idx, n).flatten(1), True)
    near = near[:, :n]
    if lists.val.shape[2] == n:  # every anchor is listed
        return near
    full = reach.all(-1)  # (B, M)
    f = int(full.sum(1).max())
    if f == 0:
        return near
    cols = _true_first(full)[:, :f]  # (B, F) those references first
    level = torch.where(full.gather(1, cols), cmax.gather(1, cols), float("nan"))  # (B, F)
    refs = sweep.refs.expand(b, m, 4).gather(1, cols[..., None].expand(b, f, 4))
    for start, iou in sweep._replace(refs=refs).chunks():  # the IoU of those references only
        y = _scores(iou, sign)
        near[:, start : start + iou.shape[1]] |= (y + eps >= level[:, None, :]).any(-1)
    return near


def _match_chunked(sweep: _Sweep, matchers: list[nn.Module], b: int, n: int, m: int) -> tuple[Tensor, Tensor]:
    dtype = torch.promote_types(sweep.anchors.dtype, sweep.refs.dtype)
    dev = sweep.anchors.device
    bip = [mt for mt in matchers if isinstance(mt, BipartiteMatcher)]
    signs = {1} | {_sign(mt) for mt in bip}
    lists = {}
    for s in {_sign(mt) for mt in bip}:
        floor = min(s * mt.threshold for mt in bip if _sign(mt) == s)  # ties above it are exact
        floor_t = torch.full((), floor, dtype=dtype, device=dev)
        lists[s] = _Lists(b, m, min(n, m, _FIRST_CAPACITY), floor_t)
    summary = _summarize(sweep, b, n, m, signs, lists)
    result = torch.full((b, n), NO_MATCH, dtype=torch.int64, device=dev)
    for mt in matchers:
        if isinstance(mt, BipartiteMatcher):
            out = _chunked_bipartite(sweep, summary, mt, n)
        else:
            thr = torch.full((), mt.threshold, dtype=dtype, device=dev)
            out = torch.where(summary.best[1] >= thr, summary.arg[1], NO_MATCH)
        result = torch.where(result < 0, out, result)
    return result, summary.best[1]


def match_boxes(
    anchors: Tensor,
    refs: Tensor,
    matchers: Sequence[nn.Module],
    *,
    chunk_size: int | None = None,
    fmt: str = "corner",
    offset: float = 0.0,
    eps: float = 1e-15,
) -> tuple[Tensor, Tensor]:
    """Match anchors to reference boxes by IoU, without the whole IoU matrix when it is large.

    Returns exactly ``composite_match(box_iou(anchors, refs, fmt, offset, eps), matchers)``
    and ``box_iou(...).amax(-1)``, bit for bit, ties included. Up to
    :data:`DENSE_LIMIT` IoU entries (``B * N * M``, 256 MiB in float32) it computes
    just that. Above it, or whenever ``chunk_size`` is given, it reads the IoU
    matrix in chunks of anchors, keeping ``O(B * (N + 64 M))`` numbers between them
    (see the module notes): for one image with 1,000,000 anchors and 1,000
    references, whose float32 IoU matrix alone is 4 GB, it needs under 100 MB
    beyond its inputs. Under ``torch.compile``/``torch.export`` it always takes the
    dense path.

    The best IoU can stand in for the IoU matrix in :func:`~detblocks.sampler.ohem_sample`
    and :func:`~detblocks.sampler.quota_sample`, which only read each anchor's best.

    Args:
        anchors (Tensor[B, N, 4]): anchor boxes, floating dtype.
        refs (Tensor[B, M, 4]): reference (ground-truth) boxes, padded with rows of
            ``-1``. A batch size of 1 on either side broadcasts against the other.
        matchers (Sequence[nn.Module]): the chain, as for :func:`composite_match`;
            :class:`MaximumMatcher`, :class:`BipartiteMatcher` and
            :class:`CompositeMatcher` (other modules would need the whole matrix).
        chunk_size (int | None): anchors per chunk; ``None`` chooses the dense path up
            to :data:`DENSE_LIMIT` entries and chunks of :data:`CHUNK_ELEMENTS` entries
            above it.
        fmt (str): box format of both inputs, ``'corner'``/``'xyxy'`` or
            ``'center'``/``'cxcywh'``.
        offset (float): added to widths and heights, as in :func:`~detblocks.bbox.box_iou`.
        eps (float): added to the union, as in :func:`~detblocks.bbox.box_iou`.

    Returns:
        tuple[Tensor[B, N], Tensor[B, N]]: ``matches`` (int64, the matched reference
        index, ``-1`` when none) and the best IoU of every anchor (in the promoted
        dtype of the boxes, 0 when ``M = 0``). Neither carries a gradient.

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30.0]]])
        >>> refs = torch.tensor([[[0, 0, 10, 10], [-1, -1, -1, -1.0]]])  # one object, one padded row
        >>> chain = [BipartiteMatcher(), MaximumMatcher(0.5)]
        >>> matches, best = match_boxes(anchors, refs, chain)
        >>> matches, best
        (tensor([[ 0,  0, -1]]), tensor([[1.0000, 0.9000, 0.0000]]))
        >>> torch.equal(match_boxes(anchors, refs, chain, chunk_size=2)[0], matches)  # in chunks
        True
    """
    anchors = check_boxes("anchors", anchors, 3, "(B, N, 4)")
    refs = check_boxes("refs", refs, 3, "(B, M, 4)")
    check_pair_batch("anchors", anchors, "refs", refs)
    flat = _check_box_matchers(matchers)
    if chunk_size is not None:
        check_number("chunk_size", chunk_size, low=1, integer=True)
    parse_fmt(fmt)
    offset = check_number("offset", offset)
    eps = check_number("eps", eps, low=0)
    anchors, refs = anchors.detach(), refs.detach()  # matching is not differentiable
    b = max(anchors.shape[0], refs.shape[0])
    n, m = anchors.shape[1], refs.shape[1]
    size = b * n * m
    if tracing() or size == 0 or (chunk_size is None and size <= DENSE_LIMIT):
        iou = box_iou(anchors, refs, fmt, offset, eps)  # (B, N, M)
        best = _recorded_best_iou(iou)  # box_iou's own row maxima, when it kept them
        if best is None:
            best = iou.amax(-1) if m else iou.new_zeros((b, n))
        return composite_match(iou, matchers), best
    rows = chunk_size if chunk_size is not None else max(1, CHUNK_ELEMENTS // (b * m))
    return _match_chunked(_Sweep(anchors, refs, rows, fmt, offset, eps), flat, b, n, m)
