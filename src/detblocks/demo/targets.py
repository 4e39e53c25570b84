"""SSD training targets and loss, from detblocks parts only.

The chain is GluonCV's ``SSDTargetGenerator``: IoU of every default box with
every ground-truth box (:class:`~detblocks.bbox.BBoxBatchIOU`), bipartite
then maximum-IoU matching (:class:`~detblocks.matcher.CompositeMatcher`),
hard negative mining on the current class scores
(:class:`~detblocks.sampler.OHEMSampler`), then class targets
(:class:`~detblocks.coder.MultiClassEncoder`) and box offsets
(:class:`~detblocks.coder.NormalizedBoxCenterEncoder`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detblocks.bbox import BBoxBatchIOU, BBoxCenterToCorner
from detblocks.coder import MultiClassEncoder, NormalizedBoxCenterEncoder
from detblocks.matcher import BipartiteMatcher, CompositeMatcher, MaximumMatcher
from detblocks.sampler import OHEMSampler

from .model import BOX_STDS

__all__ = ["SSDTargets", "ssd_loss"]

#: Class target of anchors that take no part in the loss (MultiClassEncoder's ``ignore_label``).
IGNORE_LABEL = -1


class SSDTargets(nn.Module):
    """Class and box targets for every default box.

    Args:
        iou_thresh: IoU from which a default box is matched to its best ground truth
            (after every ground truth got its best default box).
        neg_thresh: default boxes whose best IoU is at or above this are never negatives.
        negative_mining_ratio: hard negatives kept per positive.
        stds: scale of the box targets.

    Forward:
        anchors (Tensor[N, 4]) center form, cls_logits (Tensor[B, N, C + 1]) (for mining,
        no gradient needed), gt_boxes (Tensor[B, M, 4]) corner, padded rows -1,
        gt_labels (Tensor[B, M]) int64, padded -1 ->
        ``(cls_targets (Tensor[B, N]) int64`` with 0 background and -1 ignored,
        ``box_targets (Tensor[B, N, 4])``, ``box_masks (Tensor[B, N, 4]))``.
    """

    def __init__(
        self,
        iou_thresh: float = 0.5,
        neg_thresh: float = 0.5,
        negative_mining_ratio: float = 3.0,
        stds: tuple[float, float, float, float] = BOX_STDS,
    ) -> None:
        super().__init__()
        self.to_corner = BBoxCenterToCorner()
        self.iou = BBoxBatchIOU()
        self.matcher = CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(iou_thresh)])
        self.sampler = OHEMSampler(negative_mining_ratio, thresh=neg_thresh)
        self.cls_encoder = MultiClassEncoder(ignore_label=IGNORE_LABEL)
        self.box_encoder = NormalizedBoxCenterEncoder(stds=stds)

    @torch.no_grad()
    def forward(
        self, anchors: Tensor, cls_logits: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        b, n = cls_logits.shape[:2]
        corners = self.to_corner(anchors).unsqueeze(0).expand(b, n, 4)  # (B, N, 4)
        ious = self.iou(corners, gt_boxes)  # (B, N, M)
        matches = self.matcher(ious)  # (B, N)
        samples = self.sampler(matches, cls_logits.detach(), ious)  # (B, N) +1 / -1 / 0
        cls_targets = self.cls_encoder(samples, matches, gt_labels)  # (B, N)
        box_targets, box_masks = self.box_encoder(samples, matches, corners, gt_boxes)
        return cls_targets, box_targets, box_masks


def ssd_loss(
    cls_logits: Tensor, box_deltas: Tensor, cls_targets: Tensor, box_targets: Tensor, box_masks: Tensor
) -> tuple[Tensor, Tensor]:
    """SSD's multibox loss: cross-entropy on sampled anchors, smooth-L1 on positives.

    Both terms are sums divided by the number of positive anchors in the batch
    (at least 1).

    Args:
        cls_logits (Tensor[B, N, C + 1]), box_deltas (Tensor[B, N, 4]): network outputs.
        cls_targets (Tensor[B, N]) int64, -1 ignored; box_targets, box_masks (Tensor[B, N, 4]).

    Returns:
        ``(cls_loss, box_loss)`` scalars.
    """
    num_pos = (cls_targets > 0).sum().clamp(min=1).to(cls_logits.dtype)
    cls_loss = F.cross_entropy(
        cls_logits.reshape(-1, cls_logits.shape[-1]),
        cls_targets.reshape(-1),
        ignore_index=IGNORE_LABEL,
        reduction="sum",
    )
    box_loss = (F.smooth_l1_loss(box_deltas, box_targets, reduction="none", beta=1.0) * box_masks).sum()
    return cls_loss / num_pos, box_loss / num_pos
