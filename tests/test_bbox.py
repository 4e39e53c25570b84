"""Tests of detblocks.bbox against plain float64 references written from SPEC.md."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from detblocks import bbox
from detblocks.bbox import (
    BBoxArea,
    BBoxBatchIOU,
    BBoxCenterToCorner,
    BBoxClipToImage,
    BBoxCornerToCenter,
    BBoxSplit,
    bbox_split,
    box_area,
    box_iou,
    center_to_corner,
    clip_to_image,
    corner_to_center,
)

HYPOTHESIS = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- references
def reference_iou(a: torch.Tensor, b: torch.Tensor, offset: float = 0.0, eps: float = 1e-15) -> torch.Tensor:
    """GluonCV's BBoxBatchIOU for corner boxes, one pair at a time in Python floats."""
    B, N, M = a.shape[0], a.shape[1], b.shape[1]
    out = torch.zeros(B, N, M, dtype=torch.float64)
    for i in range(B):
        for n, (al, at, ar, ab) in enumerate(a[i].double().tolist()):
            for m, (bl, bt, br, bb) in enumerate(b[i].double().tolist()):
                iw = min(max(min(ar, br) - max(al, bl) + offset, 0.0), 65504.0)
                ih = min(max(min(ab, bb) - max(at, bt) + offset, 0.0), 65504.0)
                inter = iw * ih
                area_a = (ar - al + offset) * (ab - at + offset)
                area_b = (br - bl + offset) * (bb - bt + offset)
                out[i, n, m] = inter / (area_a + area_b - inter + eps)
    return out


def random_boxes(shape, scale=100.0, min_size=1.0, generator=None, dtype=torch.float32) -> torch.Tensor:
    """Valid corner boxes (xmin <= xmax, ymin <= ymax) of the given leading shape."""
    xy = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * scale / 2 + min_size
    return torch.cat([xy, xy + wh], dim=-1).to(dtype)


@st.composite
def corner_boxes(draw, n_min=1, n_max=6, batch=2):
    n = draw(st.integers(n_min, n_max))
    coord = st.floats(-50, 50, allow_nan=False, width=32)
    size = st.floats(0, 60, allow_nan=False, width=32)
    rows = draw(st.lists(st.tuples(coord, coord, size, size), min_size=batch * n, max_size=batch * n))
    t = torch.tensor(rows, dtype=torch.float64).reshape(batch, n, 4)
    return torch.cat([t[..., :2], t[..., :2] + t[..., 2:]], dim=-1)


# --------------------------------------------------------------------------- conversions
def test_corner_to_center_matches_formula(dtype):
    x = random_boxes((3, 7), generator=torch.Generator().manual_seed(0), dtype=dtype)
    out = corner_to_center(x)
    x64 = x.double()
    want = torch.stack(
        [
            (x64[..., 0] + x64[..., 2]) / 2,
            (x64[..., 1] + x64[..., 3]) / 2,
            x64[..., 2] - x64[..., 0],
            x64[..., 3] - x64[..., 1],
        ],
        dim=-1,
    )
    assert out.dtype == dtype
    rtol, atol = {torch.float16: (1e-3, 0.1), torch.bfloat16: (1e-2, 1.0)}.get(dtype, (1e-6, 1e-6))
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=atol)


def test_conversions_on_axis_1_and_split():
    x = random_boxes((2, 5), generator=torch.Generator().manual_seed(1))
    moved = x.transpose(1, 2)  # (B, 4, N)
    torch.testing.assert_close(corner_to_center(moved, axis=1), corner_to_center(x).transpose(1, 2))
    parts = BBoxCornerToCenter(axis=1, split=True)(moved)
    assert len(parts) == 4 and all(p.shape == (2, 1, 5) for p in parts)
    torch.testing.assert_close(torch.cat(parts, dim=1), corner_to_center(moved, axis=1))
    parts = BBoxCenterToCorner(split=True)(x)
    assert all(p.shape == (2, 5, 1) for p in parts)


@HYPOTHESIS
@given(corner_boxes())
def test_corner_center_round_trip(x):
    torch.testing.assert_close(center_to_corner(corner_to_center(x)), x, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(BBoxCornerToCenter()(BBoxCenterToCorner()(x)), x, rtol=1e-12, atol=1e-9)


def test_bbox_split_shapes_and_values():
    x = torch.arange(24.0).reshape(2, 3, 4)
    kept = bbox_split(x, axis=-1)
    squeezed = BBoxSplit(axis=2, squeeze_axis=True)(x)
    assert [p.shape for p in kept] == [(2, 3, 1)] * 4
    assert [p.shape for p in squeezed] == [(2, 3)] * 4
    for k in range(4):
        assert torch.equal(squeezed[k], x[..., k])
    on_axis_1 = BBoxSplit(axis=1)(x.transpose(1, 2))
    assert [p.shape for p in on_axis_1] == [(2, 1, 3)] * 4


# --------------------------------------------------------------------------- area
def test_box_area_counts_negative_sides_as_zero():
    x = torch.tensor(
        [[[0.0, 0.0, 4.0, 2.0], [3.0, 3.0, 1.0, 5.0], [0.0, 5.0, 1.0, 4.0], [1.0, 1.0, 1.0, 9.0]]]
    )
    assert torch.equal(BBoxArea()(x), torch.tensor([[[8.0], [0.0], [0.0], [0.0]]]))
    center = torch.tensor([[[5.0, 5.0, 4.0, 2.0], [5.0, 5.0, -4.0, 2.0]]])
    assert torch.equal(box_area(center, fmt="cxcywh"), torch.tensor([[[8.0], [0.0]]]))


def test_box_area_matches_reference(dtype):
    x = random_boxes((2, 9), scale=50.0, generator=torch.Generator().manual_seed(2), dtype=dtype)
    want = ((x[..., 2] - x[..., 0]).double() * (x[..., 3] - x[..., 1]).double())[..., None]
    out = box_area(x)
    assert out.dtype == dtype and out.shape == (2, 9, 1)
    rtol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=1e-6)
    torch.testing.assert_close(box_area(x.transpose(1, 2), axis=1), out.transpose(1, 2))


# --------------------------------------------------------------------------- IoU
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("fmt", ["corner", "center"])
def test_box_iou_matches_loop_reference(fmt, offset):
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes((2, 11), generator=g), random_boxes((2, 6), generator=g)
    a[0, 0] = b[0, 0]  # identical boxes: IoU 1 without offset
    a[1, 1] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero width
    want = reference_iou(a, b, offset)
    if fmt == "center":
        a, b = corner_to_center(a), corner_to_center(b)
    out = BBoxBatchIOU(fmt=fmt, offset=offset)(a, b)
    assert out.shape == (2, 11, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


def test_box_iou_matches_torchvision_per_image():
    g = torch.Generator().manual_seed(4)
    a, b = random_boxes((3, 300), generator=g), random_boxes((3, 17), generator=g)
    want = torch.stack([torchvision.ops.box_iou(a[i], b[i]) for i in range(3)])
    torch.testing.assert_close(box_iou(a, b), want, rtol=1e-5, atol=1e-6)


def test_box_iou_single_image_and_batch_broadcast():
    g = torch.Generator().manual_seed(5)
    a, b = random_boxes((4, 20), generator=g), random_boxes((4, 3), generator=g)
    torch.testing.assert_close(box_iou(a[0], b[0]), box_iou(a, b)[0])
    shared = a[:1]  # one set of anchors for every image
    torch.testing.assert_close(box_iou(shared, b), box_iou(shared.expand(4, -1, -1), b))


def test_box_iou_axis_1_layout():
    g = torch.Generator().manual_seed(6)
    a, b = random_boxes((2, 8), generator=g), random_boxes((2, 3), generator=g)
    out = BBoxBatchIOU(axis=1)(a.transpose(1, 2), b.transpose(1, 2))
    torch.testing.assert_close(out, box_iou(a, b))


def _set_block_elements(monkeypatch, elements: int) -> None:
    """Force the eager PyTorch IoU path (not the native kernel) to blocks of ``elements``."""
    monkeypatch.setattr(bbox, "_native", None)
    monkeypatch.setattr(bbox, "_IOU_BLOCK_ELEMENTS", elements)


def test_box_iou_blocked_path_equals_single_shot(monkeypatch):
    g = torch.Generator().manual_seed(7)
    a, b = random_boxes((3, 1000), generator=g), random_boxes((3, 7), generator=g)
    for offset in (0, 1):
        single = box_iou(a, b, offset=offset)  # 21,000 elements: one block at the default sizes
        _set_block_elements(monkeypatch, 3 * 7 * 13)  # blocks of 13 rows, ragged end
        blocked = box_iou(a, b, offset=offset)
        _set_block_elements(monkeypatch, 1)  # smaller than one row: single shot
        tiny = box_iou(a, b, offset=offset)
        monkeypatch.undo()
        assert torch.equal(blocked, single) and torch.equal(tiny, single)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_box_iou_blocked_path_under_grad_modes(monkeypatch, mode):
    """The blocks write into the result in place, also when it is an inference tensor."""
    g = torch.Generator().manual_seed(8)
    a, b = random_boxes((2, 400), generator=g), random_boxes((2, 9), generator=g)
    single = box_iou(a, b)
    _set_block_elements(monkeypatch, 2 * 9 * 10)
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        blocked = box_iou(a, b)
    assert torch.equal(blocked, single)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_box_iou_blocked_path_in_half_precision(monkeypatch, half):
    g = torch.Generator().manual_seed(8)
    a, b = random_boxes((2, 500), generator=g).to(half), random_boxes((2, 5), generator=g).to(half)
    single = box_iou(a, b)
    _set_block_elements(monkeypatch, 2 * 5 * 31)
    blocked = box_iou(a, b)
    assert blocked.dtype == half and torch.equal(blocked, single)


@HYPOTHESIS
@given(corner_boxes(), corner_boxes(), st.sampled_from([0, 1]))
def test_box_iou_symmetric_and_in_unit_interval(a, b, offset):
    ab, ba = box_iou(a, b, offset=offset), box_iou(b, a, offset=offset)
    torch.testing.assert_close(ab, ba.transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert bool(((ab >= 0) & (ab <= 1 + 1e-12)).all())
    torch.testing.assert_close(ab, reference_iou(a, b, offset), rtol=1e-9, atol=1e-12)


def test_box_iou_gradcheck():
    g = torch.Generator().manual_seed(9)
    a = random_boxes((2, 4), scale=4.0, generator=g, dtype=torch.float64).requires_grad_()
    b = random_boxes((2, 3), scale=4.0, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: box_iou(x, y, offset=0.5), (a, b))


# --------------------------------------------------------------------------- IoU edge cases
def test_box_iou_with_empty_gt(dtype):
    a = random_boxes((2, 5), dtype=dtype)
    out = box_iou(a, torch.zeros(2, 0, 4, dtype=dtype))
    assert out.shape == (2, 5, 0) and out.dtype == dtype


def test_box_iou_all_padded(dtype):
    a = random_boxes((2, 5), dtype=dtype)
    out = BBoxBatchIOU()(a, -torch.ones(2, 3, 4, dtype=dtype))
    assert out.dtype == dtype and torch.equal(out, torch.zeros(2, 5, 3, dtype=dtype))


def test_box_iou_zero_area_boxes(dtype):
    a = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 3.0, 5.0]]], dtype=dtype)
    out = box_iou(a, a)
    assert torch.isfinite(out).all()
    assert torch.equal(out.float(), torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]))


def test_box_iou_fewer_anchors_than_gt(dtype):
    g = torch.Generator().manual_seed(10)
    a, b = random_boxes((2, 2), generator=g), random_boxes((2, 9), generator=g)
    out = box_iou(a.to(dtype), b.to(dtype))
    assert out.shape == (2, 2, 9)
    rtol, atol = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 3e-2)}.get(dtype, (1e-5, 1e-6))
    torch.testing.assert_close(out.double(), reference_iou(a.to(dtype), b.to(dtype)), rtol=rtol, atol=atol)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_box_iou_half_precision_large_pixels(half):
    """1000-4096 px boxes: areas overflow float16, so IoU is computed in float32. The only
    error left is the rounding of the coordinates to the half dtype (float16: 2 px steps
    at 4096, bfloat16: 16 px); both stay within 0.02 / 0.06 IoU of float32."""
    g = torch.Generator().manual_seed(11)
    xy = torch.rand(2, 200, 2, generator=g) * 3000
    wh = torch.rand(2, 200, 2, generator=g) * 1000 + 1000
    a = torch.cat([xy, (xy + wh).clamp(max=4096)], dim=-1)
    b = a[:, torch.randperm(200, generator=g)[:30]] + torch.randn(2, 30, 4, generator=g) * 50
    want = box_iou(a, b)
    out = box_iou(a.to(half), b.to(half))
    assert out.dtype == half and torch.isfinite(out).all()
    assert (want > 0.2).sum() > 30  # the comparison covers real overlaps
    atol = 0.02 if half == torch.float16 else 0.06
    torch.testing.assert_close(out.float(), want, rtol=0, atol=atol)


# --------------------------------------------------------------------------- clip to image
def test_clip_to_image_matches_reference(dtype):
    g = torch.Generator().manual_seed(12)
    x = (torch.rand(3, 10, 4, generator=g) * 120 - 30).to(dtype)
    img = torch.zeros(3, 3, 48, 64)
    want = torch.minimum(x.double().clamp(min=0), torch.tensor([64.0, 48.0, 64.0, 48.0], dtype=torch.float64))
    out = BBoxClipToImage()(x, img)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), want)
    torch.testing.assert_close(clip_to_image(x, height=48, width=64), out)


def test_clip_to_image_per_image_sizes():
    x = torch.tensor([[[-1.0, -1.0, 90.0, 90.0]], [[-1.0, -1.0, 90.0, 90.0]]])
    out = clip_to_image(x, height=torch.tensor([10, 20]), width=torch.tensor([30, 40]))
    assert torch.equal(out, torch.tensor([[[0.0, 0.0, 30.0, 10.0]], [[0.0, 0.0, 40.0, 20.0]]]))


def test_clip_to_image_follows_dynamic_image_size_under_export():
    x = torch.rand(2, 5, 4) * 100 - 10
    img = torch.zeros(2, 3, 48, 64)
    dims = (
        {0: torch.export.Dim("B"), 1: torch.export.Dim("N")},
        {2: torch.export.Dim("H"), 3: torch.export.Dim("W")},
    )
    dims[1][0] = dims[0][0]
    exported = torch.export.export(BBoxClipToImage(), (x, img), dynamic_shapes=dims).module()
    x2, img2 = torch.rand(3, 7, 4) * 100 - 10, torch.zeros(3, 3, 30, 20)
    assert torch.equal(exported(x2, img2), clip_to_image(x2, img2))
    assert exported(x2, img2)[..., 2].max() <= 20


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_with_the_argument_named():
    a = torch.rand(2, 5, 4)
    with pytest.raises(ValueError, match=r"a must be .*got shape \(2, 5, 5\)"):
        box_iou(torch.rand(2, 5, 5), a)
    with pytest.raises(ValueError, match=r"b must be .*got shape \(5\)"):
        box_iou(a, torch.rand(5))
    with pytest.raises(ValueError, match=r"batch size of b \(3, 2, 4\)"):
        box_iou(a, torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match="both be batched"):
        box_iou(a, torch.rand(2, 4))
    with pytest.raises(ValueError, match="fmt must be one of"):
        BBoxBatchIOU(fmt="xywh")
    with pytest.raises(ValueError, match="fmt must be one of"):
        box_area(a, fmt="bogus")
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        box_iou(torch.ones(2, 5, 4, dtype=torch.int64), a)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        box_iou(a, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"x must have size 4 on axis 1, got shape \(2, 5, 4\)"):
        corner_to_center(a, axis=1)
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        bbox_split(a, axis=3)
    with pytest.raises(ValueError, match="img must be"):
        clip_to_image(a, torch.zeros(48, 64))
    with pytest.raises(ValueError, match="img, or both height and width"):
        clip_to_image(a, height=3)
    with pytest.raises(ValueError, match=r"height must be .*\(B,\)"):
        clip_to_image(a, height=torch.ones(3), width=5)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        BBoxBatchIOU(eps=-1.0)


@pytest.mark.parametrize(
    "kind",
    ["padded_tail", "padded_inside", "all_dead", "zero_width", "all_live", "shared_anchors", "shared_refs"],
)
@pytest.mark.parametrize("kwargs", [{}, {"offset": 1.0}, {"eps": 0.0}])
def test_iou_eager_blocks_equal_single_block(kind, kwargs, dtype):
    """The eager CPU path (blocks of rows, columns that cannot overlap filled with 0 instead
    of computed) gives the traceable one-block path's values, bit for bit."""
    g = torch.Generator().manual_seed(7)
    B, N, M = 3, 40001, 60
    a = torch.rand(B, N, 4, generator=g) * 100
    a[..., 2:] += a[..., :2]
    b = torch.rand(B, M, 4, generator=g) * 100
    b[..., 2:] += b[..., :2] * 0.5
    a[0, :10] = -1
    a[1, 5, 1] = float("inf")
    if kind == "padded_tail":
        b[:, 17:] = -1
        b[2, 3] = -1
    elif kind == "padded_inside":
        b[:, ::2] = -1
        b[0, 1, 0] = float("nan")
    elif kind == "all_dead":
        b[:] = -1
    elif kind == "zero_width":
        b[..., 2] = b[..., 0]
    elif kind == "shared_anchors":  # one set of anchors broadcast over the images
        a, b = a[:1], torch.cat([b[:, :30], torch.full_like(b[:, 30:], -1)], 1)
    elif kind == "shared_refs":
        b = b[1:2]
    a, b = a.to(dtype), b.to(dtype)
    fast = box_iou(a, b, **kwargs)
    with torch.enable_grad():
        dense = box_iou(a.clone().requires_grad_(True), b, **kwargs).detach()
    assert fast.dtype == dense.dtype == dtype
    assert torch.equal(fast, dense)
    if kind == "padded_tail":
        assert bool((fast[..., :17] > 0).any())
    # The row maxima recorded along the way are those of the result.
    recorded = bbox._recorded_best_iou(fast)
    assert recorded is not None and torch.equal(recorded, dense.amax(-1))


def test_recorded_best_iou_is_dropped_when_the_result_changes():
    a = torch.rand(2, 30000, 4) * 10
    a[..., 2:] += a[..., :2]
    b = a[:, :20].clone()
    iou = box_iou(a, b)
    assert torch.equal(bbox._recorded_best_iou(iou), iou.amax(-1))
    assert bbox._recorded_best_iou(iou.clone()) is None  # only the result itself
    iou[:, 0, 0] = 2.0  # in-place change: the record no longer holds
    assert bbox._recorded_best_iou(iou) is None
