"""The export contract of every public component: eager, torch.compile, torch.export, ONNX.

One list, :data:`COMPONENTS`, names every public component with a factory, realistic
inputs at any sizes and the dynamic axes of those inputs. Every entry is checked for

* **eager**: it runs at every size, twice with the same result (under the same seed);
* **torch.compile**: ``fullgraph=True`` (no graph break), ``dynamic=True``; the graph
  traced at one size serves another without recompiling; equal to eager at every size;
* **torch.export**: batch size, box counts and image sizes declared dynamic with
  :class:`torch.export.Dim`; the exported program, run at sizes other than the traced
  ones, equals eager there;
* **ONNX**: ``torch.onnx.export(..., dynamo=True)`` with the same dynamic axes, run in
  onnxruntime at two other sizes, equal to eager within float tolerance. Inference-side
  components must support it; where a component cannot (it says why), the test asserts
  the exporter's error instead of skipping.

The README's support table is rendered from the same list (:func:`render_table`), and a
test keeps it equal to the README. A new component is covered by adding it to the list;
:func:`test_every_public_component_is_listed` fails until it is.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim
from torch.utils import _pytree as pytree

from detblocks import anchor, assign, bbox, coder, feature, matcher, postprocess, predictor, sampler
from detblocks.conventions import PAD

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_START = "<!-- contract-table:start -->"
TABLE_END = "<!-- contract-table:end -->"

#: Backend of the compile check. Inductor generates and builds C++ for every component,
#: several times the run time of the whole contract; aot_eager runs the same Dynamo
#: capture (where graph breaks and data-dependent Python show up) and AOTAutograd
#: functionalisation, and executes the captured ATen graph.
COMPILE_BACKEND = "aot_eager"

NUM_CLASSES = 5  # background + 4 foreground classes


# ------------------------------------------------------------------ sizes and inputs
@dataclass(frozen=True)
class Sizes:
    """Every size an input can take: batch B, anchors N, references M, image H x W (and
    its feature maps of stride 8, h x w)."""

    B: int
    N: int
    M: int
    H: int
    W: int

    @property
    def h(self) -> int:
        return self.H // 8

    @property
    def w(self) -> int:
        return self.W // 8


#: The sizes programs are traced and exported at ...
TRACE = Sizes(B=2, N=40, M=6, H=160, W=192)
#: ... and the other sizes they must also handle (ONNX runs at both).
OTHER = (Sizes(B=3, N=57, M=9, H=224, W=160), Sizes(B=1, N=23, M=4, H=192, W=256))

#: Range of each dynamic axis name. Images are larger than 128 pixels, so that the
#: coarsest map of the feature blocks (stride 128) is not 1 x 1, a size every tracer
#: specialises.
DIM_RANGES = {
    "B": (1, 1024),
    "N": (2, 1 << 20),
    "M": (2, 4096),
    "H": (129, 8192),
    "W": (129, 8192),
    "h": (2, 1024),
    "w": (2, 1024),
}


def make_dims() -> dict[str, Dim]:
    """One :class:`torch.export.Dim` per axis name, shared by every input using it."""
    return {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in DIM_RANGES.items()}


def _corner_boxes(g: torch.Generator, shape: tuple[int, ...], s: Sizes, spill: float = 0.0) -> Tensor:
    """Corner boxes (``xmin < xmax``, ``ymin < ymax``) of 5% to 45% of an ``H x W`` image's
    sides, mostly inside it (``spill`` > 0: larger, many reaching out of it)."""
    scale = torch.tensor([s.W, s.H], dtype=torch.float32)
    low = (torch.rand(*shape, 2, generator=g) * (1 + 2 * spill) - spill) * 0.85 * scale
    size = (torch.rand(*shape, 2, generator=g) * 0.4 + 0.05 + spill) * scale
    return torch.cat([low, low + size], dim=-1)


@dataclass(frozen=True)
class Scene:
    """A padded training batch and what the pipeline makes of it, computed eagerly."""

    anchors: Tensor  # (B, N, 4) corner
    gt_boxes: Tensor  # (B, M, 4) corner, padded rows all -1
    gt_ids: Tensor  # (B, M) int64, -1 on padded rows
    ious: Tensor  # (B, N, M)
    matches: Tensor  # (B, N) int64
    samples: Tensor  # (B, N) int64, 1 / -1 / 0
    logits: Tensor  # (B, N, C)


@functools.cache
def scene(s: Sizes) -> Scene:
    """Ground truth padded with -1 rows (the last image of a batch of 3 or more has none at
    all); half the anchors are jittered copies of the ground truth, so there are matches."""
    g = torch.Generator().manual_seed(s.B * 1000003 + s.N * 1009 + s.M)
    gt_boxes = _corner_boxes(g, (s.B, s.M), s)
    gt_ids = torch.randint(0, NUM_CLASSES - 1, (s.B, s.M), generator=g)
    real = torch.tensor([max(0, s.M - 1 - 2 * b) for b in range(s.B)])  # real rows per image
    if s.B >= 3:
        real[-1] = 0
    padded = torch.arange(s.M) >= real[:, None]  # (B, M)
    gt_boxes[padded] = float(PAD)
    gt_ids[padded] = PAD
    anchors = _corner_boxes(g, (s.B, s.N), s)
    src = torch.randint(0, s.M, (s.B, s.N), generator=g)
    copies = gt_boxes.gather(1, src[..., None].expand(-1, -1, 4))
    copies = copies + torch.randn(s.B, s.N, 4, generator=g) * 0.05 * min(s.H, s.W)
    use_copy = (torch.rand(s.B, s.N, generator=g) < 0.5) & ~padded.gather(1, src)
    anchors = torch.where(use_copy[..., None], copies, anchors)
    anchors = torch.cat(
        [anchors[..., :2].minimum(anchors[..., 2:]), anchors[..., :2].maximum(anchors[..., 2:])], -1
    )
    ious = bbox.box_iou(anchors, gt_boxes)
    matches = matcher.CompositeMatcher(
        [matcher.BipartiteMatcher(share_max=False), matcher.MaximumMatcher(0.5)]
    )(ious)
    logits = torch.randn(s.B, s.N, NUM_CLASSES, generator=g)
    samples = sampler.ohem_sample(matches, logits, ious, ratio=3.0, min_samples=4)
    return Scene(anchors, gt_boxes, gt_ids, ious, matches, samples, logits)


def _generator(s: Sizes, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(salt * 7919 + s.B * 1000003 + s.N * 1009 + s.H)


def boxes_in(s: Sizes) -> tuple[Tensor]:
    return (scene(s).anchors,)


def center_boxes_in(s: Sizes) -> tuple[Tensor]:
    return (bbox.corner_to_center(scene(s).anchors),)


def iou_in(s: Sizes) -> tuple[Tensor, Tensor]:
    return scene(s).anchors, scene(s).gt_boxes


def clip_in(s: Sizes) -> tuple[Tensor, Tensor]:
    """Boxes reaching out of the image on every side, and the image batch (only its size counts)."""
    return _corner_boxes(_generator(s, 1), (s.B, s.N), s, spill=0.3), torch.zeros(s.B, 3, s.H, s.W)


def box_encoder_in(s: Sizes) -> tuple[Tensor, ...]:
    sc = scene(s)
    return sc.samples, sc.matches, sc.anchors, sc.gt_boxes


def per_class_encoder_in(s: Sizes) -> tuple[Tensor, ...]:
    sc = scene(s)
    return sc.samples, sc.matches, sc.anchors, sc.gt_ids, sc.gt_boxes


def class_encoder_in(s: Sizes) -> tuple[Tensor, ...]:
    sc = scene(s)
    return sc.samples, sc.matches, sc.gt_ids


def samples_in(s: Sizes) -> tuple[Tensor]:
    return (scene(s).samples,)


def box_decoder_in(s: Sizes) -> tuple[Tensor, Tensor]:
    """Predicted offsets (B, N, 4) and one set of corner anchors (1, N, 4) shared by the batch."""
    offsets = torch.randn(s.B, s.N, 4, generator=_generator(s, 2)) * 0.5
    offsets[:, :2, 2:] = 40.0  # width/height deltas beyond the clip
    return offsets, scene(s).anchors[:1]


def class_scores_in(s: Sizes) -> tuple[Tensor]:
    return (torch.softmax(scene(s).logits * 2, dim=-1),)


def ious_in(s: Sizes) -> tuple[Tensor]:
    return (scene(s).ious,)


def matches_in(s: Sizes) -> tuple[Tensor]:
    return (scene(s).matches,)


def ohem_in(s: Sizes) -> tuple[Tensor, ...]:
    sc = scene(s)
    return sc.matches, sc.logits, sc.ious


def quota_in(s: Sizes) -> tuple[Tensor, Tensor]:
    sc = scene(s)
    return sc.matches, sc.ious


def quota_op_in(s: Sizes) -> tuple[Tensor, ...]:
    """The operator's inputs, with the random priorities drawn outside it."""
    sc = scene(s)
    return sc.matches, sc.ious, torch.rand(s.B, s.N, generator=_generator(s, 3))


def feature_map_in(s: Sizes) -> tuple[Tensor]:
    return (torch.randn(s.B, 8, s.h, s.w, generator=_generator(s, 4)),)


def pooled_in(s: Sizes) -> tuple[Tensor]:
    """Pooled regions, 7 x 7 as RoI heads pool them."""
    return (torch.randn(s.B, 16, 7, 7, generator=_generator(s, 5)),)


def image_in(s: Sizes) -> tuple[Tensor]:
    return (torch.randn(s.B, 3, s.H, s.W, generator=_generator(s, 6)),)


# ------------------------------------------------------------------ factories
class QuotaOperator(nn.Module):
    """The operator ``detblocks::quota_sample`` as :class:`~detblocks.sampler.QuotaSamplerProp`
    binds it, in a module."""

    def __init__(self, prop: sampler.QuotaSamplerProp) -> None:
        super().__init__()
        self.op = prop.create_operator()

    def forward(self, matches: Tensor, ious: Tensor, keys: Tensor) -> Tensor:
        return self.op(matches, ious, keys)


def quota_operator() -> nn.Module:
    prop = sampler.QuotaSamplerProp(num_sample=16, pos_thresh=0.5, neg_thresh_high=0.3, pos_ratio=0.25)
    return QuotaOperator(prop)


# ------------------------------------------------------------------ inputs of the IoU family
class IouFunction(nn.Module):
    """A function of the IoU family with its keyword arguments, as a module (the contract
    runs modules)."""

    def __init__(self, fn: Callable[..., Tensor], **kwargs: object) -> None:
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.fn(a, b, **self.kwargs)


def aligned_in(s: Sizes) -> tuple[Tensor, Tensor]:
    """Each anchor and the ground truth it matches (padding rows, -1s, where it matches none
    or a padding row: zero-area pairs), the pairs a box loss compares."""
    sc = scene(s)
    index = sc.matches.clamp(min=0)[..., None].expand(-1, -1, 4)
    return sc.anchors, torch.where(sc.matches[..., None] >= 0, sc.gt_boxes.gather(1, index), float(PAD))


def center_iou_in(s: Sizes) -> tuple[Tensor, Tensor]:
    return tuple(bbox.corner_to_center(t) for t in iou_in(s))  # type: ignore[return-value]


# ------------------------------------------------------------------ inputs of anchor and postprocess
def nms_rows_in(s: Sizes) -> tuple[Tensor]:
    """box_nms rows ``[id, score, xmin, ymin, xmax, ymax]``: the scene's boxes (half of them
    jittered copies of one another, so they overlap), 3 ids, some scores below 0.1."""
    g = _generator(s, 7)
    ids = torch.randint(0, 3, (s.B, s.N, 1), generator=g).float()
    return (torch.cat([ids, torch.rand(s.B, s.N, 1, generator=g), scene(s).anchors], dim=-1),)


def proposal_in(s: Sizes) -> tuple[Tensor, ...]:
    """Corner anchors shared by the batch, objectness, offsets (some widths beyond the clip,
    so some boxes leave the image and some fall below min_size), the images."""
    g = _generator(s, 8)
    offsets = torch.randn(s.B, s.N, 4, generator=g) * 0.5
    offsets[:, :2, 2:] = 40.0
    score = torch.rand(s.B, s.N, 1, generator=g)
    return scene(s).anchors[:1], score, offsets, torch.zeros(s.B, 3, s.H, s.W)


def ssd_output_in(s: Sizes) -> tuple[Tensor, ...]:
    """SSD logits (background favoured, as a trained detector), offsets and center anchors."""
    g = _generator(s, 9)
    logits = torch.randn(s.B, s.N, NUM_CLASSES, generator=g) * 2
    logits[..., 0] += 2.0
    offsets = torch.randn(s.B, s.N, 4, generator=g) * 0.5
    return logits, offsets, bbox.corner_to_center(scene(s).anchors[:1])


def ssd_anchor_generator() -> nn.Module:
    return anchor.SSDAnchorGenerator((160, 192), sizes=(30, 60), ratios=(1, 2, 0.5), step=8, clip=True)


def rpn_anchor_generator() -> nn.Module:
    return anchor.RPNAnchorGenerator(stride=8, base_size=8, ratios=(0.5, 1, 2), scales=(4, 8))


# ------------------------------------------------------------------ inputs of the optimal matching
class LinearSumAssignment(nn.Module):
    """:func:`~detblocks.matcher.linear_sum_assignment` (the operator
    ``detblocks::linear_sum_assignment``) as a module."""

    def forward(self, cost: Tensor, valid: Tensor) -> Tensor:
        return matcher.linear_sum_assignment(cost, valid)


def lsa_in(s: Sizes) -> tuple[Tensor, Tensor]:
    """A cost (1 - IoU) and the valid columns (real ground truth; none in the last image of
    a batch of 3 or more)."""
    sc = scene(s)
    return 1 - sc.ious, sc.gt_ids >= 0


def hungarian_in(s: Sizes) -> tuple[Tensor, ...]:
    """DETR-style predictions (normalised center boxes, class logits) and padded ground truth
    (normalised center boxes, -1 labels on padding rows)."""
    sc = scene(s)
    scale = torch.tensor([s.W, s.H, s.W, s.H], dtype=torch.float32)
    pred = bbox.corner_to_center(sc.anchors / scale)
    gt = torch.where(sc.gt_ids[..., None] >= 0, bbox.corner_to_center(sc.gt_boxes / scale), float(PAD))
    return pred, sc.logits, gt, sc.gt_ids


# ------------------------------------------------------------------ inputs of the assigners
def atss_anchors() -> tuple[Tensor, list[int]]:
    """ATSS's anchors for a 256 x 256 image: one square of side 4 strides per location on
    levels of stride 16, 32 and 64 (336 anchors), and the anchors per level. The level sizes
    are static per model, so N is too."""
    parts, levels = [], []
    for stride in (16, 32, 64):
        side = 256 // stride
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        cx, cy = (xs.flatten() + 0.5) * stride, (ys.flatten() + 0.5) * stride
        parts.append(torch.stack([cx - 2 * stride, cy - 2 * stride, cx + 2 * stride, cy + 2 * stride], -1))
        levels.append(side * side)
    return torch.cat(parts).float(), levels


def atss_in(s: Sizes) -> tuple[object, ...]:
    sc = scene(s)
    anchors, levels = atss_anchors()
    return anchors, levels, sc.gt_ids, sc.gt_boxes


def max_iou_in(s: Sizes) -> tuple[Tensor, ...]:
    """Per-image boxes (an R-CNN stage's proposals), half of them jittered ground truth."""
    sc = scene(s)
    return sc.anchors, sc.gt_ids, sc.gt_boxes


def tal_in(s: Sizes) -> tuple[Tensor, ...]:
    """TAL: class probabilities, predicted boxes (half of them jittered ground truth),
    anchor points shared by the batch (the centres of image 0's boxes, so many fall inside
    ground truth), padded ground truth."""
    sc = scene(s)
    points = (sc.anchors[0, :, :2] + sc.anchors[0, :, 2:]) / 2
    return torch.sigmoid(sc.logits), sc.anchors, points, sc.gt_ids, sc.gt_boxes


def dynamic_k_in(s: Sizes) -> tuple[Tensor, ...]:
    """SimOTA / DSL: priors ``(x, y, 16, 16)`` at the centres of image 0's boxes (many fall
    inside ground truth), class probabilities, predicted boxes (half of them jittered
    ground truth), padded ground truth."""
    sc = scene(s)
    points = (sc.anchors[0, :, :2] + sc.anchors[0, :, 2:]) / 2
    priors = torch.cat([points, torch.full_like(points, 16.0)], -1)
    return priors, torch.sigmoid(sc.logits), sc.anchors, sc.gt_ids, sc.gt_boxes


def dsl_in(s: Sizes) -> tuple[Tensor, ...]:
    """As :func:`dynamic_k_in`, with class logits."""
    priors, _, boxes, gt_ids, gt_boxes = dynamic_k_in(s)
    return priors, scene(s).logits, boxes, gt_ids, gt_boxes


def warmed_up(module: nn.Module, *example: Tensor) -> nn.Module:
    """A lazy module after its first call (its input size inferred)."""
    with torch.no_grad():
        module(*example)
    return module


def conv_predictor() -> nn.Module:
    return warmed_up(predictor.ConvPredictor(12), torch.zeros(1, 8, 5, 5))


def fc_predictor() -> nn.Module:
    return warmed_up(predictor.FCPredictor(7, activation="tanh"), torch.zeros(1, 16, 7, 7))


def feature_extractor() -> nn.Module:
    return feature.FeatureExtractor("resnet18_v1", ["stage3_activation1", "stage4_activation1"]).eval()


def feature_expander() -> nn.Module:
    return feature.FeatureExpander(
        "resnet18_v1",
        ["stage3_activation1", "stage4_activation1"],
        num_filters=[64, 32],
        min_depth=16,
        global_pool=True,
    ).eval()


def fpn_feature_expander() -> nn.Module:
    outputs = ["stage2_activation1", "stage3_activation1", "stage4_activation1"]
    return feature.FPNFeatureExpander("resnet18_v1", outputs, num_filters=[32, 32, 32], use_p6=True).eval()


# ------------------------------------------------------------------ the list
@dataclass(frozen=True)
class NoOnnx:
    """Why a component has no ONNX export, and the exporter error that says so."""

    reason: str
    error: type[BaseException]
    match: str


@dataclass(frozen=True)
class Component:
    """One public component under the contract.

    ``inputs(sizes)`` builds realistic inputs; ``dims`` gives, per input, the axis names
    (keys of :data:`DIM_RANGES`) of its dynamic axes. ``onnx`` is ``True`` or the
    :class:`NoOnnx` reason. ``seeded`` components draw random numbers: every call is
    made under the same seed. ``tol`` is the ``(rtol, atol)`` of floating outputs.
    """

    name: str
    module: str
    factory: Callable[[], nn.Module]
    inputs: Callable[[Sizes], tuple[Tensor, ...]]
    dims: tuple[dict[int, str], ...]
    inference: bool
    onnx: bool | NoOnnx = True
    seeded: bool = False
    tol: tuple[float, float] = (1e-5, 1e-5)
    #: False where an input has a fixed axis of size 2 (TAL's anchor points (N, 2)): with
    #: duck sizing, ``torch.compile`` would give the traced batch of 2 that axis's symbol.
    duck_shape: bool = True

    def __str__(self) -> str:
        return self.name


BOXES = {0: "B", 1: "N"}
REFS = {0: "B", 1: "M"}
BNM = {0: "B", 1: "N", 2: "M"}
IMAGE = {0: "B", 2: "H", 3: "W"}
MAP = {0: "B", 2: "h", 3: "w"}

CUSTOM_OP = NoOnnx(
    "the custom operator `detblocks::quota_sample` has no ONNX translation",
    torch.onnx.errors.OnnxExporterError,
    r"detblocks[.:]+quota_sample",
)
FLOAT_BITS = NoOnnx(
    "the hardness ranking reads float bit patterns as integers (`Tensor.view(dtype)`), "
    "which ONNX cannot express",
    torch.onnx.errors.OnnxExporterError,
    r"aten\.view.*dtype",
)

#: The anchors per level of ATSS: a list of ints, static per model (no dynamic axis).
LEVELS = [None, None, None]
ATSS_NO_ONNX = NoOnnx(
    "the per-level top-k keys read float bit patterns as integers (`Tensor.view(dtype)`), "
    "which ONNX cannot express",
    torch.onnx.errors.OnnxExporterError,
    r"aten\.view.*dtype",
)
#: SimOTA and DSL select by int64 keys made of float32 cost bits and an index.
DYNAMIC_K_NO_ONNX = NoOnnx(
    "the dynamic-k selection keys read float32 cost bit patterns as integers (`Tensor.view(dtype)`), "
    "which ONNX cannot express",
    torch.onnx.errors.OnnxExporterError,
    r"aten\.view.*dtype",
)

COMPONENTS: list[Component] = [
    # bbox: inference side
    Component("BBoxCornerToCenter", "bbox", bbox.BBoxCornerToCenter, boxes_in, (BOXES,), True),
    Component(
        "BBoxCornerToCenter(split=True)",
        "bbox",
        functools.partial(bbox.BBoxCornerToCenter, split=True),
        boxes_in,
        (BOXES,),
        True,
    ),
    Component("BBoxCenterToCorner", "bbox", bbox.BBoxCenterToCorner, center_boxes_in, (BOXES,), True),
    Component(
        "BBoxSplit(axis=-1, squeeze_axis=True)",
        "bbox",
        functools.partial(bbox.BBoxSplit, axis=-1, squeeze_axis=True),
        boxes_in,
        (BOXES,),
        True,
    ),
    Component("BBoxArea", "bbox", bbox.BBoxArea, boxes_in, (BOXES,), True),
    Component("BBoxBatchIOU", "bbox", bbox.BBoxBatchIOU, iou_in, (BOXES, REFS), True),
    Component("BBoxClipToImage", "bbox", bbox.BBoxClipToImage, clip_in, (BOXES, IMAGE), True),
    # coder: encoders (training side)
    Component(
        "NormalizedBoxCenterEncoder",
        "coder",
        coder.NormalizedBoxCenterEncoder,
        box_encoder_in,
        (BOXES, BOXES, BOXES, REFS),
        False,
        tol=(1e-5, 1e-4),
    ),
    Component(
        "NormalizedPerClassBoxCenterEncoder(max_pos=32)",
        "coder",
        functools.partial(coder.NormalizedPerClassBoxCenterEncoder, NUM_CLASSES - 1, max_pos=32),
        per_class_encoder_in,
        (BOXES, BOXES, BOXES, REFS, REFS),
        False,
        tol=(1e-5, 1e-4),
    ),
    Component(
        "MultiClassEncoder", "coder", coder.MultiClassEncoder, class_encoder_in, (BOXES, BOXES, REFS), False
    ),
    Component("SigmoidClassEncoder", "coder", coder.SigmoidClassEncoder, samples_in, (BOXES,), False),
    # coder: decoders (inference side)
    Component(
        "NormalizedBoxCenterDecoder(convert_anchor=True, clip=4.14)",
        "coder",
        functools.partial(coder.NormalizedBoxCenterDecoder, convert_anchor=True, clip=math.log(1000 / 16)),
        box_decoder_in,
        (BOXES, {1: "N"}),
        True,
        tol=(1e-5, 1e-3),
    ),
    Component(
        "MultiClassDecoder(thresh=0.2)",
        "coder",
        functools.partial(coder.MultiClassDecoder, thresh=0.2),
        class_scores_in,
        (BOXES,),
        True,
    ),
    Component(
        "MultiPerClassDecoder(thresh=0.2)",
        "coder",
        functools.partial(coder.MultiPerClassDecoder, NUM_CLASSES, thresh=0.2),
        class_scores_in,
        (BOXES,),
        True,
    ),
    # matcher (training side)
    Component(
        "MaximumMatcher(0.5)",
        "matcher",
        functools.partial(matcher.MaximumMatcher, 0.5),
        ious_in,
        (BNM,),
        False,
    ),
    Component("BipartiteMatcher", "matcher", matcher.BipartiteMatcher, ious_in, (BNM,), False),
    Component(
        "CompositeMatcher([BipartiteMatcher, MaximumMatcher(0.5)])",
        "matcher",
        lambda: matcher.CompositeMatcher(
            [matcher.BipartiteMatcher(share_max=False), matcher.MaximumMatcher(0.5)]
        ),
        ious_in,
        (BNM,),
        False,
    ),
    # sampler (training side)
    Component("NaiveSampler", "sampler", sampler.NaiveSampler, matches_in, (BOXES,), False),
    Component(
        "OHEMSampler(3, min_samples=4)",
        "sampler",
        functools.partial(sampler.OHEMSampler, 3, min_samples=4),
        ohem_in,
        (BOXES, BOXES, BNM),
        False,
        onnx=FLOAT_BITS,
    ),
    Component(
        "QuotaSampler(16, 0.5, 0.3)",
        "sampler",
        functools.partial(sampler.QuotaSampler, 16, 0.5, 0.3),
        quota_in,
        (BOXES, BNM),
        False,
        onnx=CUSTOM_OP,
        seeded=True,
    ),
    Component(
        "QuotaSamplerOp",
        "sampler",
        quota_operator,
        quota_op_in,
        (BOXES, BNM, BOXES),
        False,
        onnx=CUSTOM_OP,
    ),
    # predictor (inference side)
    Component(
        "ConvPredictor(12)", "predictor", conv_predictor, feature_map_in, (MAP,), True, tol=(1e-4, 1e-4)
    ),
    Component(
        "FCPredictor(7, 'tanh')", "predictor", fc_predictor, pooled_in, ({0: "B"},), True, tol=(1e-4, 1e-4)
    ),
    # feature (inference side), resnet18 backbone
    Component(
        "FeatureExtractor(resnet18_v1)",
        "feature",
        feature_extractor,
        image_in,
        (IMAGE,),
        True,
        tol=(1e-4, 1e-4),
    ),
    Component(
        "FeatureExpander(resnet18_v1, global_pool=True)",
        "feature",
        feature_expander,
        image_in,
        (IMAGE,),
        True,
        tol=(1e-4, 1e-4),
    ),
    Component(
        "FPNFeatureExpander(resnet18_v1, use_p6=True)",
        "feature",
        fpn_feature_expander,
        image_in,
        (IMAGE,),
        True,
        tol=(1e-4, 1e-4),
    ),
    # bbox: the IoU family (inference side)
    Component(
        "generalized_box_iou",
        "bbox",
        lambda: IouFunction(bbox.generalized_box_iou),
        iou_in,
        (BOXES, REFS),
        True,
    ),
    Component(
        "distance_box_iou", "bbox", lambda: IouFunction(bbox.distance_box_iou), iou_in, (BOXES, REFS), True
    ),
    Component(
        "complete_box_iou", "bbox", lambda: IouFunction(bbox.complete_box_iou), iou_in, (BOXES, REFS), True
    ),
    Component(
        "complete_box_iou(fmt='center', eps=0.01)",
        "bbox",
        lambda: IouFunction(bbox.complete_box_iou, fmt="center", eps=0.01),
        center_iou_in,
        (BOXES, REFS),
        True,
    ),
    *(
        Component(
            f"aligned_box_iou(kind={kind!r})",
            "bbox",
            functools.partial(IouFunction, bbox.aligned_box_iou, kind=kind),
            aligned_in,
            (BOXES, BOXES),
            True,
        )
        for kind in bbox.IOU_KINDS
    ),
    # anchor (inference side)
    Component("SSDAnchorGenerator(clip=True)", "anchor", ssd_anchor_generator, feature_map_in, (MAP,), True),
    Component("RPNAnchorGenerator", "anchor", rpn_anchor_generator, feature_map_in, (MAP,), True),
    # postprocess (inference side)
    Component(
        "BoxNMS(valid_thresh=0.1, topk=30, id_index=0)",
        "postprocess",
        functools.partial(postprocess.BoxNMS, valid_thresh=0.1, topk=30, id_index=0),
        nms_rows_in,
        (BOXES,),
        True,
    ),
    Component(
        "BoxNMS(force_suppress=True, in_format='corner', out_format='center')",
        "postprocess",
        functools.partial(postprocess.BoxNMS, id_index=0, force_suppress=True, out_format="center"),
        nms_rows_in,
        (BOXES,),
        True,
    ),
    Component(
        "RPNProposal(clip=4.14, min_size=16)",
        "postprocess",
        functools.partial(postprocess.RPNProposal, math.log(1000 / 16), 16, (1.0, 1.0, 1.0, 1.0)),
        proposal_in,
        ({1: "N"}, BOXES, BOXES, IMAGE),
        True,
        tol=(1e-5, 1e-3),
    ),
    Component(
        "SSDDetectionOutput(nms_topk=50, post_nms=20)",
        "postprocess",
        functools.partial(postprocess.SSDDetectionOutput, NUM_CLASSES - 1, nms_topk=50, post_nms=20),
        ssd_output_in,
        (BOXES, BOXES, {1: "N"}),
        True,
        tol=(1e-5, 1e-4),
    ),
    # matcher: optimal one-to-one matching (training side)
    Component(
        "linear_sum_assignment",
        "matcher",
        LinearSumAssignment,
        lsa_in,
        (BNM, REFS),
        False,
        onnx=NoOnnx(
            "the custom operator `detblocks::linear_sum_assignment` has no ONNX translation",
            torch.onnx.errors.OnnxExporterError,
            r"detblocks[.:]+linear_sum_assignment",
        ),
    ),
    Component(
        "HungarianMatcher",
        "matcher",
        matcher.HungarianMatcher,
        hungarian_in,
        (BOXES, BOXES, REFS, REFS),
        False,
        onnx=NoOnnx(
            "its solver, the custom operator `detblocks::linear_sum_assignment`, has no ONNX translation",
            torch.onnx.errors.OnnxExporterError,
            r"detblocks[.:]+linear_sum_assignment",
        ),
    ),
    # assign (training side)
    Component(
        "ATSSAssigner(topk=9)",
        "assign",
        assign.ATSSAssigner,
        atss_in,
        ({}, LEVELS, REFS, REFS),
        False,
        onnx=ATSS_NO_ONNX,
    ),
    Component(
        "MaxIoUAssigner(0.5, 0.4)",
        "assign",
        functools.partial(assign.MaxIoUAssigner, 0.5, 0.4),
        max_iou_in,
        (BOXES, REFS, REFS),
        False,
    ),
    Component(
        "TaskAlignedAssigner(topk=5, alpha=0.5)",
        "assign",
        functools.partial(assign.TaskAlignedAssigner, topk=5, num_classes=NUM_CLASSES, alpha=0.5),
        tal_in,
        (BOXES, BOXES, {0: "N"}, REFS, REFS),
        False,
        onnx=NoOnnx(
            "the tie rule needs a stable sort (`aten.sort.stable`), which has no ONNX translation",
            torch.onnx.errors.OnnxExporterError,
            r"aten\.sort.*stable",
        ),
        duck_shape=False,
    ),
    Component(
        "SimOTAAssigner()",
        "assign",
        assign.SimOTAAssigner,
        dynamic_k_in,
        ({0: "N"}, BOXES, BOXES, REFS, REFS),
        False,
        onnx=DYNAMIC_K_NO_ONNX,
    ),
    Component(
        "DynamicSoftLabelAssigner(topk=5)",
        "assign",
        functools.partial(assign.DynamicSoftLabelAssigner, topk=5),
        dsl_in,
        ({0: "N"}, BOXES, BOXES, REFS, REFS),
        False,
        onnx=DYNAMIC_K_NO_ONNX,
    ),
]

PUBLIC_MODULES = {"bbox": bbox, "coder": coder, "matcher": matcher, "sampler": sampler}
PUBLIC_MODULES.update(predictor=predictor, feature=feature)
PUBLIC_MODULES.update(anchor=anchor, postprocess=postprocess)
PUBLIC_MODULES.update(assign=assign)


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def seeded(component: Component) -> Iterator[None]:
    """The same random stream for every call of a random component; nothing otherwise."""
    if component.seeded:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield
    else:
        yield


def run(component: Component, fn: Callable[..., object], args: tuple[Tensor, ...]) -> list[Tensor]:
    with seeded(component), torch.no_grad():
        return pytree.tree_leaves(fn(*args))


def assert_same(component: Component, got: list, want: list[Tensor], where: str) -> None:
    """Integer and boolean outputs exactly, floating ones within the component's tolerance."""
    assert len(got) == len(want), f"{component}: {len(got)} outputs, expected {len(want)} ({where})"
    rtol, atol = component.tol
    for i, (g, w) in enumerate(zip(got, want)):
        g = (torch.from_numpy(g) if not isinstance(g, Tensor) else g).cpu()
        w = w.cpu()
        msg = f"{component}: output {i} differs from eager ({where})"
        assert g.shape == w.shape, f"{msg}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        assert g.dtype == w.dtype, f"{msg}: dtype {g.dtype} != {w.dtype}"
        if w.is_floating_point():
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=lambda m, msg=msg: f"{msg}\n{m}")
        else:
            assert torch.equal(g, w), msg


def dynamic_shapes(component: Component) -> tuple[dict[int, Dim], ...]:
    dims = make_dims()
    # A list input (ATSS's anchors per level) takes a list of per-element specs.
    return tuple(
        spec if isinstance(spec, list) else {axis: dims[name] for axis, name in spec.items()}
        for spec in component.dims
    )


def axis_names(component: Component) -> str:
    names = {name for spec in component.dims if isinstance(spec, dict) for name in spec.values()}
    return ", ".join(n for n in DIM_RANGES if n in names)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress messages and advice (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_export(component: Component, module: nn.Module, path: Path) -> None:
    with quiet():
        torch.onnx.export(
            module,
            component.inputs(TRACE),
            str(path),
            dynamic_shapes=dynamic_shapes(component),
            dynamo=True,
            external_data=False,
        )


# ------------------------------------------------------------------ the contract
@pytest.fixture(params=COMPONENTS, ids=str)
def component(request) -> Component:
    return request.param


def test_eager(component):
    """Runs at every size and leaves its inputs untouched; a second call gives the same
    outputs (eager is the reference of the other checks)."""
    module = component.factory()
    for s in (TRACE, *OTHER):
        args = component.inputs(s)
        before = [a.clone() if isinstance(a, Tensor) else list(a) for a in args]  # (lists: ATSS)
        first = run(component, module, args)
        assert all(isinstance(t, Tensor) for t in first)
        assert not any(t.is_floating_point() and t.isnan().any() for t in first), f"{component}: NaN at {s}"
        same = (torch.equal(a, b) if isinstance(a, Tensor) else a == b for a, b in zip(args, before))
        assert all(same), f"{component} changed its inputs"
        assert_same(component, run(component, module, args), first, f"eager again at {s}")


def test_compile(component):
    """``torch.compile(fullgraph=True)``: no graph break; the graph traced at one size serves
    another without recompiling (nothing frozen to the traced sizes); eager's outputs. Batch
    size 1 may add one graph (every tracer specialises sizes 0 and 1)."""
    module = component.factory()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=COMPILE_BACKEND)
        for i, s in enumerate((TRACE, *OTHER)):
            args = component.inputs(s)
            # Random components: inductor draws eager's numbers only with fallback_random.
            with (
                torch._dynamo.config.patch(error_on_recompile=i == 1),
                torch._inductor.config.patch(fallback_random=component.seeded),
                torch.fx.experimental._config.patch(use_duck_shape=component.duck_shape),
            ):
                got = run(component, compiled, args)
            assert_same(component, got, run(component, module, args), f"compiled, {s}")
    finally:
        torch._dynamo.reset()


def test_export(component):
    """``torch.export.export`` with dynamic axes; the program equals eager at other sizes."""
    module = component.factory()
    with quiet():
        program = torch.export.export(
            module, component.inputs(TRACE), dynamic_shapes=dynamic_shapes(component)
        )
    exported = program.module()
    for s in OTHER:
        args = component.inputs(s)
        assert_same(component, run(component, exported, args), run(component, module, args), f"exported, {s}")


def test_onnx(component, tmp_path):
    """ONNX (dynamo exporter) in onnxruntime at two sizes other than the traced one, or the
    documented exporter error for a component that has no ONNX translation."""
    module = component.factory()
    path = tmp_path / "model.onnx"
    if isinstance(component.onnx, NoOnnx):
        with pytest.raises(component.onnx.error, match=component.onnx.match):
            onnx_export(component, module, path)
        return
    ort = pytest.importorskip("onnxruntime")
    onnx_export(component, module, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for s in OTHER:
        args = component.inputs(s)
        assert len(names) == len(args), f"{component}: ONNX inputs {names} for {len(args)} arguments"
        got = session.run(None, {n: a.cpu().numpy() for n, a in zip(names, args)})
        assert_same(component, got, run(component, module, args), f"onnxruntime, {s}")


def test_inference_components_export_to_onnx():
    """GluonCV's promise for its hybridizable inference blocks: ONNX is not optional there."""
    missing = [c.name for c in COMPONENTS if c.inference and c.onnx is not True]
    assert not missing, f"inference components without ONNX export: {missing}"


def _public_classes(module) -> set[type]:
    return {
        obj
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, nn.Module)
    }


def test_every_public_component_is_listed():
    """Each public ``nn.Module`` of every module, and the custom operator, is in COMPONENTS."""
    listed: set[type] = set()
    for c in COMPONENTS:
        listed.add(type(c.factory()))
    public = set().union(*(_public_classes(m) for m in PUBLIC_MODULES.values()))
    public.discard(QuotaOperator)
    missing = sorted(cls.__qualname__ for cls in public - listed)
    assert not missing, f"public components missing from COMPONENTS: {missing}"
    assert any(isinstance(c.factory(), QuotaOperator) for c in COMPONENTS), "the quota custom operator"
    assert {c.module for c in COMPONENTS} == set(PUBLIC_MODULES)


# ------------------------------------------------------------------ the README table
AXES = "B batch, N boxes or anchors, M references, H x W image, h x w feature map"


def _sizes(s: Sizes) -> str:
    return f"B={s.B}, N={s.N}, M={s.M}, {s.H}x{s.W} images"


def _onnx_cell(c: Component) -> str:
    if isinstance(c.onnx, NoOnnx):
        return f"no: {c.onnx.reason} (the test asserts the exporter's error)"
    return f"yes ({axis_names(c)})"


def render_table(components: list[Component] = COMPONENTS) -> str:
    """The README table: one row per component of the list the tests above run over."""
    lines = [
        f"Dynamic axes: {AXES}. Traced at {_sizes(TRACE)}; run at "
        + " and at ".join(_sizes(s) for s in OTHER)
        + f". `torch.compile(fullgraph=True, dynamic=True)` runs with the `{COMPILE_BACKEND}` backend.",
        "",
        "| component | module | side | eager | compile | export (dynamic axes) | ONNX in onnxruntime |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in components:
        side = "inference" if c.inference else "training"
        cells = [f"`{c.name}`", f"`detblocks.{c.module}`", side, "yes", "yes", f"yes ({axis_names(c)})"]
        lines.append("| " + " | ".join([*cells, _onnx_cell(c)]) + " |")
    return "\n".join(lines)


_TABLE = re.compile(re.escape(TABLE_START) + r"\n(.*?)\n?" + re.escape(TABLE_END), re.S)


def readme_table() -> str:
    match = _TABLE.search(README.read_text())
    assert match is not None, f"README.md lacks the markers {TABLE_START} ... {TABLE_END}"
    return match.group(1).strip()


def write_readme_table() -> None:
    """Put :func:`render_table` between the README's markers (``python tests/test_contract.py``)."""
    text = README.read_text()
    block = f"{TABLE_START}\n{render_table()}\n{TABLE_END}"
    README.write_text(_TABLE.sub(lambda _: block, text, count=1))


def test_readme_table_matches_components():
    assert readme_table() == render_table(), (
        "README.md's contract table drifted from COMPONENTS: run `python tests/test_contract.py`"
    )


if __name__ == "__main__":
    write_readme_table()
