"""The demo's SSD detector, assembled from detblocks parts.

:class:`SSD` is a torchvision backbone (random initialisation) run through
:class:`~detblocks.feature.FeatureExpander`, with one
:class:`~detblocks.predictor.ConvPredictor` pair (class scores, box offsets)
per feature map and GluonCV-style default boxes (:func:`ssd_anchors`).
:class:`SSDInference` is the whole inference path that gets exported:
image in, decoded and non-maximum-suppressed detections out.

All box coordinates inside the model are normalised to ``[0, 1]`` of the
image side; :class:`SSDInference` returns pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from detblocks.coder import MultiPerClassDecoder, NormalizedBoxCenterDecoder
from detblocks.feature import FeatureExpander
from detblocks.predictor import ConvPredictor

__all__ = ["BACKBONES", "Backbone", "SSD", "SSDInference", "batched_nms", "ssd_anchors", "BOX_STDS"]

#: Scale of the box regression targets (GluonCV's SSD value), shared by encoder and decoder.
BOX_STDS: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

# Running-statistics momentum of every BatchNorm. torchvision's MobileNetV3 uses 0.01 (made for
# long ImageNet schedules); over a few hundred iterations from scratch its running statistics
# lag far behind the weights and evaluation-mode outputs are garbage.
BN_MOMENTUM = 0.1

# ImageNet statistics: the usual input normalisation of torchvision backbones.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A torchvision network and where the SSD taps it.

    Attributes:
        build: returns the network (random initialisation).
        outputs: internal layers taken as feature maps (strides 8 and 16).
        num_filters: channels of the maps :class:`FeatureExpander` appends (strides 32, 64, ...).
    """

    build: Callable[[], nn.Module]
    outputs: tuple[str, ...]
    num_filters: tuple[int, ...]


#: Backbones the demo knows; the first one is the default.
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v3_small": Backbone(
        build=lambda: torchvision.models.mobilenet_v3_small(weights=None),
        outputs=("features.3", "features.8"),
        num_filters=(128, 128),
    ),
    "resnet18": Backbone(
        build=lambda: torchvision.models.resnet18(weights=None),
        outputs=("layer2", "layer3"),
        num_filters=(256, 128),
    ),
}


def ssd_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    sizes: Sequence[float],
    ratios: Sequence[Sequence[float]],
    offset: float = 0.5,
) -> Tensor:
    """GluonCV's SSD default boxes, normalised to the image.

    Feature map ``k`` of size ``(H_k, W_k)`` gets, at every cell centre
    ``((j + offset) / W_k, (i + offset) / H_k)``, a square of side
    ``sizes[k]``, a square of side ``sqrt(sizes[k] * sizes[k + 1])``, and for
    every extra ratio ``r`` in ``ratios[k][1:]`` a box of
    ``(sizes[k] * sqrt(r), sizes[k] / sqrt(r))``. Order: map, row, column,
    box (the layout of a ``(B, A, H, W)`` head flattened after ``permute(0, 2, 3, 1)``).

    Args:
        feature_sizes: ``(H_k, W_k)`` of each feature map.
        sizes: ``len(feature_sizes) + 1`` box sides as fractions of the image.
        ratios: per map, the aspect ratios (width / height), first one 1.

    Returns:
        Tensor[N, 4]: anchors in center form ``(cx, cy, w, h)``.
    """
    if len(sizes) != len(feature_sizes) + 1:
        raise ValueError(
            f"sizes needs {len(feature_sizes) + 1} values (one per map plus one), got {len(sizes)}"
        )
    if len(ratios) != len(feature_sizes):
        raise ValueError(f"ratios needs one list per feature map ({len(feature_sizes)}), got {len(ratios)}")
    out = []
    for k, (h, w) in enumerate(feature_sizes):
        s0, s1 = sizes[k], sizes[k + 1]
        wh = [(s0, s0), (math.sqrt(s0 * s1), math.sqrt(s0 * s1))]
        wh += [(s0 * math.sqrt(r), s0 / math.sqrt(r)) for r in ratios[k][1:]]
        cy = (torch.arange(h, dtype=torch.float64) + offset) / h
        cx = (torch.arange(w, dtype=torch.float64) + offset) / w
        cyy, cxx = torch.meshgrid(cy, cx, indexing="ij")  # (H, W)
        centres = torch.stack([cxx, cyy], dim=-1)[:, :, None, :].expand(h, w, len(wh), 2)
        sides = torch.tensor(wh, dtype=torch.float64).expand(h, w, len(wh), 2)
        out.append(torch.cat([centres, sides], dim=-1).reshape(-1, 4))
    return torch.cat(out).to(torch.float32)


def _anchors_per_cell(ratios: Sequence[float]) -> int:
    return len(ratios) + 1


class SSD(nn.Module):
    """Single-shot detector: backbone -> FeatureExpander -> ConvPredictor heads.

    Args:
        num_classes: foreground classes ``C`` (class 0 of the heads is background).
        image_size: side ``S`` of the square input (fixes the default boxes).
        backbone: a key of :data:`BACKBONES`.
        sizes: default box sides per map (fractions of ``S``), one more than there are maps.
        ratios: aspect ratios of the default boxes, the same on every map.

    Forward:
        images (Tensor[B, 3, S, S]) float in ``[0, 1]`` ->
        ``(cls_logits (Tensor[B, N, C + 1]), box_deltas (Tensor[B, N, 4]))``.
        ``anchors`` (``Tensor[N, 4]``, center form, normalised) is a buffer.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        backbone: str = "mobilenet_v3_small",
        sizes: Sequence[float] = (0.06, 0.13, 0.26, 0.45, 0.65, 0.9),
        ratios: Sequence[float] = (1.0, 2.0, 0.5),
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        spec = BACKBONES[backbone]
        self.num_classes = num_classes
        self.image_size = image_size
        self.features = FeatureExpander(
            network=spec.build(), outputs=list(spec.outputs), num_filters=list(spec.num_filters)
        )
        for m in self.features.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = BN_MOMENTUM
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        maps = self.features.output_shapes(image_size, image_size)  # [(1, C_k, H_k, W_k)], on meta
        n_maps = len(maps)
        if len(sizes) < n_maps + 1:
            raise ValueError(f"sizes needs {n_maps + 1} values for {n_maps} feature maps, got {len(sizes)}")
        a = _anchors_per_cell(ratios)
        self.cls_heads = nn.ModuleList(ConvPredictor(a * (num_classes + 1), in_channels=m[1]) for m in maps)
        self.box_heads = nn.ModuleList(ConvPredictor(a * 4, in_channels=m[1]) for m in maps)
        feature_sizes = [(m[2], m[3]) for m in maps]
        self.feature_sizes = feature_sizes
        anchors = ssd_anchors(feature_sizes, list(sizes)[: n_maps + 1], [list(ratios)] * n_maps)
        self.register_buffer("anchors", anchors, persistent=False)

    @property
    def num_anchors(self) -> int:
        """Number ``N`` of default boxes."""
        return self.anchors.shape[0]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (Tensor[B, 3, S, S]) in ``[0, 1]`` -> (cls_logits, box_deltas), see the class docs."""
        x = (images - self.mean) / self.std
        maps = self.features(x)
        b = images.shape[0]
        cls = [
            h(m).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes + 1)
            for h, m in zip(self.cls_heads, maps)
        ]
        box = [h(m).permute(0, 2, 3, 1).reshape(b, -1, 4) for h, m in zip(self.box_heads, maps)]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within groups: torchvision's ``batched_nms`` by its coordinate offset.

    Each group's boxes are shifted by ``group * (largest coordinate + 1)`` so that boxes
    of different groups never overlap, and one :func:`torchvision.ops.nms` runs on all.
    This is the path :func:`torchvision.ops.batched_nms` itself takes for large inputs;
    taking it always keeps the graph free of the size test that chooses between its
    two paths, which a dynamic batch axis cannot trace.

    Args:
        boxes (Tensor[K, 4]) corner, non-negative; scores (Tensor[K]); groups (Tensor[K]) int64.

    Returns:
        Tensor[L] int64: indices of the kept boxes, by decreasing score.
    """
    offsets = groups.to(boxes.dtype) * (boxes.max() + 1.0)
    return torchvision.ops.nms(boxes + offsets.unsqueeze(1), scores, iou_threshold)


class SSDInference(nn.Module):
    """The exported inference path: SSD, decoders, per-class batched NMS, top detections.

    Scores are the softmax of the class logits; boxes come from
    :class:`~detblocks.coder.NormalizedBoxCenterDecoder` and class ids and
    scores from :class:`~detblocks.coder.MultiPerClassDecoder`. The best
    ``pre_nms`` (anchor, class) pairs of each image go through
    torchvision's batched NMS (:func:`batched_nms`, groups = image x class), and the
    best ``max_detections`` survivors of each image are returned.

    Args:
        model: the trained :class:`SSD`.
        score_thresh: class scores not above this are dropped.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        pre_nms: candidates per image entering NMS.
        max_detections: detections per image in the output.

    Forward:
        images (Tensor[B, 3, S, S]) float in ``[0, 1]`` -> ``(boxes (Tensor[B, D, 4])`` corner
        pixels, ``scores (Tensor[B, D])``, ``classes (Tensor[B, D])`` int64 in ``[0, C)``).
        Rows past an image's detections have class ``-1`` and score ``0``, sorted last.
    """

    def __init__(
        self,
        model: SSD,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        pre_nms: int = 400,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        self.model = model
        self.box_decoder = NormalizedBoxCenterDecoder(stds=BOX_STDS)
        self.cls_decoder = MultiPerClassDecoder(num_class=model.num_classes + 1, thresh=score_thresh)
        self.nms_thresh = nms_thresh
        self.pre_nms = pre_nms
        self.max_detections = max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls_logits, deltas = self.model(images)
        b = images.shape[0]
        size = float(self.model.image_size)
        boxes = self.box_decoder(deltas, self.model.anchors.unsqueeze(0))  # (B, N, 4) corner, [0, 1]
        boxes = (boxes * size).clamp(0.0, size)
        cls_ids, scores = self.cls_decoder(cls_logits.softmax(dim=-1))  # (B, N, C) each
        n, c = scores.shape[1], scores.shape[2]
        k = min(self.pre_nms, n * c)
        top_scores, top = scores.reshape(b, n * c).topk(k, dim=1)  # (B, k)
        top_cls = cls_ids.reshape(b, n * c).gather(1, top)  # (B, k), -1 below the threshold
        top_boxes = boxes.gather(1, (top // c).unsqueeze(-1).expand(b, k, 4))  # (B, k, 4)
        image_idx = torch.arange(b, device=images.device).unsqueeze(1)
        groups = (image_idx * c + top_cls.clamp(min=0)).reshape(-1)  # one NMS group per image and class
        keep = batched_nms(top_boxes.reshape(-1, 4), top_scores.reshape(-1), groups, self.nms_thresh)
        kept = torch.zeros(b * k, dtype=torch.bool, device=images.device)
        kept[keep] = True
        kept = kept.reshape(b, k) & (top_cls >= 0)
        ranked = torch.where(kept, top_scores, torch.full_like(top_scores, -1.0))
        d = min(self.max_detections, k)
        out_scores, order = ranked.topk(d, dim=1)  # (B, D)
        valid = out_scores > 0
        out_boxes = top_boxes.gather(1, order.unsqueeze(-1).expand(b, d, 4))
        out_cls = torch.where(valid, top_cls.gather(1, order), torch.full_like(order, -1))
        out_scores = out_scores.clamp(min=0.0)
        out_boxes = out_boxes * valid.unsqueeze(-1)
        return out_boxes, out_scores, out_cls
