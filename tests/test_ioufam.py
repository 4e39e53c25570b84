"""The IoU family: generalized_box_iou, distance_box_iou, complete_box_iou, aligned_box_iou.

Reference: torchvision 0.29.1 itself (``torchvision.ops``: the pairwise functions and the
``*_box_iou_loss`` losses), on random boxes in every dtype, with a tolerance per dtype. Then
the properties the docstrings promise (symmetry, ranges, finite values and gradients on
degenerate boxes where torchvision gives NaN), float64 gradcheck, and the native kernel
bit for bit against the PyTorch path.
"""

from __future__ import annotations

import math
import os
import shutil
import sysconfig

import pytest
import torch
import torchvision.ops as tv
from hypothesis import given, settings
from hypothesis import strategies as st

from detblocks import bbox
from detblocks.bbox import (
    aligned_box_iou,
    box_iou,
    complete_box_iou,
    corner_to_center,
    distance_box_iou,
    generalized_box_iou,
)

PAIRWISE = {
    "giou": (generalized_box_iou, tv.generalized_box_iou),
    "diou": (distance_box_iou, tv.distance_box_iou),
    "ciou": (complete_box_iou, tv.complete_box_iou),
}
LOSSES = {
    "giou": tv.generalized_box_iou_loss,
    "diou": tv.distance_box_iou_loss,
    "ciou": tv.complete_box_iou_loss,
}
KINDS = ["iou", "giou", "diou", "ciou"]


def random_boxes(g: torch.Generator, shape: tuple[int, ...], scale: float = 100.0) -> torch.Tensor:
    """Corner boxes with ``xmin < xmax``, ``ymin < ymax``, many pairs overlapping."""
    xy = torch.rand(*shape, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(*shape, 2, generator=g, dtype=torch.float64) * scale / 2 + scale / 100
    return torch.cat([xy, xy + wh], -1)


def pairwise(kind: str, a: torch.Tensor, b: torch.Tensor, **kw) -> torch.Tensor:
    return PAIRWISE[kind][0](a, b, **kw)


def torchvision_aligned(kind: str, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``1 - loss`` of torchvision's element-wise losses, ``box_iou`` of each pair for IoU."""
    if kind == "iou":
        return tv.box_iou(a, b).diagonal()
    return 1 - LOSSES[kind](a, b, reduction="none", eps=eps)


def _pytorch_path(monkeypatch, fn, *args, **kw):
    """``fn`` with the native kernel turned off."""
    with monkeypatch.context() as m:
        m.setattr(bbox, "_native_ioufam", None)
        return fn(*args, **kw)


# --------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_equals_torchvision_in_every_dtype(kind, dtype, tol):
    """Batched (B, N, 4) x (B, M, 4) and 2-d, against torchvision on the same (rounded)
    inputs in float64; half precision is computed in float32 and returned in its dtype."""
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(g, (3, 40)).to(dtype), random_boxes(g, (3, 9)).to(dtype)
    want = PAIRWISE[kind][1](a.double(), b.double())  # (3, 40, 9): torchvision broadcasts leading dims
    got = pairwise(kind, a, b)
    assert got.dtype == dtype and got.shape == (3, 40, 9)
    torch.testing.assert_close(got.double(), want, rtol=tol[0], atol=tol[1])
    torch.testing.assert_close(pairwise(kind, a[1], b[1]), got[1])  # (arctan may round by position)


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_equals_torchvision_in_its_own_dtype(kind):
    """float32 against torchvision's own float32 computation (not only against float64)."""
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(g, (2, 300), 640).float(), random_boxes(g, (2, 50), 640).float()
    torch.testing.assert_close(pairwise(kind, a, b), PAIRWISE[kind][1](a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-7, 1e-2, 0.0])
@pytest.mark.parametrize("kind", ["diou", "ciou"])
def test_pairwise_eps_is_torchvisions(kind, eps):
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(g, (2, 20), 1.0), random_boxes(g, (2, 7), 1.0)  # normalised: eps matters
    want = PAIRWISE[kind][1](a, b, eps=eps)
    torch.testing.assert_close(pairwise(kind, a, b, eps=eps), want, rtol=1e-10, atol=1e-10)
    if eps >= 1e-2:
        assert not torch.allclose(pairwise(kind, a, b, eps=0.0), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_aligned_equals_one_minus_torchvision_loss_in_every_dtype(kind, dtype, tol):
    g = torch.Generator().manual_seed(4)
    a, b = random_boxes(g, (64,)).to(dtype), random_boxes(g, (64,)).to(dtype)
    b[::3] = a[::3] + torch.rand(22, 4, generator=g, dtype=torch.float64).to(dtype)  # overlapping pairs
    want = torchvision_aligned(kind, a.double(), b.double())
    got = aligned_box_iou(a, b, kind=kind)
    assert got.dtype == dtype and got.shape == (64,)
    torch.testing.assert_close(got.double(), want, rtol=tol[0], atol=tol[1])


def reference_pair(kind: str, p: list[float], q: list[float], eps: float, union_eps: float) -> float:
    """One pair in plain Python floats, the formulas as the docstrings write them (a 0/0 term
    counts as 0; ``union_eps`` in the union and the enclosing area, as torchvision's losses)."""

    def div(x: float, y: float) -> float:
        return 0.0 if y == 0 else x / y

    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = p, q
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = div(inter, union + union_eps)
    cw, ch = max(bx2, ax2) - min(ax1, bx1), max(ay2, by2) - min(ay1, by1)
    if kind == "iou":
        return iou
    if kind == "giou":
        return iou - div(cw * ch - union, cw * ch + union_eps)
    dist = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    diou = iou - div(dist, cw**2 + ch**2 + eps)
    if kind == "diou":
        return diou

    def angle(w: float, h: float) -> float:
        return 0.0 if w == h == 0 else math.atan2(w, h)

    v = 4 / math.pi**2 * (angle(ax2 - ax1, ay2 - ay1) - angle(bx2 - bx1, by2 - by1)) ** 2
    return diou - div(v, 1 - iou + v + eps) * v


@pytest.mark.parametrize("eps", [1e-7, 1e-2, 0.0])
@pytest.mark.parametrize("kind", KINDS)
def test_aligned_equals_a_plain_reference_for_any_eps(kind, eps):
    """torchvision's losses take ``eps`` too, except that ``complete_box_iou_loss`` passes it
    only to alpha (its IoU and distance terms keep 1e-7): the reference is the documented
    formula, and torchvision is met at its default (the dtype test above and the golden
    cases)."""
    g = torch.Generator().manual_seed(5)
    a, b = random_boxes(g, (50,), 1.0), random_boxes(g, (50,), 1.0)
    a[:5, 2] = a[:5, 0]  # zero width
    b[:3] = a[:3]  # zero-area pairs: 0/0 with eps=0
    union_eps = 0.0 if kind == "iou" else eps
    want = [reference_pair(kind, p, q, eps, union_eps) for p, q in zip(a.tolist(), b.tolist())]
    got = aligned_box_iou(a, b, kind=kind, eps=eps)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    if kind in ("giou", "diou") and eps:
        torch.testing.assert_close(
            got[5:], torchvision_aligned(kind, a, b, eps=eps)[5:], rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_equals_a_plain_reference(kind):
    g = torch.Generator().manual_seed(26)
    a, b = random_boxes(g, (9,), 10.0), random_boxes(g, (4,), 10.0)
    a[:3, 3] = a[:3, 1]  # zero height
    b[0] = a[0]
    a[4] = a[4, :1].expand(4)  # a point
    for eps in (1e-7, 0.5) if kind != "giou" else (0.0,):
        kw = {} if kind == "giou" else {"eps": eps}
        want = [[reference_pair(kind, p, q, eps, 0.0) for q in b.tolist()] for p in a.tolist()]
        torch.testing.assert_close(pairwise(kind, a, b, **kw), torch.tensor(want, dtype=torch.float64))


def test_aligned_broadcasts_leading_dims():
    g = torch.Generator().manual_seed(6)
    a, b = random_boxes(g, (2, 1, 5)), random_boxes(g, (3, 5))
    for kind in KINDS:
        got = aligned_box_iou(a, b, kind=kind)
        assert got.shape == (2, 3, 5)
        a_full, b_full = torch.broadcast_tensors(a, b)
        want = torchvision_aligned(kind, a_full.reshape(-1, 4), b_full.reshape(-1, 4)).reshape(2, 3, 5)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_aligned_of_every_pair_is_the_pairwise_matrix():
    """aligned_box_iou on (B, N, 1, 4) x (B, 1, M, 4) is the pairwise function (the eps
    placement differs: the losses add eps to the union, so compare with eps=0)."""
    g = torch.Generator().manual_seed(7)
    a, b = random_boxes(g, (2, 30)), random_boxes(g, (2, 6))
    for kind in PAIRWISE:
        got = aligned_box_iou(a[:, :, None], b[:, None], kind=kind, eps=0.0)
        torch.testing.assert_close(got, pairwise(kind, a, b, **({} if kind == "giou" else {"eps": 0.0})))
    torch.testing.assert_close(aligned_box_iou(a[:, :, None], b[:, None]), box_iou(a, b, eps=0.0))


@pytest.mark.parametrize("fmt", ["center", "cxcywh"])
def test_center_format_equals_corner(fmt):
    g = torch.Generator().manual_seed(8)
    a, b = random_boxes(g, (2, 12)), random_boxes(g, (2, 5))
    ca, cb = corner_to_center(a), corner_to_center(b)
    for kind in PAIRWISE:
        torch.testing.assert_close(pairwise(kind, ca, cb, fmt=fmt), pairwise(kind, a, b))
        torch.testing.assert_close(pairwise(kind, a, b, fmt="xyxy"), pairwise(kind, a, b), rtol=0, atol=0)
    for kind in KINDS:
        torch.testing.assert_close(
            aligned_box_iou(ca[:, :5], cb, kind=kind, fmt=fmt), aligned_box_iou(a[:, :5], b, kind=kind)
        )


def test_batch_of_one_broadcasts():
    g = torch.Generator().manual_seed(9)
    a, b = random_boxes(g, (1, 10)), random_boxes(g, (3, 4))
    for kind in PAIRWISE:
        got = pairwise(kind, a, b)
        assert got.shape == (3, 10, 4)
        for i in range(3):
            torch.testing.assert_close(got[i], pairwise(kind, a[0], b[i]), rtol=0, atol=0)
        torch.testing.assert_close(pairwise(kind, b, a), got.transpose(1, 2), rtol=0, atol=0)


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_is_symmetric(kind):
    g = torch.Generator().manual_seed(10)
    a, b = random_boxes(g, (2, 25)).float(), random_boxes(g, (2, 8)).float()
    assert torch.equal(pairwise(kind, a, b), pairwise(kind, b, a).transpose(1, 2))


box_sides = st.floats(0.0, 50.0, allow_subnormal=False)
corner = st.floats(-100.0, 100.0, allow_subnormal=False)


@st.composite
def box_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of boxes, zero sides and shared corners included."""

    def box() -> list[float]:
        x, y = draw(corner), draw(corner)
        return [x, y, x + draw(box_sides), y + draw(box_sides)]

    rows = [box() for _ in range(draw(st.integers(1, 6)))]
    if draw(st.booleans()):  # a copy and a box sharing a side with the first
        x1, y1, x2, y2 = rows[0]
        rows += [[x1, y1, x2, y2], [x2, y1, x2 + 3.0, y2]]
    t = torch.tensor(rows, dtype=torch.float64)
    return t, t[torch.randperm(len(rows), generator=torch.Generator().manual_seed(len(rows)))]


@settings(max_examples=60, deadline=None)
@given(box_pairs())
def test_ranges_and_orders_of_the_family(pair):
    """IoU in [0, 1]; GIoU, DIoU in [-1, IoU]; CIoU in (-2, DIoU]; every value finite."""
    a, b = pair
    iou = aligned_box_iou(a, b, kind="iou")
    giou, diou, ciou = (aligned_box_iou(a, b, kind=k, eps=0.0) for k in ("giou", "diou", "ciou"))
    tiny = 1e-12
    for v in (iou, giou, diou, ciou):
        assert bool(torch.isfinite(v).all())
    assert bool(((iou >= 0) & (iou <= 1 + tiny)).all())
    assert bool(((giou >= -1 - tiny) & (giou <= iou + tiny)).all())
    assert bool(((diou >= -1 - tiny) & (diou <= iou + tiny)).all())
    assert bool(((ciou > -2) & (ciou <= diou + tiny)).all())
    for kind in PAIRWISE:  # the pairwise matrix holds the same values on its diagonal
        full = pairwise(kind, a, b, **({} if kind == "giou" else {"eps": 0.0}))
        torch.testing.assert_close(full.diagonal(), aligned_box_iou(a, b, kind=kind, eps=0.0))


def test_identical_boxes_give_one_and_far_boxes_approach_minus_one():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    far = torch.tensor([[1e6, 1e6, 1e6 + 1, 1e6 + 2]])  # the aspect ratio of box: CIoU = DIoU
    for kind in PAIRWISE:
        assert pairwise(kind, box, box).item() == 1.0
        assert -1.0 <= pairwise(kind, box, far).item() < -0.99
    for kind in KINDS:
        assert aligned_box_iou(box, box, kind=kind, eps=0.0).item() == 1.0


# --------------------------------------------------------------------------- degenerate boxes
def degenerate_boxes() -> torch.Tensor:
    """Zero-width, zero-height, points (also equal ones), identical and touching boxes."""
    return torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],  # a point
            [1.0, 1.0, 1.0, 1.0],  # the same point
            [0.0, 0.0, 0.0, 2.0],  # zero width
            [0.0, 0.0, 2.0, 0.0],  # zero height
            [0.0, 0.0, 2.0, 2.0],
            [2.0, 0.0, 4.0, 2.0],  # touches the previous one
            [0.0, 0.0, 2.0, 2.0],  # identical to box 4
            [0.0, 2.0, 2.0, 2.0],  # a segment on the top side of box 4
        ],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_degenerate_boxes_give_finite_values_where_torchvision_gives_nan(kind):
    x = degenerate_boxes()
    want = PAIRWISE[kind][1](x, x)
    assert bool(want.isnan().any()), "the case must hold pairs torchvision cannot compute"
    got = pairwise(kind, x, x)
    assert bool(torch.isfinite(got).all())
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-12, atol=1e-12)
    # A 0/0 term counts as 0: equal points and segments have IoU, GIoU, DIoU and CIoU 0.
    assert got[0, 1] == 0 and got[2, 2] == 0 and got[3, 3] == 0
    # Touching boxes: IoU 0, the enclosing box is the union: GIoU 0.
    if kind == "giou":
        assert got[4, 5] == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eps", [0.0, 1e-7])
def test_degenerate_boxes_give_finite_values_and_gradients(kind, eps):
    x = degenerate_boxes().requires_grad_()
    outs = [aligned_box_iou(x[:, None], x[None], kind=kind, eps=eps)]
    if kind in PAIRWISE:
        outs.append(pairwise(kind, x, x, **({} if kind == "giou" else {"eps": eps})))
    for out in outs:
        assert bool(torch.isfinite(out).all())
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert bool(torch.isfinite(grad).all()), grad


def test_zero_area_boxes_against_normal_ones_equal_torchvision():
    """Where torchvision stays finite on degenerate boxes (a zero-area box against a
    normal one: zero height gives arctan(w / 0) = pi / 2), the values are its."""
    g = torch.Generator().manual_seed(11)
    a = random_boxes(g, (2, 10))
    a[:, ::2, 2] = a[:, ::2, 0]  # zero width
    a[:, 1::4, 3] = a[:, 1::4, 1]  # zero height
    b = random_boxes(g, (2, 6))
    for kind in PAIRWISE:
        want = PAIRWISE[kind][1](a, b)
        assert bool(want.isfinite().all())
        torch.testing.assert_close(pairwise(kind, a, b), want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- gradients
def _grad_boxes(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return random_boxes(torch.Generator().manual_seed(seed), shape, 10.0).requires_grad_()


@pytest.mark.parametrize("kind", ["giou", "diou"])
def test_pairwise_gradcheck(kind):
    a, b = _grad_boxes(12, (2, 5)), _grad_boxes(13, (2, 3))
    assert torch.autograd.gradcheck(lambda x, y: pairwise(kind, x, y), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: pairwise(kind, x, y, fmt="center"), (a, b))


@pytest.mark.parametrize("kind", ["iou", "giou", "diou"])
def test_aligned_gradcheck(kind):
    a, b = _grad_boxes(14, (2, 6)), _grad_boxes(15, (1, 6))
    assert torch.autograd.gradcheck(lambda x, y: aligned_box_iou(x, y, kind=kind), (a, b))


def test_ciou_gradcheck_where_alpha_does_not_move():
    """CIoU's alpha is a constant for autograd (torchvision, the paper), so gradcheck holds
    where its own derivative does not enter: boxes of one aspect ratio (v = 0, and v moves
    only to second order)."""
    g = torch.Generator().manual_seed(16)
    xy, side = (
        torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 10,
        torch.rand(2, 7, 1, dtype=torch.float64),
    )
    a = torch.cat([xy[0], xy[0] + 3 * (side[0] + 0.5) * torch.tensor([2.0, 1.0], dtype=torch.float64)], -1)
    b = torch.cat([xy[1], xy[1] + 3 * (side[1] + 0.5) * torch.tensor([2.0, 1.0], dtype=torch.float64)], -1)
    a, b = a.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: complete_box_iou(x, y), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: aligned_box_iou(x, y, kind="ciou"), (a, b))


def test_ciou_gradients_equal_torchvisions():
    """Elsewhere the gradient is torchvision's, alpha held constant the same way."""
    a, b = _grad_boxes(17, (9,)), _grad_boxes(18, (4,))
    ours = torch.autograd.grad(complete_box_iou(a, b).sum(), (a, b))
    theirs = torch.autograd.grad(tv.complete_box_iou(a, b).sum(), (a, b))
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)
    b4 = b[:4].detach().clone().requires_grad_()
    a4 = a[:4].detach().clone().requires_grad_()
    ours = torch.autograd.grad(aligned_box_iou(a4, b4, kind="ciou").sum(), (a4, b4))
    theirs = torch.autograd.grad((-tv.complete_box_iou_loss(a4, b4)).sum(), (a4, b4))
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- dtypes, empty axes
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(half):
    """Exactly the float32 result of the (rounded) inputs, rounded once."""
    g = torch.Generator().manual_seed(19)
    a, b = random_boxes(g, (2, 30), 500).to(half), random_boxes(g, (2, 7), 500).to(half)
    for kind in PAIRWISE:
        got = pairwise(kind, a, b)
        assert got.dtype == half
        assert torch.equal(got, pairwise(kind, a.float(), b.float()).to(half))
    for kind in KINDS:
        got = aligned_box_iou(a[:, :7], b, kind=kind)
        assert got.dtype == half
        assert torch.equal(got, aligned_box_iou(a[:, :7].float(), b.float(), kind=kind).to(half))


def test_mixed_dtypes_promote():
    g = torch.Generator().manual_seed(20)
    a, b = random_boxes(g, (1, 4)).float(), random_boxes(g, (1, 3))
    assert generalized_box_iou(a, b).dtype == torch.float64
    assert aligned_box_iou(a[0, :3], b[0].half(), kind="ciou").dtype == torch.float32


@pytest.mark.parametrize("size", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_axes(size):
    B, N, M = size
    g = torch.Generator().manual_seed(21)
    a, b = random_boxes(g, (B, N)).float(), random_boxes(g, (B, M)).float()
    for kind in PAIRWISE:
        assert pairwise(kind, a, b).shape == (B, N, M)
    assert aligned_box_iou(a, a, kind="ciou").shape == (B, N)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda a, b: aligned_box_iou(a, b, kind="eiou"), ValueError, "kind must be one of .* got 'eiou'"),
        (lambda a, b: aligned_box_iou(a, b, kind=None), ValueError, "kind .* got None"),
        (lambda a, b: aligned_box_iou(a, b[:3]), ValueError, r"a \(5, 4\) and b \(3, 4\) do not broadcast"),
        (lambda a, b: aligned_box_iou(a, b, eps=-1.0), ValueError, "eps must be >= 0, got -1.0"),
        (lambda a, b: aligned_box_iou(a, b, fmt="xywh"), ValueError, "fmt .* got 'xywh'"),
        (lambda a, b: aligned_box_iou(a[:, :3], b), ValueError, r"a must be .* got shape \(5, 3\)"),
        (lambda a, b: aligned_box_iou(a, b.long()), TypeError, "b must have a floating dtype.*int64"),
        (lambda a, b: generalized_box_iou(a[None, None], b), ValueError, r"a must be .* \(1, 1, 5, 4\)"),
        (lambda a, b: distance_box_iou(a, b[None]), ValueError, r"a and b must both be .* b \(1, 5, 4\)"),
        (lambda a, b: distance_box_iou(a, b, eps=math.nan), ValueError, "eps must not be NaN"),
        (lambda a, b: complete_box_iou(a, b, eps="1e-7"), TypeError, "eps must be a number, got str"),
        (lambda a, b: complete_box_iou(a[None].expand(2, -1, -1), b[None].expand(3, -1, -1)), ValueError,
         r"batch size of b \(3, 5, 4\)"),
    ],
)  # fmt: skip
def test_bad_input(call, exc, message):
    g = torch.Generator().manual_seed(22)
    a, b = random_boxes(g, (5,)).float(), random_boxes(g, (5,)).float()
    with pytest.raises(exc, match=message):
        call(a, b)


# --------------------------------------------------------------------------- native kernel
_native_built = pytest.mark.skipif(bbox._native_ioufam is None, reason="native IoU-family kernel not built")


def needs_native(test):
    """Tests of the native kernel: built, and on CPU tensors (the only ones it takes)."""
    return pytest.mark.cpu_only("the native kernel runs on CPU tensors only")(_native_built(test))


def test_native_built_where_a_c_compiler_is():
    if os.environ.get("DETBLOCKS_NATIVE", "1").strip() == "0":
        pytest.skip("turned off by DETBLOCKS_NATIVE=0")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    assert bbox._native_ioufam is not None


@needs_native
@pytest.mark.parametrize("kind", list(PAIRWISE))
@pytest.mark.parametrize(
    ("B_a", "B_b", "n", "m"), [(3, 3, 257, 17), (1, 4, 40, 5), (2, 1, 3, 300), (1, 1, 1, 1)]
)
def test_native_equals_pytorch_path_bit_for_bit(monkeypatch, kind, B_a, B_b, n, m):
    g = torch.Generator().manual_seed(n * 7 + m)
    a, b = random_boxes(g, (B_a, n), 640).float(), random_boxes(g, (B_b, m), 640).float()
    a[0, : n // 3, 2] = a[0, : n // 3, 0]  # zero width
    b[0, : m // 2, 3] = b[0, : m // 2, 1]  # zero height
    a[0, -1] = b[0, 0]  # identical boxes
    a[0, 0] = a[0, 0, :1].expand(4)  # a point
    b[-1, -1] = -1  # a padding row
    kws = [{}] if kind == "giou" else [{}, {"eps": 0.0}, {"eps": 0.01}]
    for kw in kws:
        for fmt in ("corner", "center"):
            x, y = (a, b) if fmt == "corner" else (corner_to_center(a), corner_to_center(b))
            native = pairwise(kind, x, y, fmt=fmt, **kw)
            torch_path = _pytorch_path(monkeypatch, pairwise, kind, x, y, fmt=fmt, **kw)
            assert native.shape == torch_path.shape == (max(B_a, B_b), n, m)
            assert torch.equal(native, torch_path), (native - torch_path).abs().max()


@needs_native
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_native_half_precision_equals_pytorch_path(monkeypatch, half):
    g = torch.Generator().manual_seed(23)
    a, b = random_boxes(g, (2, 100), 640).to(half), random_boxes(g, (2, 30), 640).to(half)
    for kind in PAIRWISE:
        native = pairwise(kind, a, b)
        assert native.dtype == half
        assert torch.equal(native, _pytorch_path(monkeypatch, pairwise, kind, a, b))


@needs_native
def test_native_same_result_on_any_number_of_threads():
    g = torch.Generator().manual_seed(24)
    a, b = random_boxes(g, (3, 3000), 640).float(), random_boxes(g, (3, 40), 640).float()
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append([pairwise(kind, a, b) for kind in PAIRWISE])
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(r, results[0]))


@needs_native
def test_native_only_for_eager_finite_float32_without_autograd(monkeypatch):
    """float64, autograd and non-finite coordinates take the PyTorch path (which keeps
    torchvision's NaN and infinity propagation); the native kernel never sees them."""
    calls = []
    kernel = bbox._native_ioufam

    class Spy:
        def pairwise(self, *args):
            calls.append(args[0])
            return kernel.pairwise(*args)

    monkeypatch.setattr(bbox, "_native_ioufam", Spy())
    g = torch.Generator().manual_seed(25)
    a, b = random_boxes(g, (2, 20)).float(), random_boxes(g, (2, 3)).float()
    generalized_box_iou(a, b)
    assert calls == [1]
    complete_box_iou(a.double(), b.double())
    generalized_box_iou(a.requires_grad_(), b).sum().backward()
    spoiled = b.clone()
    spoiled[0, 0, 0] = math.nan
    out = distance_box_iou(a.detach(), spoiled)
    assert bool(out[0, :, 0].isnan().all()) and bool(out[0, :, 1:].isfinite().all())
    spoiled[0, 0, 0] = math.inf
    distance_box_iou(a.detach(), spoiled)
    generalized_box_iou(a.detach()[:, :0], b)
    assert calls == [1]
    with torch.no_grad():
        complete_box_iou(a, b)
    assert calls == [1, 3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_eager_blocks_equal_one_broadcast_computation(monkeypatch, kind, dtype):
    """The eager CPU path in blocks of rows (here 7) gives the single broadcast computation's
    values bit for bit (and the native kernel's, for float32)."""
    g = torch.Generator().manual_seed(27)
    a, b = random_boxes(g, (1, 45), 640).to(dtype), random_boxes(g, (3, 11), 640).to(dtype)
    a[0, :4, 2] = a[0, :4, 0]
    with monkeypatch.context() as m:
        m.setattr(bbox, "_native_ioufam", None)
        m.setattr(bbox, "_IOU_BLOCK_ELEMENTS", 3 * 11 * 7)
        blocked = pairwise(kind, a, b)
        m.setattr(bbox, "_IOU_BLOCK_ELEMENTS", 0)
        single = pairwise(kind, a, b)
    assert blocked.shape == (3, 45, 11)
    assert torch.equal(blocked, single)
    if dtype == torch.float32 and bbox._native_ioufam is not None:
        assert torch.equal(pairwise(kind, a, b), single)
