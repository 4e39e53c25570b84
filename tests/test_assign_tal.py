"""TaskAlignedAssigner (ultralytics 8.4.190 ``utils/tal.py``): a plain loop reference,
the two paths (dense traceable, sparse eager) bit for bit, ties, NaN/inf predictions,
low-precision inputs, padding, compile/export, and bounded memory on a crowded image.

The golden cases (``tests/test_golden_modern.py -k TAL``) hold ultralytics' own results.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys

import pytest
import torch

from conftest import DEVICE
from detblocks.assign import Assignment, TaskAlignedAssigner, task_aligned_assign
from detblocks.assign import tal as tal_module


# --------------------------------------------------------------------------- the reference
def reference_ciou(gt: list[float], pred: list[float], eps: float = 1e-7) -> float:
    """ultralytics' CIoU of one (gt, pred) pair, in float64, written out."""
    gx1, gy1, gx2, gy2 = gt
    px1, py1, px2, py2 = pred
    w1, h1 = gx2 - gx1, gy2 - gy1 + eps
    w2, h2 = px2 - px1, py2 - py1 + eps
    inter = max(min(gx2, px2) - max(gx1, px1), 0.0) * max(min(gy2, py2) - max(gy1, py1), 0.0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = max(gx2, px2) - min(gx1, px1)
    ch = max(gy2, py2) - min(gy1, py1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((px1 + px2 - gx1 - gx2) ** 2 + (py1 + py2 - gy1 - gy2) ** 2) / 4
    v = (4 / math.pi**2) * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def reference_tal(scores, boxes, points, labels, gts, topk=13, alpha=1.0, beta=6.0, stride=(8, 16, 32),
                  eps=1e-9, topk2=None):  # fmt: skip
    """The rule written the straightforward way: per image, per ground truth, per anchor,
    in float64. Returns (matches, labels, quality) as Python lists."""
    s_val = stride[1] if len(stride) > 1 else stride[0]
    batch, n = boxes.shape[:2]
    out_m = [[-1] * n for _ in range(batch)]
    out_l = [[-1] * n for _ in range(batch)]
    out_q = [[0.0] * n for _ in range(batch)]
    k = min(topk, n)
    k2 = min(topk2 or topk, n)
    for b in range(batch):
        sc, bx, pts = scores[b].double().tolist(), boxes[b].double().tolist(), points.double().tolist()
        rows = [m for m in range(labels.shape[1]) if labels[b, m] >= 0]
        inside, ciou, metric, pos = {}, {}, {}, {}
        for m in rows:
            x1, y1, x2, y2 = gts[b, m].double().tolist()
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            w, h = max(w, s_val) if w < s_val else w, max(h, s_val) if h < s_val else h
            lx, ly, rx, ry = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            c = int(labels[b, m])
            for a, (px, py) in enumerate(pts):
                if not (px - lx > 1e-9 and py - ly > 1e-9 and rx - px > 1e-9 and ry - py > 1e-9):
                    continue
                if not all(math.isfinite(v) for v in bx[a]) or not math.isfinite(sc[a][c]):
                    continue
                inside[m, a] = True
                ciou[m, a] = max(reference_ciou([x1, y1, x2, y2], bx[a]), 0.0)
                metric[m, a] = sc[a][c] ** alpha * ciou[m, a] ** beta
            # stable top-k over every anchor (metric 0 outside), then only those inside
            ranked = sorted(range(n), key=lambda a, m=m: (-metric.get((m, a), 0.0), a))[:k]
            pos[m] = {a for a in ranked if (m, a) in inside}
        owners = {}
        for m in rows:
            for a in pos[m]:
                owners.setdefault(a, []).append(m)
        final = {m: set() for m in rows}
        for a, ms in owners.items():
            if len(ms) == 1:
                final[ms[0]].add(a)
            else:  # highest CIoU over every gt containing the anchor, lowest row on ties
                cands = [m for m in rows if (m, a) in inside]
                best = max(ciou[m, a] for m in cands)
                final[min(m for m in cands if ciou[m, a] == best)].add(a)
        if k2 != k:
            for m in rows:
                ranked = sorted(range(n), key=lambda a, m=m: (-(metric[m, a] if a in final[m] else 0.0), a))
                final[m] &= set(ranked[:k2])
        for m in rows:
            if not final[m]:
                continue
            top_metric = max(metric[m, a] for a in final[m])
            top_ciou = max(ciou[m, a] for a in final[m])
            for a in final[m]:
                out_m[b][a], out_l[b][a] = m, int(labels[b, m])
                out_q[b][a] = metric[m, a] * top_ciou / (top_metric + eps)
    return out_m, out_l, out_q


# --------------------------------------------------------------------------- scenes
def grid_points(size: tuple[int, int] = (96, 64), strides=(8, 16, 32)) -> torch.Tensor:
    """ultralytics ``make_anchors(..., 0.5) * stride``: cell centres, level by level."""
    out = []
    for s in strides:
        ys, xs = torch.meshgrid(torch.arange(size[1] // s), torch.arange(size[0] // s), indexing="ij")
        out.append(torch.stack([(xs + 0.5) * s, (ys + 0.5) * s], -1).reshape(-1, 2).float())
    return torch.cat(out)


def scene(seed: int, batch: int = 3, m: int = 6, classes: int = 5, size=(96, 64), pad_mid: bool = False):
    """Random gts (some small), predictions near them, -1 padding rows (interleaved if
    ``pad_mid``), and one image without gts."""
    gen = torch.Generator().manual_seed(seed)
    points = grid_points(size)
    n = points.shape[0]
    wh = torch.rand(batch, m, 2, generator=gen) * torch.tensor([40.0, 30.0]) + 3.0
    xy = torch.rand(batch, m, 2, generator=gen) * (torch.tensor(size, dtype=torch.float32) - wh)
    gts = torch.cat([xy, xy + wh], -1)
    labels = torch.randint(0, classes, (batch, m), generator=gen)
    real = torch.rand(batch, m, generator=gen) < 0.7
    if not pad_mid:
        real = real.sort(dim=1, descending=True).values
    real[-1] = False  # an image without objects
    labels[~real] = -1
    gts[~real] = -1.0
    # predictions: a jittered copy of a random gt of the image, or a box around the point
    pick = torch.randint(0, m, (batch, n), generator=gen)
    near = gts.gather(1, pick[..., None].expand(-1, -1, 4))
    near = near + torch.randn(batch, n, 4, generator=gen) * 3.0
    around = torch.cat([points - 6.0, points + 6.0], -1).expand(batch, -1, -1)
    around = around + torch.randn(batch, n, 4, generator=gen)
    use_near = (torch.rand(batch, n, generator=gen) < 0.6) & real.gather(1, pick)
    boxes = torch.where(use_near[..., None], near, around)
    boxes = torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2] + 0.5)], -1)
    scores = torch.rand(batch, n, classes, generator=gen) * 0.9 + 0.05
    return scores, boxes, points, labels, gts


def paths(*args, **kwargs) -> tuple[Assignment, Assignment]:
    """The result of the eager (sparse) path and of the dense traceable path."""
    sparse = task_aligned_assign(*args, **kwargs)
    original = tal_module.tracing
    tal_module.tracing = lambda: True
    try:
        dense = task_aligned_assign(*args, **kwargs)
    finally:
        tal_module.tracing = original
    return sparse, dense


def assert_identical(a: Assignment, b: Assignment) -> None:
    for name, x, y in zip(Assignment._fields, a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x, y), f"{name} differs at {(x != y).nonzero()[:5].tolist()}"


def assert_matches_reference(got: Assignment, want, qtol: float = 1e-5) -> None:
    wm, wl = torch.tensor(want[0]), torch.tensor(want[1])
    wq = torch.tensor(want[2], dtype=torch.float64)
    assert got.matches.dtype == torch.int64 and got.labels.dtype == torch.int64
    assert torch.equal(got.matches, wm), f"matches differ at {(got.matches != wm).nonzero()[:5].tolist()}"
    assert torch.equal(got.labels, wl)
    torch.testing.assert_close(got.quality.double(), wq, rtol=qtol, atol=1e-6)


CONFIGS = [
    dict(topk=13),
    dict(topk=10, alpha=0.5, beta=6.0),
    dict(topk=10, alpha=0.5, beta=6.0, topk2=4),
    dict(topk=7, stride=(0,)),
    dict(topk=5, stride=(32,)),
    dict(topk=300),  # more than N anchors: all of them
]


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_against_loop_reference(seed, config):
    args = scene(seed, pad_mid=seed % 2 == 1)
    sparse, dense = paths(*args, num_classes=5, **config)
    assert_identical(sparse, dense)
    assert_matches_reference(sparse, reference_tal(*args, **config))
    assert (sparse.matches >= 0).any()


def test_module_equals_function_and_score_targets():
    args = scene(3)
    module = TaskAlignedAssigner(topk=10, num_classes=5, alpha=0.5, beta=6.0, stride=[8, 16, 32], topk2=6)
    got = module(*args)
    assert_identical(got, task_aligned_assign(*args, topk=10, num_classes=5, alpha=0.5, topk2=6))
    targets = got.score_targets(5)
    fg = got.matches >= 0
    assert torch.equal(targets.amax(-1)[fg], got.quality[fg]) and not targets[~fg].any()
    assert "topk=10" in repr(module)


def test_tie_duplicate_gt_goes_to_lower_row():
    scores, boxes, points, labels, gts = scene(1, batch=1, m=4)
    gts[0, 1], labels[0, 1] = gts[0, 0], labels[0, 0]  # rows 0 and 1 identical
    labels[0, 0] = labels[0, 1] = 2
    args = (scores, boxes, points, labels, gts)
    sparse, dense = paths(*args, num_classes=5, topk=10)
    assert_identical(sparse, dense)
    assert_matches_reference(sparse, reference_tal(*args, topk=10))
    assert (sparse.matches == 0).any() and not (sparse.matches == 1).any()


def test_tie_zero_metric_fill_takes_lowest_indices():
    """A gt at the top-left corner whose predictions all miss it: every metric is 0, so
    the top-k is the k lowest anchor indices, and those inside the box are positives of
    quality 0."""
    points = grid_points((64, 64))
    n = points.shape[0]
    gts = torch.tensor([[[0.0, 0.0, 30.0, 30.0]]])
    labels = torch.tensor([[1]])
    boxes = torch.tensor([40.0, 40.0, 60.0, 60.0]).expand(1, n, 4).clone()  # CIoU < 0 everywhere
    scores = torch.full((1, n, 2), 0.5)
    sparse, dense = paths(scores, boxes, points, labels, gts, num_classes=2, topk=10)
    assert_identical(sparse, dense)
    inside = [a for a in range(10) if 0 < points[a, 0] < 30 and 0 < points[a, 1] < 30]
    assert sparse.matches[0, :10].eq(0).nonzero().squeeze(1).tolist() == inside
    assert (sparse.matches[0, 10:] == -1).all() and (sparse.quality == 0).all()
    # two positive metrics: the fill takes the 8 lowest remaining indices
    boxes[0, 9] = gts[0, 0]
    boxes[0, 17] = gts[0, 0] + 1.0
    sparse, dense = paths(scores, boxes, points, labels, gts, num_classes=2, topk=10)
    assert_identical(sparse, dense)
    assert_matches_reference(sparse, reference_tal(scores, boxes, points, labels, gts, topk=10))
    assert sparse.matches[0, 9] == 0 and sparse.matches[0, 17] == 0


def test_equal_metrics_everywhere():
    """Every anchor predicts the same box with the same score: all metrics inside a gt are
    equal, so the top-k and the conflicts are decided by the tie rule alone."""
    points = grid_points((64, 64))
    n = points.shape[0]
    gts = torch.tensor([[[4.0, 4.0, 44.0, 44.0], [4.0, 4.0, 44.0, 44.0], [20.0, 20.0, 60.0, 60.0]]])
    labels = torch.tensor([[0, 0, 0]])
    boxes = torch.tensor([10.0, 10.0, 40.0, 40.0]).expand(1, n, 4).clone()
    scores = torch.full((1, n, 1), 0.25)
    args = (scores, boxes, points, labels, gts)
    sparse, dense = paths(*args, num_classes=1, topk=9)
    assert_identical(sparse, dense)
    assert_matches_reference(sparse, reference_tal(*args, topk=9))
    assert not (sparse.matches == 1).any()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_predictions_are_never_positive(bad):
    scores, boxes, points, labels, gts = scene(2)
    clean = task_aligned_assign(scores, boxes, points, labels, gts, num_classes=5, topk=10)
    hit = clean.matches[0].ge(0).nonzero().squeeze(1)[:6]
    boxes, scores = boxes.clone(), scores.clone()
    boxes[0, hit[:3], 2] = bad
    scores[0, hit[3:], :] = bad
    sparse, dense = paths(scores, boxes, points, labels, gts, num_classes=5, topk=10)
    assert_identical(sparse, dense)
    assert (sparse.matches[0, hit] == -1).all()
    assert torch.isfinite(sparse.quality).all()
    assert_matches_reference(sparse, reference_tal(scores, boxes, points, labels, gts, topk=10))


def test_no_ground_truth_gives_background():
    scores, boxes, points, labels, gts = scene(0)
    for lab, gt in ((labels.new_full(labels.shape, -1), gts), (labels[:, :0], gts[:, :0])):
        for got in paths(scores, boxes, points, lab, gt, num_classes=5):
            assert (got.matches == -1).all() and (got.labels == -1).all() and (got.quality == 0).all()
            assert got.matches.shape == (3, points.shape[0])


def test_padding_position_does_not_matter():
    """Moving the padding rows between the real rows only renames the gt rows."""
    scores, boxes, points, labels, gts = scene(4, m=5)
    front = task_aligned_assign(scores, boxes, points, labels, gts, num_classes=5, topk=10)
    perm = torch.tensor([4, 0, 3, 1, 2])  # new row i holds old row perm[i]
    lab, gt = labels[:, perm], gts[:, perm]
    moved = task_aligned_assign(scores, boxes, points, lab, gt, num_classes=5, topk=10)
    assert torch.equal(moved.labels, front.labels) and torch.equal(moved.quality, front.quality)
    fg = front.matches >= 0
    assert torch.equal(perm[moved.matches[fg]], front.matches[fg])


def test_any_anchor_layout():
    """Anchor points in any order (no rows to exploit): the sparse path still equals the
    dense one and the reference."""
    scores, boxes, points, labels, gts = scene(5)
    perm = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(0))
    args = (scores[:, perm], boxes[:, perm], points[perm], labels, gts)
    sparse, dense = paths(*args, num_classes=5, topk=10)
    assert_identical(sparse, dense)
    assert_matches_reference(sparse, reference_tal(*args, topk=10))
    points = points.clone()
    points[7] = math.nan  # a broken anchor point is never inside
    sparse, dense = paths(scores, boxes, points, labels, gts, num_classes=5, topk=10)
    assert_identical(sparse, dense)
    assert (sparse.matches[:, 7] == -1).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    """Low-precision inputs are computed in float32 (float64 in float64) and the quality
    comes back in the input dtype."""
    scores, boxes, points, labels, gts = scene(6)
    low = (scores.to(dtype), boxes.to(dtype), points.to(dtype), labels, gts.to(dtype))
    got = task_aligned_assign(*low, num_classes=5, topk=10)
    assert got.quality.dtype == dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    up = (low[0].to(work), low[1].to(work), low[2].to(work), labels, low[4].to(work))
    want = task_aligned_assign(*up, num_classes=5, topk=10)
    assert torch.equal(got.matches, want.matches)
    assert torch.equal(got.quality, want.quality.to(dtype))
    sparse, dense = paths(*low, num_classes=5, topk=10)
    if dtype != torch.float64:
        assert_identical(sparse, dense)
    else:  # float64 transcendentals may differ in the last bit between the two layouts
        assert torch.equal(sparse.matches, dense.matches)
        torch.testing.assert_close(sparse.quality, dense.quality, rtol=1e-12, atol=0)


def test_autocast():
    scores, boxes, points, labels, gts = scene(7)
    want = task_aligned_assign(scores, boxes, points, labels, gts, num_classes=5)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = task_aligned_assign(scores, boxes, points, labels, gts, num_classes=5)
    assert_identical(got, want)


def test_no_gradient_flows():
    scores, boxes, points, labels, gts = scene(8)
    scores.requires_grad_(True)
    got = task_aligned_assign(scores, boxes, points, labels, gts, num_classes=5)
    assert not got.quality.requires_grad


BAD = [
    (dict(pred_scores=torch.zeros(2, 10, 4, dtype=torch.int64)), TypeError, "pred_scores"),
    (dict(pred_scores=torch.zeros(2, 10)), ValueError, "pred_scores"),
    (dict(pred_scores=torch.zeros(2, 10, 3)), ValueError, "num_classes"),
    (dict(pred_boxes=torch.zeros(2, 10, 5)), ValueError, "pred_boxes"),
    (dict(pred_boxes=torch.zeros(2, 9, 4)), ValueError, "pred_boxes"),
    (dict(pred_boxes=torch.zeros(3, 10, 4)), ValueError, "pred_boxes"),
    (dict(anchor_points=torch.zeros(10, 3)), ValueError, "anchor_points"),
    (dict(anchor_points=torch.zeros(11, 2)), ValueError, "anchor_points"),
    (dict(gt_labels=torch.zeros(2, 3, dtype=torch.bool)), TypeError, "gt_labels"),
    (dict(gt_labels=torch.full((2, 3), 4)), ValueError, "gt_labels"),
    (dict(gt_boxes=torch.zeros(2, 3, 3)), ValueError, "gt_boxes"),
    (dict(gt_boxes=torch.zeros(2, 4, 4)), ValueError, "gt_labels"),
    (dict(topk=0), ValueError, "topk"),
    (dict(topk=2.5), TypeError, "topk"),
    (dict(stride="8"), TypeError, "stride"),
    (dict(stride=(8, -1)), ValueError, "stride"),
    (dict(alpha=math.nan), ValueError, "alpha"),
    (dict(topk2=-1), ValueError, "topk2"),
]


@pytest.mark.parametrize("override,error,name", BAD, ids=lambda x: str(x)[:40])
def test_bad_inputs(override, error, name):
    args = dict(
        pred_scores=torch.rand(2, 10, 4),
        pred_boxes=torch.rand(2, 10, 4),
        anchor_points=torch.rand(10, 2),
        gt_labels=torch.zeros(2, 3, dtype=torch.int64),
        gt_boxes=torch.rand(2, 3, 4),
        num_classes=4,
    )
    args.update(override)
    with pytest.raises(error, match=name):
        task_aligned_assign(**args)


def test_export_equals_eager():
    scores, boxes, points, labels, gts = scene(9)
    module = TaskAlignedAssigner(topk=10, num_classes=5, alpha=0.5, beta=6.0)
    want = module(scores, boxes, points, labels, gts)
    batch, n, m = torch.export.Dim("B", min=2), torch.export.Dim("N", min=2), torch.export.Dim("M", min=2)
    shapes = ({0: batch, 1: n}, {0: batch, 1: n}, {0: n}, {0: batch, 1: m}, {0: batch, 1: m})
    program = torch.export.export(module, (scores, boxes, points, labels, gts), dynamic_shapes=shapes)
    got = program.module()(scores, boxes, points, labels, gts)
    assert_identical(Assignment(*got), want)
    other = scene(10, batch=2, m=9)  # other B, M
    assert_identical(Assignment(*program.module()(*other)), module(*other))


# --------------------------------------------------------------------------- crowded image
CROWD_SCRIPT = r"""
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_assign_tal import crowded_scene, peak_rss_kb, reset_peak_rss
from detblocks.assign import task_aligned_assign
args = crowded_scene()
s, b, p, lab, gt = args
task_aligned_assign(s[1:2], b[1:2], p, lab[1:2], gt[1:2], num_classes=80)  # warm-up (a small image)
reset_peak_rss()
before = peak_rss_kb()
a = task_aligned_assign(*args, topk=10, num_classes=80, alpha=0.5, beta=6.0)
peak = peak_rss_kb()
from detblocks.assign import tal
s, b, p, lab, gt = args
lt, rb = tal._widened_corners(gt[lab >= 0], 16.0)
pairs = tal._candidate_pairs(p, lt, rb)[0].numel()
print(json.dumps({"before_kb": before, "peak_kb": peak, "fg": int((a.matches >= 0).sum()),
                  "crowd_fg": int((a.matches[0] >= 0).sum()), "pairs": pairs,
                  "anchors": s.shape[0] * s.shape[1]}))
"""


def reset_peak_rss() -> None:
    """Start the peak resident size (VmHWM) afresh from the current one (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def crowded_scene(batch: int = 8, crowd: int = 1500, classes: int = 80):
    """The shape of the ``tal_crowded`` workload: 640 px, 8400 points, one image with
    ``crowd`` small boxes on a jittered shelf grid, the others 1-30; M = ``crowd``."""
    gen = torch.Generator().manual_seed(0)
    points = grid_points((640, 640))
    n = points.shape[0]
    gts = torch.full((batch, crowd, 4), -1.0)
    labels = torch.full((batch, crowd), -1, dtype=torch.int64)
    cols, rows = 50, crowd // 50
    gx, gy = torch.meshgrid(torch.arange(cols), torch.arange(rows), indexing="xy")
    xy = torch.stack([gx.reshape(-1) * 12.8, gy.reshape(-1) * 21.3], -1)[:crowd] + torch.rand(
        crowd, 2, generator=gen
    )
    wh = torch.rand(crowd, 2, generator=gen) * torch.tensor([5.0, 8.0]) + torch.tensor([8.0, 13.0])
    gts[0] = torch.cat([xy, xy + wh], -1)
    labels[0] = torch.randint(0, classes, (crowd,), generator=gen)
    for b in range(1, batch):
        k = int(torch.randint(1, 31, (1,), generator=gen))
        wh = torch.rand(k, 2, generator=gen) * 200 + 10
        xy = torch.rand(k, 2, generator=gen) * (640 - wh)
        gts[b, :k] = torch.cat([xy, xy + wh], -1)
        labels[b, :k] = torch.randint(0, classes, (k,), generator=gen)
    half = torch.tensor([5.0, 8.0])  # boxes about the size of the crowd's, around each point
    boxes = torch.cat([points - half, points + half], -1).expand(batch, -1, -1)
    boxes = boxes + torch.randn(batch, n, 4, generator=gen)
    boxes = torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2] + 1.0)], -1)
    scores = torch.rand(batch, n, classes, generator=gen)
    return scores, boxes, points, labels, gts


def memory_bound_kb(pairs: int, anchors: int) -> float:
    """What a call may add to the peak resident size: a fixed 16 MB (allocator slack) plus
    128 bytes per candidate pair and per anchor of the batch (its per-pair arrays and its
    (B, N) outputs and scatter targets), whatever M is. On the crowded scene that is about
    30 MB; one float32 (B, M, N) tensor is 403 MB there, and ultralytics adds 1.74 GB."""
    return 16 * 1024 + 128 * (pairs + anchors) / 1024


@pytest.mark.cpu_only("measures the resident set of a CPU process")
def test_crowded_image_memory_is_bounded():
    """In a fresh process: the eager path on the crowded workload (B=8, M=1500, N=8400)
    adds to the peak resident size no more than :func:`memory_bound_kb` of its candidate
    pairs and anchors (under an eighth of one dense float32 (B, M, N) tensor), and still
    assigns the crowd."""
    root = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", CROWD_SCRIPT, root], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before_kb"] > 0
    added = result["peak_kb"] - result["before_kb"]
    assert added < memory_bound_kb(result["pairs"], result["anchors"]), result
    assert memory_bound_kb(result["pairs"], result["anchors"]) < 8 * 1500 * 8400 * 4 / 1024 / 8
    assert result["crowd_fg"] > 1000, result


def test_crowded_image_sparse_equals_dense_on_a_slice():
    """The crowded scene's first image (1500 gts) against the dense path."""
    scores, boxes, points, labels, gts = crowded_scene(batch=2, crowd=300)
    sparse, dense = paths(scores, boxes, points, labels, gts, num_classes=80, topk=10, alpha=0.5)
    assert_identical(sparse, dense)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
