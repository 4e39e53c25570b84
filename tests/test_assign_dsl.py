"""DynamicSoftLabelAssigner (mmdet 3.3.0, RTMDet) against a plain loop-based reference.

The reference runs the rule per image and ground truth with mmdet's dense soft-label cost
(``F.binary_cross_entropy_with_logits`` over every class, no per-candidate sum) and
Python sorts for the selection; scenes and the selection reference come from
``test_assign_simota.py``. The golden cases hold mmdet's own results.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE
from detblocks.assign import DynamicSoftLabelAssigner, _dynamic_k, dsl_assign
from test_assign_simota import (
    LargestTensor,
    check,
    crowded_scene,
    dynamic_k_reference,
    grid_priors,
    mm_iou,
    scene,
)

PRIORS = grid_priors(64, 96, offset=0.0)


def dsl_reference(priors, logits, boxes, gt_labels, gt_boxes, radius=3.0, topk=13, iou_w=3.0):
    """mmdet's DynamicSoftLabelAssigner per image and ground truth, in float32."""
    b, n, c = logits.shape
    logits, boxes, gt_boxes, priors = logits.float(), boxes.float(), gt_boxes.float(), priors.float()
    matches = torch.full((b, n), -1)
    quality = torch.zeros(b, n)
    for i in range(b):
        rows = [r for r in range(gt_labels.shape[1]) if gt_labels[i, r] >= 0]
        if not rows:
            continue
        ok = torch.isfinite(boxes[i]).all(-1) & torch.isfinite(logits[i]).all(-1)
        x, y = priors[:, 0], priors[:, 1]
        inside = torch.stack(
            [(x - gt_boxes[i, r, 0] > 0) & (y - gt_boxes[i, r, 1] > 0) & (gt_boxes[i, r, 2] - x > 0)
             & (gt_boxes[i, r, 3] - y > 0) for r in rows]
        )  # fmt: skip
        cand = (inside.any(0) & ok).nonzero().squeeze(1)
        if cand.numel() == 0:
            continue
        cost = torch.empty(len(rows), len(cand))
        iou = torch.empty(len(rows), len(cand))
        for gi, r in enumerate(rows):
            g = gt_boxes[i, r]
            iou[gi] = mm_iou(boxes[i, cand], g)
            centre = (g[:2] + g[2:]) / 2.0
            dist = (priors[cand, :2] - centre).pow(2).sum(-1).sqrt() / priors[cand, 2]
            soft = F.one_hot(gt_labels[i, r], c).float()[None] * iou[gi][:, None]  # (K, C)
            x_c = logits[i, cand]
            scale = (soft - x_c.sigmoid()).abs().pow(2.0)
            cls = (F.binary_cross_entropy_with_logits(x_c, soft, reduction="none") * scale).sum(-1)
            cost[gi] = cls + (-torch.log(iou[gi] + 1e-7) * iou_w) + torch.pow(10, dist - radius)
        for j, gi in enumerate(dynamic_k_reference(cost, iou, topk)):
            if gi >= 0:
                matches[i, cand[j]] = rows[gi]
                quality[i, cand[j]] = iou[gi, j]
    return matches, quality


def _scene(seed: int, **kw):
    return scene(seed, PRIORS, logits=True, **kw)


@pytest.mark.parametrize("seed", range(6))
def test_random_scenes_equal_the_loop_reference(seed):
    logits, boxes, gt_labels, gt_boxes = _scene(seed)
    a = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    check(a, *dsl_reference(PRIORS, logits, boxes, gt_labels, gt_boxes), gt_labels)
    assert (a.matches >= 0).any()


def test_other_arguments_equal_the_loop_reference():
    logits, boxes, gt_labels, gt_boxes = _scene(11)
    a = DynamicSoftLabelAssigner(soft_center_radius=2.0, topk=5, iou_weight=1.0)(
        PRIORS, logits, boxes, gt_labels, gt_boxes
    )
    check(a, *dsl_reference(PRIORS, logits, boxes, gt_labels, gt_boxes, 2.0, 5, 1.0), gt_labels)


def test_small_chunks_give_the_same_result(monkeypatch):
    logits, boxes, gt_labels, gt_boxes = _scene(3)
    whole = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    monkeypatch.setattr(_dynamic_k, "CHUNK_ELEMENTS", 50)
    part = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    assert all(torch.equal(x, y) for x, y in zip(whole, part))


def test_duplicate_ground_truths_tie_to_the_lower_row():
    logits, boxes, gt_labels, gt_boxes = _scene(4, b=1)
    gt_labels[0, :2] = 2
    gt_boxes[0, 1] = gt_boxes[0, 0] = torch.tensor([10.0, 12, 40, 44])
    a = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    assert (a.matches == 0).any() and not (a.matches == 1).any()
    check(a, *dsl_reference(PRIORS, logits, boxes, gt_labels, gt_boxes), gt_labels)


def test_equal_costs_go_to_the_lower_prior():
    """Priors at equal distance from the object's centre with identical predictions: the
    lowest prior indices are picked."""
    n = PRIORS.shape[0]
    logits = torch.full((1, n, 3), -6.0)
    boxes = PRIORS[None, :, :2].repeat(1, 1, 2) + torch.tensor([-30.0, -30, 30, 30])
    gt_boxes = torch.tensor([[[8.0, 8, 40, 40]]])  # centre (24, 24): stride-8 points at (16|32, 16|32)
    gt_labels = torch.tensor([[1]])
    x, y = PRIORS[:, 0], PRIORS[:, 1]
    same = ((PRIORS[:, 2] == 8) & ((x == 16) | (x == 32)) & ((y == 16) | (y == 32))).nonzero()[:, 0]
    boxes[0, same] = torch.tensor([9.0, 9, 39, 39])
    logits[0, same, 1] = 2.0
    a = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes, topk=3)
    k = int(torch.tensor(900 / 1024).repeat(3).sum())  # IoU of the four: 30 * 30 / 32 * 32
    assert k == 2 and torch.equal((a.matches[0] == 0).nonzero()[:, 0], same[:k])
    check(a, *dsl_reference(PRIORS, logits, boxes, gt_labels, gt_boxes, topk=3), gt_labels)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_predictions_are_never_positive(value):
    logits, boxes, gt_labels, gt_boxes = _scene(5)
    clean = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    hit = clean.matches[0].nonzero()[:6, 0]
    boxes[0, hit[:3], 2] = value
    logits[0, hit[3:], 1] = value
    a = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    assert (a.matches[0, hit] == -1).all()
    assert torch.isfinite(a.quality).all()
    check(a, *dsl_reference(PRIORS, logits, boxes, gt_labels, gt_boxes), gt_labels)


def test_no_objects_give_all_background():
    logits, boxes, gt_labels, gt_boxes = _scene(6)
    gt_labels[:] = -1
    gt_boxes[:] = -1
    a = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    assert (a.matches == -1).all() and (a.labels == -1).all() and (a.quality == 0).all()
    a = dsl_assign(PRIORS, logits, boxes, gt_labels[:, :0], gt_boxes[:, :0])
    assert (a.matches == -1).all() and a.quality.shape == (3, PRIORS.shape[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_compute_in_float32(dtype):
    logits, boxes, gt_labels, gt_boxes = _scene(7)
    args = [t.to(dtype) for t in (PRIORS, logits, boxes)] + [gt_labels, gt_boxes.to(dtype)]
    a = dsl_assign(*args)
    b = dsl_assign(*[t.float() if t.is_floating_point() else t for t in args])
    assert a.quality.dtype == dtype
    assert torch.equal(a.matches, b.matches)
    torch.testing.assert_close(a.quality, b.quality.to(dtype))


def test_autocast_gives_the_float32_result():
    logits, boxes, gt_labels, gt_boxes = _scene(8)
    want = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


def test_compiled_equals_eager():
    torch._dynamo.reset()
    fn = torch.compile(dsl_assign, fullgraph=True, dynamic=True, backend="aot_eager")
    for seed in (0, 9):
        logits, boxes, gt_labels, gt_boxes = _scene(seed)
        gt_labels[0, :2] = 3
        gt_boxes[0, 1] = gt_boxes[0, 0] = torch.tensor([10.0, 12, 40, 44])
        want = dsl_assign(PRIORS, logits, boxes, gt_labels, gt_boxes)
        got = fn(PRIORS, logits, boxes, gt_labels, gt_boxes)
        assert torch.equal(got.matches, want.matches) and torch.equal(got.labels, want.labels)
        torch.testing.assert_close(got.quality, want.quality)
    torch._dynamo.reset()


def test_crowded_image_memory_grows_with_its_candidates(monkeypatch):
    """One image with 150 objects among images with one: no tensor the eager path creates
    is an eighth of one float32 (B, M, N) tensor (blocks of 16K pairs); the result equals
    the reference."""
    priors, logits, boxes, gt_labels, gt_boxes = crowded_scene(logits=True)
    monkeypatch.setattr(_dynamic_k, "CHUNK_ELEMENTS", 1 << 14)  # blocks of 16K pairs
    with LargestTensor() as mode:
        a = dsl_assign(priors, logits, boxes, gt_labels, gt_boxes)
    dense = 8 * 150 * priors.shape[0] * 4
    assert mode.largest < dense / 8, (mode.largest, dense)
    assert (a.matches[0] >= 0).sum() > 50
    check(a, *dsl_reference(priors, logits, boxes, gt_labels, gt_boxes), gt_labels)
