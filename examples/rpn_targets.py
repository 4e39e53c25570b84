"""Faster R-CNN region-proposal-network (RPN) targets with the quota sampler.

The RPN rule: an anchor is positive when its IoU with some ground-truth box is
at least 0.7 or when it is the best anchor of a ground-truth box; negative when
its best IoU is below 0.3; 256 anchors per image are sampled, at most half of
them positive. In detblocks blocks:

    BBoxBatchIOU -> CompositeMatcher([BipartiteMatcher, MaximumMatcher(0.7)])
    -> QuotaSampler(256, pos_thresh=0.7, neg_thresh_high=0.3, pos_ratio=0.5)
    -> SigmoidClassEncoder (objectness) + NormalizedBoxCenterEncoder (offsets)

The sampler draws from torch's generator: pass ``generator=`` (or call
``torch.manual_seed``) for reproducible samples.

Run: ``python examples/rpn_targets.py``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detblocks.bbox import BBoxBatchIOU
from detblocks.coder import NormalizedBoxCenterEncoder, SigmoidClassEncoder
from detblocks.matcher import BipartiteMatcher, CompositeMatcher, MaximumMatcher
from detblocks.sampler import QuotaSampler

IMAGE_SIZE = 256  # images of the batch are padded to IMAGE_SIZE x IMAGE_SIZE pixels
STRIDE = 16
NUM_SAMPLE = 256


def rpn_anchors(image_size: int = IMAGE_SIZE, stride: int = STRIDE) -> torch.Tensor:
    """Corner anchors of 3 scales x 3 aspect ratios at every feature-map cell, ``(N, 4)`` pixels,
    without the anchors that cross the image border (GluonCV's ``allowed_border=0``)."""
    scales = torch.tensor([32.0, 64.0, 128.0])
    ratios = torch.tensor([0.5, 1.0, 2.0])
    w = (scales[:, None] / ratios.sqrt()[None]).flatten()  # (9,)
    h = (scales[:, None] * ratios.sqrt()[None]).flatten()
    centers = torch.arange(image_size // stride) * stride + stride / 2
    cy, cx = torch.meshgrid(centers, centers, indexing="ij")
    cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)  # (H*W, 1)
    anchors = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).reshape(-1, 4)
    inside = (anchors[:, :2] >= 0).all(1) & (anchors[:, 2:] <= image_size).all(1)
    return anchors[inside]


def main() -> dict[str, object]:
    torch.manual_seed(0)  # for the random predictions below
    anchors = rpn_anchors()[None]  # (1, N, 4), shared by the batch
    pad = [-1.0, -1.0, -1.0, -1.0]
    gt_boxes = torch.tensor(  # (B, M, 4) pixels, padded with rows of -1
        [
            [[20.0, 30.0, 110.0, 140.0], [130.0, 120.0, 250.0, 200.0], [60.0, 180.0, 100.0, 240.0]],
            [[40.0, 40.0, 200.0, 220.0], pad, pad],
            [pad, pad, pad],  # an image without objects
        ]
    )
    batch, num_anchors = gt_boxes.shape[0], anchors.shape[1]
    num_gt = (gt_boxes >= 0).all(-1).sum(1)  # (B,)

    iou = BBoxBatchIOU()
    matcher = CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(0.7)])
    sampler = QuotaSampler(num_sample=NUM_SAMPLE, pos_thresh=0.7, neg_thresh_high=0.3, pos_ratio=0.5)
    objectness_encoder = SigmoidClassEncoder()
    box_encoder = NormalizedBoxCenterEncoder(stds=(1.0, 1.0, 1.0, 1.0))

    ious = iou(anchors, gt_boxes)  # (B, N, M)
    matches = matcher(ious)  # (B, N) int64, -1 = none; the best anchor of every object is matched
    generator = torch.Generator().manual_seed(0)
    samples = sampler(matches, ious, generator=generator)  # (B, N) int64: +1 / -1 / 0
    objectness, objectness_mask = objectness_encoder(samples)  # (B, N): 1 / 0 / -1, mask 0 = ignored
    box_targets, box_masks = box_encoder(samples, matches, anchors, gt_boxes)  # (B, N, 4) each

    # The RPN loss for some (here random) predictions.
    scores = torch.randn(batch, num_anchors)
    offsets = torch.randn(batch, num_anchors, 4)
    obj_loss = F.binary_cross_entropy_with_logits(
        scores, objectness.clamp(min=0), weight=objectness_mask, reduction="sum"
    ) / objectness_mask.sum().clamp(min=1)
    box_loss = (F.smooth_l1_loss(offsets, box_targets, reduction="none") * box_masks).sum() / batch

    pos, neg = (samples == 1).sum(1), (samples == -1).sum(1)
    best = ious.amax(-1).clamp(min=0)  # (B, N) best IoU of every anchor
    # The quotas: at most 128 positives, negatives fill up to 256 (fill_negative=True).
    assert bool((pos <= NUM_SAMPLE // 2).all()) and bool((pos + neg <= NUM_SAMPLE).all())
    assert bool((pos + neg == NUM_SAMPLE).all()), "enough negatives here to fill every sample"
    # Positives are matched or overlap >= 0.7; negatives overlap < 0.3 and are never matched.
    assert bool(((matches >= 0) | (best >= 0.7))[samples == 1].all())
    assert bool((best < 0.3)[samples == -1].all()) and bool((matches < 0)[samples == -1].all())
    # Padded rows attract nothing: the image without objects has no positive at all.
    assert int(pos[2]) == 0 and bool((matches[2] == -1).all())
    # Every object keeps its best anchor (few positive candidates here, all kept).
    for b in range(batch):
        assert set(matches[b][samples[b] == 1].tolist()) == set(range(int(num_gt[b])))
    # Same generator seed, same samples.
    again = sampler(matches, ious, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)

    print(f"{num_anchors} anchors inside the {IMAGE_SIZE}x{IMAGE_SIZE} image")
    for b in range(batch):
        print(f"image {b}: {int(num_gt[b])} object(s) -> {int(pos[b])} positives, {int(neg[b])} negatives")
    print(f"objectness loss {float(obj_loss):.4f}, box loss {float(box_loss):.4f}")
    return {"anchors": num_anchors, "positives": pos.tolist(), "negatives": neg.tolist()}


if __name__ == "__main__":
    main()
