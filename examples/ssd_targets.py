"""SSD training targets on a padded batch.

GluonCV's ``SSDTargetGenerator`` chain, batched over images whose ground truth is
padded to a common ``M`` with rows of -1:

    BBoxBatchIOU -> CompositeMatcher([BipartiteMatcher, MaximumMatcher])
    -> OHEMSampler -> MultiClassEncoder + NormalizedBoxCenterEncoder

then the usual SSD loss (softmax cross-entropy + smooth L1) on the targets, and a
check that decoding the box targets gives back the ground truth.

Run: ``python examples/ssd_targets.py``
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from detblocks.bbox import BBoxBatchIOU, BBoxCenterToCorner
from detblocks.coder import MultiClassEncoder, NormalizedBoxCenterDecoder, NormalizedBoxCenterEncoder
from detblocks.matcher import BipartiteMatcher, CompositeMatcher, MaximumMatcher
from detblocks.sampler import OHEMSampler

NUM_CLASSES = 3  # foreground classes; class 0 of the predictions is background
STDS = (0.1, 0.1, 0.2, 0.2)


def ssd_anchors(feature_sizes=(8, 4, 2), sizes=(0.2, 0.45, 0.7), ratios=(1.0, 2.0, 0.5)) -> torch.Tensor:
    """Default boxes in center form, normalised to the image: ``(N, 4)``."""
    boxes = []
    for fsize, size in zip(feature_sizes, sizes):
        for i, j in itertools.product(range(fsize), repeat=2):
            cx, cy = (j + 0.5) / fsize, (i + 0.5) / fsize
            for r in ratios:
                boxes.append((cx, cy, size * math.sqrt(r), size / math.sqrt(r)))
    return torch.tensor(boxes)


def padded_ground_truth() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images, 3 and 1 objects, padded to M = 3 with rows of -1 (GluonCV's loaders)."""
    pad = [-1.0, -1.0, -1.0, -1.0]
    boxes = torch.tensor(
        [
            [[0.10, 0.10, 0.40, 0.45], [0.50, 0.20, 0.90, 0.60], [0.30, 0.60, 0.55, 0.95]],
            [[0.20, 0.25, 0.80, 0.85], pad, pad],
        ]
    )
    ids = torch.tensor([[0, 2, 1], [1, -1, -1]])  # class ids in [0, NUM_CLASSES), -1 = padding
    return boxes, ids


def main() -> dict[str, object]:
    torch.manual_seed(0)
    anchors = BBoxCenterToCorner()(ssd_anchors())[None]  # (1, N, 4) corner, shared by the batch
    gt_boxes, gt_ids = padded_ground_truth()  # (B, M, 4), (B, M)
    batch, num_anchors = gt_boxes.shape[0], anchors.shape[1]
    # Predictions of a (here random) SSD head.
    cls_logits = torch.randn(batch, num_anchors, NUM_CLASSES + 1, requires_grad=True)
    box_preds = torch.randn(batch, num_anchors, 4, requires_grad=True)

    iou = BBoxBatchIOU()
    matcher = CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(0.5)])
    sampler = OHEMSampler(3, thresh=0.5)
    cls_encoder = MultiClassEncoder()
    box_encoder = NormalizedBoxCenterEncoder(stds=STDS)

    ious = iou(anchors, gt_boxes)  # (B, N, M); the anchors' batch of 1 broadcasts
    matches = matcher(ious)  # (B, N) int64: index into the M references, -1 = none
    samples = sampler(matches, cls_logits, ious)  # (B, N) int64: +1 pos / -1 neg / 0 ignored
    cls_targets = cls_encoder(samples, matches, gt_ids)  # (B, N) int64: id + 1, 0 bg, -1 ignored
    box_targets, box_masks = box_encoder(samples, matches, anchors, gt_boxes)  # (B, N, 4) each

    # The SSD loss on these targets.
    num_pos = (samples == 1).sum().clamp(min=1)
    cls_loss = F.cross_entropy(
        cls_logits.flatten(0, 1), cls_targets.flatten(), ignore_index=-1, reduction="sum"
    )
    box_loss = (F.smooth_l1_loss(box_preds, box_targets, reduction="none") * box_masks).sum()
    loss = (cls_loss + box_loss) / num_pos
    loss.backward()

    # What the targets guarantee.
    num_gt = (gt_ids >= 0).sum(1)  # (B,) real objects per image
    assert matches.dtype == samples.dtype == cls_targets.dtype == torch.int64
    assert bool((matches < num_gt[:, None]).all()), "a padded row was matched"
    for b in range(batch):  # every real object has at least one positive anchor (bipartite step)
        assert set(matches[b][samples[b] == 1].tolist()) == set(range(int(num_gt[b])))
    pos, neg = (samples == 1).sum(1), (samples == -1).sum(1)
    assert bool((neg <= 3 * pos).all())
    assert bool(((cls_targets > 0) == (samples == 1)).all())
    assert bool(((cls_targets == 0) == (samples == -1)).all())
    assert bool(((cls_targets == -1) == (samples == 0)).all())
    # Decoding the targets at positive anchors gives back the matched ground truth.
    decoded = NormalizedBoxCenterDecoder(stds=STDS, convert_anchor=True)(box_targets, anchors)
    positive = samples == 1
    expected = torch.gather(gt_boxes, 1, matches.clamp(min=0)[..., None].expand(-1, -1, 4))
    torch.testing.assert_close(decoded[positive], expected[positive], rtol=1e-5, atol=1e-5)

    result = {
        "anchors": num_anchors,
        "positives": pos.tolist(),
        "negatives": neg.tolist(),
        "ignored": (samples == 0).sum(1).tolist(),
        "loss": round(float(loss.detach()), 4),
        "grad_ok": cls_logits.grad is not None and box_preds.grad is not None,
    }
    print(f"{num_anchors} anchors, ground truth padded to M = {gt_boxes.shape[1]}")
    for b in range(batch):
        print(
            f"image {b}: {int(num_gt[b])} object(s) -> {int(pos[b])} positives, "
            f"{int(neg[b])} hard negatives, {result['ignored'][b]} ignored"
        )
    print(f"loss {result['loss']:.4f} (cross-entropy + smooth L1, per positive)")
    return result


if __name__ == "__main__":
    main()
