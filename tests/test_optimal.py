"""Optimal one-to-one matching: ``linear_sum_assignment`` against SciPy, the native kernel
against the Python fallback, and ``HungarianMatcher`` against a loop-based reference of
ultralytics' RT-DETR cost (SPEC, "detblocks.matcher: optimal one-to-one matching")."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.export import Dim

from detblocks import _optimal
from detblocks.conventions import NO_MATCH
from detblocks.matcher import HungarianMatcher, hungarian_match, linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")

NATIVE_BUILT = _optimal._lsa is not None
_native_built = pytest.mark.skipif(not NATIVE_BUILT, reason="detblocks._native_lsa is not built")


def needs_native(test):
    """Tests of the native solver: built, and on CPU tensors (the only ones it takes)."""
    return pytest.mark.cpu_only("the native solver runs on CPU tensors only")(_native_built(test))


@pytest.fixture(params=["native", "python"])
def path(request, monkeypatch) -> str:
    """Run a test with the native kernel and with the Python fallback."""
    if request.param == "native" and not NATIVE_BUILT:
        pytest.skip("detblocks._native_lsa is not built")
    if request.param == "python":
        monkeypatch.setattr(_optimal, "_lsa", None)
    return request.param


# --------------------------------------------------------------------------- SciPy as the reference
def scipy_image(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float]:
    """SciPy on one image's valid columns: matches (N,) as column indices of the padded
    matrix (-1 unmatched) and the optimal total cost (float64)."""
    n = cost.shape[0]
    cols = np.nonzero(valid)[0]
    out = np.full(n, NO_MATCH, dtype=np.int64)
    if n == 0 or len(cols) == 0:
        return out, 0.0
    sub = cost[:, cols].astype(np.float64)
    rows, picked = scipy_optimize.linear_sum_assignment(sub)
    out[rows] = cols[picked]
    return out, float(sub[rows, picked].sum())


def check_against_scipy(
    cost: torch.Tensor, valid: torch.Tensor | None, got: torch.Tensor, unique: bool
) -> None:
    """A valid one-to-one assignment of min(N, M_b) pairs, no +inf pair, SciPy's total cost,
    and SciPy's pairs when the optimum is unique."""
    c = cost.double().cpu().numpy()
    B, N, M = c.shape
    v = np.ones((B, M), dtype=bool) if valid is None else valid.cpu().numpy()
    assert got.dtype == torch.int64 and tuple(got.shape) == (B, N)
    g = got.cpu().numpy()
    for b in range(B):
        want, total = scipy_image(c[b], v[b])
        rows = np.nonzero(g[b] >= 0)[0]
        cols = g[b, rows]
        assert (g[b][g[b] < 0] == NO_MATCH).all()
        assert len(set(cols.tolist())) == len(cols), f"image {b}: a column used twice"
        assert v[b, cols].all(), f"image {b}: an invalid column matched"
        assert len(rows) == min(N, int(v[b].sum())), f"image {b}: {len(rows)} pairs"
        ours = float(c[b, rows, cols].sum())
        assert math.isfinite(ours), f"image {b}: a +inf pair"
        assert abs(ours - total) <= 1e-9 * max(1.0, abs(total)), f"image {b}: {ours} != SciPy's {total}"
        if unique:
            np.testing.assert_array_equal(g[b], want, err_msg=f"image {b}")


def random_batch(
    seed: int, B: int, N: int, M: int, kind: str = "normal", pad: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    if kind == "integer":  # many optimal assignments
        cost = torch.randint(0, 3, (B, N, M), generator=g).float()
    elif kind == "uniform":
        cost = torch.rand(B, N, M, generator=g)
    else:
        cost = torch.randn(B, N, M, generator=g) * 3
    valid = None
    if pad > 0:
        valid = torch.rand(B, M, generator=g) >= pad
        cost = cost.masked_fill(~valid[:, None, :], -100.0)  # padded columns must be ignored
    return cost, valid


SIZES = [
    (1, 1),
    (1, 7),
    (7, 1),
    (2, 2),
    (5, 5),
    (4, 9),
    (9, 4),
    (12, 30),
    (30, 12),
    (40, 40),
    (300, 50),
    (64, 100),
]


@pytest.mark.parametrize("N,M", SIZES, ids=lambda s: str(s))
@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_random_costs_equal_scipy(N, M, kind, path):
    """Continuous random costs (a unique optimum): SciPy's total cost and pairs."""
    for seed, pad in ((0, 0.0), (1, 0.3)):
        cost, valid = random_batch(seed * 1000 + N * 31 + M, 3, N, M, kind, pad)
        check_against_scipy(cost, valid, linear_sum_assignment(cost, valid), unique=True)


@pytest.mark.parametrize("N,M", [(5, 5), (6, 10), (10, 6), (25, 25), (40, 13)], ids=str)
def test_integer_costs_with_many_optima_equal_scipys_total(N, M, path):
    for seed in range(4):
        cost, valid = random_batch(seed, 3, N, M, "integer", pad=0.2 * (seed % 2))
        check_against_scipy(cost, valid, linear_sum_assignment(cost, valid), unique=False)


@pytest.mark.parametrize("N,M", [(6, 6), (5, 9), (9, 5), (20, 20)], ids=str)
def test_inf_forbids_pairs(N, M, path):
    """About 30% of the pairs are forbidden (+inf); feasible images equal SciPy, and the
    result never takes a forbidden pair."""
    checked = 0
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        cost = torch.rand(1, N, M, generator=g)
        cost[torch.rand(1, N, M, generator=g) < 0.3] = math.inf
        try:
            scipy_optimize.linear_sum_assignment(cost[0].double().cpu().numpy())
        except ValueError:
            with pytest.raises(ValueError, match="image 0 is infeasible"):
                linear_sum_assignment(cost)
            continue
        check_against_scipy(cost, None, linear_sum_assignment(cost), unique=True)
        checked += 1
    assert checked >= 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 9),
    m=st.integers(0, 9),
    b=st.integers(1, 3),
    integer=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_any_size_equals_scipys_total(n, m, b, integer, seed):
    cost, valid = random_batch(seed, b, n, m, "integer" if integer else "normal", pad=0.25)
    check_against_scipy(cost, valid, linear_sum_assignment(cost, valid), unique=not integer)


def test_large_images_equal_scipy(path):
    if path == "python":
        pytest.skip("the Python fallback takes seconds at this size; the smaller cases cover it")
    for N, M in ((900, 300), (300, 900), (1000, 1000)):
        cost, valid = random_batch(N + M, 2, N, M, "uniform", pad=0.1)
        check_against_scipy(cost, valid, linear_sum_assignment(cost, valid), unique=True)


# --------------------------------------------------------------------------- native = fallback
@needs_native
@pytest.mark.parametrize("kind", ["normal", "integer", "uniform"])
def test_native_and_python_give_the_same_assignment(kind):
    """The same assignment, ties included (same float64 operations in the same order)."""
    for seed, (N, M) in enumerate([(7, 7), (13, 5), (5, 13), (40, 30), (30, 40), (0, 4), (4, 0), (120, 50)]):
        cost, valid = random_batch(seed, 4, N, M, kind, pad=0.2)
        if kind == "uniform" and min(N, M) > 1:
            cost[:, 0, 0] = cost[:, 1, 0] = math.inf  # forbidden pairs
        native = _outcome(cost, valid)
        with mock.patch.object(_optimal, "_lsa", None):
            python = _outcome(cost, valid)
        assert native == python, f"{kind} {N}x{M}"


def _outcome(cost: torch.Tensor, valid: torch.Tensor | None) -> object:
    """The assignment as a list, or the error's message."""
    try:
        return linear_sum_assignment(cost, valid).tolist()
    except ValueError as e:
        return str(e)


@needs_native
def test_native_result_does_not_depend_on_the_thread_count():
    cost, valid = random_batch(5, 16, 200, 200, "integer", pad=0.1)  # above the kernel's one-thread grain
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear_sum_assignment(cost, valid)
        torch.set_num_threads(2)
        two = linear_sum_assignment(cost, valid)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


# --------------------------------------------------------------------------- errors and edge cases
@pytest.mark.parametrize("value", [math.nan, -math.inf], ids=["nan", "-inf"])
def test_nan_or_minus_inf_cost_raises_naming_the_image(value, path):
    cost = torch.rand(3, 4, 5)
    cost[2, 1, 3] = value
    with pytest.raises(ValueError, match=r"cost of image 2 holds NaN or -inf"):
        linear_sum_assignment(cost)


def test_nan_in_an_invalid_column_is_never_read(path):
    cost = torch.rand(2, 4, 5)
    cost[:, :, 3] = math.nan
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[:, 3] = False
    got = linear_sum_assignment(cost, valid)
    check_against_scipy(cost, valid, got, unique=True)


def test_infeasible_image_raises_naming_the_image(path):
    cost = torch.rand(3, 3, 3)
    cost[1, :, 0] = math.inf
    cost[1, :, 1] = math.inf  # three rows, one usable column
    with pytest.raises(ValueError, match=r"image 1 is infeasible: no assignment of min\(N, M_b\) = 3 pairs"):
        linear_sum_assignment(cost)
    # Forbidding a whole column is fine when there are spare columns (wide) or rows (tall).
    wide = torch.rand(1, 2, 4)
    wide[0, :, 1] = math.inf
    check_against_scipy(wide, None, linear_sum_assignment(wide), unique=True)
    tall = torch.rand(1, 4, 2)
    tall[0, 1, :] = math.inf
    check_against_scipy(tall, None, linear_sum_assignment(tall), unique=True)


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (2, 4, 0), (2, 0, 0)], ids=str)
def test_empty_axes(shape, path):
    got = linear_sum_assignment(torch.rand(shape))
    assert got.shape == shape[:2] and got.dtype == torch.int64
    assert bool((got == NO_MATCH).all())


def test_all_columns_invalid_gives_no_match(path):
    got = linear_sum_assignment(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))
    assert bool((got == NO_MATCH).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_every_float_dtype_is_solved_in_float64(dtype):
    cost = (torch.randint(0, 1000, (3, 8, 6), generator=torch.Generator().manual_seed(0)) / 8).to(dtype)
    assert torch.equal(linear_sum_assignment(cost), linear_sum_assignment(cost.float()))
    check_against_scipy(cost.double(), None, linear_sum_assignment(cost), unique=False)


def test_requires_grad_and_non_contiguous_costs():
    base = torch.randn(3, 9, 7, requires_grad=True)
    got = linear_sum_assignment(base.transpose(1, 2))  # (3, 7, 9), not contiguous
    check_against_scipy(base.detach().transpose(1, 2), None, got, unique=True)


# --------------------------------------------------------------------------- the operator
def test_operator_passes_opcheck():
    cost, valid = random_batch(0, 3, 6, 5, pad=0.3)
    torch.library.opcheck(_optimal._lsa_op, (cost, valid))
    torch.library.opcheck(_optimal._lsa_op, (cost, None))


class _Solver(torch.nn.Module):
    def forward(self, cost: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return linear_sum_assignment(cost, valid)


def test_solver_compiles_without_graph_break_and_exports_with_dynamic_sizes():
    module = _Solver()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    for seed, (B, N, M) in enumerate([(2, 9, 6), (3, 14, 11), (4, 5, 8)]):
        cost, valid = random_batch(seed, B, N, M, pad=0.3)
        assert torch.equal(compiled(cost, valid), module(cost, valid))
    dims = (Dim("B", min=1, max=64), Dim("N", min=2, max=4096), Dim("M", min=2, max=4096))
    cost, valid = random_batch(0, 2, 9, 6, pad=0.3)
    program = torch.export.export(
        module, (cost, valid), dynamic_shapes=({0: dims[0], 1: dims[1], 2: dims[2]}, {0: dims[0], 1: dims[2]})
    )
    ops = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.detblocks.linear_sum_assignment.default in ops
    for seed, (B, N, M) in enumerate([(3, 14, 11), (1, 5, 30)]):
        cost, valid = random_batch(seed + 10, B, N, M, pad=0.3)
        assert torch.equal(program.module()(cost, valid), module(cost, valid))


def test_errors_also_raise_from_the_compiled_and_exported_solver():
    module = _Solver()
    cost, valid = random_batch(0, 2, 5, 5)
    valid = torch.ones(2, 5, dtype=torch.bool)
    bad = cost.clone()
    bad[1, 0, 0] = math.nan
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    with pytest.raises(ValueError, match="image 1"):
        compiled(bad, valid)
    program = torch.export.export(module, (cost, valid))
    with pytest.raises(ValueError, match="image 1"):
        program.module()(bad, valid)


# --------------------------------------------------------------------------- the matcher
def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def reference_cost(
    pred_boxes: torch.Tensor,
    pred_logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    cost_class: float = 1.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    use_focal_loss: bool = True,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> np.ndarray:
    """ultralytics 8.4.190's RT-DETR matching cost, one pair at a time in float64, written
    from its formulas: (B, Q, M), NaN in padded columns, non-finite costs set to 0."""
    pb, pl, gb = pred_boxes.double().tolist(), pred_logits.double().tolist(), gt_boxes.double().tolist()
    gl = gt_labels.tolist()
    B, Q, M = len(pb), pred_boxes.shape[1], gt_boxes.shape[1]
    out = np.full((B, Q, M), np.nan)
    eps = 1e-7
    for b in range(B):
        for q in range(Q):
            logits = pl[b][q]
            top = max(logits)
            z = sum(math.exp(v - top) for v in logits)
            px, py, pw, ph = pb[b][q]
            for m in range(M):
                label = gl[b][m]
                if label < 0:
                    continue
                if use_focal_loss:
                    p = _sigmoid(logits[label])
                    pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
                    neg = (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
                    cls = pos - neg
                else:
                    cls = -math.exp(logits[label] - top) / z
                gx, gy, gw, gh = gb[b][m]
                l1 = abs(px - gx) + abs(py - gy) + abs(pw - gw) + abs(ph - gh)
                a = (px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2)
                c = (gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2)
                iw = max(0.0, min(a[2], c[2]) - max(a[0], c[0]))
                ih = max(0.0, min(a[3], c[3]) - max(a[1], c[1]))
                inter = iw * ih
                union = pw * ph + gw * gh - inter + eps
                hull = (max(a[2], c[2]) - min(a[0], c[0])) * (max(a[3], c[3]) - min(a[1], c[1])) + eps
                giou = inter / union - (hull - union) / hull
                total = cost_class * cls + cost_bbox * l1 + cost_giou * (1 - giou)
                out[b, q, m] = total if math.isfinite(total) else 0.0
    return out


def detr_scene(seed: int, B: int, Q: int, M: int, C: int = 7) -> tuple[torch.Tensor, ...]:
    """Normalised center boxes; half of the queries near a ground-truth object; per image
    a different number of real objects, the padding rows interleaved with the real ones."""
    g = torch.Generator().manual_seed(seed)
    gt_boxes = torch.cat(
        [torch.rand(B, M, 2, generator=g) * 0.6 + 0.2, torch.rand(B, M, 2, generator=g) * 0.3 + 0.05], -1
    )
    gt_labels = torch.randint(0, C, (B, M), generator=g)
    pad = torch.rand(B, M, generator=g) < 0.35
    pad[0] = False
    gt_labels[pad] = -1
    gt_boxes[pad] = -1.0
    src = torch.randint(0, max(M, 1), (B, Q), generator=g)
    pred = torch.cat([torch.rand(B, Q, 2, generator=g), torch.rand(B, Q, 2, generator=g) * 0.4 + 0.02], -1)
    if M > 0:
        near = (
            gt_boxes.gather(1, src[..., None].expand(B, Q, 4)).abs()
            + torch.randn(B, Q, 4, generator=g) * 0.02
        )
        pred = torch.where((torch.rand(B, Q, 1, generator=g) < 0.5), near.abs(), pred)
    logits = torch.randn(B, Q, C, generator=g) - 2
    return pred, logits, gt_boxes, gt_labels


MATCHER_KWARGS = [
    {},
    {"use_focal_loss": False},
    {"cost_class": 2.0, "cost_bbox": 1.0, "cost_giou": 0.5, "alpha": 0.4, "gamma": 1.5},
    {"cost_bbox": 0.0, "gamma": 0.0},
]


@pytest.mark.parametrize(
    "kwargs", MATCHER_KWARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "rtdetr"
)
def test_matcher_cost_equals_the_loop_reference(kwargs):
    scene = detr_scene(1, 3, 20, 6)
    want = reference_cost(*scene, **kwargs)
    p = HungarianMatcher(**kwargs)._params
    got = _optimal._matching_cost(*scene, p).double().cpu().numpy()
    real = scene[3].cpu().numpy() >= 0
    np.testing.assert_allclose(
        got[:, :, :][np.broadcast_to(real[:, None, :], got.shape)],
        want[np.broadcast_to(real[:, None, :], want.shape)],
        rtol=1e-5,
        atol=2e-5,
    )


@pytest.mark.parametrize(
    "kwargs", MATCHER_KWARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "rtdetr"
)
@pytest.mark.parametrize("B,Q,M", [(3, 20, 6), (2, 5, 9), (4, 30, 12)], ids=str)
def test_matcher_equals_the_reference_optimum(kwargs, B, Q, M, path):
    """Per image: a one-to-one assignment of min(Q, M_b) queries to real objects whose
    reference cost (float64) is SciPy's optimum over the reference cost."""
    scene = detr_scene(B * Q + M, B, Q, M)
    got = HungarianMatcher(**kwargs)(*scene)
    assert got.dtype == torch.int64 and got.shape == (B, Q)
    want = reference_cost(*scene, **kwargs)
    real = scene[3] >= 0
    for b in range(B):
        g = got[b].cpu().numpy()
        rows = np.nonzero(g >= 0)[0]
        assert real[b, g[rows]].all(), "a padded row matched"
        assert len(set(g[rows].tolist())) == len(rows)
        assert len(rows) == min(Q, int(real[b].sum()))
        _, optimum = scipy_image(np.nan_to_num(want[b], nan=0.0), real[b].cpu().numpy())
        assert abs(want[b, rows, g[rows]].sum() - optimum) <= 1e-4 * max(1.0, abs(optimum))
    assert torch.equal(got, hungarian_match(*scene, **kwargs))


@needs_native
@pytest.mark.parametrize(
    "kwargs", MATCHER_KWARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "rtdetr"
)
def test_native_matching_cost_is_bit_identical_to_the_pytorch_path(kwargs):
    """Including hostile boxes: NaN, infinite, negative sizes, huge and tiny coordinates."""
    pred, logits, gt, labels = detr_scene(3, 4, 50, 9)
    pred[0, 0, 0] = math.nan
    pred[1, 1, 2] = math.inf
    pred[2, :10, 2:] *= -1
    pred[3, :5] *= 1e30
    pred[3, 5:10] *= 1e-30
    gt[1, 2] = -math.inf
    logits[0, 3, 1] = math.nan
    logits[1, 4] = 80.0
    p = HungarianMatcher(**kwargs)._params
    native = _optimal._matching_cost(pred, logits, gt, labels, p)
    with mock.patch.object(_optimal, "_lsa", None):
        torch_path = _optimal._matching_cost(pred, logits, gt, labels, p)
    assert torch.equal(native, torch_path)
    assert bool(torch.isfinite(native).all())


def test_padded_rows_are_never_matched_even_when_cheapest():
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    gt = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])  # row 0 is padding, yet a perfect fit
    logits = torch.zeros(1, 2, 3)
    got = HungarianMatcher()(pred, logits, gt, torch.tensor([[-1, 2]]))
    assert got.tolist() == [[-1, 1]]


def test_non_finite_costs_become_zero_instead_of_raising(path):
    """As ultralytics: a NaN prediction costs 0 with every object (here the cheapest)."""
    pred, logits, gt, labels = detr_scene(4, 2, 6, 4)
    labels[:] = torch.tensor([0, 1, 2, 3])
    pred[0, 2] = math.nan
    logits[1, 3] = math.inf
    got = HungarianMatcher()(pred, logits, gt, labels)
    assert (got >= 0).sum(1).tolist() == [4, 4]
    assert got[0, 2] >= 0  # cost 0: taken


@pytest.mark.parametrize(
    "B,Q,M,padded",
    [(2, 0, 5, False), (2, 6, 0, False), (3, 6, 4, True), (2, 3, 8, False), (0, 6, 4, False)],
    ids=["Q0", "M0", "all-padded", "Q<M", "B0"],
)
def test_matcher_degenerate_inputs(B, Q, M, padded, path):
    pred, logits, gt, labels = detr_scene(5, max(B, 1), Q, M)
    pred, logits, gt, labels = pred[:B], logits[:B], gt[:B], labels[:B]
    if padded:
        labels[:] = -1
        gt[:] = -1.0
    got = HungarianMatcher()(pred, logits, gt, labels)
    assert got.shape == (B, Q) and got.dtype == torch.int64
    counts = (got >= 0).sum(1)
    want = [min(Q, int((labels[b] >= 0).sum())) for b in range(B)]
    assert counts.tolist() == want
    if Q and M and not padded:
        assert bool((counts == Q).all())  # Q < M: every query matched


def test_matcher_takes_half_and_double_precision_and_gradients():
    pred, logits, gt, labels = detr_scene(6, 2, 12, 5)
    want = HungarianMatcher()(pred, logits, gt, labels)
    assert torch.equal(HungarianMatcher()(pred.double(), logits.double(), gt.double(), labels), want)
    pred.requires_grad_(True)
    logits.requires_grad_(True)
    assert torch.equal(HungarianMatcher()(pred, logits, gt, labels), want)
    half = HungarianMatcher()(pred.half(), logits.half(), gt.half(), labels)  # computed in float32
    assert half.dtype == torch.int64 and half.shape == want.shape
    assert (half >= 0).sum(1).tolist() == (want >= 0).sum(1).tolist()


def test_matcher_compiles_and_exports_with_dynamic_sizes():
    module = HungarianMatcher()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    for seed, size in enumerate([(2, 20, 6), (3, 31, 9), (4, 12, 3)]):
        scene = detr_scene(seed, *size)
        assert torch.equal(compiled(*scene), module(*scene))
    B, Q, M = Dim("B", min=1, max=256), Dim("Q", min=2, max=4096), Dim("M", min=2, max=4096)
    program = torch.export.export(
        module,
        detr_scene(0, 2, 20, 6),
        dynamic_shapes=({0: B, 1: Q}, {0: B, 1: Q}, {0: B, 1: M}, {0: B, 1: M}),
    )
    ops = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.detblocks.linear_sum_assignment.default) == 1
    for seed, size in enumerate([(3, 31, 9), (1, 7, 12)]):
        scene = detr_scene(seed + 10, *size)
        assert torch.equal(program.module()(*scene), module(*scene))


def test_eager_calls_read_the_cost_to_the_host_once():
    """The documented host read: the solver's one transfer of the cost matrix."""
    scene = detr_scene(7, 2, 10, 4)
    calls = []
    real = _optimal._solve

    def spy(cost, valid):
        calls.append(tuple(cost.shape))
        return real(cost, valid)

    with mock.patch.object(_optimal, "_solve", spy):
        HungarianMatcher()(*scene)
    assert calls == [(2, 10, 4)]


def test_the_cost_is_built_on_the_device_without_host_reads():
    """On the meta device (shapes, no values: any host read raises) the whole cost builds,
    checks included: nothing before the solve leaves the inputs' device."""
    scene = [t.to("meta") for t in detr_scene(8, 2, 10, 4)]
    for kwargs in MATCHER_KWARGS:
        p = HungarianMatcher(**kwargs)._params
        checked = _optimal._check_matcher_inputs(*scene)
        cost = _optimal._matching_cost(*checked, p)
        assert cost.device.type == "meta" and tuple(cost.shape) == (2, 10, 4)
