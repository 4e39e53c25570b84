"""The demo's SSD detector, assembled from detblocks parts.

:class:`SSD` is a torchvision backbone (random initialisation) run through
:class:`~detblocks.feature.FeatureExpander`, with one
:class:`~detblocks.predictor.ConvPredictor` pair (class scores, box offsets)
per feature map and GluonCV's default boxes (:func:`ssd_anchors`, from
:func:`detblocks.anchor.ssd_anchors`). :class:`SSDInference` is the whole
inference path that gets exported: image in, detections out, the tail being
:class:`detblocks.postprocess.SSDDetectionOutput`.

All box coordinates inside the model are normalised to ``[0, 1]`` of the
image side; :class:`SSDInference` returns pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from detblocks import anchor
from detblocks.feature import FeatureExpander
from detblocks.postprocess import SSDDetectionOutput
from detblocks.predictor import ConvPredictor

__all__ = ["BACKBONES", "Backbone", "SSD", "SSDInference", "ssd_anchors", "BOX_STDS"]

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
        if h != w:
            raise ValueError(f"feature map {k} must be square (one step for both axes), got {h} x {w}")
        # GluonCV's generator in units of the image side: step 1 / W_k, sizes as fractions.
        a = anchor.ssd_anchors(
            h,
            w,
            (1.0, 1.0),
            (sizes[k], sizes[k + 1]),
            ratios[k],
            1.0 / w,
            (offset, offset),
            dtype=torch.float64,
        )
        out.append(a[0])
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


class SSDInference(nn.Module):
    """The exported inference path: SSD, then :class:`~detblocks.postprocess.SSDDetectionOutput`.

    Scores are the softmax of the class logits and boxes are decoded against the default
    boxes (GluonCV's SSD inference: the best ``pre_nms`` (anchor, class) entries above
    ``score_thresh`` go through per-class greedy NMS at ``nms_thresh``, and the best
    ``max_detections`` survivors of each image are kept). Boxes are then scaled to pixels
    and clipped to the image.

    Args:
        model: the trained :class:`SSD`.
        score_thresh: class scores not above this are dropped.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        pre_nms: candidates per image entering NMS.
        max_detections: detections per image in the output.

    Forward:
        images (Tensor[B, 3, S, S]) float in ``[0, 1]`` -> ``(boxes (Tensor[B, D, 4])`` corner
        pixels, ``scores (Tensor[B, D])``, ``classes (Tensor[B, D])`` int64 in ``[0, C)``),
        ``D = max_detections``. Rows past an image's detections have class ``-1``, score
        ``0`` and box 0, sorted last.
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
        self.tail = SSDDetectionOutput(
            model.num_classes,
            stds=BOX_STDS,
            nms_thresh=nms_thresh,
            nms_topk=pre_nms,
            post_nms=max_detections,
            thresh=score_thresh,
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls_logits, deltas = self.model(images)
        ids, scores, boxes = self.tail(cls_logits, deltas, self.model.anchors.unsqueeze(0))  # -1 rows past
        size = float(self.model.image_size)
        found = ids[..., 0] >= 0  # (B, D)
        boxes = torch.where(found.unsqueeze(-1), (boxes * size).clamp(0.0, size), 0.0)
        scores = torch.where(found, scores[..., 0], 0.0)
        classes = torch.where(found, ids[..., 0].to(torch.int64), -1)
        return boxes, scores, classes
