"""Tests of detblocks.matcher against a plain loop-based reference written from SPEC.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detblocks import matcher
from detblocks.conventions import NO_MATCH
from detblocks.matcher import (
    BipartiteMatcher,
    CompositeMatcher,
    MaximumMatcher,
    bipartite_match,
    composite_match,
    maximum_match,
)


# --------------------------------------------------------------------------- reference
def _scores(x: torch.Tensor, is_ascend: bool) -> list[list[float]]:
    """One image's scores as Python floats (exact for every dtype), NaN -> worst."""
    worst = math.inf if is_ascend else -math.inf
    return [[worst if math.isnan(v) else v for v in row] for row in x.double().tolist()]


def _in_dtype(value: float, dtype: torch.dtype) -> float:
    return torch.tensor(value, dtype=dtype).item()


def reference_greedy(x: torch.Tensor, threshold: float, is_ascend: bool = False) -> list[int]:
    """Greedy one-to-one matching of one image ``x (N, M)``: every pair in the
    visiting order (a stable sort of the row-major pairs by score), taken when
    both ends are free and the score is strictly beyond the threshold."""
    n, m = x.shape
    s = _scores(x, is_ascend)
    thr = _in_dtype(threshold, x.dtype)
    sign = 1.0 if is_ascend else -1.0  # a stable sort keeps row-major order among ties
    pairs = sorted(((i, j) for i in range(n) for j in range(m)), key=lambda p: sign * s[p[0]][p[1]])
    row, col_used = [NO_MATCH] * n, [False] * m
    for i, j in pairs:
        v = s[i][j]
        beyond = v < thr if is_ascend else v > thr
        if row[i] == NO_MATCH and not col_used[j] and beyond:
            row[i], col_used[j] = j, True
    return row


def reference_bipartite(
    x: torch.Tensor,
    threshold: float = 1e-12,
    is_ascend: bool = False,
    eps: float = 1e-12,
    share_max: bool = True,
    recover: bool = True,
) -> list[int]:
    """SPEC.md's BipartiteMatcher on one image ``x (N, M)``."""
    n, m = x.shape
    match = reference_greedy(x, threshold, is_ascend)
    if not recover or m == 0 or n == 0:
        return match
    s = _scores(x, is_ascend)
    thr = _in_dtype(threshold, x.dtype)
    # x + eps (x - eps ascending) rounded to x's dtype, as a tensor op computes it
    shifted = _scores(x - eps if is_ascend else x + eps, is_ascend)
    better = (lambda a, b: a < b) if is_ascend else (lambda a, b: a > b)
    col_best = []  # column best; only references whose best is beyond the threshold count
    for j in range(m):
        col = [s[i][j] for i in range(n)]
        col_best.append(min(col) if is_ascend else max(col))
    counts = [better(c, thr) for c in col_best]

    def reaches(i: int, j: int) -> bool:  # s[i][j] ties the column best of j within eps
        return counts[j] and (shifted[i][j] <= col_best[j] if is_ascend else shifted[i][j] >= col_best[j])

    out = list(match)
    for i in range(n):
        if match[i] != NO_MATCH:
            continue
        best_j = 0
        for j in range(1, m):
            if better(s[i][j], s[i][best_j]):
                best_j = j
        ok = any(reaches(i, j) for j in range(m)) if share_max else reaches(i, best_j)
        out[i] = best_j if ok else NO_MATCH
    return out


def reference_maximum(x: torch.Tensor, threshold: float) -> list[int]:
    s = _scores(x, False)
    thr = _in_dtype(threshold, x.dtype)
    out = []
    for row in s:
        if not row:
            out.append(NO_MATCH)
            continue
        j = max(range(len(row)), key=lambda k: (row[k], -k))
        out.append(j if row[j] >= thr else NO_MATCH)
    return out


def batched(fn, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return torch.tensor([fn(xb, *args, **kwargs) for xb in x], dtype=torch.int64).reshape(x.shape[:2])


# --------------------------------------------------------------------------- inputs
def random_scores(gen: torch.Generator, b: int, n: int, m: int, kind: str) -> torch.Tensor:
    """float64 scores exactly representable in float16/bfloat16 (multiples of 1/64 in [0, 1])."""
    if kind == "ties":
        x = torch.randint(0, 4, (b, n, m), generator=gen).double() / 4
    else:
        x = torch.randint(0, 65, (b, n, m), generator=gen).double() / 64
    if kind == "padded" and m > 0:  # trailing all-zero columns, as from -1 padded ground truth
        real = torch.randint(0, m + 1, (b, 1, 1), generator=gen)
        x = torch.where(torch.arange(m) < real, x, 0.0)
    if kind == "sparse":  # IoU-like: most pairs do not overlap
        x = torch.where(torch.rand((b, n, m), generator=gen) < 0.8, 0.0, x)
    if kind == "nan":
        x = torch.where(torch.rand((b, n, m), generator=gen) < 0.2, math.nan, x)
    return x


KINDS = ["uniform", "ties", "padded", "sparse", "nan"]
SHAPES = [(2, 7, 3), (1, 3, 6), (3, 40, 5), (2, 37, 9), (1, 20, 1), (2, 1, 4), (2, 0, 3), (2, 4, 0)]


@pytest.fixture(params=[16, 3, 1], ids=lambda g: f"fold{g}")
def fold(request, monkeypatch):
    """Few blocks (large groups) exercise the group selection on small inputs."""
    monkeypatch.setattr(matcher, "FOLD", request.param)
    return request.param


@pytest.fixture(params=[0.25, 2.0, -1.0], ids=["auto", "gather", "dense"])
def dense_fraction(request, monkeypatch):
    """Both ways of reading flagged rows again: gathered, and in place."""
    monkeypatch.setattr(matcher, "_DENSE_FRACTION", request.param)
    return request.param


# --------------------------------------------------------------------------- vs reference
def _compare_bipartite(x: torch.Tensor, thresholds, is_ascend: bool) -> None:
    for threshold in thresholds:
        for share_max in (True, False):
            got = bipartite_match(x, threshold, is_ascend, 1e-12, share_max)
            want = batched(reference_bipartite, x, threshold, is_ascend, 1e-12, share_max)
            assert got.dtype == torch.int64 and got.shape == x.shape[:2]
            assert torch.equal(got, want), (threshold, share_max, x)
        got = bipartite_match(x, threshold, is_ascend, recover=False)
        assert torch.equal(got, batched(reference_greedy, x, threshold, is_ascend)), (threshold, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("is_ascend", [False, True], ids=["desc", "asc"])
def test_bipartite_matches_reference(dtype, kind, is_ascend):
    gen = torch.Generator().manual_seed(KINDS.index(kind) + 10 * is_ascend)
    for shape in SHAPES:
        x = random_scores(gen, *shape, kind).to(dtype)
        _compare_bipartite(x, [0.6, 0.3] if is_ascend else [1e-12, 0.5], is_ascend)


def test_bipartite_internal_paths(fold, dense_fraction):
    """Every way through the implementation: group sizes, gathered or in-place rows."""
    gen = torch.Generator().manual_seed(fold)
    for kind in KINDS:
        for shape in [(2, 37, 9), (3, 40, 5), (1, 3, 6), (2, 60, 3)]:
            x = random_scores(gen, *shape, kind).float()
            _compare_bipartite(x, [1e-12], False)
            _compare_bipartite(x, [0.6], True)
            assert torch.equal(maximum_match(x, 0.5), batched(reference_maximum, x, 0.5))


def test_bipartite_eps_tolerance(dtype):
    """eps widens the recovery's tie with the column maximum."""
    x = torch.tensor([[[0.5, 0.0], [0.25, 0.0], [0.46875, 0.0]]], dtype=dtype)
    for eps in (1e-12, 0.05):
        for share_max in (True, False):
            got = bipartite_match(x, eps=eps, share_max=share_max)
            assert torch.equal(got, batched(reference_bipartite, x, 1e-12, False, eps, share_max))
    assert bipartite_match(x, eps=0.05).tolist() == [[0, -1, 0]]


@pytest.mark.parametrize("kind", KINDS)
def test_maximum_matches_reference(dtype, kind):
    gen = torch.Generator().manual_seed(7)
    for shape in SHAPES:
        x = random_scores(gen, *shape, kind).to(dtype)
        for threshold in (0.0, 0.5, 0.75):
            got = maximum_match(x, threshold)
            assert got.dtype == torch.int64 and got.shape == shape[:2]
            assert torch.equal(got, batched(reference_maximum, x, threshold)), (shape, threshold)


@pytest.mark.parametrize("kind", KINDS)
def test_composite_matches_reference(dtype, kind):
    gen = torch.Generator().manual_seed(11)
    for shape in SHAPES:
        x = random_scores(gen, *shape, kind).to(dtype)
        for share_max, thr in ((False, 0.5), (True, 0.7)):
            got = CompositeMatcher([BipartiteMatcher(share_max=share_max), MaximumMatcher(thr)])(x)
            first = batched(reference_bipartite, x, share_max=share_max)
            second = batched(reference_maximum, x, thr)
            assert torch.equal(got, torch.where(first >= 0, first, second)), (shape, x)


def test_larger_random_against_reference():
    """Several groups per reference and chains of contested anchors."""
    gen = torch.Generator().manual_seed(3)
    for kind in ("ties", "sparse", "uniform"):
        x = random_scores(gen, 2, 150, 12, kind).float()
        for share_max in (True, False):
            want = batched(reference_bipartite, x, share_max=share_max)
            assert torch.equal(bipartite_match(x, share_max=share_max), want), kind


def test_wide_matrix_against_reference():
    """M > 256 folds the anchors into more blocks, reduced block by block."""
    gen = torch.Generator().manual_seed(4)
    x = random_scores(gen, 1, 120, 260, "sparse").float()
    assert 120 // -(-120 // matcher._fold(260)) > 16
    for share_max in (True, False):
        assert torch.equal(
            bipartite_match(x, share_max=share_max), batched(reference_bipartite, x, share_max=share_max)
        )
    assert torch.equal(maximum_match(x, 0.75), batched(reference_maximum, x, 0.75))


def test_contested_anchors_grow_candidate_lists():
    """References that all prefer the same anchors need more than the first few candidates."""
    gen = torch.Generator().manual_seed(6)
    base = torch.rand(2, 40, 1, generator=gen)
    x = base.expand(2, 40, 9) + torch.rand(2, 40, 9, generator=gen) * 1e-3  # one ranking for all
    for share_max in (True, False):
        assert torch.equal(
            bipartite_match(x, share_max=share_max), batched(reference_bipartite, x, share_max=share_max)
        )
    tied = torch.full((1, 30, 7), 0.5)  # everything ties: row-major order decides
    assert bipartite_match(tied, recover=False).tolist() == [list(range(7)) + [-1] * 23]


@pytest.mark.parametrize("floor", [-math.inf, 0.5])
def test_first_k_breaks_ties_by_index(floor):
    gen = torch.Generator().manual_seed(8)
    v = torch.randint(0, 4, (50, 30), generator=gen).float() / 4
    for k in (1, 3, 7, 30):
        got = matcher._first_k(v, k, torch.tensor(floor))
        assert got.shape == (50, k) and bool((got.diff(dim=-1) > 0).all())
        want = torch.sort(v, dim=-1, descending=True, stable=True).indices[:, :k].sort(-1).values
        same = (got == want).all(-1)
        # rows may differ only in which entries not above the floor were taken
        kth = v.gather(-1, want).amin(-1)
        assert bool((same | (kth <= floor)).all())
        assert torch.equal(v.gather(-1, got).sort(-1).values, v.gather(-1, want).sort(-1).values)
        assert torch.equal(matcher._first_k_exact(v, k), want)


def test_iou_like_with_padding_against_reference():
    """Real boxes: IoU with padded (-1) ground truth, as the detection pipelines produce it."""

    def box_iou(a, b):
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp_min(0).prod(-1)
        area = lambda t: (t[:, 2:] - t[:, :2]).clamp_min(0).prod(-1)  # noqa: E731
        return inter / (area(a)[:, None] + area(b)[None, :] - inter)

    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(2, 120, 2, generator=gen) * 100
    anchors = torch.cat([xy, xy + 5 + torch.rand(2, 120, 2, generator=gen) * 30], -1)
    gxy = torch.rand(2, 8, 2, generator=gen) * 100
    gt = torch.cat([gxy, gxy + 10 + torch.rand(2, 8, 2, generator=gen) * 40], -1)
    gt[0, 5:] = -1
    gt[1, 2:] = -1
    x = torch.stack([box_iou(a, g) for a, g in zip(anchors, gt)])
    x = torch.where((gt < 0).all(-1)[:, None, :], 0.0, x)
    for share_max in (True, False):
        got = bipartite_match(x, share_max=share_max)
        assert torch.equal(got, batched(reference_bipartite, x, share_max=share_max))
        assert not bool(((got >= 5) & (torch.arange(2)[:, None] == 0)).any())
        assert not bool(((got >= 2) & (torch.arange(2)[:, None] == 1)).any())


# --------------------------------------------------------------------------- properties
@st.composite
def score_matrices(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(0, 40))
    m = draw(st.integers(0, 7))
    levels = draw(st.sampled_from([3, 8, 1000]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels + 1, (b, n, m), generator=gen).float() / levels
    if draw(st.booleans()):
        x = torch.where(torch.rand((b, n, m), generator=gen) < 0.1, math.nan, x)
    return x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=score_matrices(),
    threshold=st.sampled_from([1e-12, 0.0, 0.3, 0.9]),
    is_ascend=st.booleans(),
    share_max=st.booleans(),
)
def test_property_valid_indices_and_one_to_one(x, threshold, is_ascend, share_max):
    b, n, m = x.shape
    out = bipartite_match(x, threshold, is_ascend, share_max=share_max)
    assert out.dtype == torch.int64 and out.shape == (b, n)
    assert bool(((out >= -1) & (out < max(m, 0))).all()) or n == 0
    greedy = bipartite_match(x, threshold, is_ascend, recover=False)
    for img in greedy:
        taken = img[img >= 0]
        assert taken.unique().numel() == taken.numel(), "a reference matched twice"
    # recovery only adds matches
    assert bool(((greedy < 0) | (out == greedy)).all())
    # a matched pair of the greedy part is strictly beyond the threshold
    if m > 0 and n > 0:
        s = x.gather(2, greedy.clamp_min(0)[..., None]).squeeze(2)
        beyond = s < threshold if is_ascend else s > threshold
        assert bool((beyond | (greedy < 0)).all())
    assert torch.equal(greedy, batched(reference_greedy, x, threshold, is_ascend))


@settings(max_examples=40, deadline=None)
@given(x=score_matrices(), thr=st.sampled_from([0.0, 0.5, 0.9]))
def test_property_composite_fills_only_unmatched(x, thr):
    first = bipartite_match(x, share_max=False)
    second = maximum_match(x, thr)
    out = composite_match(x, [BipartiteMatcher(share_max=False), MaximumMatcher(thr)])
    assert torch.equal(out[first >= 0], first[first >= 0])
    assert torch.equal(out[first < 0], second[first < 0])
    assert bool(((out >= -1) & (out < max(x.shape[2], 1))).all())


# --------------------------------------------------------------------------- edge cases
def test_bipartite_with_empty_gt(dtype):
    """M = 0: nothing to match."""
    x = torch.zeros(3, 10, 0, dtype=dtype)
    for mt in (BipartiteMatcher(), MaximumMatcher(0.5), CompositeMatcher([BipartiteMatcher()])):
        out = mt(x)
        assert out.dtype == torch.int64 and out.shape == (3, 10)
        assert bool((out == NO_MATCH).all())


def test_bipartite_with_no_anchors(dtype):
    """N = 0: well-defined empty output."""
    x = torch.zeros(2, 0, 4, dtype=dtype)
    for mt in (BipartiteMatcher(), MaximumMatcher(0.5), CompositeMatcher([BipartiteMatcher()])):
        out = mt(x)
        assert out.dtype == torch.int64 and out.shape == (2, 0)


@pytest.mark.parametrize("share_max", [True, False])
def test_bipartite_all_padded(dtype, share_max):
    """Every reference padded (IoU 0 with everything): no anchor matched, recovery included."""
    x = torch.zeros(2, 50, 6, dtype=dtype)
    out = CompositeMatcher([BipartiteMatcher(share_max=share_max), MaximumMatcher(0.5)])(x)
    assert bool((out == NO_MATCH).all())


def test_bipartite_zero_area_all_zero_matrix(dtype):
    """Zero-area boxes give an all-zero IoU matrix: nothing matched by either matcher."""
    x = torch.zeros(1, 30, 3, dtype=dtype)
    assert bool((bipartite_match(x) == NO_MATCH).all())
    assert bool((bipartite_match(x, share_max=False) == NO_MATCH).all())
    assert bool((maximum_match(x, 0.5) == NO_MATCH).all())


def test_bipartite_padded_columns_attract_nothing():
    """GluonCV let a padded reference attract every unmatched anchor; the SPEC does not."""
    x = torch.tensor([[[0.8, 0.0], [0.3, 0.0], [0.0, 0.0]]])
    assert bipartite_match(x, share_max=True).tolist() == [[0, -1, -1]]
    assert bipartite_match(x, share_max=False).tolist() == [[0, -1, -1]]


def test_bipartite_fewer_anchors_than_references(dtype):
    """N < M: every anchor matched once, to distinct references."""
    x = torch.tensor([[[0.1, 0.9, 0.3, 0.2], [0.8, 0.95, 0.1, 0.0]]], dtype=dtype)
    out = bipartite_match(x, recover=False)
    assert out.tolist() == [[2, 1]]
    assert torch.equal(out, batched(reference_greedy, x, 1e-12))


def test_nan_never_matches(dtype):
    x = torch.tensor([[[math.nan, 0.5], [0.25, math.nan], [math.nan, math.nan]]], dtype=dtype)
    assert bipartite_match(x).tolist() == [[1, 0, -1]]
    assert bipartite_match(x, is_ascend=True, threshold=0.6).tolist() == [[1, 0, -1]]
    assert maximum_match(x, 0.0).tolist() == [[1, 0, -1]]
    allnan = torch.full((2, 20, 3), math.nan, dtype=dtype)
    for share_max in (True, False):
        assert bool((bipartite_match(allnan, share_max=share_max) == NO_MATCH).all())


def test_ties_follow_row_major_order():
    x = torch.full((1, 3, 3), 0.5)
    assert bipartite_match(x, recover=False).tolist() == [[0, 1, 2]]
    x = torch.full((1, 4, 2), 0.5)
    # greedy takes (0, 0), (1, 1); anchors 2, 3 tie every column maximum -> their argmax 0
    assert bipartite_match(x, recover=False).tolist() == [[0, 1, -1, -1]]
    assert bipartite_match(x).tolist() == [[0, 1, 0, 0]]


def test_non_contiguous_input_requiring_grad():
    gen = torch.Generator().manual_seed(2)
    base = random_scores(gen, 2, 6, 40, "ties").float()
    x = base.transpose(1, 2).requires_grad_()  # (2, 40, 6), not contiguous
    want = batched(reference_bipartite, x.detach())
    assert torch.equal(bipartite_match(x), want)
    out = CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)])(x)
    assert torch.equal(out[want >= 0], want[want >= 0])


def test_float16_extremes():
    """inf scores are ordinary scores; -inf never beats the threshold."""
    x = torch.tensor([[[math.inf, 1.0], [-math.inf, 2.0]]], dtype=torch.float16)
    assert bipartite_match(x).tolist() == [[0, 1]]
    x = torch.tensor([[[-math.inf, -math.inf]]])
    assert bipartite_match(x, threshold=-1e9).tolist() == [[-1]]


def test_infinite_threshold(dense_fraction):
    """Nothing is beyond an infinite threshold, so no reference counts for the recovery."""
    x = torch.tensor([[[math.inf, 0.5], [math.inf, math.inf]]])
    for share_max in (True, False):
        assert bipartite_match(x, math.inf, share_max=share_max).tolist() == [[-1, -1]]
        assert bipartite_match(-x, -math.inf, True, share_max=share_max).tolist() == [[-1, -1]]


# --------------------------------------------------------------------------- bad inputs
def test_bad_x():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        bipartite_match([[[0.5]]])
    with pytest.raises(ValueError, match=r"x must be \(B, N, M\), got shape \(3, 4\)"):
        BipartiteMatcher()(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"x must be \(B, N, M\), got shape \(1, 2, 3, 4\)"):
        MaximumMatcher(0.5)(torch.zeros(1, 2, 3, 4))
    with pytest.raises(TypeError, match="x must have a floating dtype.*got torch.int64"):
        CompositeMatcher([MaximumMatcher(0.5)])(torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must have a floating dtype.*got torch.bool"):
        maximum_match(torch.zeros(1, 2, 3, dtype=torch.bool), 0.5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="threshold must be a number, got str"):
        MaximumMatcher("0.5")
    with pytest.raises(TypeError, match="threshold must be a Python number, got a tensor"):
        BipartiteMatcher(threshold=torch.tensor(0.5))
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        maximum_match(torch.zeros(1, 2, 3), math.nan)
    with pytest.raises(TypeError, match="eps must be a number, got NoneType"):
        BipartiteMatcher(eps=None)
    with pytest.raises(TypeError, match="is_ascend must be a bool, got int"):
        BipartiteMatcher(is_ascend=1)
    with pytest.raises(TypeError, match="share_max must be a bool, got str"):
        bipartite_match(torch.zeros(1, 2, 3), share_max="yes")


def test_bad_matchers():
    with pytest.raises(ValueError, match="matchers must hold at least one matcher"):
        CompositeMatcher([])
    with pytest.raises(TypeError, match=r"matchers\[1\] must be an nn.Module matcher, got function"):
        CompositeMatcher([MaximumMatcher(0.5), lambda x: x])
    with pytest.raises(TypeError, match="matchers must be a list of nn.Module matchers, got MaximumMatcher"):
        CompositeMatcher(MaximumMatcher(0.5))
    with pytest.raises(TypeError, match="matchers must be a list of nn.Module matchers, got int"):
        composite_match(torch.zeros(1, 2, 3), 3)


def test_composite_holds_module_list_and_foreign_matchers():
    class Everything(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[:2], dtype=torch.int64)

    m = CompositeMatcher([BipartiteMatcher(), Everything()])
    assert isinstance(m.matchers, torch.nn.ModuleList) and len(m.matchers) == 2
    x = torch.tensor([[[0.9, 0.1], [0.2, 0.1], [0.0, 0.0]]])
    assert m(x).tolist() == [[0, 1, 0]]
    assert BipartiteMatcher()(x).tolist() == [[0, 1, -1]]


# --------------------------------------------------------------------------- compile / export
def _case(seed: int, b: int, n: int, m: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = random_scores(gen, b, n, m, "ties").float()
    x[:, :, m // 2 :] *= torch.rand(b, 1, m - m // 2, generator=gen) < 0.5  # some padded columns
    return x


MODULES = {
    "bipartite": lambda: BipartiteMatcher(share_max=False),
    "bipartite_ascend": lambda: BipartiteMatcher(threshold=0.6, is_ascend=True),
    "composite": lambda: CompositeMatcher([BipartiteMatcher(share_max=True), MaximumMatcher(0.7)]),
    "maximum": lambda: MaximumMatcher(0.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["composite"])
def test_compile_fullgraph_matches_eager(name):
    torch._dynamo.reset()
    mod = MODULES[name]()
    compiled = torch.compile(mod, fullgraph=True, dynamic=True)
    for i, (b, n, m) in enumerate([(2, 37, 5), (3, 50, 6), (4, 21, 9)]):  # one dynamic graph
        x = _case(i, b, n, m)
        assert torch.equal(compiled(x), mod(x)), (b, n, m)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODULES))
def test_export_dynamic_matches_eager(name):
    from torch.export import Dim, export

    mod = MODULES[name]()
    dims = {"x": {0: Dim("B", min=1, max=64), 1: Dim("N", min=2, max=10**7), 2: Dim("M", min=2, max=4096)}}
    ep = export(mod, (_case(0, 2, 40, 6),), dynamic_shapes=dims)
    run = ep.module()
    for i, (b, n, m) in enumerate([(3, 53, 7), (1, 17, 3), (4, 90, 12)]):
        x = _case(i + 10, b, n, m)
        assert torch.equal(run(x), mod(x)), (name, b, n, m)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_maximum_matcher_from_recorded_row_maxima_equals_scan(threshold):
    """box_iou records each anchor's best IoU; MaximumMatcher then reads only the anchors that
    pass. A copy of the matrix (nothing recorded) takes the scan: same matches, ties included."""
    from detblocks.bbox import _recorded_best_iou, box_iou

    g = torch.Generator().manual_seed(11)
    a = (torch.rand(3, 20000, 4, generator=g) * 20).round()  # coarse grid: many equal IoUs
    a[..., 2:] += a[..., :2] + 1
    b = torch.cat([a[:, :10], (torch.rand(3, 20, 4, generator=g) * 20).round()], 1)
    b[..., 2:] = torch.maximum(b[..., 2:], b[..., :2] + 1)
    b[:, 25:] = -1  # padding
    ious = box_iou(a, b)
    assert _recorded_best_iou(ious) is not None
    for m in (MaximumMatcher(threshold), CompositeMatcher([BipartiteMatcher(), MaximumMatcher(threshold)])):
        fast, scan = m(ious), m(ious.clone())
        assert torch.equal(fast, scan)
    assert int((MaximumMatcher(threshold)(ious) >= 0).sum()) > 0
