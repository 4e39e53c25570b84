"""MaxIoUAssigner / max_iou_assign: against a plain per-image loop over the ground truths
(mmdet 3.3.0 ``MaxIoUAssigner.assign_wrt_overlaps`` written the straightforward way, with
detblocks' documented deviation), the chunked path against the dense one, ties,
non-finite boxes, half precision, padding, compile and export."""

from __future__ import annotations

import math

import pytest
import torch
from torch.export import Dim

from conftest import DEVICE
from detblocks.assign import Assignment, MaxIoUAssigner, max_iou_assign
from detblocks.assign import max_iou as max_iou_mod
from detblocks.bbox import box_iou

RETINANET = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
RPN = dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3)


def anchors_grid(
    width: int = 192, height: int = 160, strides=(16, 32), scales=(2.0, 4.0), ratios=(0.5, 1.0, 2.0)
):
    """RetinaNet-like anchors: several shapes per location, integer-ish coordinates, so many
    anchors of one shape tie at a ground truth's best IoU."""
    out = []
    for s in strides:
        ys, xs = torch.meshgrid(torch.arange(height // s), torch.arange(width // s), indexing="ij")
        cx, cy = (xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s
        for sc in scales:
            for r in ratios:
                w, h = s * sc / math.sqrt(r), s * sc * math.sqrt(r)
                out.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1))
    return torch.cat(out).float()


def ground_truth(seed: int, batch: int, m: int, width: int = 192, height: int = 160, interleave: bool = True):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([width, height], dtype=torch.float32)
    low = torch.rand(batch, m, 2, generator=g) * scale * 0.8
    size = torch.rand(batch, m, 2, generator=g) * scale * 0.4 + 6
    boxes = torch.cat([low, (low + size).minimum(scale)], -1).round()
    labels = torch.randint(0, 9, (batch, m), generator=g)
    for b in range(batch):
        real = int(torch.randint(1, m + 1, (), generator=g)) if b < batch - 1 or batch == 1 else 0
        keep = torch.randperm(m, generator=g)[:real] if interleave else torch.arange(real)
        pad = torch.ones(m, dtype=torch.bool)
        pad[keep] = False
        labels[b, pad] = -1
        boxes[b, pad] = -1.0
    return labels, boxes


def reference_max_iou(anchors, gt_labels, gt_boxes, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0,
                      gt_max_assign_all=True, match_low_quality=True):  # fmt: skip
    """mmdet's steps per image, with a Python loop over the ground truths in index order."""
    batch = gt_labels.shape[0]
    a3 = anchors if anchors.dim() == 3 else anchors[None].expand(batch, -1, -1)
    n = a3.shape[1]
    matches = torch.full((batch, n), -1, dtype=torch.int64)
    quality = torch.zeros(batch, n)
    for b in range(batch):
        rows = [j for j in range(gt_labels.shape[1]) if gt_labels[b, j] >= 0]
        if not rows:
            continue
        ov = box_iou(gt_boxes[b, rows], a3[b])  # (k, n), as mmdet's gt-major overlaps
        best, arg = ov.max(0)
        gbest = ov.max(1).values
        out = torch.full((n,), -2, dtype=torch.int64)
        if isinstance(neg_iou_thr, tuple):
            out[(best >= neg_iou_thr[0]) & (best < neg_iou_thr[1])] = -1
        else:
            out[(best >= 0) & (best < neg_iou_thr)] = -1
        pos = best >= pos_iou_thr
        out[pos] = torch.tensor(rows)[arg[pos]]
        if match_low_quality:
            for i, j in enumerate(rows):
                if gbest[i] >= min_pos_iou and gbest[i] > 0:  # deviation: best IoU 0 gets nothing
                    if gt_max_assign_all:
                        out[ov[i] == gbest[i]] = j
                    else:
                        out[int(ov[i].argmax())] = j
        matches[b], quality[b] = out, best
    labels = torch.where(matches >= 0, gt_labels.gather(1, matches.clamp(min=0)), -1)
    return matches, labels, quality


def assert_same(got: Assignment, want):
    assert isinstance(got, Assignment)
    assert got.matches.dtype == torch.int64 and got.labels.dtype == torch.int64
    assert torch.equal(got.matches, want[0]), (got.matches != want[0]).nonzero()[:10]
    assert torch.equal(got.labels, want[1])
    torch.testing.assert_close(got.quality.float(), want[2].float(), rtol=1e-5, atol=1e-6)


CONFIGS = {
    "retinanet": RETINANET,
    "rpn": RPN,
    "neg-pair": dict(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.4)),
    "first-only": dict(pos_iou_thr=0.5, neg_iou_thr=0.4, gt_max_assign_all=False),
    "no-low-quality": dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_the_plain_reference(seed, config):
    anchors = anchors_grid()
    labels, boxes = ground_truth(seed, 3, 8)
    kwargs = CONFIGS[config]
    got = max_iou_assign(anchors, labels, boxes, **kwargs)
    assert_same(got, reference_max_iou(anchors, labels, boxes, **kwargs))
    assert (got.matches >= 0).any() and (got.matches == -1).any()


def test_per_image_anchors():
    anchors = anchors_grid()
    g = torch.Generator().manual_seed(3)
    per_image = anchors[None] + torch.randn(3, *anchors.shape, generator=g) * 3
    labels, boxes = ground_truth(5, 3, 6)
    got = max_iou_assign(per_image, labels, boxes, **RETINANET)
    assert_same(got, reference_max_iou(per_image, labels, boxes, **RETINANET))


def test_module_is_the_function():
    anchors = anchors_grid()
    labels, boxes = ground_truth(6, 2, 5)
    module = MaxIoUAssigner(0.5, (0.1, 0.4), 0.2, False, True)
    got = module(anchors, labels, boxes)
    want = max_iou_assign(anchors, labels, boxes, 0.5, (0.1, 0.4), 0.2, False, True)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    assert "neg_iou_thr=(0.1, 0.4)" in repr(module)


def test_int_and_list_thresholds_are_taken_as_numbers_and_pairs():
    """A documented deviation: mmdet assigns no negatives for an int or a list."""
    anchors = anchors_grid()
    labels, boxes = ground_truth(7, 2, 5)
    as_float = max_iou_assign(anchors, labels, boxes, 0.5, 0.0)
    as_int = max_iou_assign(anchors, labels, boxes, 0.5, 0)
    assert all(torch.equal(x, y) for x, y in zip(as_float, as_int))
    as_tuple = max_iou_assign(anchors, labels, boxes, 0.5, (0.1, 0.4))
    as_list = max_iou_assign(anchors, labels, boxes, 0.5, [0.1, 0.4])
    assert all(torch.equal(x, y) for x, y in zip(as_tuple, as_list))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_chunked_path_equals_the_dense_one(config, monkeypatch):
    anchors = anchors_grid()
    labels, boxes = ground_truth(8, 3, 7)
    dense = max_iou_assign(anchors, labels, boxes, **CONFIGS[config])
    seen = []
    iou = max_iou_mod._iou

    def recording(a, *args):
        seen.append(a.shape[1])
        return iou(a, *args)

    monkeypatch.setattr(max_iou_mod, "DENSE_LIMIT", 0)
    monkeypatch.setattr(max_iou_mod, "CHUNK_ELEMENTS", 3 * 7 * 50)  # 50 anchors per chunk
    monkeypatch.setattr(max_iou_mod, "_iou", recording)
    chunked = max_iou_assign(anchors, labels, boxes, **CONFIGS[config])
    assert all(torch.equal(x, y) for x, y in zip(dense, chunked))
    assert max(seen) == 50 and len(seen) >= anchors.shape[0] // 50


# ---------------------------------------------------------------- ties and the low-quality order
def test_tied_best_anchors_all_or_lowest_index():
    anchors = anchors_grid()
    boxes = torch.tensor([[[40.0, 40, 48, 45], [-1, -1, -1, -1]]])  # small: inside equal anchors
    labels = torch.tensor([[3, -1]])
    ov = box_iou(boxes[0, :1], anchors)[0]
    tied = (ov == ov.max()).nonzero().squeeze(1)
    assert tied.numel() > 1
    every = max_iou_assign(anchors, labels, boxes, 0.5, 0.4, gt_max_assign_all=True)
    assert bool((every.matches[0, tied] == 0).all())
    first = max_iou_assign(anchors, labels, boxes, 0.5, 0.4, gt_max_assign_all=False)
    assert int(first.matches[0, tied[0]]) == 0 and bool((first.matches[0, tied[1:]] != 0).all())


def test_later_ground_truth_wins_the_low_quality_step():
    """Two identical boxes: the threshold step gives the lower row, the low-quality step
    (ground truths in order, later ones overwrite) the higher one."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]]])
    out = max_iou_assign(anchors, torch.tensor([[1, 2]]), boxes, 0.5, 0.4)
    assert out.matches.tolist() == [[1, -1]] and out.labels.tolist() == [[2, -1]]
    no_lq = max_iou_assign(anchors, torch.tensor([[1, 2]]), boxes, 0.5, 0.4, match_low_quality=False)
    assert no_lq.matches.tolist() == [[0, -1]]


def test_ground_truth_without_overlap_gets_nothing():
    """Deviation: mmdet with min_pos_iou=0 would give it every anchor it does not overlap."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    boxes = torch.tensor([[[100.0, 100, 110, 110]]])
    out = max_iou_assign(anchors, torch.tensor([[0]]), boxes, 0.5, 0.4)
    assert out.matches.tolist() == [[-1, -1]]


# ---------------------------------------------------------------- special inputs
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_ground_truth_is_padding(value):
    anchors = anchors_grid()
    labels, boxes = ground_truth(9, 2, 5, interleave=False)
    spoiled = boxes.clone()
    spoiled[0, 0, 1] = value
    pl, pb = labels.clone(), boxes.clone()
    pl[0, 0], pb[0, 0] = -1, -1.0
    got = max_iou_assign(anchors, labels, spoiled, **RETINANET)
    want = max_iou_assign(anchors, pl, pb, **RETINANET)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_anchor_is_never_positive(value):
    anchors = anchors_grid()
    labels, boxes = ground_truth(10, 2, 5)
    clean = max_iou_assign(anchors, labels, boxes, **RETINANET)
    hit = int((clean.matches[0] >= 0).nonzero()[0, 0])
    anchors[hit, 2] = value
    for thr in (0.5, 0.0):  # even with a threshold of 0
        out = max_iou_assign(anchors, labels, boxes, thr, 0.4)
        assert bool((out.matches[:, hit] < 0).all()) and bool(torch.isfinite(out.quality).all())


def test_images_without_ground_truth_are_all_negative():
    anchors = anchors_grid()
    for labels, boxes in (
        (torch.full((2, 3), -1), torch.full((2, 3, 4), -1.0)),
        (torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 4)),
    ):
        for neg in (0.4, (0.1, 0.4)):
            out = max_iou_assign(anchors, labels, boxes, 0.5, neg)
            assert (out.matches == -1).all() and (out.labels == -1).all() and not out.quality.any()


def test_padding_anywhere_equals_compact_ground_truth():
    anchors = anchors_grid()
    labels, boxes = ground_truth(11, 3, 8, interleave=True)
    got = max_iou_assign(anchors, labels, boxes, **RPN)
    for b in range(3):
        rows = (labels[b] >= 0).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        one = max_iou_assign(anchors, labels[b : b + 1, rows], boxes[b : b + 1, rows], **RPN)
        want = torch.where(one.matches >= 0, rows[one.matches.clamp(min=0)], one.matches)[0]
        assert torch.equal(got.matches[b], want) and torch.equal(got.quality[b], one.quality[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    anchors = anchors_grid()
    labels, boxes = ground_truth(12, 2, 6)
    out = max_iou_assign(anchors.to(dtype), labels, boxes.to(dtype), **RETINANET)
    assert out.quality.dtype == dtype
    ref = reference_max_iou(anchors.to(dtype).float(), labels, boxes.to(dtype).float(), **RETINANET)
    assert torch.equal(out.matches, ref[0])
    torch.testing.assert_close(out.quality.float(), ref[2], rtol=1e-2, atol=1e-3)


def test_autocast_changes_nothing():
    anchors = anchors_grid()
    labels, boxes = ground_truth(13, 2, 6)
    plain = max_iou_assign(anchors, labels, boxes, **RETINANET)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        auto = max_iou_assign(anchors, labels, boxes, **RETINANET)
    assert all(torch.equal(x, y) for x, y in zip(plain, auto))


@pytest.mark.parametrize(
    "call, exc, text",
    [
        (lambda a, g, b: max_iou_assign(a, g, b, 0.5, (0.1, 0.2, 0.3)), ValueError, "neg_iou_thr"),
        (lambda a, g, b: max_iou_assign(a, g, b, 0.5, "0.4"), TypeError, "neg_iou_thr"),
        (lambda a, g, b: max_iou_assign(a, g, b, None, 0.4), TypeError, "pos_iou_thr"),
        (
            lambda a, g, b: max_iou_assign(a, g, b, 0.5, 0.4, gt_max_assign_all=1),
            TypeError,
            "gt_max_assign_all",
        ),
        (lambda a, g, b: max_iou_assign(a[None].expand(3, -1, -1), g, b, 0.5, 0.4), ValueError, "(3, "),
        (lambda a, g, b: max_iou_assign(a[:, :2], g, b, 0.5, 0.4), ValueError, "anchors"),
    ],
)
def test_bad_arguments(call, exc, text):
    anchors = anchors_grid()
    labels, boxes = ground_truth(1, 2, 3)
    with pytest.raises(exc, match=__import__("re").escape(text)):
        call(anchors, labels, boxes)


# ---------------------------------------------------------------- compile and export
@pytest.mark.parametrize("config", ["retinanet", "first-only", "neg-pair"])
def test_compile_and_export_equal_eager(config):
    module = MaxIoUAssigner(**CONFIGS[config])
    base = anchors_grid()
    scenes = [
        (base[:300], *ground_truth(20, 2, 6)),
        (base[:411], *ground_truth(21, 3, 9)),
        (base, *ground_truth(22, 4, 5)),
    ]
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    for args in scenes:
        want = module(*args)
        assert all(torch.equal(x, y) for x, y in zip(compiled(*args), want))
    b, n, m = Dim("B", min=1, max=1024), Dim("N", min=2, max=1 << 20), Dim("M", min=2, max=4096)
    program = torch.export.export(module, scenes[0], dynamic_shapes=({0: n}, {0: b, 1: m}, {0: b, 1: m}))
    for args in scenes[1:]:
        got = program.module()(*args)
        assert all(torch.equal(x, y) for x, y in zip(got, module(*args)))


# ---------------------------------------------------------------- host reads
@pytest.mark.parametrize("config", ["retinanet", "first-only"])
def test_no_host_read_on_the_accelerator_path(config, monkeypatch):
    """As on CUDA (no CPU-only shortcut, no value checks): nothing is read back."""
    from test_host_reads import accelerator_path

    anchors = anchors_grid()
    labels, boxes = ground_truth(14, 3, 7)
    want = max_iou_assign(anchors, labels, boxes, **CONFIGS[config])
    with accelerator_path(monkeypatch) as reads:
        got = max_iou_assign(anchors, labels, boxes, **CONFIGS[config])
    assert not reads, dict(reads)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
