"""Reliability: hostile inputs, numerical edge cases, half precision, determinism, gradients.

* **Bad input.** One table, :data:`BAD_INPUTS`, lists malformed calls of every public
  component (wrong rank, a last axis that is not 4, mismatched batch sizes, integer boxes,
  non-tensor arguments, empty axes where they are an error, out-of-range indices, unknown
  strings) and the error each must raise: a ``ValueError``/``TypeError`` whose message names
  the argument and what was received. A test keeps the table covering every public name,
  and no ``assert`` statement checks arguments anywhere in the package.
* **Degenerate but legal input.** Empty batch, no anchors, no references: every component
  returns well-defined outputs of the right shape (:data:`DEGENERATE`).
* **NaN and infinity.** A box with a NaN or infinite coordinate has IoU 0 with every box,
  never becomes a match, a positive sample, or a non-finite target that a mask keeps;
  decoders give finite boxes for huge and infinite predictions.
* **Fuzzing.** Generated boxes (inverted, zero-area, 1e-6 to 1e6 px) and padding through
  the whole target pipeline: only documented errors, outputs within documented ranges.
* **Half precision.** float16/bfloat16 IoU, matches and encodings against float32, with
  near-ties defined by the rounding of the inputs (:func:`iou_rounding_bound`).
* **Determinism** of the random sampler across runs, processes, thread counts and
  generator kinds, and of the whole target pipeline across thread counts.
* **Gradients**: float64 ``gradcheck`` of every differentiable part.

The measured numbers quoted in ``docs/guarantees.md`` come from these tests.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import detblocks
from detblocks import anchor, assign, bbox, coder, feature, matcher, postprocess, predictor, sampler
from detblocks.anchor import (
    RPNAnchorGenerator,
    SSDAnchorGenerator,
    rpn_anchors,
    rpn_base_anchors,
)
from detblocks.assign import (
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    MaxIoUAssigner,
    SimOTAAssigner,
    TaskAlignedAssigner,
    atss_assign,
    dsl_assign,
    max_iou_assign,
    simota_assign,
    task_aligned_assign,
)
from detblocks.bbox import (
    BBoxArea,
    BBoxBatchIOU,
    BBoxCenterToCorner,
    BBoxClipToImage,
    BBoxCornerToCenter,
    BBoxSplit,
    aligned_box_iou,
    bbox_split,
    box_area,
    box_iou,
    center_to_corner,
    clip_to_image,
    complete_box_iou,
    corner_to_center,
    distance_box_iou,
    generalized_box_iou,
)
from detblocks.coder import (
    MultiClassDecoder,
    MultiClassEncoder,
    MultiPerClassDecoder,
    NormalizedBoxCenterDecoder,
    NormalizedBoxCenterEncoder,
    NormalizedPerClassBoxCenterEncoder,
    SigmoidClassEncoder,
    decode_boxes,
    decode_class,
    decode_per_class,
    encode_boxes,
    encode_boxes_per_class,
    encode_class,
    encode_sigmoid_class,
)
from detblocks.conventions import NO_MATCH, PAD, Sample
from detblocks.feature import (
    FeatureExpander,
    FeatureExtractor,
    FPNFeatureExpander,
    gluoncv_output_names,
    pretrained_weights_path,
)
from detblocks.matcher import (
    BipartiteMatcher,
    CompositeMatcher,
    HungarianMatcher,
    MaximumMatcher,
    bipartite_match,
    composite_match,
    hungarian_match,
    linear_sum_assignment,
    match_boxes,
    maximum_match,
)
from detblocks.postprocess import (
    BoxNMS,
    RPNProposal,
    SSDDetectionOutput,
    box_nms,
    rpn_proposal,
    ssd_detection_output,
)
from detblocks.predictor import ConvPredictor, FCPredictor
from detblocks.sampler import (
    NaiveSampler,
    OHEMSampler,
    QuotaSampler,
    QuotaSamplerOp,
    QuotaSamplerProp,
    naive_sample,
    ohem_sample,
    quota_sample,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "detblocks"
POS, NEG, IGN = int(Sample.POSITIVE), int(Sample.NEGATIVE), int(Sample.IGNORE)
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
HALVES = [torch.float16, torch.bfloat16]
#: Unit roundoff of the half dtypes: a coordinate c is stored with an error of at most u * |c|.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _ids(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ======================================================================= inputs
def boxes(
    *shape: int, seed: int = 0, scale: float = 100.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Valid corner boxes ``(*shape, 4)``: sides between 1 and ``scale`` px."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(*shape, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(*shape, 2, generator=g, dtype=torch.float64) * (scale - 1) + 1
    return torch.cat([xy, xy + wh], -1).to(dtype)


def _tiny_backbone() -> nn.Module:
    """A three-conv network ``torch.fx`` traces in milliseconds: outputs ``"1"`` (stride 2)
    and ``"3"`` (stride 4) with 8 and 16 channels."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )


# ======================================================================= bad input
@dataclass(frozen=True)
class Bad:
    """A malformed call, the error it raises, the argument its message names and the part
    of the message that says what was received."""

    component: str
    kind: str
    call: Callable[[], object]
    exc: type[Exception]
    arg: str
    got: str

    @property
    def id(self) -> str:
        return f"{self.component}-{self.kind}"


A = boxes(2, 5)  # (B=2, N=5, 4)
R = boxes(2, 3, seed=1)  # (B=2, M=3, 4)
S = torch.tensor([[POS, NEG, IGN, NEG, POS], [NEG, POS, NEG, IGN, NEG]])  # samples (2, 5)
MT = torch.tensor([[0, -1, -1, -1, 2], [-1, 1, -1, -1, -1]])  # matches (2, 5)
L = torch.tensor([[0, 1, 2], [2, 1, 0]])  # reference class ids (2, 3)
X = torch.rand(2, 5, 3)  # similarity / IoU matrix (2, 5, 3)
LOGITS = torch.randn(2, 5, 4)
PRI = torch.cat(
    [(A[0, :, :2] + A[0, :, 2:]) / 2, torch.full((5, 2), 8.0)], -1
)  # priors (x, y, sw, sh) (5, 4)
SIM = (PRI, torch.sigmoid(LOGITS), A, L, R)  # SimOTA: priors, probabilities, boxes, labels, gts
DSL = (PRI, LOGITS, A, L, R)  # DSL: priors, logits, boxes, labels, gts
IMG = torch.zeros(2, 3, 48, 64)
QUOTA = (8, 0.5, 0.3)  # num_sample, pos_thresh, neg_thresh_high
OP_ARGS = (8, 0.5, 0.3, 0.0, 0.5, 0.5, True)  # hyper-parameters of QuotaSamplerOp


NMS_IDS = torch.tensor([[0.0, 1, 1, 2, 0], [2, 2, 1, 0, 0]])[..., None]  # (B, N, 1)
NMS_ROWS = torch.cat([NMS_IDS, torch.rand(2, 5, 1), A], -1)  # box_nms rows [id, score, box] (2, 5, 6)
OBJ = torch.rand(2, 5, 1)  # objectness (B, N, 1)
SSD_LOGITS = torch.randn(2, 5, 4)  # (B, N, C + 1)


def _nms_rows(B: int, N: int) -> torch.Tensor:
    """box_nms rows ``[id, score, box]`` of ``B`` images with ``N`` boxes each."""
    return torch.cat([torch.randint(0, 2, (B, N, 1)).float(), torch.rand(B, N, 1), boxes(B, N)], -1)


def _op(matches=MT, ious=X, keys=None, *params):
    return QuotaSamplerOp(matches, ious, torch.rand(2, 5) if keys is None else keys, *(params or OP_ARGS))


DETR = (A, LOGITS, R, L)  # pred_boxes, pred_logits (C = 4), gt_boxes, gt_labels of the optimal matcher
TAL = (torch.sigmoid(LOGITS), A, (A[0, :, :2] + A[0, :, 2:]) / 2, L, R)  # scores, boxes, points, labels, gts


def _spoilt(x: torch.Tensor, image: int, value: float) -> torch.Tensor:
    """``x`` with ``value`` in every cost of one image's first column (NaN: invalid; +inf: the
    column is forbidden, so an image with more rows than the other columns is infeasible)."""
    x = x.clone()
    x[image, :, 0] = value
    x[image, :, 1:] = math.inf if value == math.inf else x[image, :, 1:]
    return x


BAD_INPUTS: list[Bad] = [
    # ------------------------------------------------------------------ bbox
    Bad("corner_to_center", "last-dim-3", lambda: corner_to_center(A[..., :3]), ValueError, "x", "(2, 5, 3)"),
    Bad("corner_to_center", "int-boxes", lambda: corner_to_center(A.long()), TypeError, "x", "torch.int64"),
    Bad("corner_to_center", "non-tensor", lambda: corner_to_center(A.tolist()), TypeError, "x", "got list"),
    Bad("corner_to_center", "rank-0", lambda: corner_to_center(torch.tensor(1.0)), ValueError, "x", "0-d"),
    Bad("corner_to_center", "axis-range", lambda: corner_to_center(A, axis=3), ValueError, "axis", "axis=3"),
    Bad("corner_to_center", "axis-str", lambda: corner_to_center(A, axis="-1"), TypeError, "axis", "got str"),
    Bad("center_to_corner", "last-dim-5", lambda: center_to_corner(torch.rand(2, 5, 5)), ValueError, "x",
        "(2, 5, 5)"),
    Bad("center_to_corner", "axis-1", lambda: center_to_corner(A, axis=1), ValueError, "x", "(2, 5, 4)"),
    Bad("center_to_corner", "int-boxes", lambda: center_to_corner(A.int()), TypeError, "x", "torch.int32"),
    Bad("bbox_split", "axis-range", lambda: bbox_split(A, axis=-4), ValueError, "axis", "axis=-4"),
    Bad("bbox_split", "non-tensor", lambda: bbox_split((0, 0, 1, 1), axis=0), TypeError, "x", "got tuple"),
    Bad("box_area", "unknown-fmt", lambda: box_area(A, fmt="xywh"), ValueError, "fmt", "'xywh'"),
    Bad("box_area", "fmt-none", lambda: box_area(A, fmt=None), ValueError, "fmt", "None"),
    Bad("box_area", "last-dim-2", lambda: box_area(A[..., :2]), ValueError, "x", "(2, 5, 2)"),
    Bad("box_area", "bool-boxes", lambda: box_area(A > 0), TypeError, "x", "torch.bool"),
    Bad("box_iou", "rank-4", lambda: box_iou(A[None], R), ValueError, "a", "(1, 2, 5, 4)"),
    Bad("box_iou", "rank-1", lambda: box_iou(A, R[0, 0]), ValueError, "b", "(4)"),
    Bad("box_iou", "last-dim-5", lambda: box_iou(torch.rand(2, 5, 5), R), ValueError, "a", "(2, 5, 5)"),
    Bad("box_iou", "batch-mismatch", lambda: box_iou(A, boxes(3, 3)), ValueError, "b", "(3, 3, 4)"),
    Bad("box_iou", "rank-mismatch", lambda: box_iou(A, R[0]), ValueError, "b", "(3, 4)"),
    Bad("box_iou", "int-boxes", lambda: box_iou(A, R.long()), TypeError, "b", "torch.int64"),
    Bad("box_iou", "non-tensor", lambda: box_iou(A.cpu().numpy(), R), TypeError, "a", "got ndarray"),
    Bad("box_iou", "unknown-fmt", lambda: box_iou(A, R, fmt="xywh"), ValueError, "fmt", "'xywh'"),
    Bad("box_iou", "offset-str", lambda: box_iou(A, R, offset="1"), TypeError, "offset", "got str"),
    Bad("box_iou", "eps-negative", lambda: box_iou(A, R, eps=-1e-9), ValueError, "eps", "-1e-09"),
    Bad("box_iou", "eps-nan", lambda: box_iou(A, R, eps=math.nan), ValueError, "eps", "NaN"),
    # the IoU family
    Bad("generalized_box_iou", "rank-4", lambda: generalized_box_iou(A[None], R), ValueError, "a",
        "(1, 2, 5, 4)"),
    Bad("generalized_box_iou", "last-dim-3", lambda: generalized_box_iou(A, R[..., :3]), ValueError, "b",
        "(2, 3, 3)"),
    Bad("generalized_box_iou", "rank-mismatch", lambda: generalized_box_iou(A[0], R), ValueError, "b",
        "(2, 3, 4)"),
    Bad("generalized_box_iou", "batch-mismatch", lambda: generalized_box_iou(A, boxes(3, 3)), ValueError, "b",
        "(3, 3, 4)"),
    Bad("generalized_box_iou", "int-boxes", lambda: generalized_box_iou(A.long(), R), TypeError, "a",
        "torch.int64"),
    Bad("generalized_box_iou", "non-tensor", lambda: generalized_box_iou(A, R.tolist()), TypeError, "b",
        "got list"),
    Bad("generalized_box_iou", "unknown-fmt", lambda: generalized_box_iou(A, R, fmt="xywh"), ValueError,
        "fmt", "'xywh'"),
    Bad("distance_box_iou", "eps-negative", lambda: distance_box_iou(A, R, eps=-1e-7), ValueError, "eps",
        "-1e-07"),
    Bad("distance_box_iou", "eps-str", lambda: distance_box_iou(A, R, eps="1e-7"), TypeError, "eps",
        "got str"),
    Bad("distance_box_iou", "eps-nan", lambda: distance_box_iou(A, R, eps=math.nan), ValueError, "eps",
        "NaN"),
    Bad("distance_box_iou", "fmt-none", lambda: distance_box_iou(A, R, fmt=None), ValueError, "fmt", "None"),
    Bad("distance_box_iou", "bool-boxes", lambda: distance_box_iou(A, R > 0), TypeError, "b", "torch.bool"),
    Bad("complete_box_iou", "eps-tensor", lambda: complete_box_iou(A, R, eps=torch.tensor(1e-7)), TypeError,
        "eps", "tensor"),
    Bad("complete_box_iou", "eps-negative", lambda: complete_box_iou(A, R, eps=-1.0), ValueError, "eps",
        "-1.0"),
    Bad("complete_box_iou", "unknown-fmt", lambda: complete_box_iou(A, R, fmt="xywh"), ValueError, "fmt",
        "'xywh'"),
    Bad("complete_box_iou", "last-dim-5", lambda: complete_box_iou(torch.rand(2, 5, 5), R), ValueError, "a",
        "(2, 5, 5)"),
    Bad("aligned_box_iou", "kind-unknown", lambda: aligned_box_iou(A, A, kind="eiou"), ValueError, "kind",
        "'eiou'"),
    Bad("aligned_box_iou", "kind-int", lambda: aligned_box_iou(A, A, kind=3), ValueError, "kind", "got 3"),
    Bad("aligned_box_iou", "unknown-fmt", lambda: aligned_box_iou(A, A, fmt="xywh"), ValueError, "fmt",
        "'xywh'"),
    Bad("aligned_box_iou", "eps-negative", lambda: aligned_box_iou(A, A, kind="ciou", eps=-1e-9), ValueError,
        "eps", "-1e-09"),
    Bad("aligned_box_iou", "eps-str", lambda: aligned_box_iou(A, A, eps="0"), TypeError, "eps", "got str"),
    Bad("aligned_box_iou", "no-broadcast", lambda: aligned_box_iou(A, R), ValueError, "b", "(2, 3, 4)"),
    Bad("aligned_box_iou", "last-dim-3", lambda: aligned_box_iou(A[..., :3], A), ValueError, "a",
        "(2, 5, 3)"),
    Bad("aligned_box_iou", "rank-0", lambda: aligned_box_iou(A, torch.tensor(1.0)), ValueError, "b", "()"),
    Bad("aligned_box_iou", "int-boxes", lambda: aligned_box_iou(A, A.int()), TypeError, "b", "torch.int32"),
    Bad("aligned_box_iou", "non-tensor", lambda: aligned_box_iou(A.cpu().numpy(), A), TypeError, "a",
        "got ndarray"),
    Bad("clip_to_image", "img-rank-2", lambda: clip_to_image(A, IMG[0, 0]), ValueError, "img", "(48, 64)"),
    Bad("clip_to_image", "img-list", lambda: clip_to_image(A, [48, 64]), TypeError, "img", "got list"),
    Bad("clip_to_image", "height-negative", lambda: clip_to_image(A, height=-1, width=5), ValueError,
        "height", "-1"),
    Bad("clip_to_image", "width-shape", lambda: clip_to_image(A, height=4, width=torch.ones(3)), ValueError,
        "width", "(3)"),
    Bad("clip_to_image", "width-missing", lambda: clip_to_image(A, height=4), ValueError, "width",
        "width=None"),
    Bad("clip_to_image", "last-dim-3", lambda: clip_to_image(A[..., :3], IMG), ValueError, "x", "(2, 5, 3)"),
    Bad("BBoxCornerToCenter", "last-dim-3", lambda: BBoxCornerToCenter()(A[..., :3]), ValueError, "x",
        "(2, 5, 3)"),
    Bad("BBoxCenterToCorner", "int-boxes", lambda: BBoxCenterToCorner()(A.long()), TypeError, "x",
        "torch.int64"),
    Bad("BBoxSplit", "axis-range", lambda: BBoxSplit(axis=5)(A), ValueError, "axis", "axis=5"),
    Bad("BBoxArea", "unknown-fmt", lambda: BBoxArea(fmt="xywh"), ValueError, "fmt", "'xywh'"),
    Bad("BBoxBatchIOU", "unknown-fmt", lambda: BBoxBatchIOU(fmt="ltrb"), ValueError, "fmt", "'ltrb'"),
    Bad("BBoxBatchIOU", "eps-negative", lambda: BBoxBatchIOU(eps=-1.0), ValueError, "eps", "-1.0"),
    Bad("BBoxBatchIOU", "axis-1-size", lambda: BBoxBatchIOU(axis=1)(A, R), ValueError, "a", "(2, 5, 4)"),
    Bad("BBoxBatchIOU", "batch-mismatch", lambda: BBoxBatchIOU()(A, boxes(4, 3)), ValueError, "b",
        "(4, 3, 4)"),
    Bad("BBoxClipToImage", "img-rank-5", lambda: BBoxClipToImage()(A, IMG[None]), ValueError, "img",
        "(1, 2, 3, 48, 64)"),
    # ------------------------------------------------------------------ coder: encoders
    Bad("encode_boxes", "samples-rank-3", lambda: encode_boxes(S[..., None], MT, A, R), ValueError, "samples",
        "(2, 5, 1)"),
    Bad("encode_boxes", "matches-shape", lambda: encode_boxes(S, MT[:, :4], A, R), ValueError, "matches",
        "(2, 4)"),
    Bad("encode_boxes", "anchors-last-dim-5", lambda: encode_boxes(S, MT, torch.rand(2, 5, 5), R), ValueError,
        "anchors", "(2, 5, 5)"),
    Bad("encode_boxes", "anchors-n", lambda: encode_boxes(S, MT, A[:, :4], R), ValueError, "anchors",
        "(2, 4, 4)"),
    Bad("encode_boxes", "anchors-batch", lambda: encode_boxes(S, MT, boxes(3, 5), R), ValueError, "anchors",
        "(3, 5, 4)"),
    Bad("encode_boxes", "refs-batch", lambda: encode_boxes(S, MT, A, boxes(3, 3)), ValueError, "refs",
        "(3, 3, 4)"),
    Bad("encode_boxes", "refs-rank-2", lambda: encode_boxes(S, MT, A, R[0]), ValueError, "refs", "(3, 4)"),
    Bad("encode_boxes", "int-refs", lambda: encode_boxes(S, MT, A, R.long()), TypeError, "refs",
        "torch.int64"),
    Bad("encode_boxes", "bool-samples", lambda: encode_boxes(S > 0, MT, A, R), TypeError, "samples",
        "torch.bool"),
    Bad("encode_boxes", "list-matches", lambda: encode_boxes(S, MT.tolist(), A, R), TypeError, "matches",
        "got list"),
    Bad("encode_boxes", "match-out-of-range", lambda: encode_boxes(S, MT + 3 * (MT >= 0), A, R), ValueError,
        "matches", "got 3"),
    Bad("encode_boxes", "positive-unmatched", lambda: encode_boxes(S, torch.full_like(MT, -1), A, R),
        ValueError, "matches", "got -1"),
    Bad("encode_boxes", "samples-values", lambda: encode_boxes(S * 2, MT, A, R), ValueError, "samples",
        "[-2, 2]"),
    Bad("encode_boxes", "stds-length", lambda: encode_boxes(S, MT, A, R, stds=(0.1, 0.2)), ValueError, "stds",
        "(0.1, 0.2)"),
    Bad("encode_boxes", "stds-zero", lambda: encode_boxes(S, MT, A, R, stds=(0.1, 0.1, 0.0, 0.2)), ValueError,
        "stds", "0.0"),
    Bad("encode_boxes", "means-number", lambda: encode_boxes(S, MT, A, R, means=0.0), TypeError, "means",
        "0.0"),
    Bad("encode_boxes_per_class", "labels-m", lambda: encode_boxes_per_class(S, MT, A, L[:, :2], R, 3),
        ValueError, "labels", "(2, 2)"),
    Bad("encode_boxes_per_class", "labels-float-rank-3",
        lambda: encode_boxes_per_class(S, MT, A, L[..., None].float(), R, 3), ValueError, "labels",
        "(2, 3, 1)"),
    Bad("encode_boxes_per_class", "label-out-of-range", lambda: encode_boxes_per_class(S, MT, A, L + 1, R, 3),
        ValueError, "labels", "[1, 3]"),
    Bad("encode_boxes_per_class", "num-class-0", lambda: encode_boxes_per_class(S, MT, A, L, R, 0),
        ValueError, "num_class", "0"),
    Bad("encode_boxes_per_class", "max-pos-float", lambda: encode_boxes_per_class(S, MT, A, L, R, 3, 1.5),
        TypeError, "max_pos", "1.5"),
    Bad("encode_boxes_per_class", "anchors-batch",
        lambda: encode_boxes_per_class(S, MT, boxes(3, 5), L, R, 3), ValueError, "anchors", "(3, 5, 4)"),
    Bad("encode_class", "refs-rank-3", lambda: encode_class(S, MT, L[..., None]), ValueError, "refs",
        "(2, 3, 1)"),
    Bad("encode_class", "refs-batch", lambda: encode_class(S, MT, L[:1]), ValueError, "refs", "(1, 3)"),
    Bad("encode_class", "bool-refs", lambda: encode_class(S, MT, L > 0), TypeError, "refs", "torch.bool"),
    Bad("encode_class", "match-out-of-range", lambda: encode_class(S, MT + 5 * (MT >= 0), L), ValueError,
        "matches", "got 5"),
    Bad("encode_class", "ignore-label", lambda: encode_class(S, MT, L, ignore_label=0.5), ValueError,
        "ignore_label", "0.5"),
    Bad("encode_sigmoid_class", "rank-1", lambda: encode_sigmoid_class(S[0]), ValueError, "samples", "(5)"),
    Bad("encode_sigmoid_class", "values", lambda: encode_sigmoid_class(S + 1), ValueError, "samples",
        "[0, 2]"),
    Bad("encode_sigmoid_class", "int-dtype", lambda: encode_sigmoid_class(S, dtype=torch.int64), TypeError,
        "dtype", "torch.int64"),
    Bad("encode_sigmoid_class", "non-tensor", lambda: encode_sigmoid_class(S.tolist()), TypeError, "samples",
        "got list"),
    Bad("NormalizedBoxCenterEncoder", "stds-str", lambda: NormalizedBoxCenterEncoder(stds="0.1"), TypeError,
        "stds", "'0.1'"),
    Bad("NormalizedBoxCenterEncoder", "anchors-last-dim-3",
        lambda: NormalizedBoxCenterEncoder()(S, MT, A[..., :3], R), ValueError, "anchors", "(2, 5, 3)"),
    Bad("NormalizedPerClassBoxCenterEncoder", "num-class-0", lambda: NormalizedPerClassBoxCenterEncoder(0),
        ValueError, "num_class", "0"),
    Bad("NormalizedPerClassBoxCenterEncoder", "batch-size-0",
        lambda: NormalizedPerClassBoxCenterEncoder(3, per_device_batch_size=0), ValueError,
        "per_device_batch_size", "0"),
    Bad("NormalizedPerClassBoxCenterEncoder", "max-pos-str",
        lambda: NormalizedPerClassBoxCenterEncoder(3, "8"), TypeError, "max_pos", "str"),
    Bad("MultiClassEncoder", "ignore-label-str", lambda: MultiClassEncoder(ignore_label="-1"), TypeError,
        "ignore_label", "str"),
    Bad("MultiClassEncoder", "matches-shape", lambda: MultiClassEncoder()(S, MT[:1], L), ValueError,
        "matches", "(1, 5)"),
    Bad("SigmoidClassEncoder", "rank-3", lambda: SigmoidClassEncoder()(S[..., None]), ValueError, "samples",
        "(2, 5, 1)"),
    # ------------------------------------------------------------------ coder: decoders
    Bad("decode_boxes", "x-rank-2", lambda: decode_boxes(A[0], A), ValueError, "x", "(5, 4)"),
    Bad("decode_boxes", "anchors-last-dim-3", lambda: decode_boxes(A, A[..., :3]), ValueError, "anchors",
        "(2, 5, 3)"),
    Bad("decode_boxes", "anchors-n", lambda: decode_boxes(A, A[:, :3]), ValueError, "anchors", "(2, 3, 4)"),
    Bad("decode_boxes", "anchors-batch", lambda: decode_boxes(A, boxes(3, 5)), ValueError, "anchors",
        "(3, 5, 4)"),
    Bad("decode_boxes", "int-x", lambda: decode_boxes(A.long(), A), TypeError, "x", "torch.int64"),
    Bad("decode_boxes", "clip-str", lambda: decode_boxes(A, A, clip="4"), TypeError, "clip", "str"),
    Bad("decode_boxes", "clip-nan", lambda: decode_boxes(A, A, clip=math.nan), ValueError, "clip", "NaN"),
    Bad("decode_class", "x-rank-2", lambda: decode_class(X[0]), ValueError, "x", "(5, 3)"),
    Bad("decode_class", "one-class", lambda: decode_class(X[..., :1]), ValueError, "x", "(2, 5, 1)"),
    Bad("decode_class", "no-class", lambda: decode_class(X[..., :0]), ValueError, "x", "(2, 5, 0)"),
    Bad("decode_class", "axis-range", lambda: decode_class(X, axis=3), ValueError, "axis", "3"),
    Bad("decode_class", "int-x", lambda: decode_class(X.long()), TypeError, "x", "torch.int64"),
    Bad("decode_class", "thresh-str", lambda: decode_class(X, thresh="0.1"), TypeError, "thresh", "str"),
    Bad("decode_per_class", "x-rank-4", lambda: decode_per_class(X[None]), ValueError, "x", "(1, 2, 5, 3)"),
    Bad("decode_per_class", "axis-str", lambda: decode_per_class(X, axis="C"), ValueError, "axis", "'C'"),
    Bad("NormalizedBoxCenterDecoder", "clip-str", lambda: NormalizedBoxCenterDecoder(clip="4"), TypeError,
        "clip", "str"),
    Bad("NormalizedBoxCenterDecoder", "stds-negative",
        lambda: NormalizedBoxCenterDecoder(stds=(0.1, -0.1, 0.2, 0.2)), ValueError, "stds", "-0.1"),
    Bad("NormalizedBoxCenterDecoder", "x-last-dim-2", lambda: NormalizedBoxCenterDecoder()(A[..., :2], A),
        ValueError, "x", "(2, 5, 2)"),
    Bad("MultiClassDecoder", "thresh-none", lambda: MultiClassDecoder(thresh=None), TypeError, "thresh",
        "NoneType"),
    Bad("MultiClassDecoder", "one-class", lambda: MultiClassDecoder()(X[..., :1]), ValueError, "x",
        "(2, 5, 1)"),
    Bad("MultiPerClassDecoder", "num-class-1", lambda: MultiPerClassDecoder(1), ValueError, "num_class", "1"),
    Bad("MultiPerClassDecoder", "classes", lambda: MultiPerClassDecoder(4)(X), ValueError, "x", "(2, 5, 3)"),
    # ------------------------------------------------------------------ matcher
    Bad("maximum_match", "rank-2", lambda: maximum_match(X[0], 0.5), ValueError, "x", "(5, 3)"),
    Bad("maximum_match", "int-x", lambda: maximum_match(X.long(), 0.5), TypeError, "x", "torch.int64"),
    Bad("maximum_match", "non-tensor", lambda: maximum_match(X.tolist(), 0.5), TypeError, "x", "got list"),
    Bad("maximum_match", "threshold-nan", lambda: maximum_match(X, math.nan), ValueError, "threshold", "NaN"),
    Bad("maximum_match", "threshold-tensor", lambda: maximum_match(X, torch.tensor(0.5)), TypeError,
        "threshold", "tensor"),
    Bad("bipartite_match", "rank-4", lambda: bipartite_match(X[None]), ValueError, "x", "(1, 2, 5, 3)"),
    Bad("bipartite_match", "is-ascend-int", lambda: bipartite_match(X, is_ascend=1), TypeError, "is_ascend",
        "int"),
    Bad("bipartite_match", "share-max-str", lambda: bipartite_match(X, share_max="yes"), TypeError,
        "share_max", "str"),
    Bad("bipartite_match", "eps-none", lambda: bipartite_match(X, eps=None), TypeError, "eps", "NoneType"),
    Bad("bipartite_match", "recover-int", lambda: bipartite_match(X, recover=0), TypeError, "recover", "int"),
    Bad("composite_match", "no-matchers", lambda: composite_match(X, []), ValueError, "matchers", "empty"),
    Bad("composite_match", "function", lambda: composite_match(X, [maximum_match]), TypeError, "matchers[0]",
        "function"),
    Bad("composite_match", "bool-x", lambda: composite_match(X > 0.5, [MaximumMatcher(0.5)]), TypeError, "x",
        "torch.bool"),
    Bad("MaximumMatcher", "threshold-str", lambda: MaximumMatcher("0.5"), TypeError, "threshold", "str"),
    Bad("MaximumMatcher", "rank-2", lambda: MaximumMatcher(0.5)(X[0]), ValueError, "x", "(5, 3)"),
    Bad("BipartiteMatcher", "threshold-nan", lambda: BipartiteMatcher(threshold=math.nan), ValueError,
        "threshold", "NaN"),
    Bad("BipartiteMatcher", "int-x", lambda: BipartiteMatcher()(X.int()), TypeError, "x", "torch.int32"),
    Bad("CompositeMatcher", "single-matcher", lambda: CompositeMatcher(MaximumMatcher(0.5)), TypeError,
        "matchers", "MaximumMatcher"),
    Bad("CompositeMatcher", "no-matchers", lambda: CompositeMatcher([]), ValueError, "matchers", "empty"),
    Bad("match_boxes", "refs-last-dim-3", lambda: match_boxes(A, R[..., :3], [MaximumMatcher(0.5)]),
        ValueError, "refs", "(2, 3, 3)"),
    Bad("match_boxes", "refs-batch", lambda: match_boxes(A, boxes(3, 3), [MaximumMatcher(0.5)]),
        ValueError, "refs", "(3, 3, 4)"),
    Bad("match_boxes", "other-module", lambda: match_boxes(A, R, [torch.nn.Identity()]), TypeError,
        "matchers[0]", "Identity"),
    Bad("match_boxes", "chunk-size-0", lambda: match_boxes(A, R, [MaximumMatcher(0.5)], chunk_size=0),
        ValueError, "chunk_size", "0"),
    Bad("CompositeMatcher", "rank-2", lambda: CompositeMatcher([BipartiteMatcher()])(X[0]), ValueError, "x",
        "(5, 3)"),
    # ------------------------------------------------------------------ matcher: optimal matching
    Bad("linear_sum_assignment", "non-tensor", lambda: linear_sum_assignment(X.tolist()), TypeError, "cost",
        "got list"),
    Bad("linear_sum_assignment", "int-cost", lambda: linear_sum_assignment(X.long()), TypeError, "cost",
        "torch.int64"),
    Bad("linear_sum_assignment", "rank-2", lambda: linear_sum_assignment(X[0]), ValueError, "cost", "(5, 3)"),
    Bad("linear_sum_assignment", "nan", lambda: linear_sum_assignment(_spoilt(X, 1, math.nan)), ValueError,
        "cost", "image 1"),
    Bad("linear_sum_assignment", "infeasible", lambda: linear_sum_assignment(_spoilt(X, 0, math.inf)),
        ValueError, "cost", "image 0 is infeasible"),
    Bad("linear_sum_assignment", "valid-int",
        lambda: linear_sum_assignment(X, torch.ones(2, 3, dtype=torch.int64)), TypeError, "valid",
        "torch.int64"),
    Bad("linear_sum_assignment", "valid-columns", lambda: linear_sum_assignment(X, torch.ones(2, 4) > 0),
        ValueError, "valid", "(2, 4)"),
    Bad("linear_sum_assignment", "valid-batch", lambda: linear_sum_assignment(X, torch.ones(3, 3) > 0),
        ValueError, "valid", "(3, 3)"),
    Bad("linear_sum_assignment", "valid-list", lambda: linear_sum_assignment(X, [[True] * 3] * 2), TypeError,
        "valid", "got list"),
    Bad("hungarian_match", "pred-boxes-last-dim-3", lambda: hungarian_match(A[..., :3], *DETR[1:]),
        ValueError, "pred_boxes", "(2, 5, 3)"),
    Bad("hungarian_match", "pred-logits-queries", lambda: hungarian_match(A, LOGITS[:, :4], R, L), ValueError,
        "pred_logits", "(2, 4, 4)"),
    Bad("hungarian_match", "pred-logits-int", lambda: hungarian_match(A, LOGITS.long(), R, L), TypeError,
        "pred_logits", "torch.int64"),
    Bad("hungarian_match", "gt-boxes-batch", lambda: hungarian_match(A, LOGITS, boxes(3, 3), L), ValueError,
        "gt_boxes", "(3, 3, 4)"),
    Bad("hungarian_match", "gt-labels-bool", lambda: hungarian_match(A, LOGITS, R, L > 0), TypeError,
        "gt_labels", "torch.bool"),
    Bad("hungarian_match", "gt-labels-rows", lambda: hungarian_match(A, LOGITS, R, L[:, :2]), ValueError,
        "gt_labels", "(2, 2)"),
    Bad("hungarian_match", "gt-labels-class", lambda: hungarian_match(A, LOGITS, R, L + 2), ValueError,
        "gt_labels", "[2, 4]"),
    Bad("hungarian_match", "cost-class-nan", lambda: hungarian_match(*DETR, cost_class=math.nan), ValueError,
        "cost_class", "NaN"),
    Bad("hungarian_match", "cost-bbox-str", lambda: hungarian_match(*DETR, cost_bbox="5"), TypeError,
        "cost_bbox", "str"),
    Bad("hungarian_match", "cost-giou-inf", lambda: hungarian_match(*DETR, cost_giou=math.inf), ValueError,
        "cost_giou", "inf"),
    Bad("hungarian_match", "focal-int", lambda: hungarian_match(*DETR, use_focal_loss=1), TypeError,
        "use_focal_loss", "int"),
    Bad("hungarian_match", "alpha-1.5", lambda: hungarian_match(*DETR, alpha=1.5), ValueError, "alpha",
        "1.5"),
    Bad("hungarian_match", "gamma-negative", lambda: hungarian_match(*DETR, gamma=-1.0), ValueError, "gamma",
        "-1.0"),
    Bad("HungarianMatcher", "alpha-none", lambda: HungarianMatcher(alpha=None), TypeError, "alpha",
        "NoneType"),
    Bad("HungarianMatcher", "gamma-inf", lambda: HungarianMatcher(gamma=math.inf), ValueError, "gamma",
        "inf"),
    Bad("HungarianMatcher", "cost-class-tensor", lambda: HungarianMatcher(cost_class=torch.tensor(1.0)),
        TypeError, "cost_class", "tensor"),
    Bad("HungarianMatcher", "focal-str", lambda: HungarianMatcher(use_focal_loss="yes"), TypeError,
        "use_focal_loss", "str"),
    Bad("HungarianMatcher", "gt-boxes-rank-2", lambda: HungarianMatcher()(A, LOGITS, R[0], L), ValueError,
        "gt_boxes", "(3, 4)"),
    Bad("HungarianMatcher", "gt-labels-batch", lambda: HungarianMatcher()(A, LOGITS, R, L[:1]), ValueError,
        "gt_labels", "(1, 3)"),
    Bad("HungarianMatcher", "pred-boxes-int", lambda: HungarianMatcher()(A.long(), LOGITS, R, L), TypeError,
        "pred_boxes", "torch.int64"),
    # ------------------------------------------------------------------ sampler
    Bad("naive_sample", "rank-1", lambda: naive_sample(MT[0]), ValueError, "matches", "(5)"),
    Bad("naive_sample", "bool", lambda: naive_sample(MT >= 0), TypeError, "matches", "torch.bool"),
    Bad("naive_sample", "non-tensor", lambda: naive_sample(MT.tolist()), TypeError, "matches", "got list"),
    Bad("ohem_sample", "ious-rank-4", lambda: ohem_sample(MT, LOGITS, X[..., None], 3), ValueError, "ious",
        "(2, 5, 3, 1)"),
    Bad("ohem_sample", "ious-n", lambda: ohem_sample(MT, LOGITS, X[:, :4], 3), ValueError, "ious",
        "(2, 4, 3)"),
    Bad("ohem_sample", "ious-batch", lambda: ohem_sample(MT, LOGITS, X[:1], 3), ValueError, "ious",
        "(1, 5, 3)"),
    Bad("ohem_sample", "int-ious", lambda: ohem_sample(MT, LOGITS, X.long(), 3), TypeError, "ious",
        "torch.int64"),
    Bad("ohem_sample", "logits-rank-2", lambda: ohem_sample(MT, LOGITS[..., 0], X, 3), ValueError, "logits",
        "(2, 5)"),
    Bad("ohem_sample", "logits-no-class", lambda: ohem_sample(MT, LOGITS[..., :0], X, 3), ValueError,
        "logits", "(2, 5, 0)"),
    Bad("ohem_sample", "logits-batch", lambda: ohem_sample(MT, LOGITS[:1], X, 3), ValueError, "logits",
        "(1, 5, 4)"),
    Bad("ohem_sample", "match-out-of-range", lambda: ohem_sample(MT + 3 * (MT >= 0), LOGITS, X, 3),
        ValueError, "matches", "[-1, 5]"),
    Bad("ohem_sample", "ratio-0", lambda: ohem_sample(MT, LOGITS, X, 0), ValueError, "ratio", "0"),
    Bad("quota_sample", "ious-rank-1", lambda: quota_sample(MT, X[0, 0], *QUOTA), ValueError, "ious", "(3)"),
    Bad("quota_sample", "matches-float-rank-3", lambda: quota_sample(MT[..., None].float(), X, *QUOTA),
        ValueError, "matches", "(2, 5, 1)"),
    Bad("quota_sample", "match-out-of-range", lambda: quota_sample(MT - 2, X, *QUOTA), ValueError, "matches",
        "[-3, 0]"),
    Bad("quota_sample", "num-sample-0", lambda: quota_sample(MT, X, 0, 0.5, 0.3), ValueError, "num_sample",
        "0"),
    Bad("quota_sample", "ratios", lambda: quota_sample(MT, X, *QUOTA, pos_ratio=0.7, neg_ratio=0.5),
        ValueError, "pos_ratio", "0.7"),
    Bad("quota_sample", "generator-int", lambda: quota_sample(MT, X, *QUOTA, generator=0), TypeError,
        "generator", "int"),
    Bad("QuotaSamplerOp", "keys-n", lambda: _op(keys=torch.rand(2, 4)), ValueError, "keys", "(2, 4)"),
    Bad("QuotaSamplerOp", "keys-int", lambda: _op(keys=torch.zeros(2, 5, dtype=torch.int64)), TypeError,
        "keys", "torch.int64"),
    Bad("QuotaSamplerOp", "ious-batch", lambda: _op(ious=X[:1]), ValueError, "ious", "(1, 5, 3)"),
    Bad("QuotaSamplerOp", "neg-ratio", lambda: _op(MT, X, None, 8, 0.5, 0.3, 0.0, 0.5, 1.5, True), ValueError,
        "neg_ratio", "1.5"),
    Bad("QuotaSamplerProp", "in-shape-count",
        lambda: QuotaSamplerProp(8, 0.5).infer_shape([(2, 5), (2, 5, 3)]), ValueError, "in_shape", "2"),
    Bad("QuotaSamplerProp", "in-shape-n",
        lambda: QuotaSamplerProp(8, 0.5).infer_shape([(2, 5), (2, 6, 3), (2, 5)]), ValueError, "ious",
        "(2, 6, 3)"),
    Bad("QuotaSamplerProp", "fill-negative", lambda: QuotaSamplerProp(8, 0.5, fill_negative="no"), TypeError,
        "fill_negative", "str"),
    Bad("NaiveSampler", "rank-3", lambda: NaiveSampler()(MT[..., None]), ValueError, "matches", "(2, 5, 1)"),
    Bad("OHEMSampler", "ratio-inf", lambda: OHEMSampler(math.inf), ValueError, "ratio", "inf"),
    Bad("OHEMSampler", "min-samples-float", lambda: OHEMSampler(3, min_samples=2.5), TypeError, "min_samples",
        "2.5"),
    Bad("OHEMSampler", "logits-n", lambda: OHEMSampler(3)(MT, LOGITS[:, :4], X), ValueError, "logits",
        "(2, 4, 4)"),
    Bad("QuotaSampler", "pos-ratio", lambda: QuotaSampler(8, 0.5, 0.3, pos_ratio=1.5), ValueError,
        "pos_ratio", "1.5"),
    Bad("QuotaSampler", "thresh-str", lambda: QuotaSampler(8, "0.5", 0.3), TypeError, "pos_thresh", "str"),
    Bad("QuotaSampler", "ious-n", lambda: QuotaSampler(*QUOTA)(MT, X[:, :3]), ValueError, "ious",
        "(2, 3, 3)"),
    # ------------------------------------------------------------------ predictor
    Bad("ConvPredictor", "activation-unknown", lambda: ConvPredictor(8, activation="gelu2"), ValueError,
        "activation", "'gelu2'"),
    Bad("ConvPredictor", "activation-int", lambda: ConvPredictor(8, activation=3), TypeError, "activation",
        "int"),
    Bad("ConvPredictor", "kernel-triple", lambda: ConvPredictor(8, kernel=(3, 3, 3)), TypeError, "kernel",
        "(3, 3, 3)"),
    Bad("ConvPredictor", "stride-0", lambda: ConvPredictor(8, stride=0), ValueError, "stride", "0"),
    Bad("ConvPredictor", "num-channel-0", lambda: ConvPredictor(0), ValueError, "num_channel", "0"),
    Bad("ConvPredictor", "use-bias-int", lambda: ConvPredictor(8, use_bias=1), TypeError, "use_bias", "int"),
    Bad("ConvPredictor", "x-rank-3", lambda: ConvPredictor(8)(torch.rand(2, 3, 5)), ValueError, "x",
        "(2, 3, 5)"),
    Bad("ConvPredictor", "x-channels", lambda: ConvPredictor(8, in_channels=4)(torch.rand(2, 3, 5, 5)),
        ValueError, "x", "(2, 3, 5, 5)"),
    Bad("ConvPredictor", "int-x", lambda: ConvPredictor(8)(torch.ones(2, 3, 5, 5, dtype=torch.int64)),
        TypeError, "x", "torch.int64"),
    Bad("ConvPredictor", "x-float64-params-float32",
        lambda: ConvPredictor(8)(torch.rand(1, 3, 5, 5, dtype=torch.float64)),
        TypeError, "x", "torch.float64"),
    Bad("FCPredictor", "activation-unknown", lambda: FCPredictor(8, activation="gelu2"), ValueError,
        "activation", "'gelu2'"),
    Bad("FCPredictor", "num-output-float", lambda: FCPredictor(8.0), TypeError, "num_output", "8.0"),
    Bad("FCPredictor", "in-features-negative", lambda: FCPredictor(8, in_features=-1), ValueError,
        "in_features", "-1"),
    Bad("FCPredictor", "x-rank-1", lambda: FCPredictor(8)(torch.rand(5)), ValueError, "x", "(5)"),
    Bad("FCPredictor", "x-features", lambda: FCPredictor(8, in_features=12)(torch.rand(2, 3, 5)), ValueError,
        "x", "15"),
    Bad("FCPredictor", "non-tensor", lambda: FCPredictor(8)([1.0, 2.0]), TypeError, "x", "got list"),
    Bad("FCPredictor", "x-float64-params-float32",
        lambda: FCPredictor(8)(torch.rand(2, 3, dtype=torch.float64)), TypeError, "x", "torch.float64"),
    # ------------------------------------------------------------------ feature
    Bad("FeatureExtractor", "network-unknown", lambda: FeatureExtractor("resnet9000", "layer1"), ValueError,
        "network", "'resnet9000'"),
    Bad("FeatureExtractor", "network-int", lambda: FeatureExtractor(18, "layer1"), TypeError, "network",
        "int"),
    Bad("FeatureExtractor", "outputs-empty", lambda: FeatureExtractor(_tiny_backbone(), []), ValueError,
        "outputs", "empty"),
    Bad("FeatureExtractor", "outputs-int", lambda: FeatureExtractor(_tiny_backbone(), 3), TypeError,
        "outputs", "3"),
    Bad("FeatureExtractor", "outputs-unknown", lambda: FeatureExtractor(_tiny_backbone(), ["1", "conv9"]),
        ValueError, "outputs", "'conv9'"),
    Bad("FeatureExtractor", "pretrained-int", lambda: FeatureExtractor("resnet18", "layer1", pretrained=1),
        TypeError, "pretrained", "int"),
    Bad("FeatureExtractor", "x-rank-3", lambda: FeatureExtractor(_tiny_backbone(), "1")(torch.rand(3, 8, 8)),
        ValueError, "x", "(3, 8, 8)"),
    Bad("FeatureExtractor", "int-x",
        lambda: FeatureExtractor(_tiny_backbone(), "1")(torch.ones(1, 3, 8, 8, dtype=torch.uint8)), TypeError,
        "x", "torch.uint8"),
    Bad("FeatureExtractor", "x-channels",
        lambda: FeatureExtractor(_tiny_backbone(), "1")(torch.rand(1, 4, 8, 8)), ValueError, "x",
        "(1, 4, 8, 8)"),
    Bad("FeatureExpander", "num-filters-int", lambda: FeatureExpander(_tiny_backbone(), "3", num_filters=16),
        TypeError, "num_filters", "int"),
    Bad("FeatureExpander", "num-filters-0",
        lambda: FeatureExpander(_tiny_backbone(), "3", num_filters=[16, 0]), ValueError, "num_filters", "0"),
    Bad("FeatureExpander", "x-rank-5",
        lambda: FeatureExpander(_tiny_backbone(), "3", [16], min_depth=8)(torch.rand(1, 1, 3, 8, 8)),
        ValueError, "x", "(1, 1, 3, 8, 8)"),
    Bad("FPNFeatureExpander", "num-filters-count",
        lambda: FPNFeatureExpander(_tiny_backbone(), ["1", "3"], num_filters=[8]), ValueError, "num_filters",
        "[8]"),
    Bad("FPNFeatureExpander", "norm-kwargs",
        lambda: FPNFeatureExpander(_tiny_backbone(), ["1", "3"], [8, 8], norm_kwargs=[("eps", 1e-3)]),
        TypeError, "norm_kwargs", "list"),
    Bad("FPNFeatureExpander", "use-p6-str",
        lambda: FPNFeatureExpander(_tiny_backbone(), ["1", "3"], [8, 8], use_p6="yes"), TypeError, "use_p6",
        "str"),
    Bad("gluoncv_output_names", "unknown", lambda: gluoncv_output_names("resnet9000_v1"), ValueError,
        "network", "'resnet9000_v1'"),
    Bad("pretrained_weights_path", "network-int", lambda: pretrained_weights_path(18), TypeError, "network",
        "int"),
    Bad("pretrained_weights_path", "weights-unknown",
        lambda: pretrained_weights_path("resnet18", "IMAGENET9K"), ValueError, "pretrained", "'IMAGENET9K'"),
    # ------------------------------------------------------------------ assign: TaskAlignedAssigner
    Bad("task_aligned_assign", "scores-int",
        lambda: task_aligned_assign(TAL[0].long(), *TAL[1:], num_classes=4),
        TypeError, "pred_scores", "torch.int64"),
    Bad("task_aligned_assign", "scores-rank-2", lambda: task_aligned_assign(TAL[0][..., 0], *TAL[1:],
        num_classes=4), ValueError, "pred_scores", "(2, 5)"),
    Bad("task_aligned_assign", "scores-classes", lambda: task_aligned_assign(*TAL, num_classes=6), ValueError,
        "pred_scores", "(2, 5, 4)"),
    Bad("task_aligned_assign", "boxes-last-dim-3", lambda: task_aligned_assign(TAL[0], A[..., :3], *TAL[2:],
        num_classes=4), ValueError, "pred_boxes", "(2, 5, 3)"),
    Bad("task_aligned_assign", "boxes-anchors", lambda: task_aligned_assign(TAL[0], A[:, :4], *TAL[2:],
        num_classes=4), ValueError, "pred_boxes", "(2, 4, 4)"),
    Bad("task_aligned_assign", "boxes-batch", lambda: task_aligned_assign(TAL[0], boxes(3, 5), *TAL[2:],
        num_classes=4), ValueError, "pred_boxes", "(3, 5, 4)"),
    Bad("task_aligned_assign", "points-3", lambda: task_aligned_assign(*TAL[:2], A[0, :, :3], *TAL[3:],
        num_classes=4), ValueError, "anchor_points", "(5, 3)"),
    Bad("task_aligned_assign", "points-anchors", lambda: task_aligned_assign(*TAL[:2], TAL[2][:4], *TAL[3:],
        num_classes=4), ValueError, "anchor_points", "(4, 2)"),
    Bad("task_aligned_assign", "points-list", lambda: task_aligned_assign(*TAL[:2], TAL[2].tolist(), *TAL[3:],
        num_classes=4), TypeError, "anchor_points", "got list"),
    Bad("task_aligned_assign", "labels-bool", lambda: task_aligned_assign(*TAL[:3], L > 0, R, num_classes=4),
        TypeError, "gt_labels", "torch.bool"),
    Bad("task_aligned_assign", "labels-class", lambda: task_aligned_assign(*TAL[:3], L + 4, R, num_classes=4),
        ValueError, "gt_labels", "[4, 6]"),
    Bad("task_aligned_assign", "labels-rows",
        lambda: task_aligned_assign(*TAL[:3], L[:, :2], R, num_classes=4),
        ValueError, "gt_labels", "(2, 2)"),
    Bad("task_aligned_assign", "gt-boxes-last-dim-5", lambda: task_aligned_assign(*TAL[:4], boxes(2, 3)
        .repeat(1, 1, 2)[..., :5], num_classes=4), ValueError, "gt_boxes", "(2, 3, 5)"),
    Bad("task_aligned_assign", "gt-boxes-batch", lambda: task_aligned_assign(*TAL[:4], boxes(3, 3),
        num_classes=4), ValueError, "gt_boxes", "(3, 3, 4)"),
    Bad("task_aligned_assign", "topk-0", lambda: task_aligned_assign(*TAL, topk=0, num_classes=4), ValueError,
        "topk", "got 0"),
    Bad("task_aligned_assign", "beta-str", lambda: task_aligned_assign(*TAL, beta="6", num_classes=4),
        TypeError, "beta", "str"),
    Bad("task_aligned_assign", "topk2-float", lambda: task_aligned_assign(*TAL, topk2=2.0, num_classes=4),
        TypeError, "topk2", "2.0"),
    Bad("TaskAlignedAssigner", "topk-float", lambda: TaskAlignedAssigner(topk=2.5), TypeError, "topk", "2.5"),
    Bad("TaskAlignedAssigner", "num-classes-0", lambda: TaskAlignedAssigner(num_classes=0), ValueError,
        "num_classes", "got 0"),
    Bad("TaskAlignedAssigner", "alpha-nan", lambda: TaskAlignedAssigner(alpha=math.nan), ValueError, "alpha",
        "NaN"),
    Bad("TaskAlignedAssigner", "stride-str", lambda: TaskAlignedAssigner(stride="8"), TypeError, "stride",
        "'8'"),
    Bad("TaskAlignedAssigner", "stride-negative", lambda: TaskAlignedAssigner(stride=(8, -16)), ValueError,
        "stride[1]", "-16"),
    Bad("TaskAlignedAssigner", "eps-negative", lambda: TaskAlignedAssigner(eps=-1e-9), ValueError, "eps",
        "-1e-09"),
    Bad("TaskAlignedAssigner", "topk2-negative", lambda: TaskAlignedAssigner(topk2=-1), ValueError, "topk2",
        "-1"),
    Bad("TaskAlignedAssigner", "forward-scores-classes",
        lambda: TaskAlignedAssigner(num_classes=3)(*TAL), ValueError, "pred_scores", "(2, 5, 4)"),
    # ------------------------------------------------------------------ assign: ATSS and MaxIoU
    Bad("atss_assign", "anchors-batched", lambda: atss_assign(A, [5], L, R), ValueError, "anchors",
        "(2, 5, 4)"),
    Bad("atss_assign", "anchors-int", lambda: atss_assign(A[0].long(), [5], L, R), TypeError, "anchors",
        "torch.int64"),
    Bad("atss_assign", "levels-sum", lambda: atss_assign(A[0], [3, 1], L, R), ValueError, "num_level_anchors",
        "(sum 4)"),
    Bad("atss_assign", "levels-float", lambda: atss_assign(A[0], [5.0], L, R), TypeError,
        "num_level_anchors[0]", "5.0"),
    Bad("atss_assign", "levels-negative", lambda: atss_assign(A[0], [6, -1], L, R), ValueError,
        "num_level_anchors[1]", "-1"),
    Bad("atss_assign", "levels-str", lambda: atss_assign(A[0], "5", L, R), TypeError, "num_level_anchors",
        "str"),
    Bad("atss_assign", "levels-empty", lambda: atss_assign(A[0], [], L, R), ValueError, "num_level_anchors",
        "[]"),
    Bad("atss_assign", "labels-bool", lambda: atss_assign(A[0], [5], L > 0, R), TypeError, "gt_labels",
        "torch.bool"),
    Bad("atss_assign", "labels-below-padding", lambda: atss_assign(A[0], [5], L - 5, R), ValueError,
        "gt_labels", "[-5, -3]"),
    Bad("atss_assign", "labels-rows", lambda: atss_assign(A[0], [5], L[:, :2], R), ValueError, "gt_labels",
        "(2, 2)"),
    Bad("atss_assign", "gt-boxes-batch", lambda: atss_assign(A[0], [5], L, boxes(3, 3)), ValueError,
        "gt_boxes", "(3, 3, 4)"),
    Bad("atss_assign", "gt-boxes-last-dim-3", lambda: atss_assign(A[0], [5], L, R[..., :3]), ValueError,
        "gt_boxes", "(2, 3, 3)"),
    Bad("atss_assign", "topk-0", lambda: atss_assign(A[0], [5], L, R, topk=0), ValueError, "topk", "0"),
    Bad("ATSSAssigner", "topk-float", lambda: ATSSAssigner(topk=2.5), TypeError, "topk", "2.5"),
    Bad("ATSSAssigner", "forward-levels-sum", lambda: ATSSAssigner()(A[0], [2, 2], L, R), ValueError,
        "num_level_anchors", "[2, 2]"),
    Bad("max_iou_assign", "anchors-rank-4", lambda: max_iou_assign(A[None], L, R, 0.5, 0.4), ValueError,
        "anchors", "(1, 2, 5, 4)"),
    Bad("max_iou_assign", "anchors-batch", lambda: max_iou_assign(boxes(3, 5), L, R, 0.5, 0.4), ValueError,
        "anchors", "(3, 5, 4)"),
    Bad("max_iou_assign", "anchors-int", lambda: max_iou_assign(A.long(), L, R, 0.5, 0.4), TypeError,
        "anchors", "torch.int64"),
    Bad("max_iou_assign", "labels-bool", lambda: max_iou_assign(A, L > 0, R, 0.5, 0.4), TypeError,
        "gt_labels", "torch.bool"),
    Bad("max_iou_assign", "gt-boxes-rank-2", lambda: max_iou_assign(A, L, R[0], 0.5, 0.4), ValueError,
        "gt_boxes", "(3, 4)"),
    Bad("max_iou_assign", "pos-none", lambda: max_iou_assign(A, L, R, None, 0.4), TypeError, "pos_iou_thr",
        "NoneType"),
    Bad("max_iou_assign", "neg-triple", lambda: max_iou_assign(A, L, R, 0.5, (0.1, 0.2, 0.3)), ValueError,
        "neg_iou_thr", "(0.1, 0.2, 0.3)"),
    Bad("max_iou_assign", "neg-str", lambda: max_iou_assign(A, L, R, 0.5, "0.4"), TypeError, "neg_iou_thr",
        "str"),
    Bad("max_iou_assign", "neg-pair-nan", lambda: max_iou_assign(A, L, R, 0.5, (math.nan, 0.4)), ValueError,
        "neg_iou_thr[0]", "NaN"),
    Bad("max_iou_assign", "min-pos-str", lambda: max_iou_assign(A, L, R, 0.5, 0.4, "0"), TypeError,
        "min_pos_iou", "str"),
    Bad("max_iou_assign", "assign-all-int",
        lambda: max_iou_assign(A, L, R, 0.5, 0.4, gt_max_assign_all=1), TypeError, "gt_max_assign_all",
        "int"),
    Bad("MaxIoUAssigner", "low-quality-str", lambda: MaxIoUAssigner(0.5, 0.4, match_low_quality="yes"),
        TypeError, "match_low_quality", "str"),
    Bad("MaxIoUAssigner", "neg-list-of-3", lambda: MaxIoUAssigner(0.5, [0.1, 0.2, 0.3]), ValueError,
        "neg_iou_thr", "[0.1, 0.2, 0.3]"),
    Bad("MaxIoUAssigner", "forward-gt-last-dim-5",
        lambda: MaxIoUAssigner(0.5, 0.4)(A, L, torch.rand(2, 3, 5)), ValueError, "gt_boxes", "(2, 3, 5)"),
    # ------------------------------------------------------------------ anchor
    Bad("ssd_anchors", "im-size-3",
        lambda: anchor.ssd_anchors(2, 2, (300, 300, 300), (30, 60), (1, 2), 8), ValueError,
        "im_size", "(300, 300, 300)"),
    Bad("ssd_anchors", "sizes-1",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30,), (1, 2), 8), ValueError, "sizes",
        "(30,)"),
    Bad("ssd_anchors", "ratios-empty",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (), 8), ValueError,
        "ratios", "()"),
    Bad("ssd_anchors", "ratios-negative", lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (1, -2), 8),
        ValueError, "ratios", "(1, -2)"),
    Bad("ssd_anchors", "step-0",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (1, 2), 0), ValueError, "step",
        "0"),
    Bad("ssd_anchors", "offsets-str",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (1, 2), 8, offsets="ab"),
        TypeError, "offsets", "str"),
    Bad("ssd_anchors", "clip-int",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (1, 2), 8, clip=1), TypeError,
        "clip", "int"),
    Bad("ssd_anchors", "dtype-int",
        lambda: anchor.ssd_anchors(2, 2, (300, 300), (30, 60), (1, 2), 8, dtype=torch.int64),
        TypeError, "dtype", "torch.int64"),
    Bad("anchor_points", "strides-length", lambda: anchor.anchor_points([(2, 2)], [8, 16]), ValueError,
        "strides", "[8, 16]"),
    Bad("anchor_points", "size-3", lambda: anchor.anchor_points([(2, 2, 2)], [8]), ValueError,
        "feature_sizes", "(2, 2, 2)"),
    Bad("anchor_points", "height-negative", lambda: anchor.anchor_points([(-1, 2)], [8]), ValueError,
        "feature_sizes height", "-1"),
    Bad("anchor_points", "stride-0",
        lambda: anchor.anchor_points([(2, 2)], [0]), ValueError, "strides", "[0]"),
    Bad("anchor_points", "stride-str",
        lambda: anchor.anchor_points([(2, 2)], ["a"]), TypeError, "strides", "'a'"),
    Bad("anchor_points", "offset-nan",
        lambda: anchor.anchor_points([(2, 2)], [8], offset=math.nan), ValueError,
        "offset", "NaN"),
    Bad("anchor_points", "dtype-int",
        lambda: anchor.anchor_points([(2, 2)], [8], dtype=torch.int64), TypeError,
        "dtype", "torch.int64"),
    Bad("rpn_base_anchors", "stride-0",
        lambda: rpn_base_anchors(0, 16, (1,), (8,)), ValueError, "stride", "0"),
    Bad("rpn_base_anchors", "base-size-str", lambda: rpn_base_anchors(16, "16", (1,), (8,)), TypeError,
        "base_size", "str"),
    Bad("rpn_base_anchors", "ratios-empty", lambda: rpn_base_anchors(16, 16, [], (8,)), ValueError, "ratios",
        "[]"),
    Bad("rpn_base_anchors", "scales-negative", lambda: rpn_base_anchors(16, 16, (1,), (-8,)), ValueError,
        "scales", "(-8,)"),
    Bad("rpn_anchors", "base-last-dim-5", lambda: rpn_anchors(2, 2, torch.rand(3, 5), 16), ValueError, "base",
        "(3, 5)"),
    Bad("rpn_anchors", "base-int",
        lambda: rpn_anchors(2, 2, torch.ones(3, 4, dtype=torch.int64), 16), TypeError,
        "base", "torch.int64"),
    Bad("rpn_anchors", "stride-negative",
        lambda: rpn_anchors(2, 2, torch.rand(3, 4), -16), ValueError, "stride",
        "-16"),
    Bad("rpn_anchors", "dtype-bool",
        lambda: rpn_anchors(2, 2, torch.rand(3, 4), 16, dtype=torch.bool), TypeError,
        "dtype", "torch.bool"),
    Bad("SSDAnchorGenerator", "sizes-number",
        lambda: SSDAnchorGenerator((300, 300), 30, (1, 2), 8), TypeError,
        "sizes", "int"),
    Bad("SSDAnchorGenerator", "step-str", lambda: SSDAnchorGenerator((300, 300), (30, 60), (1, 2), "8"),
        TypeError, "step", "str"),
    Bad("SSDAnchorGenerator", "clip-str",
        lambda: SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8, clip="yes"),
        TypeError, "clip", "str"),
    Bad("SSDAnchorGenerator", "x-rank-3",
        lambda: SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)(torch.rand(2, 3, 4)), ValueError, "x",
        "(2, 3, 4)"),
    Bad("SSDAnchorGenerator", "x-non-tensor",
        lambda: SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8)([[1.0]]), TypeError, "x", "list"),
    Bad("RPNAnchorGenerator", "stride-0", lambda: RPNAnchorGenerator(0, 16, (1,), (8,)), ValueError, "stride",
        "0"),
    Bad("RPNAnchorGenerator", "base-size-negative",
        lambda: RPNAnchorGenerator(16, -16, (1,), (8,)), ValueError,
        "base_size", "-16"),
    Bad("RPNAnchorGenerator", "ratios-str",
        lambda: RPNAnchorGenerator(16, 16, "1", (8,)), TypeError, "ratios",
        "str"),
    Bad("RPNAnchorGenerator", "scales-empty",
        lambda: RPNAnchorGenerator(16, 16, (1,), ()), ValueError, "scales",
        "()"),
    Bad("RPNAnchorGenerator", "x-rank-2", lambda: RPNAnchorGenerator(16, 16, (1,), (8,))(torch.rand(4, 4)),
        ValueError, "x", "(4, 4)"),
    # ------------------------------------------------------------------ postprocess
    Bad("box_nms", "rank-1", lambda: box_nms(torch.rand(6)), ValueError, "data", "(6)"),
    Bad("box_nms", "int-data", lambda: box_nms(NMS_ROWS.long()), TypeError, "data", "torch.int64"),
    Bad("box_nms", "k-4", lambda: box_nms(NMS_ROWS[..., :4]), ValueError, "data", "(2, 5, 4)"),
    Bad("box_nms", "overlap-str",
        lambda: box_nms(NMS_ROWS, overlap_thresh="0.5"), TypeError, "overlap_thresh",
        "str"),
    Bad("box_nms", "valid-nan", lambda: box_nms(NMS_ROWS, valid_thresh=math.nan), ValueError, "valid_thresh",
        "NaN"),
    Bad("box_nms", "topk-0", lambda: box_nms(NMS_ROWS, topk=0), ValueError, "topk", "0"),
    Bad("box_nms", "coord-start-range",
        lambda: box_nms(NMS_ROWS, coord_start=3), ValueError, "coord_start", "3"),
    Bad("box_nms", "score-index-range", lambda: box_nms(NMS_ROWS, score_index=6), ValueError, "score_index",
        "6"),
    Bad("box_nms", "id-index-minus-2", lambda: box_nms(NMS_ROWS, id_index=-2), ValueError, "id_index", "-2"),
    Bad("box_nms", "background-float",
        lambda: box_nms(NMS_ROWS, background_id=0.5), TypeError, "background_id",
        "0.5"),
    Bad("box_nms", "force-int",
        lambda: box_nms(NMS_ROWS, force_suppress=1), TypeError, "force_suppress", "int"),
    Bad("box_nms", "in-format",
        lambda: box_nms(NMS_ROWS, in_format="xywh"), ValueError, "in_format", "'xywh'"),
    Bad("box_nms", "out-format",
        lambda: box_nms(NMS_ROWS, out_format=None), ValueError, "out_format", "None"),
    Bad("BoxNMS", "topk-float", lambda: BoxNMS(topk=2.0), TypeError, "topk", "2.0"),
    Bad("BoxNMS", "coord-start-negative", lambda: BoxNMS(coord_start=-1), ValueError, "coord_start", "-1"),
    Bad("BoxNMS", "score-index-str", lambda: BoxNMS(score_index="1"), TypeError, "score_index", "str"),
    Bad("BoxNMS", "data-non-tensor", lambda: BoxNMS()(NMS_ROWS.tolist()), TypeError, "data", "list"),
    Bad("BoxNMS", "data-score-column",
        lambda: BoxNMS(score_index=7)(NMS_ROWS), ValueError, "score_index", "7"),
    Bad("rpn_proposal", "anchor-last-dim-5",
        lambda: rpn_proposal(torch.rand(1, 5, 5), OBJ, A, IMG, None, 16, (1, 1, 1, 1)), ValueError, "anchor",
        "(1, 5, 5)"),
    Bad("rpn_proposal", "anchor-batch",
        lambda: rpn_proposal(boxes(3, 5), OBJ, A, IMG, None, 16, (1, 1, 1, 1)), ValueError, "anchor",
        "(3, 5, 4)"),
    Bad("rpn_proposal", "anchor-n", lambda: rpn_proposal(A[:, :4], OBJ, A, IMG, None, 16, (1, 1, 1, 1)),
        ValueError, "anchor", "(2, 4, 4)"),
    Bad("rpn_proposal", "score-2-columns",
        lambda: rpn_proposal(A, torch.rand(2, 5, 2), A, IMG, None, 16, (1, 1, 1, 1)), ValueError, "score",
        "(2, 5, 2)"),
    Bad("rpn_proposal", "score-batch",
        lambda: rpn_proposal(A, torch.rand(3, 5, 1), A, IMG, None, 16, (1, 1, 1, 1)),
        ValueError, "score", "(3, 5, 1)"),
    Bad("rpn_proposal", "bbox-pred-int",
        lambda: rpn_proposal(A, OBJ, A.long(), IMG, None, 16, (1, 1, 1, 1)), TypeError, "bbox_pred",
        "torch.int64"),
    Bad("rpn_proposal", "img-rank-3", lambda: rpn_proposal(A, OBJ, A, IMG[0], None, 16, (1, 1, 1, 1)),
        ValueError, "img", "(3, 48, 64)"),
    Bad("rpn_proposal", "clip-str", lambda: rpn_proposal(A, OBJ, A, IMG, "4", 16, (1, 1, 1, 1)), TypeError,
        "clip", "str"),
    Bad("rpn_proposal", "min-size-str", lambda: rpn_proposal(A, OBJ, A, IMG, None, "16", (1, 1, 1, 1)),
        TypeError, "min_size", "str"),
    Bad("rpn_proposal", "stds-3",
        lambda: rpn_proposal(A, OBJ, A, IMG, None, 16, (1, 1, 1)), ValueError, "stds",
        "(1, 1, 1)"),
    Bad("RPNProposal", "stds-zero", lambda: RPNProposal(None, 16, (1, 1, 0, 1)), ValueError, "stds",
        "(1, 1, 0, 1)"),
    Bad("RPNProposal", "min-size-none", lambda: RPNProposal(None, None, (1, 1, 1, 1)), TypeError, "min_size",
        "NoneType"),
    Bad("RPNProposal", "clip-nan",
        lambda: RPNProposal(math.nan, 16, (1, 1, 1, 1)), ValueError, "clip", "NaN"),
    Bad("ssd_detection_output", "cls-int", lambda: ssd_detection_output(SSD_LOGITS.long(), A, A), TypeError,
        "cls_preds", "torch.int64"),
    Bad("ssd_detection_output", "cls-one-class", lambda: ssd_detection_output(SSD_LOGITS[..., :1], A, A),
        ValueError, "cls_preds", "(2, 5, 1)"),
    Bad("ssd_detection_output", "box-n", lambda: ssd_detection_output(SSD_LOGITS, A[:, :4], A), ValueError,
        "box_preds", "(2, 4, 4)"),
    Bad("ssd_detection_output", "box-last-dim-5",
        lambda: ssd_detection_output(SSD_LOGITS, torch.rand(2, 5, 5), A),
        ValueError, "box_preds", "(2, 5, 5)"),
    Bad("ssd_detection_output", "anchors-batch", lambda: ssd_detection_output(SSD_LOGITS, A, boxes(3, 5)),
        ValueError, "anchors", "(3, 5, 4)"),
    Bad("ssd_detection_output", "stds-str",
        lambda: ssd_detection_output(SSD_LOGITS, A, A, stds="0.1"), TypeError,
        "stds", "'0.1'"),
    Bad("ssd_detection_output", "nms-thresh-1",
        lambda: ssd_detection_output(SSD_LOGITS, A, A, nms_thresh=1.0),
        ValueError, "nms_thresh", "1.0"),
    Bad("ssd_detection_output", "nms-topk-0", lambda: ssd_detection_output(SSD_LOGITS, A, A, nms_topk=0),
        ValueError, "nms_topk", "0"),
    Bad("ssd_detection_output", "post-nms-float",
        lambda: ssd_detection_output(SSD_LOGITS, A, A, post_nms=2.5),
        TypeError, "post_nms", "2.5"),
    Bad("ssd_detection_output", "thresh-str", lambda: ssd_detection_output(SSD_LOGITS, A, A, thresh="0.01"),
        TypeError, "thresh", "str"),
    Bad("SSDDetectionOutput", "num-classes-0", lambda: SSDDetectionOutput(0), ValueError, "num_classes", "0"),
    Bad("SSDDetectionOutput", "cls-classes", lambda: SSDDetectionOutput(4)(SSD_LOGITS, A, A), ValueError,
        "cls_preds", "(2, 5, 4)"),
    Bad("SSDDetectionOutput", "nms-thresh-0", lambda: SSDDetectionOutput(3, nms_thresh=0), ValueError,
        "nms_thresh", "0"),
    Bad("SSDDetectionOutput", "post-nms-negative", lambda: SSDDetectionOutput(3, post_nms=-1), ValueError,
        "post_nms", "-1"),
    Bad("SSDDetectionOutput", "nms-topk-str", lambda: SSDDetectionOutput(3, nms_topk="400"), TypeError,
        "nms_topk", "str"),
    # ------------------------------------------------------------------ assign: SimOTA and DSL
    Bad("simota_assign", "priors-batched", lambda: simota_assign(A, *SIM[1:]),
        ValueError, "priors", "(2, 5, 4)"),
    Bad("simota_assign", "priors-int", lambda: simota_assign(PRI.long(), *SIM[1:]), TypeError, "priors",
        "torch.int64"),
    Bad("simota_assign", "priors-3-cols", lambda: simota_assign(PRI[:, :3], *SIM[1:]), ValueError, "priors",
        "(5, 3)"),
    Bad("simota_assign", "priors-count", lambda: simota_assign(PRI[:4], *SIM[1:]), ValueError, "pred_scores",
        "(2, 5, 4)"),
    Bad("simota_assign", "scores-rank-2", lambda: simota_assign(PRI, SIM[1][..., 0], *SIM[2:]), ValueError,
        "pred_scores", "(2, 5)"),
    Bad("simota_assign", "scores-int", lambda: simota_assign(PRI, SIM[1].long(), *SIM[2:]), TypeError,
        "pred_scores", "torch.int64"),
    Bad("simota_assign", "scores-batch", lambda: simota_assign(PRI, torch.rand(3, 5, 4), *SIM[2:]),
        ValueError, "pred_scores", "(3, 5, 4)"),
    Bad("simota_assign", "scores-no-class", lambda: simota_assign(PRI, SIM[1][..., :0], *SIM[2:]),
        ValueError, "pred_scores", "(2, 5, 0)"),
    Bad("simota_assign", "scores-list", lambda: simota_assign(PRI, SIM[1].tolist(), *SIM[2:]), TypeError,
        "pred_scores", "list"),
    Bad("simota_assign", "boxes-last-dim-3", lambda: simota_assign(*SIM[:2], A[..., :3], L, R), ValueError,
        "pred_boxes", "(2, 5, 3)"),
    Bad("simota_assign", "boxes-priors", lambda: simota_assign(*SIM[:2], boxes(2, 4), L, R), ValueError,
        "pred_boxes", "(2, 4, 4)"),
    Bad("simota_assign", "labels-bool", lambda: simota_assign(*SIM[:3], L > 0, R), TypeError, "gt_labels",
        "torch.bool"),
    Bad("simota_assign", "labels-class", lambda: simota_assign(*SIM[:3], L + 4, R), ValueError, "gt_labels",
        "[4, 6]"),
    Bad("simota_assign", "labels-rows", lambda: simota_assign(*SIM[:3], L[:, :2], R), ValueError,
        "gt_labels", "(2, 2)"),
    Bad("simota_assign", "gt-boxes-batch", lambda: simota_assign(*SIM[:4], boxes(3, 3)), ValueError,
        "gt_boxes", "(3, 3, 4)"),
    Bad("simota_assign", "gt-boxes-last-dim-3", lambda: simota_assign(*SIM[:4], R[..., :3]), ValueError,
        "gt_boxes", "(2, 3, 3)"),
    Bad("simota_assign", "radius-negative", lambda: simota_assign(*SIM, center_radius=-1.0), ValueError,
        "center_radius", "-1.0"),
    Bad("simota_assign", "topk-0", lambda: simota_assign(*SIM, candidate_topk=0), ValueError,
        "candidate_topk", "0"),
    Bad("simota_assign", "iou-weight-str", lambda: simota_assign(*SIM, iou_weight="3"), TypeError,
        "iou_weight", "str"),
    Bad("simota_assign", "cls-weight-nan", lambda: simota_assign(*SIM, cls_weight=math.nan), ValueError,
        "cls_weight", "NaN"),
    Bad("SimOTAAssigner", "radius-str", lambda: SimOTAAssigner(center_radius="2.5"), TypeError,
        "center_radius", "str"),
    Bad("SimOTAAssigner", "topk-float", lambda: SimOTAAssigner(candidate_topk=2.5), TypeError,
        "candidate_topk", "2.5"),
    Bad("SimOTAAssigner", "iou-weight-tensor", lambda: SimOTAAssigner(iou_weight=torch.tensor(3.0)),
        TypeError, "iou_weight", "tensor"),
    Bad("SimOTAAssigner", "cls-weight-none", lambda: SimOTAAssigner(cls_weight=None), TypeError, "cls_weight",
        "NoneType"),
    Bad("SimOTAAssigner", "forward-priors-rank-1", lambda: SimOTAAssigner()(PRI[0], *SIM[1:]), ValueError,
        "priors", "(4)"),
    Bad("dsl_assign", "priors-batched", lambda: dsl_assign(A, *DSL[1:]), ValueError, "priors", "(2, 5, 4)"),
    Bad("dsl_assign", "priors-3-cols", lambda: dsl_assign(PRI[:, :3], *DSL[1:]), ValueError, "priors",
        "(5, 3)"),
    Bad("dsl_assign", "priors-count", lambda: dsl_assign(PRI[:4], *DSL[1:]), ValueError, "pred_logits",
        "(2, 5, 4)"),
    Bad("dsl_assign", "logits-int", lambda: dsl_assign(PRI, LOGITS.long(), *DSL[2:]), TypeError,
        "pred_logits", "torch.int64"),
    Bad("dsl_assign", "logits-rank-4", lambda: dsl_assign(PRI, LOGITS[None], *DSL[2:]), ValueError,
        "pred_logits", "(1, 2, 5, 4)"),
    Bad("dsl_assign", "logits-batch", lambda: dsl_assign(PRI, torch.randn(3, 5, 4), *DSL[2:]), ValueError,
        "pred_logits", "(3, 5, 4)"),
    Bad("dsl_assign", "boxes-int", lambda: dsl_assign(*DSL[:2], A.long(), L, R), TypeError, "pred_boxes",
        "torch.int64"),
    Bad("dsl_assign", "boxes-priors", lambda: dsl_assign(*DSL[:2], boxes(2, 6), L, R), ValueError,
        "pred_boxes", "(2, 6, 4)"),
    Bad("dsl_assign", "labels-class", lambda: dsl_assign(*DSL[:3], L + 2, R), ValueError, "gt_labels",
        "[2, 4]"),
    Bad("dsl_assign", "labels-bool", lambda: dsl_assign(*DSL[:3], L.bool(), R), TypeError, "gt_labels",
        "torch.bool"),
    Bad("dsl_assign", "labels-rows", lambda: dsl_assign(*DSL[:3], L[:, :1], R), ValueError, "gt_labels",
        "(2, 1)"),
    Bad("dsl_assign", "gt-boxes-int", lambda: dsl_assign(*DSL[:4], R.long()), TypeError, "gt_boxes",
        "torch.int64"),
    Bad("dsl_assign", "gt-boxes-batch", lambda: dsl_assign(*DSL[:4], boxes(1, 3)), ValueError, "gt_boxes",
        "(1, 3, 4)"),
    Bad("dsl_assign", "radius-str", lambda: dsl_assign(*DSL, soft_center_radius="3"), TypeError,
        "soft_center_radius", "str"),
    Bad("dsl_assign", "topk-0", lambda: dsl_assign(*DSL, topk=0), ValueError, "topk", "0"),
    Bad("dsl_assign", "iou-weight-nan", lambda: dsl_assign(*DSL, iou_weight=math.nan), ValueError,
        "iou_weight", "NaN"),
    Bad("DynamicSoftLabelAssigner", "topk-float", lambda: DynamicSoftLabelAssigner(topk=2.5), TypeError,
        "topk", "2.5"),
    Bad("DynamicSoftLabelAssigner", "radius-nan",
        lambda: DynamicSoftLabelAssigner(soft_center_radius=math.nan),
        ValueError, "soft_center_radius", "NaN"),
    Bad("DynamicSoftLabelAssigner", "iou-weight-str", lambda: DynamicSoftLabelAssigner(iou_weight="3"),
        TypeError, "iou_weight", "str"),
    Bad("DynamicSoftLabelAssigner", "forward-gt-last-dim-5",
        lambda: DynamicSoftLabelAssigner()(*DSL[:4], torch.rand(2, 3, 5)), ValueError, "gt_boxes",
        "(2, 3, 5)"),
    # ------------------------------------------------------------------ package
    Bad("set_value_checks", "str", lambda: detblocks.set_value_checks("on"), TypeError, "enabled", "str"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_bad_input_raises_naming_the_argument_and_what_was_received(bad: Bad):
    with pytest.raises(bad.exc, match=rf"(^|\W){re.escape(bad.arg)}(\W|$)") as info:
        bad.call()
    assert bad.got in str(info.value), f"message does not say what was received ({bad.got!r}): {info.value}"


#: Module attributes of __all__ that are data, not components.
_NOT_COMPONENTS = {"FOLD", "ACTIVATIONS", "GLUONCV_NETWORKS", "GLUONCV_OUTPUTS", "Assignment"}


def _public_callables() -> set[str]:
    names = {"set_value_checks"}
    for module in (bbox, coder, matcher, sampler, predictor, feature, assign, anchor, postprocess):
        names |= {n for n in module.__all__ if n not in _NOT_COMPONENTS and callable(getattr(module, n))}
    return names


def test_bad_input_table_covers_every_public_component():
    public = _public_callables()
    covered = {b.component for b in BAD_INPUTS}
    assert not public - covered, f"public components without a bad-input row: {sorted(public - covered)}"
    assert not covered - public, f"rows for names that are not public: {sorted(covered - public)}"
    assert len({b.id for b in BAD_INPUTS}) == len(BAD_INPUTS), "duplicate row ids"


def test_out_of_range_matches_at_non_positive_anchors_are_never_read():
    """Matches are only read at positives: any value elsewhere is accepted, with value checks
    on or off, and changes nothing."""
    garbage = torch.where(S == POS, MT, torch.tensor([[99, -5, 7, 3, -1]]).expand(2, 5))
    for checks in (None, False):
        detblocks.set_value_checks(checks)
        try:
            for fn in (
                lambda m: encode_boxes(S, m, A, R),
                lambda m: encode_boxes_per_class(S, m, A, L, R, num_class=3, max_pos=4),
                lambda m: (encode_class(S, m, L),),
            ):
                for x, y in zip(fn(garbage), fn(MT)):
                    assert torch.equal(x, y)
        finally:
            detblocks.set_value_checks(None)


def test_positives_without_a_valid_match_are_dropped_when_value_checks_are_off():
    """With value checks off (the default for CUDA tensors) nothing reads the indices back to
    the host: a positive whose match is not an index into refs gets no target (mask 0) and
    the ignore label instead of a target made from another row."""
    bad = MT.clone()
    bad[0, 0], bad[0, 4] = 3, -1  # positives pointing past the M = 3 references, and nowhere
    detblocks.set_value_checks(False)
    try:
        targets, masks = encode_boxes(S, bad, A, R)
        classes = encode_class(S, bad, L, ignore_label=-100)
        _, pc_masks, idx = encode_boxes_per_class(S, bad, A, L, R, num_class=3, max_pos=5)
    finally:
        detblocks.set_value_checks(None)
    assert not targets[0, [0, 4]].any() and not masks[0, [0, 4]].any()
    assert classes[0, [0, 4]].tolist() == [-100, -100]
    assert not pc_masks[0][torch.isin(idx[0], torch.tensor([0, 4]))].any()
    want_t, want_m = encode_boxes(S, MT, A, R)  # the other anchors are untouched
    assert torch.equal(targets[1], want_t[1]) and torch.equal(masks[1], want_m[1])


def test_no_assert_statements_check_arguments_in_the_package():
    """``assert`` vanishes under ``python -O``: arguments are checked with explicit raises."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Assert):
                offenders.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert not offenders, f"assert statements in the package: {offenders}"


# ======================================================================= degenerate input
@dataclass(frozen=True)
class Degenerate:
    """A component run on ``B`` images, ``N`` anchors and ``M`` references, and the shapes of
    what it must return."""

    component: str
    run: Callable[[int, int, int], object]
    shapes: Callable[[int, int, int], list[tuple[int, ...]]]


C, K = 4, 6  # classes (background included) and max_pos of the per-class encoder


def _empty_inputs(B: int, N: int, M: int) -> dict[str, torch.Tensor]:
    anchors, refs = boxes(B, N, seed=2), boxes(B, M, seed=3)
    refs[:, M // 2 :] = PAD  # half the references padded
    ious = box_iou(anchors, refs)
    matches = bipartite_match(ious)
    return {
        "anchors": anchors,
        "refs": refs,
        "ious": ious,
        "matches": matches,
        "samples": naive_sample(matches),
        "labels": torch.zeros(B, M, dtype=torch.int64),
        "scores": torch.softmax(torch.randn(B, N, C), -1),
        "img": torch.zeros(B, 3, 32, 48),
    }


def _d(fn: Callable[..., object], *names: str, **kwargs: object) -> Callable[[int, int, int], object]:
    return lambda B, N, M: fn(*(_empty_inputs(B, N, M)[n] for n in names), **kwargs)


def _tal_inputs(B: int, N: int, M: int) -> tuple[torch.Tensor, ...]:
    """TAL's inputs: probabilities, predicted boxes, anchor points (box centres), half the
    ground truth padded."""
    e = _empty_inputs(B, N, M)
    points = boxes(1, N, seed=4)[0]
    labels = torch.where(e["refs"][..., 0] == PAD, PAD, e["labels"])
    return e["scores"], e["anchors"], (points[:, :2] + points[:, 2:]) / 2, labels, e["refs"]


def _detr_inputs(B: int, N: int, M: int) -> tuple[torch.Tensor, ...]:
    """The optimal matcher's inputs: normalised center boxes, logits, half the ground truth padded."""
    e = _empty_inputs(B, N, M)
    labels = torch.where(e["refs"][..., 0] == PAD, PAD, e["labels"])
    return (
        corner_to_center(e["anchors"] / 100),
        torch.log(e["scores"]),
        corner_to_center(e["refs"] / 100),
        labels,
    )


def _dynamic_k_inputs(B: int, N: int, M: int, logits: bool = False) -> tuple[torch.Tensor, ...]:
    """SimOTA's (probabilities) or DSL's (logits) inputs: priors at box centres with stride 8,
    predicted boxes, half the ground truth padded."""
    e = _empty_inputs(B, N, M)
    points = boxes(1, N, seed=4)[0]
    priors = torch.cat([(points[:, :2] + points[:, 2:]) / 2, torch.full((N, 2), 8.0)], -1)
    scores = e["scores"]
    return (priors, scores.log() if logits else scores, e["anchors"], *_assign_gt(B, N, M))


def _assign_gt(B: int, N: int, M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and boxes of the assigners: half the ground truth padded (label -1)."""
    e = _empty_inputs(B, N, M)
    return torch.where(e["refs"][..., 0] == PAD, PAD, e["labels"]), e["refs"]


DEGENERATE: list[Degenerate] = [
    Degenerate("box_iou", _d(box_iou, "anchors", "refs"), lambda B, N, M: [(B, N, M)]),
    Degenerate("BBoxBatchIOU", _d(BBoxBatchIOU(), "anchors", "refs"), lambda B, N, M: [(B, N, M)]),
    Degenerate("generalized_box_iou", _d(generalized_box_iou, "anchors", "refs"),
        lambda B, N, M: [(B, N, M)]),
    Degenerate("distance_box_iou", _d(distance_box_iou, "anchors", "refs"), lambda B, N, M: [(B, N, M)]),
    Degenerate("complete_box_iou", _d(complete_box_iou, "refs", "anchors", fmt="center"),
        lambda B, N, M: [(B, M, N)]),
    Degenerate("aligned_box_iou", _d(aligned_box_iou, "anchors", "anchors", kind="ciou"),
        lambda B, N, M: [(B, N)]),
    Degenerate("box_area", _d(box_area, "refs"), lambda B, N, M: [(B, M, 1)]),
    Degenerate("BBoxArea", _d(BBoxArea(), "anchors"), lambda B, N, M: [(B, N, 1)]),
    Degenerate("corner_to_center", _d(corner_to_center, "refs"), lambda B, N, M: [(B, M, 4)]),
    Degenerate("BBoxCornerToCenter", _d(BBoxCornerToCenter(split=True), "anchors"),
        lambda B, N, M: [(B, N, 1)] * 4),
    Degenerate("center_to_corner", _d(center_to_corner, "anchors"), lambda B, N, M: [(B, N, 4)]),
    Degenerate("BBoxCenterToCorner", _d(BBoxCenterToCorner(), "refs"), lambda B, N, M: [(B, M, 4)]),
    Degenerate("bbox_split", _d(bbox_split, "refs", axis=-1, squeeze_axis=True),
        lambda B, N, M: [(B, M)] * 4),
    Degenerate("BBoxSplit", _d(BBoxSplit(axis=-1), "anchors"), lambda B, N, M: [(B, N, 1)] * 4),
    Degenerate("clip_to_image", _d(clip_to_image, "anchors", "img"), lambda B, N, M: [(B, N, 4)]),
    Degenerate("BBoxClipToImage", _d(BBoxClipToImage(), "refs", "img"), lambda B, N, M: [(B, M, 4)]),
    Degenerate("maximum_match", _d(maximum_match, "ious", threshold=0.5), lambda B, N, M: [(B, N)]),
    Degenerate("MaximumMatcher", _d(MaximumMatcher(0.5), "ious"), lambda B, N, M: [(B, N)]),
    Degenerate("bipartite_match", _d(bipartite_match, "ious", share_max=False), lambda B, N, M: [(B, N)]),
    Degenerate("BipartiteMatcher", _d(BipartiteMatcher(), "ious"), lambda B, N, M: [(B, N)]),
    Degenerate("composite_match",
        _d(composite_match, "ious", matchers=[BipartiteMatcher(), MaximumMatcher(0.5)]),
        lambda B, N, M: [(B, N)]),
    Degenerate("CompositeMatcher", _d(CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)]), "ious"),
        lambda B, N, M: [(B, N)]),
    Degenerate("match_boxes",
        _d(match_boxes, "anchors", "refs", matchers=[BipartiteMatcher(), MaximumMatcher(0.5)], chunk_size=2),
        lambda B, N, M: [(B, N)] * 2),
    Degenerate("linear_sum_assignment", _d(linear_sum_assignment, "ious"), lambda B, N, M: [(B, N)]),
    Degenerate("hungarian_match", lambda B, N, M: hungarian_match(*_detr_inputs(B, N, M)),
        lambda B, N, M: [(B, N)]),
    Degenerate("HungarianMatcher",
        lambda B, N, M: HungarianMatcher(use_focal_loss=False)(*_detr_inputs(B, N, M)),
        lambda B, N, M: [(B, N)]),
    Degenerate("task_aligned_assign",
        lambda B, N, M: task_aligned_assign(*_tal_inputs(B, N, M), num_classes=C),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("TaskAlignedAssigner",
        lambda B, N, M: TaskAlignedAssigner(topk=3, num_classes=C, alpha=0.5)(*_tal_inputs(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("simota_assign", lambda B, N, M: simota_assign(*_dynamic_k_inputs(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("SimOTAAssigner", lambda B, N, M: SimOTAAssigner()(*_dynamic_k_inputs(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("dsl_assign", lambda B, N, M: dsl_assign(*_dynamic_k_inputs(B, N, M, logits=True)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("DynamicSoftLabelAssigner",
        lambda B, N, M: DynamicSoftLabelAssigner(topk=3)(*_dynamic_k_inputs(B, N, M, logits=True)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("atss_assign",
        lambda B, N, M: atss_assign(boxes(1, N, seed=4)[0], [N], *_assign_gt(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("ATSSAssigner",
        lambda B, N, M: ATSSAssigner(topk=2)(boxes(1, N, seed=4)[0], [N // 2, N - N // 2],
                                             *_assign_gt(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("max_iou_assign",
        lambda B, N, M: max_iou_assign(boxes(B, N, seed=4), *_assign_gt(B, N, M), 0.5, 0.4),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("MaxIoUAssigner",
        lambda B, N, M: MaxIoUAssigner(0.5, (0.1, 0.4))(boxes(1, N, seed=4)[0], *_assign_gt(B, N, M)),
        lambda B, N, M: [(B, N)] * 3),
    Degenerate("naive_sample", _d(naive_sample, "matches"), lambda B, N, M: [(B, N)]),
    Degenerate("NaiveSampler", _d(NaiveSampler(), "matches"), lambda B, N, M: [(B, N)]),
    Degenerate("ohem_sample", _d(ohem_sample, "matches", "scores", "ious", ratio=3, min_samples=2),
        lambda B, N, M: [(B, N)]),
    Degenerate("OHEMSampler", _d(OHEMSampler(3), "matches", "scores", "ious"), lambda B, N, M: [(B, N)]),
    Degenerate("quota_sample",
        _d(quota_sample, "matches", "ious", num_sample=8, pos_thresh=0.5, neg_thresh_high=0.3),
        lambda B, N, M: [(B, N)]),
    Degenerate("QuotaSampler", _d(QuotaSampler(*QUOTA), "matches", "ious"), lambda B, N, M: [(B, N)]),
    Degenerate("QuotaSamplerOp",
        lambda B, N, M: _op(*(_empty_inputs(B, N, M)[n] for n in ("matches", "ious")), torch.rand(B, N)),
        lambda B, N, M: [(B, N)]),
    Degenerate("QuotaSamplerProp",
        lambda B, N, M: torch.empty(QuotaSamplerProp(*QUOTA).infer_shape([(B, N), (B, N, M), (B, N)])[1][0]),
        lambda B, N, M: [(B, N)]),
    Degenerate("encode_boxes", _d(encode_boxes, "samples", "matches", "anchors", "refs"),
        lambda B, N, M: [(B, N, 4)] * 2),
    Degenerate("NormalizedBoxCenterEncoder",
        _d(NormalizedBoxCenterEncoder(), "samples", "matches", "anchors", "refs"),
        lambda B, N, M: [(B, N, 4)] * 2),
    Degenerate("encode_boxes_per_class",
        _d(encode_boxes_per_class, "samples", "matches", "anchors", "labels", "refs", num_class=C - 1,
           max_pos=K),
        lambda B, N, M: [(B, K, C - 1, 4)] * 2 + [(B, K)]),
    Degenerate("NormalizedPerClassBoxCenterEncoder",
        _d(NormalizedPerClassBoxCenterEncoder(C - 1, K), "samples", "matches", "anchors", "labels", "refs"),
        lambda B, N, M: [(B, K, C - 1, 4)] * 2 + [(B, K)]),
    Degenerate("encode_class", _d(encode_class, "samples", "matches", "labels"), lambda B, N, M: [(B, N)]),
    Degenerate("MultiClassEncoder", _d(MultiClassEncoder(), "samples", "matches", "labels"),
        lambda B, N, M: [(B, N)]),
    Degenerate("encode_sigmoid_class", _d(encode_sigmoid_class, "samples"), lambda B, N, M: [(B, N)] * 2),
    Degenerate("SigmoidClassEncoder", _d(SigmoidClassEncoder(), "samples"), lambda B, N, M: [(B, N)] * 2),
    Degenerate("decode_boxes", _d(decode_boxes, "anchors", "anchors"), lambda B, N, M: [(B, N, 4)]),
    Degenerate("NormalizedBoxCenterDecoder",
        _d(NormalizedBoxCenterDecoder(convert_anchor=True), "anchors", "anchors"),
        lambda B, N, M: [(B, N, 4)]),
    Degenerate("decode_class", _d(decode_class, "scores"), lambda B, N, M: [(B, N)] * 2),
    Degenerate("MultiClassDecoder", _d(MultiClassDecoder(), "scores"), lambda B, N, M: [(B, N)] * 2),
    Degenerate("decode_per_class", _d(decode_per_class, "scores"), lambda B, N, M: [(B, N, C - 1)] * 2),
    Degenerate("MultiPerClassDecoder", _d(MultiPerClassDecoder(C), "scores"),
        lambda B, N, M: [(B, N, C - 1)] * 2),
    Degenerate("ConvPredictor", lambda B, N, M: ConvPredictor(6)(torch.rand(B, 3, N + 1, M + 1)),
        lambda B, N, M: [(B, 6, N + 1, M + 1)]),
    Degenerate("FCPredictor", lambda B, N, M: FCPredictor(6, in_features=3 * N)(torch.rand(B, 3, N)),
        lambda B, N, M: [(B, 6)]),
    Degenerate("ssd_anchors", lambda B, N, M: anchor.ssd_anchors(N, M, (300, 300), (30, 60), (1, 2, 0.5), 8),
        lambda B, N, M: [(1, N * M * 4, 4)]),
    Degenerate("SSDAnchorGenerator",
        lambda B, N, M: SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8, clip=True)(torch.zeros(B, 3, N,
        M)),
        lambda B, N, M: [(1, N * M * 3, 4)]),
    Degenerate("rpn_base_anchors", lambda B, N, M: rpn_base_anchors(16, 16, (0.5, 1, 2), (8, 16)),
        lambda B, N, M: [(6, 4)]),
    Degenerate("anchor_points", lambda B, N, M: anchor.anchor_points([(N, M), (M, N)], [8, 16]),
        lambda B, N, M: [(2 * N * M, 2), (2 * N * M,)]),
    Degenerate("rpn_anchors", lambda B, N, M: rpn_anchors(N, M, rpn_base_anchors(16, 16, (1,), (8,)), 16),
        lambda B, N, M: [(1, N * M, 4)]),
    Degenerate("RPNAnchorGenerator",
        lambda B, N, M: RPNAnchorGenerator(16, 16, (0.5, 1, 2), (8,))(torch.zeros(B, 3, N, M)),
        lambda B, N, M: [(1, N * M * 3, 4)]),
    Degenerate("box_nms", lambda B, N, M: box_nms(_nms_rows(B, N), id_index=0), lambda B, N, M: [(B, N, 6)]),
    Degenerate("BoxNMS", lambda B, N, M: BoxNMS(topk=3, force_suppress=True)(_nms_rows(B, N)),
        lambda B, N, M: [(B, N, 6)]),
    Degenerate("rpn_proposal",
        lambda B, N, M: rpn_proposal(boxes(1, N), torch.rand(B, N, 1), torch.rand(B, N, 4), torch.zeros(B,
        3, 32, 48),
                                     None, 4, (1, 1, 1, 1)),
        lambda B, N, M: [(B, N, 5)]),
    Degenerate("RPNProposal",
        lambda B, N, M: RPNProposal(4.0, 4, (1, 1, 1, 1))(boxes(B, N), torch.rand(B, N, 1), torch.rand(B,
        N, 4),
                                                          torch.zeros(B, 3, 32, 48)),
        lambda B, N, M: [(B, N, 5)]),
    Degenerate("ssd_detection_output",
        lambda B, N, M: ssd_detection_output(torch.randn(B, N, C), torch.randn(B, N, 4), boxes(1, N),
        post_nms=K),
        lambda B, N, M: [(B, K, 1), (B, K, 1), (B, K, 4)]),
    Degenerate("SSDDetectionOutput",
        lambda B, N, M: SSDDetectionOutput(C - 1, nms_topk=2, post_nms=K)(torch.randn(B, N, C),
        torch.randn(B, N, 4),
                                                                          boxes(B, N)),
        lambda B, N, M: [(B, K, 1), (B, K, 1), (B, K, 4)]),
]  # fmt: skip

#: (B, N, M): no image, no anchor, no reference, neither.
EMPTY_SIZES = [(0, 5, 3), (2, 0, 3), (2, 5, 0), (2, 0, 0)]


def _flat(out: object) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]  # type: ignore[list-item]


@pytest.mark.parametrize("size", EMPTY_SIZES, ids=lambda s: "B{}-N{}-M{}".format(*s))
@pytest.mark.parametrize("case", DEGENERATE, ids=lambda c: c.component)
def test_empty_axes_give_well_defined_outputs(case: Degenerate, size: tuple[int, int, int]):
    """No image, no anchor or no reference is legal: right shapes, nothing matched, no positive,
    no mask set, nothing non-finite."""
    B, N, M = size
    outs = _flat(case.run(B, N, M))
    assert [tuple(o.shape) for o in outs] == case.shapes(B, N, M)
    for o in outs:
        if o.is_floating_point():
            assert bool(torch.isfinite(o).all())
    if "BoxCenterEncoder" in case.component or case.component.startswith("encode_boxes"):
        assert not bool(outs[1].any()), "no reference or no anchor: no mask may be set"
    if "match" in case.component.lower() and M == 0:
        assert bool((outs[0] == NO_MATCH).all())
    if "ampl" in case.component and M == 0:  # samplers: nothing to be positive about
        assert not bool((outs[0] == POS).any())


def test_degenerate_table_covers_every_tensor_component():
    """Every public component with box or anchor axes is in DEGENERATE (the feature blocks
    take images: their empty batch is checked below)."""
    expected = _public_callables() - {
        "FeatureExtractor",
        "FeatureExpander",
        "FPNFeatureExpander",
        "gluoncv_output_names",
        "pretrained_weights_path",
        "set_value_checks",
    }
    missing = expected - {c.component for c in DEGENERATE}
    assert not missing, f"components without an empty-axis case: {sorted(missing)}"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_feature_blocks_take_an_empty_batch(train: bool):
    blocks = [
        FeatureExtractor(_tiny_backbone(), ["1", "3"]),
        FeatureExpander(_tiny_backbone(), "3", [16], min_depth=8, global_pool=True),
        FPNFeatureExpander(_tiny_backbone(), ["1", "3"], [8, 8], use_p6=True),
    ]
    for block in blocks:
        outs = block.train(train)(torch.rand(0, 3, 16, 16))
        assert all(o.shape[0] == 0 for o in outs) and len(outs) == len(block.channels)


# ======================================================================= NaN and infinity
NON_FINITE = [math.nan, math.inf, -math.inf]


def _spoil(x: torch.Tensor, rows: list[int], value: float, coord: int) -> torch.Tensor:
    """``x`` with coordinate ``coord`` of the given rows (axis 1) set to ``value``."""
    x = x.clone()
    x[:, rows, coord] = value
    return x


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_iou_with_a_nan_or_infinite_box_is_zero(dtype: torch.dtype, value: float):
    """Policy: a box with a NaN or infinite coordinate overlaps nothing (IoU 0 with every box,
    like a padded row); the IoUs of the other boxes do not change."""
    a, b = boxes(2, 6, dtype=dtype), boxes(2, 4, seed=1, dtype=dtype)
    b[:, 3] = a[:, 4]  # a perfect overlap that a spoiled coordinate must cancel
    for coord in range(4):
        sa, sb = _spoil(a, [1, 4], value, coord), _spoil(b, [3], value, coord)
        for fmt in ("corner", "center"):
            for offset, eps in ((0, 1e-15), (1, 1e-15), (0, 0.0)):
                out = box_iou(sa, sb, fmt=fmt, offset=offset, eps=eps)
                assert out.dtype == dtype and bool(torch.isfinite(out).all())
                assert not out[:, [1, 4]].any() and not out[:, :, 3].any()
                clean = box_iou(a, b, fmt=fmt, offset=offset, eps=eps)
                keep = [0, 2, 3, 5]
                assert torch.equal(out[:, keep, :3], clean[:, keep, :3])


def test_iou_of_boxes_beyond_the_float_range_is_zero():
    """Finite coordinates whose area overflows count as not finite (float32)."""
    a = torch.tensor([[[-3e38, 0.0, 3e38, 0.0], [-3e38, -3e38, 3e38, 3e38], [0.0, 0.0, 10.0, 10.0]]])
    out = box_iou(a, a)
    assert bool(torch.isfinite(out).all())
    assert out.tolist() == [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]


@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_iou_without_intersection_is_zero_even_for_degenerate_boxes_and_eps_0(dtype: torch.dtype):
    """Inverted (on one or both axes) and zero-area boxes intersect nothing: IoU exactly 0,
    never ``0 / 0`` = NaN or ``-0.0``, also with ``eps=0``."""
    a = torch.tensor(
        [
            [
                [0.0, 0.0, -2.0, 2.0],
                [0.0, 0.0, 2.0, -2.0],
                [2.0, 2.0, 0.0, 0.0],
                [1.0, 1.0, 1.0, 1.0],
                [0, 0, 0, 2],
            ]
        ],
        dtype=dtype,
    )
    b = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 4.0], [5.0, 5.0, 5.0, 5.0]]], dtype=dtype)
    for eps in (1e-15, 0.0):
        for x, y in ((a, b), (a, a), (b, a)):
            out = box_iou(x, y, eps=eps)
            assert bool(torch.isfinite(out).all()) and bool((out >= 0).all())
            assert not torch.signbit(out).any(), "no -0.0"
    assert not box_iou(a, b, eps=0.0).any()


def _pipeline(anchors: torch.Tensor, refs: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """IoU -> every matcher -> every sampler -> every encoder, as a training step runs them."""
    ious = box_iou(anchors, refs)
    B, N, M = ious.shape
    out: dict[str, torch.Tensor] = {"ious": ious}
    out["match_bipartite"] = bipartite_match(ious)
    out["match_bipartite_own_max"] = bipartite_match(ious, share_max=False)
    out["match_bipartite_thresh"] = bipartite_match(ious, threshold=0.3, recover=False)
    out["match_maximum"] = maximum_match(ious, 0.5)
    out["match_composite"] = CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)])(ious)
    matches = out["match_composite"]
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, N, C, generator=g).to(anchors.dtype)
    out["sample_naive"] = naive_sample(matches)
    out["sample_ohem"] = ohem_sample(matches, logits, ious, ratio=3, min_samples=4)
    out["sample_quota"] = quota_sample(matches, ious, 16, 0.5, 0.3, generator=g)
    out["sample_quota_low"] = quota_sample(matches, ious, 16, 0.05, 0.01, neg_thresh_low=0.0, generator=g)
    labels = torch.randint(0, C - 1, (B, M), generator=g)
    for kind in ("naive", "ohem", "quota"):  # quota_low makes positives of unmatched anchors: no targets
        samples = out[f"sample_{kind}"]
        out[f"targets_{kind}"], out[f"masks_{kind}"] = encode_boxes(samples, matches, anchors, refs)
        t, m, idx = encode_boxes_per_class(samples, matches, anchors, labels, refs, C - 1, max_pos=K)
        out[f"pc_targets_{kind}"], out[f"pc_masks_{kind}"], out[f"pc_indices_{kind}"] = t, m, idx
        out[f"classes_{kind}"] = encode_class(samples, matches, labels)
    return out


def _spoiled_scene(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Anchors and references where some boxes of each carry NaN or infinite coordinates.

    References 0-2 are clean copies of anchors 10-12, references 3-5 spoiled copies of
    anchors 13-15 (which they would match perfectly), then 2 padded rows. Anchors 20 and 21
    are spoiled copies of anchors 10 and 11, anchors 0-2 spoiled random boxes.
    """
    anchors = boxes(2, 40, seed=5, dtype=dtype)
    refs = torch.cat([anchors[:, 10:16], torch.full((2, 2, 4), float(PAD), dtype=dtype)], 1)
    anchors[:, [20, 21]] = anchors[:, [10, 11]]
    bad_anchors, bad_refs = [0, 1, 2, 20, 21], [3, 4, 5]
    values = [math.nan, math.inf, -math.inf, math.nan, math.inf]
    for row, value, coord in zip(bad_anchors, values, (0, 1, 2, 3, 0)):
        anchors[:, row, coord] = value
    for row, value, coord in zip(bad_refs, values, (2, 3, 0)):
        refs[:, row, coord] = value
    return anchors, refs, bad_anchors, bad_refs


@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_nan_or_infinite_boxes_never_match_become_positive_or_give_non_finite_targets(dtype: torch.dtype):
    anchors, refs, bad_anchors, bad_refs = _spoiled_scene(dtype)
    out = _pipeline(anchors, refs)
    assert bool(torch.isfinite(out["ious"]).all())
    for name, value in out.items():
        kind = name.split("_")[0]
        if kind == "match":
            assert bool((value[:, bad_anchors] == NO_MATCH).all()), name
            assert not bool(torch.isin(value, torch.tensor(bad_refs)).any()), name
            if name != "match_maximum":  # every clean object still gets an anchor
                assert all(bool((value == m).any(1).all()) for m in (0, 1, 2)), name
        elif kind == "sample":
            assert not bool((value[:, bad_anchors] == POS).any()), name
        elif kind in ("targets", "pc"):
            assert value.is_floating_point() is False or bool(torch.isfinite(value).all()), name
        elif kind == "masks":
            assert not bool(value[:, bad_anchors].any()), name
    for kind in ("naive", "ohem", "quota"):
        spoiled = torch.isin(out[f"pc_indices_{kind}"], torch.tensor(bad_anchors))
        assert not bool(out[f"pc_masks_{kind}"][spoiled].any())
    assert bool(out["masks_naive"].any()), "clean positives keep their targets"


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_encoders_drop_non_finite_targets_from_the_mask(dtype: torch.dtype, value: float):
    """Even when the caller pairs a positive with a spoiled box directly, the target that a
    mask keeps is finite: the pair is dropped (target 0, mask 0), the others are unchanged."""
    anchors, refs = boxes(1, 6, seed=6, dtype=dtype), boxes(1, 3, seed=7, dtype=dtype)
    samples = torch.tensor([[POS, POS, POS, POS, NEG, POS]])
    matches = torch.tensor([[0, 1, 2, 0, -1, 1]])
    bad_refs, bad_anchors = _spoil(refs, [1], value, 2), _spoil(anchors, [3], value, 0)
    clean_t, clean_m = encode_boxes(samples, matches, anchors, refs)
    for a, r, dropped in (
        (anchors, bad_refs, [1, 5]),
        (bad_anchors, refs, [3]),
        (bad_anchors, bad_refs, [1, 3, 5]),
    ):
        t, m = encode_boxes(samples, matches, a, r)
        assert bool(torch.isfinite(t).all())
        assert not t[:, dropped].any() and not m[:, dropped].any()
        kept = [n for n in range(6) if n not in dropped]
        assert torch.equal(t[:, kept], clean_t[:, kept]) and torch.equal(m[:, kept], clean_m[:, kept])
        labels = torch.tensor([[0, 1, 2]])
        pt, pm, idx = encode_boxes_per_class(samples, matches, a, labels, r, num_class=3, max_pos=4)
        assert bool(torch.isfinite(pt).all())
        assert not pm[torch.isin(idx, torch.tensor(dropped))].any()


HUGE = [1e4, -1e4, 1e30, -1e30, math.inf, -math.inf, 3.0e38, -3.0e38]


@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_decoders_stay_finite_for_huge_and_infinite_predictions(dtype: torch.dtype):
    """Every combination of huge/infinite offsets (exp overflow of the size terms, overflow of
    the center terms, inf * 0 on zero-size anchors) decodes to finite boxes."""
    values = torch.tensor(HUGE + [0.0, 1.0, -1.0])
    x = torch.cartesian_prod(values, values).repeat(1, 2)[None].to(dtype)  # (1, 121, 4): every pair
    n = x.shape[1]
    centers = torch.tensor([[50.0, 40.0, 20.0, 30.0], [5.0, 5.0, 0.0, 0.0], [1e4, 1e4, 1e4, 1e-3]])
    anchors = centers[torch.arange(n) % 3][None].to(dtype)
    for convert_anchor in (False, True):
        for clip in (None, 4.0):
            for means in ((0.0, 0.0, 0.0, 0.0), (0.5, -0.5, 1.0, -1.0)):
                dec = NormalizedBoxCenterDecoder(means=means, convert_anchor=convert_anchor, clip=clip)
                out = dec(x, center_to_corner(anchors) if convert_anchor else anchors)
                assert out.dtype == dtype and bool(torch.isfinite(out).all())
                assert bool((out[..., 2:] >= out[..., :2]).all()), "xmax >= xmin, ymax >= ymin"


def test_decoder_keeps_nan_predictions_nan():
    """A NaN prediction is a bug upstream: its box stays NaN (other boxes are untouched)."""
    x = torch.zeros(1, 3, 4)
    x[0, 1, 2] = math.nan
    out = decode_boxes(x, torch.tensor([[[5.0, 5.0, 2.0, 2.0]] * 3]))
    assert bool(out[0, 1, [0, 2]].isnan().all()) and bool(torch.isfinite(out[0, [0, 2]]).all())


@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
def test_samplers_never_make_a_positive_of_a_nan_overlap(dtype: torch.dtype):
    """IoU matrices from elsewhere may hold NaN: an unmatched anchor whose overlap is NaN is
    never a positive."""
    g = torch.Generator().manual_seed(8)
    ious = torch.rand(2, 30, 4, generator=g, dtype=torch.float64).to(dtype)
    ious[:, ::3] = math.nan
    ious[:, 1::3, 0] = math.nan
    matches = torch.full((2, 30), NO_MATCH)
    for pos_thresh in (0.0, 0.5, 0.9):
        samples = quota_sample(matches, ious, 30, pos_thresh, 0.3, generator=g)
        assert not bool((samples[:, ::3] == POS).any())
    samples = ohem_sample(
        matches, torch.randn(2, 30, 3, generator=g).to(dtype), ious, ratio=3, min_samples=30
    )
    assert not bool((samples == POS).any())


def test_clip_to_image_maps_infinity_into_the_image_and_keeps_nan():
    x = torch.tensor([[[-math.inf, 2.0, math.inf, math.nan]]])
    out = clip_to_image(x, height=10, width=20)
    assert out[0, 0, :3].tolist() == [0.0, 2.0, 20.0] and math.isnan(out[0, 0, 3])


# ======================================================================= fuzzing
FUZZ = settings(
    max_examples=30,  # per dtype
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Coordinates of every scale: tiny (1e-6), image-sized, huge (1e6), and their signs.
COORDS = st.one_of(
    st.floats(-1e-6, 1e-6),
    st.floats(-10.0, 4096.0),
    st.floats(-1e6, 1e6),
    st.sampled_from([0.0, -1.0, 1e-6, 1e6, -1e6, 4096.0]),
)
SIDES = st.one_of(st.just(0.0), st.floats(1e-6, 1e-3), st.floats(0.0, 1e6))


@st.composite
def box_lists(draw: st.DrawFn, count: int) -> list[list[float]]:
    """``count`` boxes, each arbitrary (often inverted), proper (zero-area allowed) or tiny."""
    out = []
    for _ in range(count):
        kind = draw(st.sampled_from(["arbitrary", "proper", "proper", "proper"]))
        if kind == "arbitrary":
            out.append([draw(COORDS) for _ in range(4)])
        else:
            x, y, w, h = draw(COORDS), draw(COORDS), draw(SIDES), draw(SIDES)
            out.append([x, y, x + w, y + h])
    return out


@st.composite
def scenes(draw: st.DrawFn, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``anchors (B, N, 4)``, ``refs (B, M, 4)`` with padded rows, and which refs are padding."""
    B, N, M = draw(st.integers(1, 3)), draw(st.integers(0, 12)), draw(st.integers(0, 6))
    anchors = torch.tensor(draw(box_lists(B * N)), dtype=torch.float64).reshape(B, N, 4)
    refs = torch.tensor(draw(box_lists(B * M)), dtype=torch.float64).reshape(B, M, 4)
    if N and M:  # some references copy (or nearly copy) anchors: real overlaps
        for b in range(B):
            for m in range(M):
                if draw(st.booleans()):
                    refs[b, m] = anchors[b, draw(st.integers(0, N - 1))] * draw(st.sampled_from([1.0, 1.01]))
    padded = torch.zeros(B, M, dtype=torch.bool)
    for b in range(B):
        padded[b, M - draw(st.one_of(st.integers(0, M // 2), st.just(M))) :] = True  # padding at the end
    refs[padded] = float(PAD)
    if dtype == torch.float16:  # float16 boxes: coordinates and their differences below 65504
        anchors, refs = anchors.clamp(-3e4, 3e4), refs.clamp(-3e4, 3e4)
    return anchors.to(dtype), refs.to(dtype), padded


@pytest.mark.parametrize("dtype", FLOATS, ids=_ids)
@FUZZ
@given(
    data=st.data(), threshold=st.floats(0.05, 1.0), share_max=st.booleans(), seed=st.integers(0, 2**31 - 1)
)
def test_fuzz_the_target_pipeline_stays_in_its_documented_ranges(dtype, data, threshold, share_max, seed):
    """Arbitrary finite boxes and padding through IoU, matchers, samplers, encoders and the
    decoder: no exception, IoU in [0, 1], matches in [-1, M) and never a padded row,
    samples in {-1, 0, 1} with positives exactly where the sampler's rule says, finite
    targets, masks only at positives, finite decoded boxes."""
    anchors, refs, padded = data.draw(scenes(dtype), label="scene")
    B, N, M = anchors.shape[0], anchors.shape[1], refs.shape[1]
    for fmt, offset, eps in (("corner", 0, 1e-15), ("center", 1, 0.0), ("corner", 0, 0.0)):
        ious = box_iou(anchors, refs, fmt=fmt, offset=offset, eps=eps)
        assert ious.shape == (B, N, M) and ious.dtype == anchors.dtype
        assert bool(((ious >= 0) & (ious <= 1)).all()), "IoU in [0, 1], never NaN"
    ious = box_iou(anchors, refs)
    assert not bool(ious.transpose(1, 2)[padded].any()), "a padded row overlaps nothing"
    matchers = {
        "bipartite": lambda x: bipartite_match(x, share_max=share_max),
        "greedy": lambda x: bipartite_match(x, threshold=threshold, recover=False),
        "maximum": lambda x: maximum_match(x, threshold),
        "composite": lambda x: composite_match(
            x, [BipartiteMatcher(share_max=share_max), MaximumMatcher(threshold)]
        ),
    }
    for name, match in matchers.items():
        matches = match(ious)
        assert matches.dtype == torch.int64 and matches.shape == (B, N)
        assert bool(((matches >= NO_MATCH) & (matches < M)).all()), name
        matched = matches >= 0
        picked = torch.cat([ious, ious.new_zeros(B, N, 1)], 2).gather(2, matches.clamp(min=0)[..., None])[
            ..., 0
        ]
        assert bool((picked[matched] > 0).all()), f"{name}: a match has a positive overlap"
        if name == "greedy":
            assert bool((picked[matched] > threshold).all())
            for b in range(B):  # one-to-one
                assert len(set(matches[b][matched[b]].tolist())) == int(matched[b].sum())
    matches = composite_match(ious, [BipartiteMatcher(share_max=share_max), MaximumMatcher(threshold)])
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, N, C, generator=g) * 10).to(anchors.dtype)
    samplers = {
        "naive": naive_sample(matches),
        "ohem": ohem_sample(matches, logits, ious, ratio=3, min_samples=2),
        "quota": quota_sample(matches, ious, 8, 0.5, 0.3, generator=g),
    }
    for name, samples in samplers.items():
        assert samples.dtype == torch.int64 and samples.shape == (B, N)
        assert bool(torch.isin(samples, torch.tensor([NEG, IGN, POS])).all()), name
        assert not bool((samples[matches >= 0] == NEG).any()), f"{name}: a matched anchor is never negative"
        if name != "quota":
            assert torch.equal(samples == POS, matches >= 0), name
    labels = torch.randint(0, C - 1, (B, M), generator=g)
    for name in ("naive", "ohem"):
        samples = samplers[name]
        targets, masks = encode_boxes(samples, matches, anchors, refs)
        assert targets.dtype == masks.dtype == anchors.dtype
        assert bool(torch.isfinite(targets).all()), "targets are finite (1e-6 size floor, saturation)"
        assert torch.equal(masks.bool().all(-1), masks.bool().any(-1)), "a mask is all or nothing per anchor"
        assert not bool(masks[samples != POS].any()), "masks only at positives"
        t, m, idx = encode_boxes_per_class(samples, matches, anchors, labels, refs, C - 1, max_pos=K)
        assert bool(torch.isfinite(t).all()) and bool(((idx >= -1) & (idx < N)).all())
        assert bool(m.sum((2, 3)).le(4).all()), "at most one class kept per anchor"
        cls = encode_class(samples, matches, labels)
        assert bool(((cls >= -1) & (cls <= C - 1)).all())
        decoded = decode_boxes(targets, corner_to_center(anchors))
        assert decoded.dtype == anchors.dtype and bool(torch.isfinite(decoded).all())


ANY_DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool]


@st.composite
def any_tensors(draw: st.DrawFn) -> torch.Tensor:
    """A tensor of any rank up to 4, small (possibly empty) sizes, any dtype, values in [-2, 4]."""
    shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5]), max_size=4))
    dtype = draw(st.sampled_from(ANY_DTYPES))
    values = torch.randint(-2, 5, shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    return values.to(dtype)


#: Every tensor entry point, called with generated tensors.
ENTRY_POINTS: dict[str, tuple[int, Callable[..., object]]] = {
    "box_iou": (2, box_iou),
    "box_iou_center": (2, lambda a, b: box_iou(a, b, fmt="center", offset=1)),
    "box_area": (1, box_area),
    "corner_to_center": (1, corner_to_center),
    "center_to_corner": (1, lambda x: center_to_corner(x, split=True)),
    "bbox_split": (1, lambda x: bbox_split(x, axis=1)),
    "clip_to_image": (2, clip_to_image),
    "encode_boxes": (4, encode_boxes),
    "encode_boxes_per_class": (5, lambda s, m, a, lab, r: encode_boxes_per_class(s, m, a, lab, r, 3, 4)),
    "encode_class": (3, encode_class),
    "encode_sigmoid_class": (1, encode_sigmoid_class),
    "decode_boxes": (2, decode_boxes),
    "decode_class": (1, decode_class),
    "decode_per_class": (1, MultiPerClassDecoder(3)),
    "maximum_match": (1, MaximumMatcher(0.5)),
    "bipartite_match": (1, bipartite_match),
    "composite_match": (1, CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)])),
    "naive_sample": (1, naive_sample),
    "ohem_sample": (3, lambda m, lg, i: ohem_sample(m, lg, i, 3)),
    "quota_sample": (2, lambda m, i: quota_sample(m, i, 4, 0.5, 0.3)),
    "QuotaSamplerOp": (3, lambda m, i, k: QuotaSamplerOp(m, i, k, *OP_ARGS)),
    "ConvPredictor": (1, lambda x: ConvPredictor(2, in_channels=3)(x)),
    "FCPredictor": (1, lambda x: FCPredictor(2)(x)),
    "match_boxes": (2, lambda a, b: match_boxes(a, b, [BipartiteMatcher(), MaximumMatcher(0.5)])),
}


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(ENTRY_POINTS)), data=st.data())
def test_fuzz_any_tensor_input_gives_a_result_or_a_documented_error(name: str, data: st.DataObject):
    """Tensors of any rank, size and dtype: every entry point returns, or raises the
    ``ValueError``/``TypeError`` of its argument checks; never an error from deep inside."""
    arity, fn = ENTRY_POINTS[name]
    args = [data.draw(any_tensors(), label=f"arg{i}") for i in range(arity)]
    try:
        fn(*args)
    except (ValueError, TypeError) as err:
        assert re.match(r"^[\w\[\]]+ must |^batch size of |^a and b must|^clip_to_image needs", str(err)), err


# ======================================================================= half precision
def ssd_anchors(size: int = 4096) -> torch.Tensor:
    """SSD-style anchors on a ``size`` px square image: strides 64-512, sides 96-768 px, aspect
    ratios 1/2, 1, 2, clipped to the image (N = 16320 at 4096 px). Corner form, float32."""
    out = []
    for stride, side in ((64, 96), (128, 192), (256, 384), (512, 768)):
        centers = torch.arange(stride / 2, size, stride)
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")
        for ratio in (0.5, 1.0, 2.0):
            w, h = side * math.sqrt(ratio), side / math.sqrt(ratio)
            out.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(-1, 4))
    return torch.cat(out).clamp(0, size)


def objects(batch: int, count: int, size: int = 4096, seed: int = 0) -> torch.Tensor:
    """Ground-truth boxes with log-uniform sides of 32-1024 px inside the image, float32."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.exp(torch.rand(batch, count, 2, generator=g) * math.log(1024 / 32)) * 32
    xy = torch.rand(batch, count, 2, generator=g) * (size - wh)
    return torch.cat([xy, xy + wh], -1)


def iou_rounding_bound(a: torch.Tensor, b: torch.Tensor, u: float) -> torch.Tensor:
    """How far the IoU of every pair can move when each coordinate ``c`` of ``a (B, N, 4)`` and
    ``b (B, M, 4)`` is rounded to a dtype of unit roundoff ``u`` (error at most ``u * |c|``)
    and the IoU itself is rounded to that dtype: ``Tensor[B, N, M]`` (float64).

    Worst case over all the roundings: intersection sides move by at most the rounding of
    the two coordinates that bound them (boxes further apart than that keep IoU 0), areas
    by that of their sides, and ``|I'/U' - I/U| <= (|dI| + IoU |dU|) / (U - |dU|)``.
    """
    a, b = a.double(), b.double()
    al, at, ar, ab = (a[..., k, None] for k in range(4))  # (B, N, 1)
    bl, bt, br, bb = (b[..., None, :, k] for k in range(4))  # (B, 1, M)
    dal, dat, dar, dab = (v.abs() * u for v in (al, at, ar, ab))
    dbl, dbt, dbr, dbb = (v.abs() * u for v in (bl, bt, br, bb))
    iw = torch.minimum(ar, br) - torch.maximum(al, bl)  # (B, N, M), negative when apart
    ih = torch.minimum(ab, bb) - torch.maximum(at, bt)
    diw = torch.maximum(dar, dbr) + torch.maximum(dal, dbl)
    dih = torch.maximum(dab, dbb) + torch.maximum(dat, dbt)
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    inter_max = (iw + diw).clamp(min=0) * (ih + dih).clamp(min=0)
    inter_min = (iw - diw).clamp(min=0) * (ih - dih).clamp(min=0)
    d_inter = torch.maximum(inter_max - inter, inter - inter_min)
    d_area_a = (ar - al) * (dat + dab) + (ab - at) * (dal + dar) + (dal + dar) * (dat + dab)
    d_area_b = (br - bl) * (dbt + dbb) + (bb - bt) * (dbl + dbr) + (dbl + dbr) * (dbt + dbb)
    union = (ar - al) * (ab - at) + (br - bl) * (bb - bt) - inter
    d_union = d_area_a + d_area_b + d_inter
    iou = inter / union
    bound = (d_inter + iou * d_union) / (union - d_union).clamp(min=1e-300)
    bound = torch.where(union > d_union, bound, 1.0)
    return bound + iou * (u + 1e-6)  # + the rounding of the result and of float32 arithmetic


def unexplained_differences(
    iou: torch.Tensor,
    bound: torch.Tensor,
    want: torch.Tensor,
    got: torch.Tensor,
    threshold: float,
    one_to_one: bool,
) -> list[tuple[int, int]]:
    """Anchors whose match differs between ``want`` (from ``iou``) and ``got`` (from ``iou``
    perturbed by at most ``bound``) for no *near-tie*.

    A near-tie is a comparison the matcher makes whose outcome the perturbation can flip,
    that is two IoUs ``p``, ``q`` with ``|iou_p - iou_q| <= bound_p + bound_q``, or an IoU
    within its bound of ``threshold``. Per anchor: its old and new reference (one row). For
    one-to-one (greedy bipartite) matching also one column: the anchor and the one that
    holds that reference in the other result; an anchor displaced by an explained
    difference elsewhere (greedy choices depend on each other) is explained too; and the
    recovery step's comparison with a column maximum held by another anchor.
    """
    lo, hi = iou - bound, iou + bound
    B, N, M = iou.shape
    col_best = iou.argmax(1)  # (B, M)
    holders = [[{r: n for n, r in enumerate(m[b].tolist()) if r >= 0} for b in range(B)] for m in (want, got)]

    def overlap(b: int, n1: int, r1: int, n2: int, r2: int) -> bool:
        return bool(hi[b, n1, r1] >= lo[b, n2, r2]) and bool(hi[b, n2, r2] >= lo[b, n1, r1])

    def near_threshold(b: int, n: int, r: int) -> bool:
        return abs(float(iou[b, n, r]) - threshold) <= float(bound[b, n, r])

    differ = [tuple(d) for d in (want != got).nonzero().tolist()]
    explained = {
        (b, n)
        for b, n in differ
        if (want[b, n] >= 0 and got[b, n] >= 0 and overlap(b, n, int(want[b, n]), n, int(got[b, n])))
        or any(near_threshold(b, n, int(r)) for r in (want[b, n], got[b, n]) if r >= 0)
    }
    grew = one_to_one
    while grew:
        grew = False
        for b, n in differ:
            if (b, n) in explained:
                continue
            old, new = int(want[b, n]), int(got[b, n])
            ok = False
            for r in (r for r in (old, new) if r >= 0):
                other = holders[1 if r == old else 0][b].get(r)
                ok = ok or (other is not None and (overlap(b, n, r, other, r) or (b, other) in explained))
            if not ok and (old < 0 or new < 0):  # recovery: may or may not tie a column maximum
                best = col_best[b]  # (M,)
                ties = (hi[b, n] + 1e-12 >= lo[b, best, torch.arange(M)]) & (best != n)
                ok = bool((ties & (iou[b].amax(0) + bound[b].amax(0) > threshold)).any())
            if ok:
                explained.add((b, n))
                grew = True
    return [d for d in differ if d not in explained]


#: name: (matcher, the threshold its comparisons involve, one-to-one step)
MATCHERS = {
    "maximum": (MaximumMatcher(0.5), 0.5, False),
    "bipartite": (BipartiteMatcher(), 1e-12, True),
    "composite": (CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)]), 0.5, True),
}


@functools.cache
def scene_4096() -> dict[str, object]:
    """2 images of 4096 x 4096 px: 16320 SSD anchors, 30 objects each; float32 IoU and matches."""
    a, b = ssd_anchors()[None].expand(2, -1, -1), objects(2, 30)
    ious = box_iou(a, b)
    return {"a": a, "b": b, "ious": ious, "matches": {k: m(ious) for k, (m, _, _) in MATCHERS.items()}}


@functools.cache
def half_4096(half: torch.dtype) -> dict[str, torch.Tensor]:
    """The scene's boxes rounded to ``half``, their IoU, and the bound of its rounding error."""
    a, b = scene_4096()["a"], scene_4096()["b"]
    ah, bh = a.to(half), b.to(half)  # type: ignore[union-attr]
    return {"a": ah, "b": bh, "ious": box_iou(ah, bh), "bound": iou_rounding_bound(a, b, UNIT_ROUNDOFF[half])}


@pytest.mark.parametrize("half", HALVES, ids=_ids)
def test_half_precision_adds_nothing_but_the_rounding_of_the_result(half: torch.dtype):
    """On the same (half) inputs, IoU, targets and decoded boxes are float32's rounded once to
    the half dtype, and matches are float32's except where that rounding makes a near-tie."""
    h = half_4096(half)
    a, b, ious = h["a"], h["b"], h["ious"]
    a32, b32 = a.float(), b.float()
    ious32 = box_iou(a32, b32)
    assert ious.dtype == half and torch.equal(ious, ious32.to(half))
    u = UNIT_ROUNDOFF[half]
    for name, (match, threshold, one_to_one) in MATCHERS.items():
        want, got = match(ious32), match(ious)
        rounding = ious32.double() * u * (1 + 1e-6)
        assert not unexplained_differences(ious32.double(), rounding, want, got, threshold, one_to_one), name
    matches = match(ious32)  # the composite matcher's
    samples = naive_sample(matches)
    targets, masks = encode_boxes(samples, matches, a, b)
    want_t, want_m = encode_boxes(samples, matches, a32, b32)
    assert (
        targets.dtype == half
        and torch.equal(targets, want_t.to(half))
        and torch.equal(masks, want_m.to(half))
    )
    centers = corner_to_center(a32).to(half)
    decoded = decode_boxes(targets, centers)
    assert torch.equal(decoded, decode_boxes(targets.float(), centers.float()).to(half))


@pytest.mark.parametrize("half", HALVES, ids=_ids)
def test_half_iou_agrees_with_float32_within_the_rounding_of_the_inputs(half: torch.dtype):
    h = half_4096(half)
    err = (h["ious"].double() - scene_4096()["ious"].double()).abs()  # type: ignore[union-attr]
    assert bool((err <= h["bound"]).all()), "the IoU moves no more than the rounding of its inputs allows"
    print(f"{half}: max |IoU - IoU_float32| = {float(err.max()):.4f}")
    assert float(err.max()) <= {torch.float16: 0.02, torch.bfloat16: 0.15}[half]


@pytest.mark.parametrize("half", HALVES, ids=_ids)
def test_half_matches_equal_float32_except_at_near_ties(half: torch.dtype):
    h, ref = half_4096(half), scene_4096()
    for name, (match, threshold, one_to_one) in MATCHERS.items():
        want, got = ref["matches"][name], match(h["ious"])  # type: ignore[index]
        ious = ref["ious"].double()  # type: ignore[union-attr]
        assert not unexplained_differences(ious, h["bound"], want, got, threshold, one_to_one), name
        differ, matched = int((want != got).sum()), int((want >= 0).sum())
        print(f"{half} {name}: {differ} of {matched} matched anchors differ, all at near-ties")


def target_rounding_bound(
    samples, matches, anchors, refs, u: float, stds=(0.1, 0.1, 0.2, 0.2)
) -> torch.Tensor:
    """How far each box target can move when the corner coordinates are rounded to a dtype of
    unit roundoff ``u`` (and the target itself is rounded): ``Tensor[B, N, 4]`` (float64)."""
    a = anchors.double()
    g = torch.gather(refs.double(), 1, matches.clamp(min=0)[..., None].expand(-1, -1, 4))
    da, dg = a.abs() * u, g.abs() * u
    out = []
    for k in (0, 1):  # center offsets: (g_c - a_c + e1) / (a_w + e2)
        size, center = a[..., k + 2] - a[..., k], (a[..., k] + a[..., k + 2]) / 2
        offset = (g[..., k] + g[..., k + 2]) / 2 - center
        e1 = (dg[..., k] + dg[..., k + 2] + da[..., k] + da[..., k + 2]) / 2
        e2 = da[..., k] + da[..., k + 2]
        out.append((e1 + (offset / size).abs() * e2) / (size - e2) / stds[k])
    for k in (0, 1):  # log size ratios: log((g_w + e3) / (a_w + e2))
        a_size, g_size = a[..., k + 2] - a[..., k], g[..., k + 2] - g[..., k]
        e2, e3 = da[..., k] + da[..., k + 2], dg[..., k] + dg[..., k + 2]
        out.append((-torch.log1p(-e3 / g_size) - torch.log1p(-e2 / a_size)) / stds[k + 2])
    bound = torch.stack([out[0], out[1], out[2], out[3]], -1)
    targets, _ = encode_boxes(samples, matches, anchors.double(), refs.double())
    return (bound + u * targets.abs() + 1e-5 * (1 + targets.abs())) * (samples == POS)[..., None]


@pytest.mark.parametrize("half", HALVES, ids=_ids)
def test_half_encodings_agree_with_float32_within_the_rounding_of_the_inputs(half: torch.dtype):
    ref, h = scene_4096(), half_4096(half)
    a, b, matches = ref["a"], ref["b"], ref["matches"]["composite"]  # type: ignore[index]
    samples = naive_sample(matches)
    want, _ = encode_boxes(samples, matches, a, b)
    got, masks = encode_boxes(samples, matches, h["a"], h["b"])
    assert torch.equal(masks.bool(), (samples == POS)[..., None].expand_as(masks))
    err = (got.double() - want.double()).abs()
    assert bool((err <= target_rounding_bound(samples, matches, a, b, UNIT_ROUNDOFF[half])).all())
    # In pixels: the half targets decoded on the float32 anchors, against the objects.
    decoded = decode_boxes(got.float(), corner_to_center(a))[samples == POS]
    picked = torch.gather(b, 1, matches.clamp(min=0)[..., None].expand(-1, -1, 4))[samples == POS]
    px = float((decoded - picked).abs().max())
    print(f"{half}: max |target - target_float32| = {float(err.max()):.4f}, decoded boxes within {px:.2f} px")


def test_near_tie_rule_does_not_excuse_real_disagreements():
    """The rule above has teeth: dropping clear float32 matches (best IoU above 0.6 and 0.2
    ahead of the second), or swapping the references of two clear one-to-one matches, is
    never excused as a float16 near-tie."""
    ref, h = scene_4096(), half_4096(torch.float16)
    ious = ref["ious"]  # type: ignore[index]
    want = ref["matches"]["maximum"]  # type: ignore[index]
    top2 = ious.topk(2, -1).values  # type: ignore[union-attr]
    clear = (want >= 0) & (top2[..., 0] > 0.6) & (top2[..., 0] - top2[..., 1] > 0.2)
    assert int(clear.sum()) >= 3
    got = torch.where(clear, NO_MATCH, want)
    unexplained = unexplained_differences(ious.double(), h["bound"], want, got, 0.5, False)  # type: ignore[union-attr]
    assert sorted(unexplained) == sorted(tuple(d) for d in clear.nonzero().tolist())

    want = ref["matches"]["bipartite"][:1]  # type: ignore[index]
    x = ious[:1].double()  # type: ignore[index]
    cols = x.topk(2, 1).values  # (1, 2, M): each reference's two best anchors
    m1, m2 = (cols[0, 0] - cols[0, 1]).topk(2).indices.tolist()  # the two clearest references
    n1, n2 = int(x[0, :, m1].argmax()), int(x[0, :, m2].argmax())
    assert int(want[0, n1]) == m1 and int(want[0, n2]) == m2
    got = want.clone()
    got[0, n1], got[0, n2] = m2, m1
    bound = h["bound"][:1]
    for n, m in ((n1, m1), (n2, m2)):  # clear: no other anchor or reference comes near
        assert float(cols[0, 0, m] - cols[0, 1, m]) > 2 * float(bound[0, :, m].max())
        assert float(x[0, n, m] - x[0, n].topk(2).values[1]) > 2 * float(bound[0, n].max())
    assert sorted(unexplained_differences(x, bound, want, got, 1e-12, True)) == sorted([(0, n1), (0, n2)])


# ======================================================================= determinism
def _quota_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ious = torch.rand(4, 3000, 6, generator=g)
    matches = torch.where(ious.amax(-1) > 0.9, ious.argmax(-1), NO_MATCH)
    return matches, ious


_QUOTA_IN_A_FRESH_PROCESS = """
import hashlib, torch
from detblocks.sampler import QuotaSampler
g = torch.Generator().manual_seed(0)
ious = torch.rand(4, 3000, 6, generator=g)
matches = torch.where(ious.amax(-1) > 0.9, ious.argmax(-1), -1)
torch.manual_seed(7)
out = QuotaSampler(256, 0.5, 0.3, pos_ratio=0.25)(matches, ious)
print(hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


@pytest.mark.cpu_only("the fresh process draws on the CPU")
def test_same_seed_same_samples_in_a_fresh_process():
    """``torch.manual_seed`` fixes the samples across runs: a new interpreter draws the same."""
    matches, ious = _quota_case()
    torch.manual_seed(7)
    here = QuotaSampler(256, 0.5, 0.3, pos_ratio=0.25)(matches, ious)
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    run = subprocess.run(
        [sys.executable, "-c", _QUOTA_IN_A_FRESH_PROCESS], capture_output=True, text=True, env=env, check=True
    )
    assert run.stdout.strip() == hashlib.sha256(here.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("seed", [0, 123456789])
def test_explicit_generator_equals_the_global_seed(seed: int):
    """A sampler given ``torch.Generator().manual_seed(s)`` draws exactly what it draws from
    the default generator after ``torch.manual_seed(s)``, and leaves the default generator
    untouched."""
    matches, ious = _quota_case(seed % 7)
    sampler = QuotaSampler(128, 0.5, 0.3, pos_ratio=0.3)
    torch.manual_seed(seed)
    from_global = sampler(matches, ious)
    state = torch.get_rng_state()
    from_generator = sampler(matches, ious, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(torch.get_rng_state(), state), "an explicit generator leaves the global one alone"
    assert torch.equal(from_global, from_generator)
    torch.manual_seed(seed)
    fn = quota_sample(matches, ious, 128, 0.5, 0.3, pos_ratio=0.3)
    assert torch.equal(fn, from_generator)


def _whole_step(anchors: torch.Tensor, refs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """One image batch's targets, every random draw seeded."""
    ious = box_iou(anchors, refs)
    matches = CompositeMatcher([BipartiteMatcher(), MaximumMatcher(0.5)])(ious)
    torch.manual_seed(3)
    samples = QuotaSampler(256, 0.5, 0.4, pos_ratio=0.25)(matches, ious)
    quota_gen = quota_sample(matches, ious, 64, 0.6, 0.3, generator=torch.Generator().manual_seed(5))
    logits = torch.randn(*matches.shape, C, generator=torch.Generator().manual_seed(6))
    ohem = ohem_sample(matches, logits, ious, ratio=3, min_samples=8)
    targets, masks = encode_boxes(samples, matches, anchors, refs)
    pc = encode_boxes_per_class(samples, matches, anchors, labels, refs, C - 1, max_pos=64)
    decoded = decode_boxes(targets, corner_to_center(anchors))
    return [ious, matches, samples, quota_gen, ohem, targets, masks, *pc, decoded]


@pytest.mark.cpu_only("thread counts of the CPU backend")
def test_whole_target_pipeline_is_bitwise_identical_with_one_or_two_threads():
    """IoU, matching (with exact ties), sampling, encoding and decoding of 4 x 4080 anchors
    (sizes where CPU kernels split work across threads) give the same bits with 1 and 2
    threads, and on a second run."""
    anchors = ssd_anchors(2048)[None].expand(4, -1, -1)
    refs = objects(4, 40, size=2048, seed=9)
    refs[:, ::5] = refs[:, 1::5]  # duplicated objects: exact ties for the matchers
    refs[:, -6:] = PAD
    labels = torch.randint(0, C - 1, (4, 40), generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            runs.append(_whole_step(anchors, refs, labels))
    finally:
        torch.set_num_threads(before)
    assert int((runs[0][1] >= 0).sum()) > 50, "the scene has matches"
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            assert torch.equal(x, y)


# ======================================================================= gradients
def _away_from_kinks(seed: int, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 boxes whose pairs overlap or are apart by clear margins (no intersection side,
    coordinate difference or area within 1e-3 of a kink of min/max/clamp)."""
    a = boxes(1, n, seed=seed, scale=10.0, dtype=torch.float64)
    b = (
        a[:, :m] + torch.randn(1, m, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ).clone()
    b[..., 2:] = torch.maximum(b[..., 2:], b[..., :2] + 0.5)
    for x, y in ((a, a), (a, b), (b, b)) if a.device.type != "meta" else ():  # (meta: no values)
        for k in range(4):
            diff = (x[..., :, None, k] - y[..., None, :, k]).abs()
            diff = diff[diff > 0] if x is y else diff
            assert bool((diff > 1e-3).all()), "coordinates must not tie"
        for lo, hi in ((0, 2), (1, 3)):
            side = torch.minimum(x[..., :, None, hi], y[..., None, :, hi]) - torch.maximum(
                x[..., :, None, lo], y[..., None, :, lo]
            )
            assert bool((side.abs() > 1e-3).all()), "no intersection side near 0"
    return a.requires_grad_(), b.requires_grad_()


def _conv_head(activation):
    head = ConvPredictor(3, activation=activation, in_channels=2).double()
    return lambda x, w, b: torch.func.functional_call(
        head, {"predictor.weight": w, "predictor.bias": b}, (x,)
    )


def _fc_head(activation):
    head = FCPredictor(3, activation=activation, in_features=8).double()
    return lambda x, w, b: torch.func.functional_call(
        head, {"predictor.weight": w, "predictor.bias": b}, (x,)
    )


def _gradcheck_cases() -> dict[str, tuple[Callable[..., object], tuple[torch.Tensor, ...]]]:
    a, b = _away_from_kinks(seed=11, n=5, m=3)
    ac = corner_to_center(a.detach()).requires_grad_()
    bc = corner_to_center(b.detach()).requires_grad_()
    g = torch.Generator().manual_seed(12)
    x = (torch.randn(1, 5, 4, generator=g, dtype=torch.float64) * 0.5).requires_grad_()  # within the clip
    img = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64).requires_grad_()
    feat = torch.rand(2, 8, generator=g, dtype=torch.float64).requires_grad_()
    conv_w = (torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    fc_w = (torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    inside = a.detach().clone().requires_grad_()  # every coordinate strictly inside [0, 12]
    cases = {
        "box_iou": (box_iou, (a, b)),
        "box_iou-offset-1": (lambda p, q: box_iou(p, q, offset=1), (a, b)),
        "box_iou-center": (lambda p, q: box_iou(p, q, fmt="center"), (ac, bc)),
        "BBoxBatchIOU-axis-1": (
            lambda p, q: BBoxBatchIOU(axis=1)(p.transpose(1, 2), q.transpose(1, 2)),
            (a, b),
        ),
        "box_area": (box_area, (a,)),
        "box_area-center": (lambda p: box_area(p, fmt="center"), (ac,)),
        "corner_to_center": (corner_to_center, (a,)),
        "corner_to_center-split": (lambda p: corner_to_center(p, split=True), (a,)),
        "center_to_corner": (center_to_corner, (ac,)),
        "BBoxCenterToCorner-axis-1": (lambda p: BBoxCenterToCorner(axis=1)(p.transpose(1, 2)), (ac,)),
        "bbox_split": (lambda p: bbox_split(p, axis=-1, squeeze_axis=True), (a,)),
        "clip_to_image": (lambda p: clip_to_image(p * 2 - 6, height=12.0, width=12.0), (inside,)),
        "decode_boxes": (lambda p: decode_boxes(p, ac.detach()), (x,)),
        "decode_boxes-anchors": (lambda p, q: decode_boxes(p, q, means=(0.1, -0.1, 0.2, 0.0)), (x, ac)),
        "NormalizedBoxCenterDecoder": (NormalizedBoxCenterDecoder(convert_anchor=True, clip=4.0), (x, a)),
    }
    for act in (None, "relu", "sigmoid", "tanh", "softrelu", "softsign"):
        cases[f"ConvPredictor-{act}"] = (_conv_head(act), (img, conv_w, bias))
        cases[f"FCPredictor-{act}"] = (_fc_head(act), (feat, fc_w, bias))
    return cases


GRADCHECK_CASES = _gradcheck_cases()


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_in_float64(name: str):
    fn, inputs = GRADCHECK_CASES[name]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only adds synchronisation
    try:
        assert torch.autograd.gradcheck(fn, inputs)
    finally:
        torch.set_num_threads(before)
