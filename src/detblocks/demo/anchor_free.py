"""The demo's second recipe: a YOLOv8-style anchor-free detector, assembled from detblocks parts.

:class:`AnchorFreeDetector` is a torchvision backbone (random initialisation) tapped at
strides 8 and 16 (as the SSD taps it), a small neck
(:class:`~detblocks.feature.FPNFeatureExpander`'s top-down pyramid with its stride-32
level P6 made by a stride-2 conv, then one bottom-up pass as in a PAN) and a decoupled
head on each of the three levels:
class logits, and box side distances as a distribution over ``reg_max`` bins (DFL,
"distribution focal loss"). Every grid cell centre is one anchor point
(:func:`detblocks.anchor.anchor_points`).

:class:`AnchorFreeTargets` assigns targets with one of :mod:`detblocks.assign`'s rules
(:data:`ASSIGNERS`), and :func:`anchor_free_loss` is YOLOv8's loss: binary
cross-entropy on :meth:`~detblocks.assign.Assignment.score_targets`, ``1 - CIoU``
(:func:`detblocks.bbox.aligned_box_iou`) and DFL on the assigned points, each weighted
by the point's target score. :class:`AnchorFreeInference` is the exported inference
path: image in, decoded and non-maximum-suppressed detections out
(:func:`detblocks.postprocess.box_nms`).

Boxes are corner pixels of the square network input throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from detblocks import assign
from detblocks.anchor import anchor_points
from detblocks.bbox import aligned_box_iou
from detblocks.feature import FPNFeatureExpander
from detblocks.postprocess import box_nms

__all__ = [
    "ASSIGNERS",
    "AF_BACKBONES",
    "STRIDES",
    "AnchorFreeDetector",
    "AnchorFreeInference",
    "AnchorFreeTargets",
    "anchor_free_loss",
]

#: Strides of the three detection levels.
STRIDES: tuple[int, int, int] = (8, 16, 32)

#: The ``--assigner`` choices and the :mod:`detblocks.assign` rule each names.
ASSIGNERS: dict[str, str] = {
    "tal": "TaskAlignedAssigner",
    "simota": "SimOTAAssigner",
    "dsl": "DynamicSoftLabelAssigner",
    "atss": "ATSSAssigner",
}

# Loss weights of YOLOv8 (ultralytics' defaults box=7.5, cls=0.5, dfl=1.5).
BOX_GAIN, CLS_GAIN, DFL_GAIN = 7.5, 0.5, 1.5

# BatchNorm running-statistics momentum (see model.py: torchvision's MobileNetV3 default of
# 0.01 lags far behind the weights over a few hundred iterations from scratch).
BN_MOMENTUM = 0.1

# ImageNet statistics: the usual input normalisation of torchvision backbones.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

# Side of ATSS's square anchor box at each point, in strides (the anchor-free ATSS of
# YOLOv6's warm-up assigns with boxes of 5 strides; FCOS-ATSS uses 8, too large for 128 px).
ATSS_ANCHOR_SCALE = 5.0


@dataclass(frozen=True)
class AFBackbone:
    """A torchvision network and its layers at strides 8 and 16.

    The stride-32 level is the neck's P6 (a stride-2 conv on the stride-16 level) rather
    than the backbone's last stage: on 128 px inputs that stage (MobileNetV3's 5x5
    depthwise convs on 576 channels) cost a fifth of the training step for less accuracy
    than the conv (measured on the demo data: mAP@[.5:.95] 0.51 against 0.53).
    """

    build: Callable[[], nn.Module]
    outputs: tuple[str, str]


#: Backbones of the anchor-free recipe (the SSD's, tapped where the SSD taps them), the
#: first one the default.
AF_BACKBONES: dict[str, AFBackbone] = {
    "mobilenet_v3_small": AFBackbone(
        build=lambda: torchvision.models.mobilenet_v3_small(weights=None),
        outputs=("features.3", "features.8"),
    ),
    "resnet18": AFBackbone(
        build=lambda: torchvision.models.resnet18(weights=None), outputs=("layer2", "layer3")
    ),
}


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    """Conv, BatchNorm, SiLU: YOLOv8's basic block."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
    )


class AnchorFreeDetector(nn.Module):
    """YOLOv8-style detector: backbone -> FPN (+ P6) and bottom-up neck -> decoupled heads.

    Args:
        num_classes: foreground classes ``C``.
        image_size: side ``S`` of the square input (fixes the anchor points; a multiple of 32).
        backbone: a key of :data:`AF_BACKBONES`.
        width: channels of the neck and of both head branches.
        reg_max: bins of the side-distance distribution (distances up to ``reg_max - 1``
            strides).

    Forward:
        images (Tensor[B, 3, S, S]) float in ``[0, 1]`` ->
        ``(cls_logits (Tensor[B, N, C]), box_logits (Tensor[B, N, 4 * reg_max]))``, the points
        of level 8, 16, 32 in turn, each row-major. ``points`` (``Tensor[N, 2]`` cell centres,
        pixels) and ``point_strides`` (``Tensor[N]``) are buffers.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        backbone: str = "mobilenet_v3_small",
        width: int = 32,
        reg_max: int = 16,
    ) -> None:
        super().__init__()
        if backbone not in AF_BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(AF_BACKBONES)}, got {backbone!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if image_size < STRIDES[-1] or image_size % STRIDES[-1]:
            raise ValueError(f"image_size must be a positive multiple of {STRIDES[-1]}, got {image_size}")
        spec = AF_BACKBONES[backbone]
        self.num_classes, self.image_size, self.reg_max = num_classes, image_size, reg_max
        self.features = FPNFeatureExpander(
            network=spec.build(),
            outputs=list(spec.outputs),
            num_filters=[width] * 2,
            use_p6=True,
            norm_layer=nn.BatchNorm2d,
        )
        if tuple(self.features.strides) != STRIDES:
            raise ValueError(f"backbone {backbone!r} taps strides {self.features.strides}, need {STRIDES}")
        # Bottom-up pass (PAN): each coarser level adds a stride-2 conv of the finer one.
        self.down = nn.ModuleList(_conv(width, width, 3, 2) for _ in STRIDES[1:])
        self.cls_branch = nn.ModuleList(
            nn.Sequential(_conv(width, width), _conv(width, width), nn.Conv2d(width, num_classes, 1))
            for _ in STRIDES
        )
        self.box_branch = nn.ModuleList(
            nn.Sequential(_conv(width, width), _conv(width, width), nn.Conv2d(width, 4 * reg_max, 1))
            for _ in STRIDES
        )
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = BN_MOMENTUM
        for cls, box, s in zip(self.cls_branch, self.box_branch, STRIDES):
            # YOLOv8's prior: about 5 objects per image over C classes and (S / s)^2 cells.
            nn.init.constant_(cls[-1].bias, torch.log(torch.tensor(5 / num_classes / (image_size / s) ** 2)))
            nn.init.constant_(box[-1].bias, 1.0)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.feature_sizes = [(image_size // s, image_size // s) for s in STRIDES]
        points, point_strides = anchor_points(self.feature_sizes, STRIDES)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("point_strides", point_strides, persistent=False)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    @property
    def num_points(self) -> int:
        """Number ``N`` of anchor points."""
        return self.points.shape[0]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (Tensor[B, 3, S, S]) in ``[0, 1]`` -> (cls_logits, box_logits), see the class docs."""
        x = (images - self.mean) / self.std
        maps = self.features(x)  # strides 8, 16, 32
        for k, down in enumerate(self.down):
            maps[k + 1] = maps[k + 1] + down(maps[k])
        b = images.shape[0]
        cls = [
            h(m).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes) for h, m in zip(self.cls_branch, maps)
        ]
        box = [
            h(m).permute(0, 2, 3, 1).reshape(b, -1, 4 * self.reg_max) for h, m in zip(self.box_branch, maps)
        ]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)

    def decode(self, box_logits: Tensor) -> Tensor:
        """box_logits (Tensor[B, N, 4 * reg_max]) -> boxes (Tensor[B, N, 4]) corner pixels.

        Each side's distance is the expectation of its bin distribution, in strides.
        """
        b, n = box_logits.shape[:2]
        dist = box_logits.reshape(b, n, 4, self.reg_max).softmax(dim=-1) @ self.bins  # (B, N, 4)
        dist = dist * self.point_strides.unsqueeze(-1)
        return torch.cat([self.points - dist[..., :2], self.points + dist[..., 2:]], dim=-1)


def _pick_boxes(gt_boxes: Tensor, matches: Tensor) -> Tensor:
    """gt_boxes (Tensor[B, M, 4]), matches (Tensor[B, N]) -> Tensor[B, N, 4]: the assigned box
    (the first row where nothing is assigned; callers mask those)."""
    idx = matches.clamp(min=0).unsqueeze(-1).expand(*matches.shape, 4)
    return gt_boxes.gather(1, idx)


class AnchorFreeTargets(nn.Module):
    """Target assignment of the anchor-free recipe, by one of :mod:`detblocks.assign`'s rules.

    ``"tal"``: :class:`~detblocks.assign.TaskAlignedAssigner` (YOLOv8's ``topk=10``,
    ``alpha=0.5``, ``beta=6``); ``"simota"``: :class:`~detblocks.assign.SimOTAAssigner`
    (YOLOX); ``"dsl"``: :class:`~detblocks.assign.DynamicSoftLabelAssigner` (RTMDet);
    ``"atss"``: :class:`~detblocks.assign.ATSSAssigner` on square boxes of
    ``ATSS_ANCHOR_SCALE`` strides at every point. The first three rules' quality (TAL's
    normalised alignment metric, the IoU of the predicted box) is the class target; ATSS's
    quality is the IoU of the *anchor box*, which says nothing about the prediction, so for
    ATSS the class target is the IoU of the predicted box with the assigned ground truth
    (the IoU-aware target of VarifocalNet and of ATSS with quality focal loss).

    Args:
        kind: a key of :data:`ASSIGNERS`.
        num_classes: foreground classes ``C``.

    Forward:
        model (:class:`AnchorFreeDetector`), cls_logits (Tensor[B, N, C]), pred_boxes
        (Tensor[B, N, 4]) corner pixels (no gradient needed), gt_boxes (Tensor[B, M, 4]) corner
        pixels, padded rows -1, gt_labels (Tensor[B, M]) int64, padded -1 ->
        :class:`~detblocks.assign.Assignment`.
    """

    def __init__(self, kind: str, num_classes: int) -> None:
        super().__init__()
        if kind not in ASSIGNERS:
            raise ValueError(f"assigner must be one of {sorted(ASSIGNERS)}, got {kind!r}")
        self.kind = kind
        self.num_classes = num_classes
        if kind == "tal":
            self.rule = assign.TaskAlignedAssigner(
                topk=10, num_classes=num_classes, alpha=0.5, beta=6.0, stride=STRIDES
            )
        elif kind == "simota":
            self.rule = assign.SimOTAAssigner()
        elif kind == "dsl":
            self.rule = assign.DynamicSoftLabelAssigner()
        else:
            self.rule = assign.ATSSAssigner(topk=9)

    @torch.no_grad()
    def forward(
        self,
        model: AnchorFreeDetector,
        cls_logits: Tensor,
        pred_boxes: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
    ) -> assign.Assignment:
        cls_logits, pred_boxes = cls_logits.detach().float(), pred_boxes.detach().float()
        points, strides = model.points, model.point_strides
        if self.kind == "tal":
            return self.rule(cls_logits.sigmoid(), pred_boxes, points, gt_labels, gt_boxes)
        priors = torch.cat([points, strides[:, None], strides[:, None]], dim=-1)  # (N, 4)
        if self.kind == "simota":
            return self.rule(priors, cls_logits.sigmoid(), pred_boxes, gt_labels, gt_boxes)
        if self.kind == "dsl":
            return self.rule(priors, cls_logits, pred_boxes, gt_labels, gt_boxes)
        half = (ATSS_ANCHOR_SCALE / 2) * strides[:, None]
        anchors = torch.cat([points - half, points + half], dim=-1)  # (N, 4)
        per_level = [h * w for h, w in model.feature_sizes]
        a = self.rule(anchors, per_level, gt_labels, gt_boxes)
        iou = aligned_box_iou(pred_boxes, _pick_boxes(gt_boxes, a.matches)).clamp(min=0)
        return a._replace(quality=torch.where(a.matches >= 0, iou, torch.zeros_like(iou)))


def anchor_free_loss(
    model: AnchorFreeDetector,
    cls_logits: Tensor,
    box_logits: Tensor,
    pred_boxes: Tensor,
    assignment: assign.Assignment,
    gt_boxes: Tensor,
) -> tuple[Tensor, Tensor]:
    """YOLOv8's loss on one batch.

    Class loss: binary cross-entropy of ``cls_logits`` against
    ``assignment.score_targets(C)``. Box loss: ``1 - CIoU`` of the predicted and assigned
    boxes plus DFL (cross-entropy of the two bins around each target side distance,
    weighted by their linear interpolation), on assigned points only, each weighted by the
    point's target score. Every term is summed and divided by the sum of the target scores
    (at least 1); YOLOv8's gains apply.

    Args:
        model: the detector (its points, strides and ``reg_max``).
        cls_logits (Tensor[B, N, C]), box_logits (Tensor[B, N, 4 * reg_max]): network outputs.
        pred_boxes (Tensor[B, N, 4]): ``model.decode(box_logits)``, with gradient.
        assignment: the targets (:class:`AnchorFreeTargets`).
        gt_boxes (Tensor[B, M, 4]): corner pixels, padded rows -1.

    Returns:
        ``(cls_loss, box_loss)`` scalars; ``box_loss`` includes DFL.
    """
    b, n, c = cls_logits.shape
    target_scores = assignment.score_targets(c).to(cls_logits.dtype)  # (B, N, C)
    norm = target_scores.sum().clamp(min=1.0)
    cls_loss = F.binary_cross_entropy_with_logits(cls_logits, target_scores, reduction="sum") / norm

    fg = assignment.matches >= 0  # (B, N)
    weight = target_scores.sum(-1) * fg  # (B, N)
    target = _pick_boxes(gt_boxes, assignment.matches)  # (B, N, 4)
    # Background points get their own (detached) prediction as target: finite, zero weight.
    target = torch.where(fg.unsqueeze(-1), target, pred_boxes.detach())
    ciou = aligned_box_iou(pred_boxes, target, kind="ciou")  # (B, N)
    iou_loss = ((1.0 - ciou) * weight).sum() / norm

    r = model.reg_max
    stride = model.point_strides.unsqueeze(-1)  # (N, 1)
    ltrb = torch.cat([model.points - target[..., :2], target[..., 2:] - model.points], dim=-1) / stride
    ltrb = ltrb.clamp(0.0, r - 1 - 0.01)  # (B, N, 4)
    left = ltrb.floor().long()
    w_left = (left + 1).to(ltrb.dtype) - ltrb
    logp = box_logits.reshape(b, n, 4, r).log_softmax(dim=-1)  # (B, N, 4, R)
    nll_left = -logp.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    nll_right = -logp.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    dfl = (nll_left * w_left + nll_right * (1.0 - w_left)).mean(-1)  # (B, N)
    dfl_loss = (dfl * weight).sum() / norm
    return CLS_GAIN * cls_loss, BOX_GAIN * iou_loss + DFL_GAIN * dfl_loss


class AnchorFreeInference(nn.Module):
    """The exported inference path: detector, box decoding, per-class NMS, top detections.

    Scores are the sigmoid of the class logits. The best ``pre_nms`` (point, class) pairs
    of each image become rows ``[class, score, box]`` for
    :func:`detblocks.postprocess.box_nms` (per-class suppression at ``nms_thresh``, scores
    not above ``score_thresh`` dropped); the first ``max_detections`` survivors are returned.

    Args:
        model: the trained :class:`AnchorFreeDetector`.
        score_thresh, nms_thresh, pre_nms, max_detections: see above.

    Forward:
        images (Tensor[B, 3, S, S]) float in ``[0, 1]`` -> ``(boxes (Tensor[B, D, 4])`` corner
        pixels, ``scores (Tensor[B, D])``, ``classes (Tensor[B, D])`` int64 in ``[0, C)``).
        Rows past an image's detections have class ``-1``, score ``0`` and a zero box, sorted last.
    """

    def __init__(
        self,
        model: AnchorFreeDetector,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.6,
        pre_nms: int = 400,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        self.model = model
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms = pre_nms
        self.max_detections = max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls_logits, box_logits = self.model(images)
        b = images.shape[0]
        size = float(self.model.image_size)
        boxes = self.model.decode(box_logits).clamp(0.0, size)  # (B, N, 4)
        scores = cls_logits.sigmoid()  # (B, N, C)
        n, c = scores.shape[1], scores.shape[2]
        k = min(self.pre_nms, n * c)
        top_scores, top = scores.reshape(b, n * c).topk(k, dim=1)  # (B, k), by decreasing score
        top_boxes = boxes.gather(1, (top // c).unsqueeze(-1).expand(b, k, 4))  # (B, k, 4)
        rows = torch.cat(
            [(top % c).unsqueeze(-1).to(boxes.dtype), top_scores.unsqueeze(-1), top_boxes], dim=-1
        )
        kept = box_nms(
            rows, overlap_thresh=self.nms_thresh, valid_thresh=self.score_thresh, coord_start=2,
            score_index=1, id_index=0,
        )  # fmt: skip
        d = min(self.max_detections, k)
        kept = kept[:, :d]  # (B, D, 6): survivors first, by decreasing score, then rows of -1
        valid = kept[..., 0] >= 0
        out_cls = torch.where(valid, kept[..., 0], torch.full_like(kept[..., 0], -1.0)).long()
        out_scores = torch.where(valid, kept[..., 1], torch.zeros_like(kept[..., 1]))
        out_boxes = kept[..., 2:] * valid.unsqueeze(-1)
        return out_boxes, out_scores, out_cls
