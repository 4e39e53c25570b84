"""ATSSAssigner / atss_assign: against a plain per-image, per-ground-truth reference of the
rule (mmdet 3.3.0 ``ATSSAssigner`` written the straightforward way), the native kernel
against the PyTorch path bit for bit, ties, non-finite boxes, half precision, padding,
compile and export."""

from __future__ import annotations

import math

import pytest
import torch
from torch.export import Dim

from conftest import DEVICE
from detblocks.assign import Assignment, ATSSAssigner, atss_assign
from detblocks.assign import atss as atss_mod


# ---------------------------------------------------------------- scenes
def grid_anchors(width: int = 160, height: int = 128, strides=(8, 16, 32, 64), side: float = 4.0):
    """One square of ``side`` strides per location of each level, as mmdet's AnchorGenerator."""
    parts, levels = [], []
    for s in strides:
        w, h = math.ceil(width / s), math.ceil(height / s)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx, cy = xs.flatten() * float(s) + s / 2, ys.flatten() * float(s) + s / 2
        r = side * s / 2
        parts.append(torch.stack([cx - r, cy - r, cx + r, cy + r], -1))
        levels.append(w * h)
    return torch.cat(parts).float(), levels


def ground_truth(seed: int, batch: int, m: int, width: int = 160, height: int = 128, interleave: bool = True):
    """Random boxes (4 px to half the image) with labels; each image has a random number of
    real rows, padding rows (-1) between them when ``interleave``; the last image has none."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([width, height], dtype=torch.float32)
    low = torch.rand(batch, m, 2, generator=g) * scale * 0.8
    size = torch.rand(batch, m, 2, generator=g) * scale * 0.45 + 4
    boxes = torch.cat([low, (low + size).minimum(scale)], -1)
    labels = torch.randint(0, 7, (batch, m), generator=g)
    for b in range(batch):
        real = int(torch.randint(1, m + 1, (), generator=g)) if b < batch - 1 or batch == 1 else 0
        keep = torch.randperm(m, generator=g)[:real] if interleave else torch.arange(real)
        pad = torch.ones(m, dtype=torch.bool)
        pad[keep] = False
        labels[b, pad] = -1
        boxes[b, pad] = -1.0
    return labels, boxes


# ---------------------------------------------------------------- the plain reference
def reference_atss(anchors, levels, gt_labels, gt_boxes, topk):
    """Per image, per ground truth, per level: mmdet's steps in float32, ties by index."""
    batch, m = gt_labels.shape
    n = anchors.shape[0]
    acx = (anchors[:, 0] + anchors[:, 2]) / 2.0
    acy = (anchors[:, 1] + anchors[:, 3]) / 2.0
    matches = torch.full((batch, n), -1, dtype=torch.int64)
    quality = torch.zeros(batch, n)
    for b in range(batch):
        best = [-1.0] * n
        for j in range(m):
            g = gt_boxes[b, j]
            if gt_labels[b, j] < 0 or not bool(torch.isfinite(g).all()):
                continue
            gcx, gcy = (g[0] + g[2]) / 2.0, (g[1] + g[3]) / 2.0
            cands, start = [], 0
            for size in levels:
                d = ((acx[start : start + size] - gcx) ** 2 + (acy[start : start + size] - gcy) ** 2).sqrt()
                order = torch.sort(d, stable=True).indices  # equal distances: lower index first
                cands += [start + int(i) for i in order[: min(topk, size)]]
                start += size
            ious = []
            for c in cands:
                a = anchors[c]
                w = (torch.minimum(a[2], g[2]) - torch.maximum(a[0], g[0])).clamp(min=0)
                h = (torch.minimum(a[3], g[3]) - torch.maximum(a[1], g[1])).clamp(min=0)
                overlap = w * h
                union = (a[2] - a[0]) * (a[3] - a[1]) + (g[2] - g[0]) * (g[3] - g[1]) - overlap
                ious.append(overlap / union.clamp(min=1e-6))
            ious = torch.stack(ious)
            thr = ious.mean() + ious.std()
            for c, v in zip(cands, ious.tolist()):
                inside = min(acx[c] - g[0], acy[c] - g[1], g[2] - acx[c], g[3] - acy[c]) > 0.01
                if v >= thr and inside and v > best[c]:  # strictly: a lower row keeps a tie
                    best[c] = v
                    matches[b, c] = j
                    quality[b, c] = v
    labels = torch.where(matches >= 0, gt_labels.gather(1, matches.clamp(min=0)), -1)
    return matches, labels, quality


def assert_same(got: Assignment, want, exact_quality: bool = False):
    assert isinstance(got, Assignment)
    assert got.matches.dtype == torch.int64 and got.labels.dtype == torch.int64
    assert torch.equal(got.matches, want[0]), (got.matches != want[0]).nonzero()[:10]
    assert torch.equal(got.labels, want[1])
    if exact_quality:
        assert torch.equal(got.quality, want[2])
    else:
        torch.testing.assert_close(got.quality.float(), want[2].float(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def pytorch_path(monkeypatch):
    """The PyTorch path even where the native kernel is built."""
    monkeypatch.setattr(atss_mod, "_native", None)


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("topk", [9, 3, 20])
def test_matches_the_plain_reference_on_random_scenes(seed, topk):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(seed, 3, 7)
    want = reference_atss(anchors, levels, labels, boxes, topk)
    assert_same(atss_assign(anchors, levels, labels, boxes, topk=topk), want)
    assert int((want[0] >= 0).sum()) > 0


def test_levels_smaller_than_topk_give_all_their_anchors(pytorch_path):
    anchors, levels = grid_anchors(strides=(8, 32, 128))  # the last level: 2 x 1 anchors
    labels, boxes = ground_truth(3, 2, 5)
    want = reference_atss(anchors, levels, labels, boxes, 9)
    assert_same(atss_assign(anchors, levels, labels, boxes, topk=9), want)


def test_pytorch_path_matches_the_reference(pytorch_path):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(11, 3, 6)
    assert_same(
        atss_assign(anchors, levels, labels, boxes), reference_atss(anchors, levels, labels, boxes, 9)
    )


def test_module_is_the_function():
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(2, 2, 5)
    got = ATSSAssigner(topk=5)(anchors, levels, labels, boxes)
    want = atss_assign(anchors, levels, labels, boxes, topk=5)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    assert "topk=5" in repr(ATSSAssigner(topk=5))


def test_score_targets_hold_the_iou_at_the_class():
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(4, 2, 6)
    out = atss_assign(anchors, levels, labels, boxes)
    t = out.score_targets(7)
    pos = out.matches >= 0
    assert torch.equal(t.sum(-1)[pos], out.quality[pos])
    assert not t[~pos].any()


# ---------------------------------------------------------------- native kernel
def _random_centres(seed: int, p: int, integer: bool):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(p, 2, generator=g) * torch.tensor([160.0, 128.0])
    return c.round() if integer else c


@pytest.mark.skipif(atss_mod._native is None, reason="native kernel not built")
@pytest.mark.cpu_only("the native kernel runs on CPU tensors only")
@pytest.mark.parametrize("integer", [False, True], ids=["random", "integer-centres"])
def test_native_candidates_equal_the_pytorch_path_bit_for_bit(integer, monkeypatch):
    anchors, levels = grid_anchors()
    anchors[[5, 77, 300]] = torch.tensor([math.nan, math.inf, -math.inf]).view(3, 1)  # never nearest
    finite = torch.isfinite(anchors).all(-1)
    acx, acy = atss_mod._centres(anchors)
    acx, acy = torch.where(finite, acx, torch.inf), torch.where(finite, acy, torch.inf)
    c = _random_centres(0, 257, integer)
    native = atss_mod._candidates(acx, acy, levels, 9, c[:, 0], c[:, 1])
    monkeypatch.setattr(atss_mod, "_native", None)
    plain = atss_mod._candidates(acx, acy, levels, 9, c[:, 0], c[:, 1])
    assert torch.equal(native, plain)
    # Integer centres put many anchors at exactly equal distances: the lower index first.
    if integer:
        d = ((acx[native] - c[:, :1]) ** 2 + (acy[native] - c[:, 1:]) ** 2).sqrt()
        lvl = native[:, :9]
        dd = d[:, :9]
        assert bool(
            ((dd[:, 1:] > dd[:, :-1]) | ((dd[:, 1:] == dd[:, :-1]) & (lvl[:, 1:] > lvl[:, :-1]))).all()
        )


@pytest.mark.skipif(atss_mod._native is None, reason="native kernel not built")
@pytest.mark.cpu_only("the native kernel runs on CPU tensors only")
@pytest.mark.parametrize("topk", [1, 9, 70])
def test_native_and_pytorch_assignments_are_identical(topk, monkeypatch):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(5, 4, 9)
    boxes = boxes.round()  # integer boxes: equidistant anchors everywhere
    native = atss_assign(anchors, levels, labels, boxes, topk=topk)
    monkeypatch.setattr(atss_mod, "_native", None)
    plain = atss_assign(anchors, levels, labels, boxes, topk=topk)
    assert all(torch.equal(x, y) for x, y in zip(native, plain))


def test_chunked_pytorch_path_equals_one_block(pytorch_path, monkeypatch):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(6, 3, 8)
    whole = atss_assign(anchors, levels, labels, boxes)
    seen = []
    block = atss_mod._nearest_block

    def recording(acx, acy, gcx, gcy, k):
        seen.append(gcx.shape[0] * acx.shape[0])
        return block(acx, acy, gcx, gcy, k)

    monkeypatch.setattr(atss_mod, "CHUNK_ELEMENTS", 700)
    monkeypatch.setattr(atss_mod, "_nearest_block", recording)
    chunked = atss_assign(anchors, levels, labels, boxes)
    assert all(torch.equal(x, y) for x, y in zip(whole, chunked))
    assert len(seen) > 4 and max(seen) <= max(700, max(levels))  # a block never exceeds the budget


def test_work_is_per_real_ground_truth(pytorch_path, monkeypatch):
    """Eager mode computes distances for the real rows only, not for B x M."""
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(7, 4, 40)
    rows = []
    block = atss_mod._nearest_block

    def recording(acx, acy, gcx, gcy, k):
        rows.append(gcx.shape[0])
        return block(acx, acy, gcx, gcy, k)

    monkeypatch.setattr(atss_mod, "_nearest_block", recording)
    atss_assign(anchors, levels, labels, boxes)
    assert max(rows) == int((labels >= 0).sum()) < labels.numel()


# ---------------------------------------------------------------- ties
@pytest.mark.parametrize("native", [True, False], ids=["default", "pytorch"])
def test_duplicate_ground_truth_goes_to_the_lower_row(native, monkeypatch):
    if not native:
        monkeypatch.setattr(atss_mod, "_native", None)
    anchors, levels = grid_anchors()
    boxes = torch.tensor([[[30.0, 20, 90, 70], [30, 20, 90, 70], [-1, -1, -1, -1]]])
    labels = torch.tensor([[2, 5, -1]])
    out = atss_assign(anchors, levels, labels, boxes)
    assert int((out.matches == 0).sum()) > 0 and not (out.matches == 1).any()
    assert bool((out.labels[out.matches == 0] == 2).all())


@pytest.mark.parametrize("native", [True, False], ids=["default", "pytorch"])
def test_equidistant_anchors_go_by_lowest_index(native, monkeypatch):
    if not native:
        monkeypatch.setattr(atss_mod, "_native", None)
    # One level of 8 px cells; a gt centred on a cell corner: 4 anchors at each distance ring.
    anchors, levels = grid_anchors(64, 64, strides=(8,))
    boxes = torch.tensor([[[16.0, 16, 48, 48]]])  # centre (32, 32): a corner of 4 cells
    acx, acy = atss_mod._centres(anchors)
    cand = atss_mod._candidates(acx, acy, levels, 6, torch.tensor([32.0]), torch.tensor([32.0]))
    d = ((acx - 32) ** 2 + (acy - 32) ** 2).sqrt()
    ring2 = sorted(i for i in range(anchors.shape[0]) if float(d[i]) == float(d[cand[0, 4]]))
    assert len(ring2) == 8  # the second ring straddles the top-6: its two lowest indices win
    assert cand[0, 4:].tolist() == ring2[:2]
    out = atss_assign(anchors, levels, torch.tensor([[1]]), boxes, topk=6)
    assert torch.equal(out.matches, reference_atss(anchors, levels, torch.tensor([[1]]), boxes, 6)[0])


# ---------------------------------------------------------------- non-finite and special inputs
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_ground_truth_is_never_matched(value):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(8, 2, 6, interleave=False)
    spoiled = boxes.clone()
    spoiled[0, 0, 2] = value
    as_padding_l, as_padding_b = labels.clone(), boxes.clone()
    as_padding_l[0, 0], as_padding_b[0, 0] = -1, -1.0
    got = atss_assign(anchors, levels, labels, spoiled)
    want = atss_assign(anchors, levels, as_padding_l, as_padding_b)
    assert torch.equal(got.matches, want.matches) and torch.equal(got.quality, want.quality)
    assert not (got.matches[0] == 0).any()


@pytest.mark.parametrize("native", [True, False], ids=["default", "pytorch"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_anchor_is_never_positive(native, value, monkeypatch):
    if not native:
        monkeypatch.setattr(atss_mod, "_native", None)
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(9, 2, 6)
    clean = atss_assign(anchors, levels, labels, boxes)
    hit = int((clean.matches[0] >= 0).nonzero()[0, 0])
    anchors[hit, 1] = value
    out = atss_assign(anchors, levels, labels, boxes)
    assert (out.matches[:, hit] == -1).all()
    assert bool(torch.isfinite(out.quality).all())


def test_no_ground_truth_gives_all_background():
    anchors, levels = grid_anchors()
    for labels, boxes in (
        (torch.full((2, 3), -1), torch.full((2, 3, 4), -1.0)),
        (torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 4)),
    ):
        out = atss_assign(anchors, levels, labels, boxes)
        assert (out.matches == -1).all() and (out.labels == -1).all() and not out.quality.any()
        assert out.matches.shape == (2, anchors.shape[0])


def test_padding_anywhere_equals_compact_ground_truth():
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(10, 3, 8, interleave=True)
    got = atss_assign(anchors, levels, labels, boxes)
    for b in range(3):
        rows = (labels[b] >= 0).nonzero().squeeze(1)
        if rows.numel() == 0:
            assert (got.matches[b] == -1).all()
            continue
        one = atss_assign(anchors, levels, labels[b : b + 1, rows], boxes[b : b + 1, rows])
        want = torch.where(one.matches >= 0, rows[one.matches.clamp(min=0)], -1)[0]
        assert torch.equal(got.matches[b], want)
        assert torch.equal(got.quality[b], one.quality[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_compute_on_the_upcast_values(dtype):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(12, 2, 6)
    boxes = boxes.to(dtype)
    out = atss_assign(anchors.to(dtype), levels, labels, boxes)
    assert out.quality.dtype == dtype
    ref = reference_atss(anchors.to(dtype).float(), levels, labels, boxes.float(), 9)
    if dtype == torch.float64:  # float64 distances and IoUs: the scene has no near-ties
        assert torch.equal(out.matches, ref[0])
    else:
        assert_same(out, (ref[0], ref[1], ref[2].to(dtype)))


def test_autocast_changes_nothing():
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(13, 2, 6)
    plain = atss_assign(anchors, levels, labels, boxes)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        auto = atss_assign(anchors, levels, labels, boxes)
    assert all(torch.equal(x, y) for x, y in zip(plain, auto))


def test_a_single_candidate_makes_nothing_positive():
    """K = 1: no standard deviation (mmdet: NaN threshold, nothing positive)."""
    anchors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16]])
    out = atss_assign(anchors, [2], torch.tensor([[0]]), torch.tensor([[[1.0, 1, 15, 15]]]), topk=1)
    assert (out.matches == -1).all() and bool(torch.isfinite(out.quality).all())


@pytest.mark.parametrize(
    "call, exc, text",
    [
        (lambda a, lv, g, b: atss_assign(a, [10, 5], g, b), ValueError, "sum"),
        (lambda a, lv, g, b: atss_assign(a, lv, g, b, topk=0), ValueError, "topk"),
        (lambda a, lv, g, b: atss_assign(a, [float(v) for v in lv], g, b), TypeError, "num_level_anchors[0]"),
        (lambda a, lv, g, b: atss_assign(a[None], lv, g, b), ValueError, "anchors"),
        (lambda a, lv, g, b: atss_assign(a, lv, g - 2, b), ValueError, "gt_labels"),
    ],
)
def test_bad_arguments(call, exc, text):
    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(1, 2, 3)
    with pytest.raises(exc, match=__import__("re").escape(text)):
        call(anchors, levels, labels, boxes)


# ---------------------------------------------------------------- compile and export
def test_compile_and_export_equal_eager():
    anchors, levels = grid_anchors()
    module = ATSSAssigner()
    scenes = [ground_truth(20, 2, 6), ground_truth(21, 3, 9), ground_truth(22, 4, 5)]
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    for labels, boxes in scenes:
        want = module(anchors, levels, labels, boxes)
        assert all(torch.equal(x, y) for x, y in zip(compiled(anchors, levels, labels, boxes), want))
    b, m = Dim("B", min=1, max=1024), Dim("M", min=2, max=4096)
    labels, boxes = scenes[0]
    program = torch.export.export(
        module,
        (anchors, levels, labels, boxes),
        dynamic_shapes=({}, [None] * len(levels), {0: b, 1: m}, {0: b, 1: m}),
    )
    for labels, boxes in scenes[1:]:
        got = program.module()(anchors, levels, labels, boxes)
        want = module(anchors, levels, labels, boxes)
        assert all(torch.equal(x, y) for x, y in zip(got, want))


# ---------------------------------------------------------------- host reads
def test_no_host_read_on_the_accelerator_path(monkeypatch):
    """As on CUDA (no CPU-only shortcut, no value checks): every row is a pair, nothing is
    read back, and the result is the CPU path's."""
    from test_host_reads import accelerator_path

    anchors, levels = grid_anchors()
    labels, boxes = ground_truth(14, 3, 7)
    want = atss_assign(anchors, levels, labels, boxes)
    monkeypatch.setattr(atss_mod, "_native", None)
    monkeypatch.setattr(atss_mod, "eager_cpu", lambda *t: False)
    monkeypatch.setattr(atss_mod, "host_reads_free", lambda *t: False)
    with accelerator_path(monkeypatch) as reads:
        got = atss_assign(anchors, levels, labels, boxes)
    assert not reads, dict(reads)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


# ---------------------------------------------------------------- a crowded image
def test_crowded_image_is_bounded_and_paths_agree(monkeypatch):
    """One image with 1,500 small objects in a batch of 4 (the others with a few): the
    PyTorch path never holds more than CHUNK_ELEMENTS distances at once and agrees with
    the native kernel (when built) exactly."""
    anchors, levels = grid_anchors(640, 640, strides=(8, 16, 32))
    g = torch.Generator().manual_seed(15)
    m = 1500
    low = torch.rand(4, m, 2, generator=g) * 620
    boxes = torch.cat([low, low + 6 + torch.rand(4, m, 2, generator=g) * 14], -1)
    labels = torch.randint(0, 80, (4, m), generator=g)
    labels[1:, 5:] = -1
    boxes[1:, 5:] = -1.0
    default = atss_assign(anchors, levels, labels, boxes)
    seen = []
    block = atss_mod._nearest_block

    def recording(acx, acy, gcx, gcy, k):
        seen.append(gcx.shape[0] * acx.shape[0])
        return block(acx, acy, gcx, gcy, k)

    monkeypatch.setattr(atss_mod, "_native", None)
    monkeypatch.setattr(atss_mod, "_nearest_block", recording)
    plain = atss_assign(anchors, levels, labels, boxes)
    assert all(torch.equal(x, y) for x, y in zip(default, plain))
    assert max(seen) <= atss_mod.CHUNK_ELEMENTS
    assert int((plain.matches[0] >= 0).sum()) > 1000
