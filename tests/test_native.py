"""The native CPU kernels give the PyTorch paths' results bit for bit.

Each case is computed three ways: by the native kernel, by the eager PyTorch path in
blocks, and by the single broadcast computation that tracing and autograd use.
"""

from __future__ import annotations

import math
import os
import shutil
import sysconfig

import pytest
import torch

import detblocks
from detblocks import bbox, matcher
from detblocks.bbox import box_iou

pytestmark = [
    pytest.mark.skipif(bbox._native is None, reason="native kernels not built"),
    pytest.mark.cpu_only("the native kernels are CPU kernels"),
]


def _random_boxes(g: torch.Generator, shape: tuple[int, ...], scale: float = 100.0) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=g) * scale
    wh = torch.rand(*shape, 2, generator=g) * scale / 2
    return torch.cat([xy, xy + wh], -1)


def _torch_paths(monkeypatch, a, b, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """box_iou without the native kernel: in blocks of 7 rows, and as one broadcast."""
    with monkeypatch.context() as m:
        m.setattr(bbox, "_native", None)
        m.setattr(bbox, "_IOU_BLOCK_ELEMENTS", max(a.shape[0], b.shape[0]) * b.shape[1] * 7)
        blocked = box_iou(a, b, **kw)
        m.setattr(bbox, "_IOU_BLOCK_ELEMENTS", 0)
        single = box_iou(a, b, **kw)
    return blocked, single


def _assert_same(x: torch.Tensor, y: torch.Tensor) -> None:
    assert x.dtype == y.dtype and x.shape == y.shape
    assert torch.equal(x, y), (x - y).abs().max()


def test_built_where_a_c_compiler_is():
    """`pip install` builds the kernels when it finds a C compiler; a silent failure to build
    would leave every user on the slower path."""
    if os.environ.get("DETBLOCKS_NATIVE", "1").strip() == "0":
        pytest.skip("turned off by DETBLOCKS_NATIVE=0")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    assert detblocks.NATIVE


@pytest.mark.parametrize("m", [1, 5, 16, 17, 40, 300])
@pytest.mark.parametrize("offset", [0.0, 1.0, 2.5])
def test_box_iou_equals_pytorch_paths(monkeypatch, m, offset):
    g = torch.Generator().manual_seed(m)
    a, b = _random_boxes(g, (3, 257)), _random_boxes(g, (3, m))
    b[0, m // 2 :] = -1  # padding at the end: the live references are a prefix
    if m > 2:
        b[1, 1] = -1  # a padding row in the middle: they are not
    b[2, 0, 2:] = b[2, 0, :2]  # zero area
    native = box_iou(a, b, offset=offset)
    blocked, single = _torch_paths(monkeypatch, a, b, offset=offset)
    _assert_same(native, blocked)
    _assert_same(native, single)
    assert torch.equal(bbox._recorded_best_iou(native), native.amax(-1))


@pytest.mark.parametrize("eps", [0.0, 1e-15, 0.25])
def test_box_iou_degenerate_boxes_equal_pytorch_paths(monkeypatch, eps):
    inf, nan = math.inf, math.nan
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [5.0, 5.0, 5.0, 5.0],  # a point
            [8.0, 0.0, 2.0, 10.0],  # inverted on x
            [nan, 0.0, 4.0, 4.0],
            [0.0, -inf, 4.0, 4.0],
            [-1.0, -1.0, -1.0, -1.0],  # padding
            [-2e5, -2e5, 2e5, 2e5],  # sides beyond float16's range: clipped
            [1e30, 1e30, 3e30, 3e30],  # area overflows float32: counts as non-finite
            [-0.0, -0.0, 0.0, 3.0],
            [2.0, 3.0, 7.0, 9.0],
        ]
    )
    a = torch.stack([boxes, boxes.flip(0)])
    b = torch.stack([boxes.flip(0), boxes])
    for offset in (0.0, 1.0):
        native = box_iou(a, b, offset=offset, eps=eps)
        blocked, single = _torch_paths(monkeypatch, a, b, offset=offset, eps=eps)
        _assert_same(native, blocked)
        _assert_same(native, single)
        assert bool(torch.isfinite(native).all())


def test_box_iou_batch_broadcast_and_layouts(monkeypatch):
    g = torch.Generator().manual_seed(3)
    anchors, refs = _random_boxes(g, (1, 300)), _random_boxes(g, (4, 9))
    cases = [
        (anchors, refs),  # one set of anchors, batch 1
        (anchors.expand(4, -1, -1), refs),  # expanded: read once
        (refs, anchors),  # one set of references
        (anchors.expand(4, -1, -1).transpose(1, 2).contiguous().transpose(1, 2), refs),  # strided rows
        (anchors[0], refs[0]),  # single image, 2-d
    ]
    for a, b in cases:
        _assert_same(box_iou(a, b), _torch_paths(monkeypatch, a, b)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_box_iou_half_precision_equals_pytorch_paths(monkeypatch, dtype):
    g = torch.Generator().manual_seed(4)
    a, b = _random_boxes(g, (2, 200)).to(dtype), _random_boxes(g, (2, 7)).to(dtype)
    native = box_iou(a, b)
    assert native.dtype == dtype
    _assert_same(native, _torch_paths(monkeypatch, a, b)[0])
    assert torch.equal(bbox._recorded_best_iou(native), native.amax(-1))


def test_box_iou_same_result_on_any_number_of_threads():
    g = torch.Generator().manual_seed(5)
    a, b = _random_boxes(g, (3, 5000)), _random_boxes(g, (3, 21))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(box_iou(a, b))
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        _assert_same(r, results[0])


def test_box_iou_float64_and_autograd_take_pytorch_paths():
    g = torch.Generator().manual_seed(6)
    a, b = _random_boxes(g, (2, 50)).double(), _random_boxes(g, (2, 4)).double()
    assert not bbox._native_iou_applies(a, b, torch.float64)
    a32 = a.float().requires_grad_()
    assert not bbox._native_iou_applies(a32, b.float(), torch.float32)
    box_iou(a32, b.float()).sum().backward()
    assert a32.grad is not None and bool(torch.isfinite(a32.grad).all())
    with torch.no_grad():
        assert bbox._native_iou_applies(a32, b.float(), torch.float32)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 8732])
def test_recorded_group_maxima_equal_the_matchers_scan(n):
    """The native kernel records the maxima of the matcher's groups of rows; the matcher's
    own scan of a copy of the matrix (nothing recorded) finds the same ones."""
    g = torch.Generator().manual_seed(n)
    a, b = _random_boxes(g, (2, n)), _random_boxes(g, (2, 12))
    b[1, 3] = -1  # live references not a prefix in one image
    b[0, 6:] = -1
    ious = box_iou(a, b)
    recorded = bbox._recorded_group_best(ious)
    assert recorded is not None
    scan = matcher._scan(ious.clone(), 1)
    assert recorded.shape == scan.gmax.shape
    assert torch.equal(recorded, scan.gmax)
    assert torch.equal(matcher._scan(ious, 1).colmax, scan.colmax)


def test_matchers_on_recorded_group_maxima_equal_the_scan():
    """Coarse boxes: many equal IoUs, so the tie rules decide. Matching the result itself
    (recorded maxima) and a copy (the scan) gives the same matches."""
    g = torch.Generator().manual_seed(7)
    a = (torch.rand(3, 5000, 4, generator=g) * 20).round()
    a[..., 2:] += a[..., :2] + 1
    b = torch.cat([a[:, :10], (torch.rand(3, 20, 4, generator=g) * 20).round()], 1)
    b[..., 2:] = torch.maximum(b[..., 2:], b[..., :2] + 1)
    b[:, 25:] = -1
    ious = box_iou(a, b)
    assert bbox._recorded_group_best(ious) is not None
    for share_max in (True, False):
        bipartite = matcher.BipartiteMatcher(share_max=share_max)
        m = matcher.CompositeMatcher([bipartite, matcher.MaximumMatcher(0.5)])
        assert torch.equal(m(ious), m(ious.clone()))
    ious.mul_(1.0)  # any in-place change drops the record
    assert bbox._recorded_group_best(ious) is None


def test_no_group_maxima_beyond_256_references():
    g = torch.Generator().manual_seed(8)
    ious = box_iou(_random_boxes(g, (1, 100)), _random_boxes(g, (1, 257)))
    assert bbox._recorded_group_best(ious) is None
    assert bbox._recorded_best_iou(ious) is not None


def test_turned_off_by_environment_variable(tmp_path):
    import subprocess
    import sys

    code = "import detblocks, detblocks.bbox as b; print(detblocks.NATIVE, b._native is None)"
    env = {**os.environ, "DETBLOCKS_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# --------------------------------------------------------------------------- OHEM
def _ohem_case(seed: int, B: int, N: int, C: int, ties: bool):
    g = torch.Generator().manual_seed(seed)
    matches = torch.where(torch.rand(B, N, generator=g) < 0.05, torch.randint(0, 7, (B, N), generator=g), -1)
    matches[0] = -1  # an image without positives
    logits = torch.randn(B, N, C, generator=g)
    if ties:  # few distinct values: many equally hard anchors, the lower index first
        logits = (logits * 2).round() / 2
    ious = torch.rand(B, N, 7, generator=g) * 0.8
    return matches, logits, ious


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("ratio,min_samples", [(3.0, 0), (1.0, 50), (0.5, 0), (1000.0, 0)])
def test_ohem_equals_pytorch_path(monkeypatch, ties, ratio, min_samples):
    from detblocks import sampler

    matches, logits, ious = _ohem_case(int(ratio) + min_samples + ties, 5, 3000, 21, ties)
    native = sampler.ohem_sample(matches, logits, ious, ratio, min_samples)
    with monkeypatch.context() as m:
        m.setattr(sampler, "_native", None)
        topk = sampler.ohem_sample(matches, logits, ious, ratio, min_samples)
        m.setattr(sampler, "tracing", lambda: True)  # the full sort that tracing uses
        sort = sampler._ohem(matches, logits, ious, ratio, min_samples, 0.5)
    assert native.dtype == torch.int64 and torch.equal(native, topk) and torch.equal(native, sort)
    assert int((native == -1).sum()) > 0


def test_ohem_on_strided_and_edge_inputs(monkeypatch):
    from detblocks import sampler

    matches, logits, ious = _ohem_case(3, 4, 500, 6, True)
    logits = logits.transpose(0, 1).contiguous().transpose(0, 1)  # strided batch axis
    matches[1] = 0  # every anchor positive: no negative
    matches = matches.t().contiguous().t()
    native = sampler.ohem_sample(matches, logits, ious, 3.0, 10)
    with monkeypatch.context() as m:
        m.setattr(sampler, "_native", None)
        assert torch.equal(native, sampler.ohem_sample(matches, logits, ious, 3.0, 10))
    assert bool((native[1] == 1).all())
    best = ious.amax(-1)
    best[0, :50] = math.nan  # never eligible
    best[2, 50:100] = -0.5  # floored at 0: eligible
    for ratio, min_samples in ((3.0, 10), (0.5, 1000), (2.0, 0)):
        native = sampler.ohem_sample(matches, logits, best, ratio, min_samples, thresh=0.3)
        with monkeypatch.context() as m:
            m.setattr(sampler, "_native", None)
            assert torch.equal(
                native, sampler.ohem_sample(matches, logits, best, ratio, min_samples, thresh=0.3)
            )
        assert not bool((native[0, :50] == -1).any())


# --------------------------------------------------------------------------- per-class decoding
@pytest.mark.parametrize("thresh", [0.01, 0.1, 0.0, -1.0, 1 / 3])
def test_decode_per_class_equals_pytorch_path(monkeypatch, thresh):
    from detblocks import coder

    g = torch.Generator().manual_seed(9)
    x = torch.rand(3, 500, 21, generator=g).softmax(-1)
    t32 = torch.tensor(thresh, dtype=torch.float32)
    # values at the threshold as float32 rounds it, and one float32 step either side of it
    x[0, :3, 1] = torch.stack(
        [t32, torch.nextafter(t32, torch.tensor(2.0)), torch.nextafter(t32, torch.tensor(-2.0))]
    )
    x[1, 0, 2:5] = torch.tensor([math.nan, -0.0, math.inf])
    for axis, inp in ((-1, x), (1, x.transpose(1, 2)), (-1, x[:, ::2])):  # strided and permuted layouts
        native = coder.decode_per_class(inp, thresh, axis)
        with monkeypatch.context() as m:
            m.setattr(coder, "_native", None)
            want = coder.decode_per_class(inp, thresh, axis)
        for got, ref in zip(native, want):
            assert got.dtype == ref.dtype and got.shape == ref.shape
            assert torch.equal(got, ref)
            assert torch.equal(
                got.view(torch.int64 if got.dtype == torch.int64 else torch.int32),
                ref.view(torch.int64 if ref.dtype == torch.int64 else torch.int32),
            )


# --------------------------------------------------------------------------- bipartite matching
def _coarse_ious(seed: int, b: int, n: int, m: int, pad: int = 3) -> torch.Tensor:
    """IoU of boxes on a coarse grid (many equal scores: the tie rules decide), padded refs."""
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(b, n, 4, generator=g) * 12).round()
    a[..., 2:] = a[..., :2] + (torch.rand(b, n, 2, generator=g) * 6).round() + 1
    r = (torch.rand(b, m, 4, generator=g) * 12).round()
    r[..., 2:] = r[..., :2] + (torch.rand(b, m, 2, generator=g) * 6).round() + 1
    r[:, m - pad :] = -1
    return box_iou(a, r)


def _both_paths(monkeypatch, fn):
    native = fn()
    with monkeypatch.context() as m:
        m.setattr(matcher, "_native", None)
        reference = fn()
    assert torch.equal(native, reference)
    return native


@pytest.mark.parametrize("share_max", [True, False])
@pytest.mark.parametrize("threshold,eps", [(1e-12, 1e-12), (0.3, 1e-12), (0.05, 0.05)])
def test_bipartite_equals_pytorch_path(monkeypatch, share_max, threshold, eps):
    for seed, (b, n, m) in enumerate([(3, 2000, 20), (2, 7, 15), (1, 300, 300), (4, 40, 1)]):
        x = _coarse_ious(seed, b, n, m, pad=min(3, m - 1))
        bip = matcher.BipartiteMatcher(threshold=threshold, eps=eps, share_max=share_max)
        out = _both_paths(monkeypatch, lambda bip=bip, x=x: bip(x))
        assert int((out >= 0).sum()) > 0
        both = [matcher.MaximumMatcher(0.4), bip]  # a matcher before it: only anchors left at -1 change
        _both_paths(monkeypatch, lambda both=both, x=x: matcher.CompositeMatcher(both)(x))
        _both_paths(monkeypatch, lambda x=x: matcher.bipartite_match(x, threshold, eps=eps, recover=False))


def test_bipartite_on_scores_with_nan_and_copies_equals_pytorch_path(monkeypatch):
    x = _coarse_ious(7, 2, 500, 12)
    x = x.clone()  # nothing recorded: the matcher scans it itself
    x[0, 5, 2] = math.nan
    x[1, :, 4] = math.nan
    bip = matcher.BipartiteMatcher(share_max=False)
    _both_paths(monkeypatch, lambda: matcher.CompositeMatcher([bip, matcher.MaximumMatcher(0.5)])(x))
    _both_paths(monkeypatch, lambda: matcher.BipartiteMatcher(is_ascend=True, threshold=0.9)(x))
