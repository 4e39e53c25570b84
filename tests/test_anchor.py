"""detblocks.anchor against plain loops over the cells (GluonCV's generators written out),
for sizes the golden cases do not cover, every dtype, and GluonCV's argument habits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detblocks import anchor
from detblocks.anchor import (
    RPNAnchorGenerator,
    SSDAnchorGenerator,
    rpn_anchors,
    rpn_base_anchors,
    ssd_anchors,
)

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def ssd_reference(h, w, im_size, sizes, ratios, step, offsets=(0.5, 0.5), clip=False) -> np.ndarray:
    """GluonCV's SSD anchors: a loop over rows, columns and shapes, float64, then clipped."""
    s0, s1 = sizes[0], math.sqrt(sizes[0] * sizes[1])
    out = []
    for i in range(h):
        for j in range(w):
            cy, cx = (i + offsets[0]) * step, (j + offsets[1]) * step
            out.append([cx, cy, s0, s0])
            out.append([cx, cy, s1, s1])
            for r in ratios[1:]:
                out.append([cx, cy, s0 * math.sqrt(r), s0 / math.sqrt(r)])
    a = np.array(out, dtype=np.float64).reshape(1, -1, 4)
    if clip:
        H, W = im_size
        a = np.stack(
            [a[..., 0].clip(0, W), a[..., 1].clip(0, H), a[..., 2].clip(0, W), a[..., 3].clip(0, H)], -1
        )
    return a


def rpn_reference(h, w, stride, base_size, ratios, scales) -> np.ndarray:
    """Detectron's base anchors (numpy, round half to even) shifted over the grid."""
    base = np.array([0, 0, stride - 1, stride - 1], dtype=np.float64)
    bw, bh = base[2] - base[0] + 1, base[3] - base[1] + 1
    xc, yc = base[0] + 0.5 * (bw - 1), base[1] + 0.5 * (bh - 1)
    rows = []
    for r in ratios:
        ws = np.round(np.sqrt(bw * bh / r))
        hs = np.round(ws * r)
        for s in scales:
            f = s * base_size / stride
            sw, sh = ws * f, hs * f
            rows.append([xc - 0.5 * (sw - 1), yc - 0.5 * (sh - 1), xc + 0.5 * (sw - 1), yc + 0.5 * (sh - 1)])
    base_anchors = np.array(rows)
    sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
    return (base_anchors[None] + shifts[:, None]).reshape(1, -1, 4)


SSD_CASES = [
    dict(im_size=(300, 300), sizes=(30, 60), ratios=(1, 2, 0.5), step=8),
    dict(
        im_size=(512, 512), sizes=(51.2, 133.12), ratios=(1, 2, 0.5, 3, 1 / 3), step=16, offsets=(0.25, 0.75)
    ),
    dict(im_size=(320, 480), sizes=(200, 300), ratios=(1, 3), step=100, clip=True),
]


@pytest.mark.parametrize("kw", SSD_CASES)
@pytest.mark.parametrize("hw", [(1, 1), (2, 9), (38, 38), (70, 3)])
def test_ssd_anchors_equal_the_loop_for_any_size(kw, hw):
    h, w = hw
    got = SSDAnchorGenerator(**kw)(torch.zeros(2, 4, h, w))
    assert got.shape == (1, h * w * (len(kw["ratios"]) + 1), 4) and got.dtype == torch.float32
    want = ssd_reference(h, w, **kw)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-4)
    # beyond GluonCV's default alloc_size of 128 x 128 too
    got = ssd_anchors(130, 2, dtype=torch.float64, **kw)
    np.testing.assert_allclose(got.numpy(), ssd_reference(130, 2, **kw), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=16, base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)),
        dict(stride=8, base_size=12, ratios=(0.25, 1.5), scales=(3, 7)),
        dict(stride=4, base_size=4, ratios=(0.5, 1, 2), scales=(8,)),
    ],
)
@pytest.mark.parametrize("hw", [(1, 1), (3, 11), (50, 76)])
def test_rpn_anchors_equal_detectron_for_any_size(kw, hw):
    h, w = hw
    gen = RPNAnchorGenerator(**kw)
    got = gen(torch.zeros(1, 8, h, w))
    assert got.shape == (1, h * w * gen.num_depth, 4)
    np.testing.assert_allclose(got.numpy(), rpn_reference(h, w, **kw), rtol=1e-6, atol=1e-3)


def test_rpn_base_anchors_round_half_to_even():
    """sqrt(16 * 16 / 0.5) = 22.63 -> 23 and 23 * 0.5 = 11.5 -> 12 (to even), as numpy rounds."""
    base = rpn_base_anchors(16, 16, (0.5,), (1,))
    w, h = base[0, 2] - base[0, 0] + 1, base[0, 3] - base[0, 1] + 1
    assert (float(w), float(h)) == (23.0, 12.0)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_anchors_take_the_feature_map_dtype(dtype):
    x = torch.zeros(1, 2, 5, 7, dtype=dtype)
    ssd = SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)(x)
    rpn = RPNAnchorGenerator(16, 16, (0.5, 1, 2), (8,))(x)
    assert ssd.dtype == dtype and rpn.dtype == dtype
    ref_ssd = SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)(x.double())
    ref_rpn = RPNAnchorGenerator(16, 16, (0.5, 1, 2), (8,))(x.double())
    tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(dtype, 1e-6)
    torch.testing.assert_close(ssd.double(), ref_ssd, rtol=tol, atol=1e-5)
    torch.testing.assert_close(rpn.double(), ref_rpn, rtol=tol, atol=1e-5)


def test_integer_feature_maps_give_float32_and_half_modules_keep_exact_bases():
    x = torch.zeros(1, 2, 3, 3, dtype=torch.uint8)
    assert SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)(x).dtype == torch.float32
    gen = RPNAnchorGenerator(16, 16, (0.5, 1, 2), (8, 16)).half()  # no floating buffer to round
    want = rpn_reference(3, 3, 16, 16, (0.5, 1, 2), (8, 16))
    np.testing.assert_allclose(gen(x.float()).numpy(), want, rtol=1e-6)


def test_every_call_returns_fresh_anchors():
    """No cache: a caller may edit its anchors in place without affecting the next call."""
    gen = SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)
    x = torch.zeros(1, 2, 4, 4)
    first = gen(x)
    first.zero_()
    assert gen(x).abs().sum() > 0


def test_gluoncv_habits():
    """A single ratio or scale may be a number (GluonCV wraps it); ratios[0] only stands for
    the two squares; num_depth as GluonCV."""
    assert RPNAnchorGenerator(16, 16, 1, 8).num_depth == 1
    a = ssd_anchors(1, 1, (300, 300), (30, 60), (7,), 8)  # the value of ratios[0] is unused
    assert a[0, :, 2:].tolist() == [
        [30.0, 30.0],
        [pytest.approx(math.sqrt(1800)), pytest.approx(math.sqrt(1800))],
    ]
    assert SSDAnchorGenerator((300, 300), (30, 60), (1, 2, 0.5, 3), 8).num_depth == 5
    assert "index" not in anchor.SSDAnchorGenerator.__init__.__code__.co_varnames
    with pytest.raises(TypeError):
        SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8, alloc_size=(128, 128))  # dropped


def test_anchors_follow_the_device_of_the_feature_map():
    x = torch.zeros(1, 2, 3, 4, device="meta")
    assert SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)(x).device.type == "meta"
    assert RPNAnchorGenerator(16, 16, (1,), (8,))(x).device.type == "meta"
    assert rpn_anchors(2, 2, rpn_base_anchors(16, 16, (1,), (8,)), 16, device="meta").shape == (1, 4, 4)
