"""SimOTAAssigner (mmdet 3.3.0 ``SimOTAAssigner``) against a plain loop-based reference.

The reference below runs the rule the straightforward way: per image, per ground truth,
Python sorts on ``(cost, prior)`` and ``(cost, row)``, with mmdet's dense
``F.binary_cross_entropy`` over all classes (no per-candidate sum). The golden cases
(``tests/test_golden_modern.py``) hold mmdet's own results; these tests cover what they
cannot: random scenes with padding in the middle, ties, NaN and infinite predictions,
half precision and autocast, images without objects, the chunked eager path and the
traced (compile) path. ``scene`` is shared with ``test_assign_dsl.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import DEVICE
from detblocks.assign import SimOTAAssigner, _dynamic_k, dsl_assign, simota_assign


# --------------------------------------------------------------------------- scenes
def grid_priors(h: int, w: int, strides=(8, 16, 32), offset: float = 0.5) -> torch.Tensor:
    """``(x, y, stride, stride)`` per cell, level by level, row-major (mmdet's
    ``MlvlPointGenerator``; YOLOX shifts by half a stride, RTMDet does not)."""
    out = []
    for s in strides:
        ys, xs = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
        pts = torch.stack([(xs.flatten() + offset) * s, (ys.flatten() + offset) * s], -1).float()
        out.append(torch.cat([pts, torch.full_like(pts, float(s))], -1))
    return torch.cat(out)


def scene(seed: int, priors: torch.Tensor, b: int = 3, m: int = 7, c: int = 5, h: int = 64, w: int = 96,
          logits: bool = False):  # fmt: skip
    """A padded batch: real rows scattered among padding rows (padding in the middle),
    the last image without objects; predictions near the objects are jittered copies of
    them. Returns ``(scores or logits, pred_boxes, gt_labels, gt_boxes)``."""
    g = torch.Generator().manual_seed(seed)
    n = priors.shape[0]
    xy = torch.rand(b, m, 2, generator=g) * torch.tensor([w, h]) * 0.9
    wh = torch.rand(b, m, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 4
    gt_boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], -1)
    gt_labels = torch.randint(0, c, (b, m), generator=g)
    pad = torch.rand(b, m, generator=g) < 0.3
    pad[-1] = True
    gt_labels[pad] = -1
    gt_boxes[pad] = -1.0
    src = torch.randint(0, m, (b, n), generator=g)
    near = gt_boxes.gather(1, src[..., None].expand(-1, -1, 4))
    size = (near[..., 2:] - near[..., :2]).repeat(1, 1, 2)
    near = near + torch.randn(b, n, 4, generator=g) * 0.15 * size
    around = priors[None, :, :2].repeat(1, 1, 2) + torch.randn(b, n, 4, generator=g) * 20
    use = (torch.rand(b, n, generator=g) < 0.6) & ~pad.gather(1, src)
    boxes = torch.where(use[..., None], near, around)
    boxes = torch.cat([boxes[..., :2].minimum(boxes[..., 2:]), boxes[..., :2].maximum(boxes[..., 2:])], -1)
    raw = torch.randn(b, n, c, generator=g) * 2 - 2
    raw = raw + 3 * F.one_hot(gt_labels.gather(1, src).clamp(min=0), c) * use[..., None]
    return (raw if logits else torch.sigmoid(raw)), boxes, gt_labels, gt_boxes


PRIORS = grid_priors(64, 96)


# --------------------------------------------------------------------------- reference
def mm_iou(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """mmdet ``bbox_overlaps`` of ``a (n, 4)`` with one box ``g (4,)``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    lt = torch.maximum(a[:, :2], g[:2])
    rb = torch.minimum(a[:, 2:], g[2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    return overlap / (area_a + area_g - overlap).clamp(min=1e-6)


def dynamic_k_reference(cost: torch.Tensor, iou: torch.Tensor, topk: int) -> list[int]:
    """Per image: ``cost``, ``iou (G, K)`` over the candidates -> the row of each
    candidate (-1 none), with Python loops and sorts."""
    g_count, k_count = cost.shape
    costs = cost.tolist()
    picked: dict[int, list[int]] = {}
    for gi in range(g_count):
        ious = sorted(iou[gi].tolist(), reverse=True)[: min(topk, k_count)]
        total = torch.tensor(0.0)
        for v in ious:  # float32, one after another
            total = total + torch.tensor(v)
        k = max(1, int(total))
        order = sorted(range(k_count), key=lambda j: (costs[gi][j], j))
        for j in order[:k]:
            picked.setdefault(j, []).append(gi)
    owner = [-1] * k_count
    for j, gs in picked.items():
        if len(gs) == 1:
            owner[j] = gs[0]
        else:
            owner[j] = min(range(g_count), key=lambda gi: (costs[gi][j], gi))
    return owner


def simota_reference(priors, scores, boxes, gt_labels, gt_boxes, radius=2.5, topk=10, iou_w=3.0, cls_w=1.0):
    """mmdet's SimOTA per image and ground truth, in float32, selection by Python sorts."""
    b, n, c = scores.shape
    scores, boxes, gt_boxes, priors = scores.float(), boxes.float(), gt_boxes.float(), priors.float()
    matches = torch.full((b, n), -1)
    quality = torch.zeros(b, n)
    for i in range(b):
        rows = [r for r in range(gt_labels.shape[1]) if gt_labels[i, r] >= 0]
        if not rows:
            continue
        ok = torch.isfinite(boxes[i]).all(-1) & (scores[i] >= 0).all(-1) & (scores[i] <= 1).all(-1)
        x, y, sw, sh = priors.unbind(-1)
        inside, centre = [], []
        for r in rows:
            x1, y1, x2, y2 = gt_boxes[i, r]
            cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
            inside.append((x - x1 > 0) & (y - y1 > 0) & (x2 - x > 0) & (y2 - y > 0))
            centre.append(
                (x - (cx - radius * sw) > 0) & (y - (cy - radius * sh) > 0)
                & ((cx + radius * sw) - x > 0) & ((cy + radius * sh) - y > 0)
            )  # fmt: skip
        inside, centre = torch.stack(inside), torch.stack(centre)  # (G, N)
        cand = ((inside | centre).any(0) & ok).nonzero().squeeze(1)
        if cand.numel() == 0:
            continue
        cost = torch.empty(len(rows), len(cand))
        iou = torch.empty(len(rows), len(cand))
        for gi, r in enumerate(rows):
            iou[gi] = mm_iou(boxes[i, cand], gt_boxes[i, r])
            onehot = F.one_hot(gt_labels[i, r], c).float().expand(len(cand), c)
            cls = F.binary_cross_entropy(scores[i, cand], onehot, reduction="none").sum(-1)
            out = torch.where(inside[gi, cand] & centre[gi, cand], 0.0, 1e5)
            cost[gi] = cls * cls_w + (-torch.log(iou[gi] + 1e-7)) * iou_w + out
        for j, gi in enumerate(dynamic_k_reference(cost, iou, topk)):
            if gi >= 0:
                matches[i, cand[j]] = rows[gi]
                quality[i, cand[j]] = iou[gi, j]
    return matches, quality


def check(a, matches, quality, gt_labels):
    assert a.matches.dtype == torch.int64 and a.labels.dtype == torch.int64
    assert torch.equal(a.matches, matches), (a.matches != matches).nonzero()
    want_labels = torch.where(matches >= 0, gt_labels.gather(1, matches.clamp(min=0)), -1)
    assert torch.equal(a.labels, want_labels)
    torch.testing.assert_close(a.quality.float(), quality, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(6))
def test_random_scenes_equal_the_loop_reference(seed):
    scores, boxes, gt_labels, gt_boxes = scene(seed, PRIORS)
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)
    assert (a.matches >= 0).any()


def test_other_arguments_equal_the_loop_reference():
    scores, boxes, gt_labels, gt_boxes = scene(11, PRIORS)
    kw = dict(center_radius=1.5, candidate_topk=4, iou_weight=2.0, cls_weight=0.5)
    a = SimOTAAssigner(**kw)(PRIORS, scores, boxes, gt_labels, gt_boxes)
    want = simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes, 1.5, 4, 2.0, 0.5)
    check(a, *want, gt_labels)


def rechecked_columns(monkeypatch) -> list[list[int]]:
    """The flat columns of each call of the exact recheck of conflicts, as they happen."""
    calls: list[list[int]] = []
    match = _dynamic_k.dynamic_k_match

    def spy(*args, recheck=None, **kwargs):
        def counted(flat):
            calls.append(flat.tolist())
            return recheck(flat)

        return match(*args, recheck=counted if recheck else None, **kwargs)

    monkeypatch.setattr(_dynamic_k, "dynamic_k_match", spy)
    return calls


@pytest.mark.parametrize("seed", [3, 17])
def test_conflicts_outside_every_region_are_rechecked_exactly(seed, monkeypatch):
    """Small objects take priors outside their box-and-centre region; where such a prior
    is taken twice and no region holds it, the eager shortcut's stand-in cost would decide
    the conflict: the exact costs over every object are recomputed (these seeds reach it)."""
    calls = rechecked_columns(monkeypatch)
    scores, boxes, gt_labels, gt_boxes = scene(seed, PRIORS, m=12)
    small = torch.rand(gt_boxes.shape[:2], generator=torch.Generator().manual_seed(seed)) < 0.6
    gt_boxes[..., 2:] = torch.where(small[..., None], gt_boxes[..., :2] + 5, gt_boxes[..., 2:])
    gt_boxes[gt_labels < 0] = -1
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert calls, "the recheck was not reached"
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)


@pytest.mark.parametrize("overlap", [True, False], ids=["boxes-overlap", "boxes-elsewhere"])
def test_objects_short_of_k_inside_pick_the_cheapest_outside(overlap, monkeypatch):
    """Small objects hold fewer than k priors inside their box-and-centre region and pick
    the rest outside. With predicted boxes overlapping them, the eager shortcut proves the
    non-overlapping pairs too dear and leaves them uncomputed (a stand-in cost); with every
    predicted box elsewhere it must compute them all. Both equal the loop reference."""
    stand_in = torch.tensor(3.0 * -math.log(1e-7) - (1.0 + 5 * 1e-3) + 1e5, dtype=torch.float32)
    seen = []
    match = _dynamic_k.dynamic_k_match

    def spy(rows, cols, pair_costs, topk, **kwargs):
        def costs(blk, w):
            iou, cost_of, k = pair_costs(blk, w)

            def recorded(k):
                out = cost_of(k)
                seen.append(int((out == stand_in).sum()))
                return out

            return iou, recorded, k

        return match(rows, cols, costs, topk, **kwargs)

    monkeypatch.setattr(_dynamic_k, "dynamic_k_match", spy)
    scores, boxes, gt_labels, gt_boxes = scene(5, PRIORS, m=9)
    gt_boxes[..., 2:] = gt_boxes[..., :2] + 3.0  # few priors inside: every object is short of k
    gt_boxes[gt_labels < 0] = -1
    if overlap:  # the first object of each image gets 30 boxes around it
        boxes[:, :30] = (
            gt_boxes[:, :1] + torch.randn(boxes.shape[0], 30, 4, generator=torch.Generator()) * 0.5
        )
        boxes[:, :30, 2:] = boxes[:, :30, :2] + 3.0
    else:  # every predicted box far outside the image
        boxes = boxes + 1000.0
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)
    assert (a.matches >= 0).sum() > 5
    assert (sum(seen) > 0) == overlap, seen


def test_a_conflict_decided_by_an_uncomputed_outside_cost_is_rechecked(monkeypatch):
    """Objects 0 and 1 (class 0) hold no prior inside and see no predicted box: they
    compute every pair and both take prior 0. Object 2 (class 1, dearer everywhere) sees
    three boxes, so its pair with prior 0 (IoU 0) is left uncomputed, standing in below
    its true cost and below theirs. The conflict over prior 0 is recomputed exactly: it
    goes to object 0, as in the reference, not to object 2."""
    calls = rechecked_columns(monkeypatch)
    n = PRIORS.shape[0]
    scores = torch.full((1, n, 3), 0.2)
    scores[..., 1] = 0.01
    gt_labels = torch.tensor([[0, 0, 1]])
    gt_boxes = torch.tensor([[[5.0, 5, 7, 7], [5.5, 5.5, 7.5, 7.5], [37.0, 21, 39, 23]]])  # between priors
    boxes = torch.tensor([200.0, 200, 210, 210]).expand(1, n, 4).clone()
    near = ((PRIORS[:, 0] - 38).abs() < 12) & ((PRIORS[:, 1] - 22).abs() < 12)
    boxes[0, near.nonzero().squeeze(1)[-3:]] = gt_boxes[0, 2]
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)
    assert a.matches[0, 0] == 0 and calls == [[0]]


def test_small_chunks_give_the_same_result(monkeypatch):
    scores, boxes, gt_labels, gt_boxes = scene(3, PRIORS)
    whole = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    monkeypatch.setattr(_dynamic_k, "CHUNK_ELEMENTS", 50)  # one or two rows per block
    part = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert all(torch.equal(x, y) for x, y in zip(whole, part))


def test_duplicate_ground_truths_tie_to_the_lower_row():
    scores, boxes, gt_labels, gt_boxes = scene(4, PRIORS, b=1)
    gt_labels[0, :2] = 2
    gt_boxes[0, 1] = gt_boxes[0, 0] = torch.tensor([10.0, 12, 40, 44])
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert (a.matches == 0).any() and not (a.matches == 1).any()
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)


def test_equal_costs_go_to_the_lower_prior():
    """Eight identical predictions (box and scores) inside one object: the lowest prior
    indices among them are picked."""
    scores = torch.full((1, PRIORS.shape[0], 3), 0.05)
    boxes = PRIORS[None, :, :2].repeat(1, 1, 2) + torch.tensor([-30.0, -30, 30, 30])
    gt_boxes = torch.tensor([[[16.0, 16, 48, 48]]])
    gt_labels = torch.tensor([[1]])
    same = ((PRIORS[:, 0] > 16) & (PRIORS[:, 0] < 48) & (PRIORS[:, 1] > 16) & (PRIORS[:, 1] < 48)).nonzero()[
        :, 0
    ]
    boxes[0, same] = torch.tensor([17.0, 17, 47, 47])
    scores[0, same, 1] = 0.9
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    k = int(sum(sorted([0.87890625] * len(same), reverse=True)[:10]))  # IoU 30*30/32*32
    assert torch.equal((a.matches[0] == 0).nonzero()[:, 0], same[:k])
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_predictions_are_never_positive(value):
    scores, boxes, gt_labels, gt_boxes = scene(5, PRIORS)
    clean = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    hit = clean.matches[0].nonzero()[:6, 0]
    boxes[0, hit[:3], 2] = value
    scores[0, hit[3:], 1] = value
    scores[1, :5, 0] = 1.5  # not a probability
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert (a.matches[0, hit] == -1).all() and (a.matches[1, :5] == -1).all()
    assert torch.isfinite(a.quality).all()
    check(a, *simota_reference(PRIORS, scores, boxes, gt_labels, gt_boxes), gt_labels)


def test_no_objects_give_all_background():
    scores, boxes, gt_labels, gt_boxes = scene(6, PRIORS)
    gt_labels[:] = -1
    gt_boxes[:] = -1
    a = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert (a.matches == -1).all() and (a.labels == -1).all() and (a.quality == 0).all()
    a = simota_assign(PRIORS, scores, boxes, gt_labels[:, :0], gt_boxes[:, :0])
    assert (a.matches == -1).all() and a.quality.shape == (3, PRIORS.shape[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_compute_in_float32(dtype):
    """Half (or double) inputs give the float32 result of the same rounded values, and the
    quality in the inputs' dtype."""
    scores, boxes, gt_labels, gt_boxes = scene(7, PRIORS)
    args = [t.to(dtype) for t in (PRIORS, scores, boxes)] + [gt_labels, gt_boxes.to(dtype)]
    a = simota_assign(*args)
    b = simota_assign(*[t.float() if t.is_floating_point() else t for t in args])
    assert a.quality.dtype == dtype
    assert torch.equal(a.matches, b.matches)
    torch.testing.assert_close(a.quality, b.quality.to(dtype))


def test_autocast_gives_the_float32_result():
    scores, boxes, gt_labels, gt_boxes = scene(8, PRIORS)
    want = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


def test_compiled_equals_eager():
    """The traced path (every row and prior a pair, static top-k bounds) picks the same."""
    torch._dynamo.reset()
    fn = torch.compile(simota_assign, fullgraph=True, dynamic=True, backend="aot_eager")
    for seed in (0, 9):
        scores, boxes, gt_labels, gt_boxes = scene(seed, PRIORS)
        gt_labels[0, :2] = 3
        gt_boxes[0, 1] = gt_boxes[0, 0] = torch.tensor([10.0, 12, 40, 44])  # a tie
        want = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
        got = fn(PRIORS, scores, boxes, gt_labels, gt_boxes)
        assert torch.equal(got.matches, want.matches) and torch.equal(got.labels, want.labels)
        torch.testing.assert_close(got.quality, want.quality)
    torch._dynamo.reset()


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates (views of its inputs excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = pytree.tree_leaves((args, kwargs))
        seen = {t.untyped_storage().data_ptr() for t in given if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def crowded_scene(logits: bool = False):
    """Eight images at 256 px: one holds 150 small objects, the others one each."""
    priors = grid_priors(256, 256, offset=0.0 if logits else 0.5)
    scores, boxes, gt_labels, gt_boxes = scene(10, priors, b=8, m=150, c=80, h=256, w=256, logits=logits)
    gt_labels[1:, 1:] = -1
    gt_boxes[1:, 1:] = -1
    gt_boxes[0, :, 2:] = gt_boxes[0, :, :2] + 12  # small objects
    gt_labels[0] = gt_labels[0].clamp(min=0)
    return priors, scores, boxes, gt_labels, gt_boxes


def test_crowded_image_memory_grows_with_its_candidates(monkeypatch):
    """One image with 150 objects among images with one: the eager path holds blocks of
    pairs, never a (B, M, N) cost (let alone B x M x N x C): with blocks of 16K pairs no
    tensor it creates is an eighth of one float32 (B, M, N) tensor, and the result equals the reference."""
    priors, scores, boxes, gt_labels, gt_boxes = crowded_scene()
    monkeypatch.setattr(_dynamic_k, "CHUNK_ELEMENTS", 1 << 14)  # blocks of 16K pairs
    with LargestTensor() as mode:
        a = simota_assign(priors, scores, boxes, gt_labels, gt_boxes)
    dense = 8 * 150 * priors.shape[0] * 4  # bytes of one float32 (B, M, N) tensor
    assert mode.largest < dense / 8, (mode.largest, dense)
    assert (a.matches[0] >= 0).sum() > 50
    check(a, *simota_reference(priors, scores, boxes, gt_labels, gt_boxes), gt_labels)


# --------------------------------------------------------------------------- native kernel
def _torch_iou_k(gt, img, boxes, ok, w, topk):
    """The PyTorch path of a block's IoUs and dynamic k (as ``dynamic_k_match`` runs it)."""

    def take(plane):
        return plane[:, :w].index_select(0, img)

    iou = _dynamic_k.pair_iou(*(take(p) for p in boxes.unbind(-1)), *(gt[:, i : i + 1] for i in range(4)))
    top = _dynamic_k._smallest(torch.where(take(ok), iou, -1.0), topk, largest=True).values.clamp(min=0)
    total = top[:, 0] if top.shape[1] else torch.zeros(gt.shape[0])
    for i in range(1, top.shape[1]):
        total = total + top[:, i]
    return iou, total.to(torch.int32).clamp(min=1)


@pytest.mark.cpu_only("the native kernel runs on CPU tensors only")
@pytest.mark.skipif(_dynamic_k._native is None, reason="native dynamic-k kernel not built")
@pytest.mark.parametrize("w,topk", [(37, 10), (5, 10), (37, 13), (0, 10), (37, 1)])
def test_native_iou_and_k_equal_the_pytorch_path_bit_for_bit(w, topk):
    """Random, degenerate (zero-area, inverted) and non-finite boxes; candidates and
    non-candidates; blocks narrower than the layout and narrower than topk."""
    g = torch.Generator().manual_seed(w * 100 + topk)
    b, width, r = 3, 37, 11
    low = torch.rand(b, width, 2, generator=g) * 50
    boxes = torch.cat([low, low + torch.rand(b, width, 2, generator=g) * 30 - 3], -1)  # some inverted
    boxes[0, :4, 2:] = boxes[0, :4, :2]  # zero area
    boxes[1, 5] = float("nan")
    boxes[2, 6, 0] = float("inf")
    ok = torch.rand(b, width, generator=g) < 0.7
    ok[1, 5] = ok[2, 6] = False  # a non-finite box is never a candidate
    low = torch.rand(r, 2, generator=g) * 50
    gt = torch.cat([low, low + 2 + torch.rand(r, 2, generator=g) * 30], -1)
    gt[0, 2:] = gt[0, :2]  # a zero-area ground truth
    img = torch.randint(0, b, (r,), generator=g)
    got = _dynamic_k.block_iou(gt, img, boxes, ok, w, topk)
    assert got[1] is not None
    want = _torch_iou_k(gt, img, boxes, ok, w, topk)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(got[1], want[1])


@pytest.mark.cpu_only("the native kernel runs on CPU tensors only")
@pytest.mark.skipif(_dynamic_k._native is None, reason="native dynamic-k kernel not built")
def test_native_kernel_gives_the_assignment_of_the_pytorch_path(monkeypatch):
    """SimOTA and DSL assign the same with and without the kernel, on any thread count."""
    scores, boxes, gt_labels, gt_boxes = scene(4, PRIORS, m=12)
    logits = scores.logit()
    with_kernel = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    dsl = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(_dynamic_k, "_native", None)
    without = simota_assign(PRIORS, scores, boxes, gt_labels, gt_boxes)
    for x, y, z in zip(with_kernel, without, one):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert all(torch.equal(x, y) for x, y in zip(dsl, dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)))
