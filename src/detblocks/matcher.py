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

How the bipartite matcher avoids sorting all ``N * M`` pairs
-------------------------------------------------------------
1. *One pass over x* takes the maximum of every group of
   :data:`GROUP_ROWS` consecutive anchors for every reference
   (``Tensor[B, N / GROUP_ROWS, M]``); the column maxima follow from it.
2. *Candidates.* The greedy matching takes at most ``c`` pairs, ``c`` being the
   number of references whose column maximum is above the threshold, so a
   reference is matched to one of its first ``k = min(c, N)`` anchors in the
   visiting order (score first, then anchor index), or to nothing. Those ``k``
   anchors lie in the first ``k`` groups of the reference (group maximum first,
   then group index), so each reference gathers ``k * GROUP_ROWS`` scores and
   keeps its first ``k``. Greedy matching restricted to these ``c * k`` pairs
   takes exactly the pairs the full greedy matching takes.
3. *Rounds.* With a strict order on pairs, the greedy matching is the fixed
   point of repeatedly taking every *mutually best* pair (the best free
   anchor of a free reference whose best free reference is that one), which
   runs batched over images; usually a handful of rounds.
4. *Recovery* only concerns anchors that reach a column maximum (within
   ``eps``); they lie in groups whose maximum does, so only those groups' rows
   are read again. :func:`maximum_match` likewise reads only groups whose
   maximum reaches its threshold.

Memory beyond ``x`` is ``O(N * M / GROUP_ROWS + c * k * GROUP_ROWS)``; no
other ``(B, N, M)`` tensor is made, except one cleaned copy of ``x`` when it
holds NaN (a NaN score never matches: it counts as the worst possible score).

Under ``torch.compile``/``torch.export`` the sizes that eager mode reads from
the data (``c``, the flagged groups, the number of rounds) take their static
bounds instead (``c = M``, every row, a ``torch.while_loop``), so the same
code traces without data-dependent shapes or Python control flow.

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

from detblocks._checks import check_float, check_number, check_rank
from detblocks.conventions import NO_MATCH

__all__ = [
    "GROUP_ROWS",
    "maximum_match",
    "bipartite_match",
    "composite_match",
    "MaximumMatcher",
    "BipartiteMatcher",
    "CompositeMatcher",
]

#: Anchors per group in the one pass over ``x``. 16 keeps the group maxima at
#: 1/16 of ``x`` while the grouped reduction still runs near memory speed.
GROUP_ROWS: int = 16

# When flagged groups cover more than this fraction of the rows, read all rows
# in place instead of gathering them (a gather copies what it reads).
_DENSE_FRACTION = 0.25


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _check_x(x: object) -> Tensor:
    x = check_float("x", x)
    check_rank("x", x, 3, "(B, N, M)")
    return x


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- summary
class _Scan(NamedTuple):
    """What every matcher needs from one pass over ``x``, in *score space*
    ``y = sign * x`` (so that larger is always better)."""

    x: Tensor  # (B, N, M) the input, NaN replaced by the worst score when it had any
    sign: int  # +1: larger x is better; -1: smaller x is better (is_ascend)
    gmax: Tensor  # (B, G, M) best y of each group of GROUP_ROWS anchors, G = N // GROUP_ROWS + 1
    colmax: Tensor  # (B, M) best y of each reference


def _group_best(x: Tensor, sign: int) -> Tensor:
    """Best ``sign * x`` over each group of ``GROUP_ROWS`` consecutive anchors: ``(B, N // C + 1, M)``.
    The last group holds the ``N % C`` remaining anchors (it is empty, at ``-inf``, when none remain)."""
    b, n, m = x.shape
    c = GROUP_ROWS
    g = n // c
    reduce = torch.amax if sign > 0 else torch.amin
    main = reduce(x[:, : g * c].reshape(b, g, c, m), 2)  # (B, G - 1, M)
    worst = torch.full((b, 1, m), -sign * float("inf"), dtype=x.dtype, device=x.device)
    last = reduce(torch.cat([x[:, g * c :], worst], 1), 1, keepdim=True)  # (B, 1, M)
    best = torch.cat([main, last], 1)
    return best if sign > 0 else best.neg_()


def _scan(x: Tensor, sign: int) -> _Scan:
    worst = -sign * float("inf")
    if _tracing():
        x = torch.where(torch.isnan(x), worst, x)
        gmax = _group_best(x, sign)
    else:
        gmax = _group_best(x, sign)
        # A NaN anywhere shows up in its group maximum; clean a copy only then.
        if bool(torch.isnan(gmax).any()):
            x = torch.where(torch.isnan(x), worst, x)
            gmax = _group_best(x, sign)
    return _Scan(x, sign, gmax, gmax.amax(1))


class _ScanCache:
    """One :class:`_Scan` per sign, shared by the matchers of a :class:`CompositeMatcher`."""

    def __init__(self, x: Tensor) -> None:
        self.input = x
        self._scans: dict[int, _Scan] = {}

    def get(self, sign: int) -> _Scan:
        if sign not in self._scans:
            self._scans[sign] = _scan(self.input, sign)
        return self._scans[sign]


# --------------------------------------------------------------------------- rows
def _flagged_rows(scan: _Scan, flags: Tensor) -> tuple[Tensor, Tensor | None]:
    """The anchors of the groups flagged in ``flags (Tensor[B, G])``.

    Returns ``(rows, index)``: ``rows (Tensor[R, 1, M])`` the anchors' scores
    and ``index (Tensor[R])`` their flat positions ``b * N + n``; or
    ``(x (Tensor[B, N, M]), None)`` when reading every anchor in place is the
    better deal (many flagged groups, or tracing, where shapes must not depend
    on data).
    """
    x = scan.x
    b, n, m = x.shape
    c = GROUP_ROWS
    if _tracing():
        return x, None
    bg = flags.nonzero()  # (Q, 2): image, group
    if bg.shape[0] * c > _DENSE_FRACTION * b * n:
        return x, None
    rows = bg[:, 1:] * c + torch.arange(c, device=x.device)  # (Q, C)
    flat = (bg[:, :1] * n + rows)[rows < n]  # (R,)
    return x.reshape(b * n, 1, m).index_select(0, flat), flat


def _scatter_rows(values: Tensor, index: Tensor | None, b: int, n: int, fill: int) -> Tensor:
    """Inverse of :func:`_flagged_rows` for per-anchor results: ``(Tensor[B, N])``."""
    if index is None:
        return values.reshape(b, n)
    out = torch.full((b * n,), fill, dtype=values.dtype, device=values.device)
    return out.index_copy_(0, index, values.reshape(-1)).reshape(b, n)


def _row_best(rows: Tensor, sign: int) -> tuple[Tensor, Tensor]:
    """Best score (``sign`` space) and its first index along the last axis."""
    if sign > 0:
        best, arg = rows.max(-1)
        return best, arg
    best, arg = rows.min(-1)
    return best.neg(), arg


def _per_row(scan: _Scan, index: Tensor | None, colwise: Tensor) -> Tensor:
    """``colwise (Tensor[B, M])`` laid out to broadcast against the rows of
    :func:`_flagged_rows`: ``(B, 1, M)`` in place, ``(R, 1, M)`` gathered."""
    if index is None:
        return colwise[:, None, :]
    n = scan.x.shape[1]
    return colwise.index_select(0, torch.div(index, n, rounding_mode="floor"))[:, None, :]


# --------------------------------------------------------------------------- maximum
def _maximum(scan: _Scan, threshold: float) -> Tensor:
    x = scan.x
    b, n, _ = x.shape
    thr = torch.full((), threshold, dtype=x.dtype, device=x.device)
    flags = scan.gmax.amax(-1) >= thr  # (B, G): groups holding an anchor that can match
    rows, index = _flagged_rows(scan, flags)
    best, arg = rows.max(-1)
    match = torch.where(best >= thr, arg, NO_MATCH)
    return _scatter_rows(match, index, b, n, NO_MATCH)


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
    b, n, m = x.shape
    if n == 0 or m == 0:
        return torch.full((b, n), NO_MATCH, dtype=torch.int64, device=x.device)
    return _maximum(_scan(x, 1), threshold)


# --------------------------------------------------------------------------- bipartite
def _first_k(v: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries along the last axis, ties to the
    lower index, returned in ascending index order. ``v`` must hold no NaN
    and ``1 <= k <= v.shape[-1]``."""
    size = v.shape[-1]
    kth = v.topk(k, -1).values[..., -1:]  # (..., 1) the k-th largest value
    above = v > kth
    at = v == kth
    room = k - above.sum(-1, keepdim=True)  # how many entries equal to kth are taken
    take = above | (at & (at.cumsum(-1) <= room))  # exactly k entries
    rank = torch.arange(size, 0, -1, device=v.device)  # earlier index -> larger key
    return (take * rank).topk(k, -1).indices  # keys unique among the taken: ascending index


def _candidates(scan: _Scan, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per reference, its first ``k`` anchors in visiting order.

    Returns ``cols (Tensor[B, Mc])`` the references considered (those that can
    match first, in ascending order), ``rows (Tensor[B, Mc, K])`` anchor indices
    (ascending) and ``score (Tensor[B, Mc, K])`` their scores, ``-inf`` where the
    pair cannot be taken (score not above ``threshold``).
    """
    x, sign = scan.x, scan.sign
    b, n, m = x.shape
    g = scan.gmax.shape[1]
    c = GROUP_ROWS
    dev = x.device
    thr = torch.full((), sign * threshold, dtype=x.dtype, device=dev)
    can = scan.colmax > thr  # (B, M) references that can be matched at all
    if _tracing():
        mc = m
    else:
        mc = int(can.sum(1).max())  # references to process; 0 = nothing can match
        if mc == 0:
            empty = torch.empty((b, 0), dtype=torch.int64, device=dev)
            return empty, empty[..., None], x.new_empty((b, 0, 0))
    k = torch.sym_min(mc, n)
    cols = torch.sort((~can).to(torch.uint8), dim=1, stable=True).indices[:, :mc]  # (B, Mc)
    # 1. first kg groups of every reference (group best first, then group index).
    kg = torch.sym_min(k, g)
    gsc = scan.gmax.gather(2, cols[:, None, :].expand(b, g, mc)).transpose(1, 2)  # (B, Mc, G)
    groups = _first_k(gsc, kg)  # (B, Mc, kg) ascending
    # 2. their anchors, ascending; the last group may run past N.
    rows = (groups[..., None] * c + torch.arange(c, device=dev)).reshape(b, mc, kg * c)
    inside = rows < n
    rows = rows.clamp_max(n - 1)
    flat = rows * m + cols[..., None]  # (B, Mc, kg * C)
    score = x.reshape(b, n * m).gather(1, flat.reshape(b, -1)).reshape(flat.shape)
    if sign < 0:
        score = score.neg()
    score = torch.where(inside, score, -float("inf"))
    # 3. the first k anchors of every reference.
    pick = _first_k(score, k)  # (B, Mc, k) ascending
    rows = rows.gather(2, pick)
    score = score.gather(2, pick)
    score = torch.where(score > thr, score, -float("inf"))
    return cols, rows, score


def _greedy(scan: _Scan, threshold: float) -> Tensor:
    """The greedy one-to-one matching (before recovery): ``(Tensor[B, N])`` int64."""
    x = scan.x
    b, n, _ = x.shape
    dev = x.device
    cols, rows, score = _candidates(scan, threshold)
    mc, k = rows.shape[1], rows.shape[2]
    out = torch.full((b, n + 1), NO_MATCH, dtype=torch.int64, device=dev)
    if mc == 0:
        return out[:, :n]
    length = mc * k
    valid = score > -float("inf")  # (B, Mc, k)
    # Compact anchor ids: equal anchor indices share an id in [0, length).
    sorted_rows, order = rows.reshape(b, length).sort(1)
    new = torch.ones_like(sorted_rows, dtype=torch.bool)
    new[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    rid = torch.empty_like(order).scatter_(1, order, new.cumsum(1) - 1).reshape(b, mc, k)
    rid_flat = rid.reshape(b, length)
    col_id = torch.arange(mc, device=dev)  # compacted references keep their ascending order
    col_key = col_id[:, None].expand(mc, k).reshape(1, length)
    neg_inf = torch.full((b, length), -float("inf"), dtype=score.dtype, device=dev)
    no_col = torch.full((b, length), mc, dtype=torch.int64, device=dev)

    def one_round(taken: Tensor, anchor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """taken (B, length + 1) bool per anchor id (the last slot is a sink);
        anchor (B, Mc) matched anchor id per reference, -1 when free."""
        free = ~taken.gather(1, rid_flat).reshape(b, mc, k)
        avail = valid & free & (anchor < 0)[..., None]
        s = torch.where(avail, score, -float("inf"))
        best, j = s.max(2)  # best free anchor of every free reference (ties: lower anchor)
        s_flat = s.reshape(b, length)
        row_best = neg_inf.scatter_reduce(1, rid_flat, s_flat, "amax")
        is_best = avail.reshape(b, length) & (s_flat == row_best.gather(1, rid_flat))
        best_col = no_col.scatter_reduce(
            1, rid_flat, torch.where(is_best, col_key, mc), "amin"
        )  # (B, length): best free reference of every anchor id (ties: lower reference)
        prop = rid.gather(2, j[..., None]).squeeze(2)  # (B, Mc) proposed anchor id
        accept = (best > -float("inf")) & (best_col.gather(1, prop) == col_id)
        anchor = torch.where(accept, prop, anchor)
        taken = taken.scatter(1, torch.where(accept, prop, length), True)
        return taken, anchor, accept.any()

    taken = torch.zeros((b, length + 1), dtype=torch.bool, device=dev)
    anchor = torch.full((b, mc), -1, dtype=torch.int64, device=dev)
    if _tracing():

        def cond(i: Tensor, go: Tensor, taken: Tensor, anchor: Tensor) -> Tensor:
            return go & (i < mc)

        def body(i: Tensor, go: Tensor, taken: Tensor, anchor: Tensor) -> tuple[Tensor, ...]:
            taken, anchor, go = one_round(taken, anchor)
            return i + 1, go, taken, anchor

        i0 = torch.zeros((), dtype=torch.int64, device=dev)
        go0 = torch.ones((), dtype=torch.bool, device=dev)
        _, _, taken, anchor = torch.while_loop(cond, body, (i0, go0, taken, anchor))
    else:
        # Every round with a takeable pair takes at least the best one: at most
        # min(Mc, k) productive rounds, then one that finds nothing.
        for _ in range(min(mc, k) + 1):
            taken, anchor, go = one_round(taken, anchor)
            if not bool(go):
                break
    # Anchor id -> anchor index, via any candidate slot holding that id.
    id_to_row = torch.zeros((b, length), dtype=torch.int64, device=dev).scatter_(
        1, rid_flat, rows.reshape(b, length)
    )
    matched = anchor >= 0
    row = torch.where(matched, id_to_row.gather(1, anchor.clamp_min(0)), n)  # (B, Mc), n = sink
    out.scatter_(1, row, torch.where(matched, cols, NO_MATCH))
    return out[:, :n]


def _bipartite(scan: _Scan, threshold: float, eps: float, share_max: bool) -> Tensor:
    x, sign = scan.x, scan.sign
    b, n, _ = x.shape
    match = _greedy(scan, threshold)
    # Recovery: an anchor reaching (within eps) the column maximum of a reference
    # that can match takes its best reference. cmax = +inf marks the others.
    thr = torch.full((), sign * threshold, dtype=x.dtype, device=x.device)
    cmax = torch.where(scan.colmax > thr, scan.colmax, float("inf"))  # (B, M)
    flags = (scan.gmax + eps >= cmax[:, None, :]).any(-1)  # (B, G) groups that may hold one
    rows, index = _flagged_rows(scan, flags)
    best, arg = _row_best(rows, sign)  # (B, N) or (R, 1)
    cm = _per_row(scan, index, cmax)  # (B, 1, M) or (R, 1, M)
    if share_max:
        y = rows if sign > 0 else rows.neg()
        near = (y + eps >= cm).any(-1)
    else:
        near = best + eps >= cm.expand(*arg.shape, cm.shape[-1]).gather(-1, arg[..., None]).squeeze(-1)
    recovered = _scatter_rows(torch.where(near, arg, NO_MATCH), index, b, n, NO_MATCH)
    return torch.where(match < 0, recovered, match)


def _check_bipartite_args(threshold: object, is_ascend: object, eps: object, share_max: object) -> None:
    check_number("threshold", threshold)
    _check_bool("is_ascend", is_ascend)
    check_number("eps", eps)
    _check_bool("share_max", share_max)


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
    _check_bool("recover", recover)
    b, n, m = x.shape
    if n == 0 or m == 0:
        return torch.full((b, n), NO_MATCH, dtype=torch.int64, device=x.device)
    scan = _scan(x, -1 if is_ascend else 1)
    if not recover:
        return _greedy(scan, threshold)
    return _bipartite(scan, threshold, eps, share_max)


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

    def _match_scan(self, cache: _ScanCache) -> Tensor:
        return _maximum(cache.get(1), self.threshold)

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

    def _match_scan(self, cache: _ScanCache) -> Tensor:
        scan = cache.get(-1 if self.is_ascend else 1)
        return _bipartite(scan, self.threshold, self.eps, self.share_max)

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
    if n == 0 or m == 0:
        return result
    cache = _ScanCache(x)
    for mt in matchers:
        fn = getattr(mt, "_match_scan", None)
        match = fn(cache) if callable(fn) else mt(x).to(torch.int64)
        result = torch.where(result < 0, match, result)
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
