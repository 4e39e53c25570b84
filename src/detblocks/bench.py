"""Speed benchmark: detblocks against torchvision on the same inputs, in one process.

Usage::

    python -m detblocks.bench                  # five workloads, peak memory, scaling sweep
    python -m detblocks.bench --quick          # small sizes, one timed call each: a smoke run
    python -m detblocks.bench --workloads iou,ssd_decode --reps 15 --no-sweep
    python -m detblocks.bench --profile        # detblocks time per stage and per aten op
    python -m detblocks.bench --json runs/bench/results.json   # also dump every raw figure
    python -m detblocks.bench --workloads "" --no-sweep --modern tal,tal_crowded   # today's assigners
    python -m detblocks.bench --workloads "" --no-sweep --modern tal,tal_crowded,simota,dsl,atss,hungarian
    python -m detblocks.bench --workloads "" --no-sweep --lsa-sweep   # optimal-matching solver vs SciPy

``--modern`` runs the assigner workloads of the shared yardstick, 80 classes, ground truth
padded with -1 rows: ``tal`` (B=16, M=50, 1-50 objects) and ``tal_crowded`` (B=8, M=1500,
one image of 1500 small boxes): detblocks' ``TaskAlignedAssigner`` against ultralytics';
``simota`` and ``dsl`` (B=16, M=50, 1-50 objects; YOLOX's and RTMDet's priors):
``SimOTAAssigner`` and ``DynamicSoftLabelAssigner`` against mmdet's; all at 640 px with
8400 anchor points (strides 8/16/32); ``atss`` (B=16, M=50, 1-50 objects, the 18,134
anchors of P3-P7 on an 800x1088 batch): ``ATSSAssigner`` against mmdet's; ``hungarian``
(RT-DETR's step: B=16, 300 queries, M=50, 1-50 objects): ``matcher.HungarianMatcher``
against ultralytics'. mmdet's assigners are called per image with mmengine's
``InstanceData``, as the detectors' heads call them. Same inputs, alternating calls,
checks compared; where the reference is not installed detblocks runs alone and says so.

``--lsa-sweep`` (off by default) times the solver alone,
:func:`detblocks.matcher.linear_sum_assignment`, on random float32 costs ``(B, N, M)`` for
N = 100, 300, 900, 3000 queries x M = 10, 100, 300, 1000 references x B = 1, 16 (``--lsa-n``,
``--lsa-m``, ``--lsa-b``), against ``scipy.optimize.linear_sum_assignment`` on each image
where SciPy is installed (total costs compared); it prints ms per call and the ratio and
writes a plot to ``--lsa-out`` (default ``runs/bench/lsa_sweep.png``). Each cell makes at
least ``--reps`` timed calls, more for small cells, fewer (at least one) past 10 s.

Workloads (inputs generated here with fixed seeds; every library gets the same tensors):

==============  ============================================  =============================================
workload        shapes                                        detblocks pipeline
==============  ============================================  =============================================
``ssd_targets`` B=32, N=8732 SSD300 anchors, M=56 padded      BBoxBatchIOU -> CompositeMatcher(Bipartite(
                (1-20 real), logits (B, N, 21)                share_max=False), Maximum(0.5)) ->
                                                              OHEMSampler(3, thresh=0.5) ->
                                                              MultiClassEncoder + NormalizedBoxCenterEncoder
``rpn_targets`` B=2, N=242,991 FPN anchors (800x1216),        BBoxBatchIOU -> CompositeMatcher(Bipartite(
                M=100 padded (5-60 real)                      share_max=True), Maximum(0.7)) ->
                                                              QuotaSampler(256, 0.7, 0.3, pos_ratio=0.5) ->
                                                              NormalizedBoxCenterEncoder(stds=(1, 1, 1, 1))
``ssd_decode``  B=32, N=8732, C=81 softmax scores + deltas    NormalizedBoxCenterDecoder +
                                                              MultiPerClassDecoder(81, thresh=0.01)
``iou``         B=8, N=20000, M=100                           BBoxBatchIOU
``ssd_detect``  B=32, N=8732, C=81 logits + deltas            SSDDetectionOutput(80): softmax, decoders,
                                                              NMS (0.45) over the top 400, 100 kept
==============  ============================================  =============================================

The torchvision side does the same jobs the way torchvision's own SSD and RPN code do
them: ``box_iou``, ``SSDMatcher``/``Matcher``, ``BoxCoder``, hard-negative mining and
``BalancedPositiveNegativeSampler``, in per-image loops over unpadded ground truth (its
list-of-targets API has no padding convention). Both sides run alternately in this
process; the table gives median milliseconds per call and the ratio detblocks /
torchvision (below 1 is faster), next to a floor: the bytes a perfect implementation must
move (inputs read once, outputs written once) over the copy bandwidth measured at start.
Per-stage medians follow, and a check table of what each side produced (positives,
negatives, kept scores, sums) so a reader can see they do comparable work. On a machine
busy with other work, threads of small parallel operations wait for each other behind the
scheduler; ``--threads 1`` then gives steadier ratios.

Peak memory is measured in a fresh subprocess per (library, workload): after one warm-up
call the process's resident-set high-water mark is reset (``/proc/self/clear_refs``) and
one more call is made; the figure is that high-water mark minus the resident set just
before the call, i.e. the extra memory the call touches (intermediates and outputs; the
inputs are already resident). Linux only; shown as ``-`` elsewhere.

The scaling sweep times IoU + ``CompositeMatcher(BipartiteMatcher, MaximumMatcher(0.5))``
on one image over a grid of N anchors x M references, as one
:func:`~detblocks.matcher.match_boxes` call (which holds the whole IoU matrix up to
``DENSE_LIMIT`` entries and works in chunks of anchors above it), and, up to 2e8 pairs,
also as ``BBoxBatchIOU`` followed by the matcher. It prints milliseconds per million
(N x M) pairs, which stays flat when cost grows linearly in N x M, and the peak memory
of the ``match_boxes`` call; a PNG plot is written to ``--out``. Cells predicted not to
fit in the available memory (from the bytes per pair measured on the previous cell) are
skipped and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "WORKLOADS",
    "FULL_SIZES",
    "QUICK_SIZES",
    "WorkloadSize",
    "Pipeline",
    "ssd300_anchors",
    "fpn_anchors",
    "random_boxes",
    "padded_gt",
    "make_inputs",
    "torchvision_pipeline",
    "detblocks_pipeline",
    "compare",
    "checks_agree",
    "peak_memory_mb",
    "sweep",
    "main",
    "MODERN_WORKLOADS",
    "modern_inputs",
    "modern_pipelines",
    "run_modern",
    "MODERN_REFERENCE",
    "LsaCell",
    "lsa_sweep",
]

#: Base seed of every generated input (each workload adds its index).
SEED = 1234

#: The five workloads, in the order they are run and printed.
WORKLOADS = ("ssd_targets", "rpn_targets", "ssd_decode", "iou", "ssd_detect")

#: Project goal for each workload: detblocks time / torchvision time at or below this.
TARGET_RATIO = {"ssd_targets": 0.5, "rpn_targets": 0.5, "ssd_decode": 0.33, "iou": 0.33, "ssd_detect": 0.1}

#: SSD300's inference tail (GluonCV's and torchvision's defaults): NMS threshold, entries
#: that take part, detections kept per image.
SSD_DETECT = {"nms_thresh": 0.45, "nms_topk": 400, "post_nms": 100}

#: SSD box-coder weights: torchvision's ``BoxCoder(weights=(10, 10, 5, 5))`` is GluonCV's
#: ``stds=(0.1, 0.1, 0.2, 0.2)``.
SSD_STDS = (0.1, 0.1, 0.2, 0.2)

#: Time after which a sweep cell stops repeating its timed calls (the largest cells take
#: seconds per call; their medians gain little from more of them).
SWEEP_CELL_BUDGET_S = 20.0

#: Default output of the sweep plot (``runs/`` is not tracked).
DEFAULT_PLOT = Path("runs") / "bench" / "sweep.png"

State = dict[str, Any]
Stage = Callable[[State], None]


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class WorkloadSize:
    """Sizes of one workload.

    Attributes:
        batch: images per call (B).
        refs: ground-truth rows per image after padding (M); for ``iou`` the reference count.
        classes: class scores per anchor, background included (C); 0 when unused.
        real_refs: inclusive range of real (unpadded) ground-truth rows per image.
        image: (height, width) in pixels of the generated images.
        anchors: anchor count for ``iou`` (the other workloads derive N from their anchor layout).
    """

    batch: int
    refs: int = 0
    classes: int = 0
    real_refs: tuple[int, int] = (0, 0)
    image: tuple[int, int] = (300, 300)
    anchors: int = 0


#: The sizes of the shared benchmark: SSD300 VOC targets, FPN-RPN targets on 800x1216,
#: SSD300 COCO-style decoding, a plain batched IoU matrix.
FULL_SIZES: dict[str, WorkloadSize] = {
    "ssd_targets": WorkloadSize(batch=32, refs=56, classes=21, real_refs=(1, 20), image=(300, 300)),
    "rpn_targets": WorkloadSize(batch=2, refs=100, real_refs=(5, 60), image=(800, 1216)),
    "ssd_decode": WorkloadSize(batch=32, classes=81, image=(300, 300)),
    "iou": WorkloadSize(batch=8, refs=100, image=(1000, 1000), anchors=20000),
    "ssd_detect": WorkloadSize(batch=32, classes=81, image=(300, 300)),
}

#: Small sizes for ``--quick``: same layouts, a fraction of the work.
QUICK_SIZES: dict[str, WorkloadSize] = {
    "ssd_targets": replace(FULL_SIZES["ssd_targets"], batch=4),
    "rpn_targets": replace(FULL_SIZES["rpn_targets"], image=(320, 480)),
    "ssd_decode": replace(FULL_SIZES["ssd_decode"], batch=4),
    "iou": replace(FULL_SIZES["iou"], batch=2, anchors=2000),
    "ssd_detect": replace(FULL_SIZES["ssd_detect"], batch=4),
}


def ssd300_anchors() -> Tensor:
    """The anchors of GluonCV's ``ssd_300_vgg16_atrous_voc``.

    Six feature maps (38, 19, 10, 5, 3, 1 cells; steps 8 ... 300 pixels); per cell, in
    this order: a square of size s_k, a square of size sqrt(s_k * s_k+1), then s_k at
    each extra aspect ratio (2, 1/2 on every map, also 3, 1/3 on maps 2-4).

    Returns:
        Tensor[8732, 4]: center format (cx, cy, w, h) in pixels, float32.
    """
    sizes = (30.0, 60.0, 111.0, 162.0, 213.0, 264.0, 315.0)
    extra_ratios = ((2.0, 0.5),) + ((2.0, 0.5, 3.0, 1.0 / 3.0),) * 3 + ((2.0, 0.5),) * 2
    steps = (8, 16, 32, 64, 100, 300)
    grids = (38, 19, 10, 5, 3, 1)
    out = []
    for k, (grid, step, ratios) in enumerate(zip(grids, steps, extra_ratios)):
        s0, s1 = sizes[k], math.sqrt(sizes[k] * sizes[k + 1])
        wh = [(s0, s0), (s1, s1)] + [(s0 * math.sqrt(r), s0 / math.sqrt(r)) for r in ratios]
        wh_t = torch.tensor(wh, dtype=torch.float64)  # (A, 2)
        centers = (torch.arange(grid, dtype=torch.float64) + 0.5) * step
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")  # (G, G)
        ctr = torch.stack([cx, cy], dim=-1)[:, :, None, :].expand(grid, grid, len(wh), 2)
        size = wh_t.expand(grid, grid, len(wh), 2)
        out.append(torch.cat([ctr, size], dim=-1).reshape(-1, 4))
    return torch.cat(out).to(torch.float32)


def fpn_anchors(image_h: int, image_w: int) -> Tensor:
    """The anchors of torchvision's Faster R-CNN FPN RPN on one ``image_h x image_w`` image.

    ``AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)`` on
    P2..P6: grids ceil(H / s) for strides s = 4, 8, 16, 32, P6 = ceil(P5 / 2), stride
    ``image // grid`` per axis, base anchors rounded to whole pixels as torchvision does.

    Returns:
        Tensor[N, 4]: corner format (xmin, ymin, xmax, ymax) in pixels, float32; N =
        242,991 for 800x1216.
    """
    grids = [(-(-image_h // s), -(-image_w // s)) for s in (4, 8, 16, 32)]
    grids.append((-(-grids[-1][0] // 2), -(-grids[-1][1] // 2)))
    h_ratios = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float32).sqrt()
    out = []
    for size, (gh, gw) in zip((32, 64, 128, 256, 512), grids):
        ws, hs = (1.0 / h_ratios) * size, h_ratios * size
        base = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()  # (3, 4)
        sy = torch.arange(gh, dtype=torch.float32) * (image_h // gh)
        sx = torch.arange(gw, dtype=torch.float32) * (image_w // gw)
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (G, 1, 4)
        out.append((shifts + base[None]).reshape(-1, 4))
    return torch.cat(out)


def center_to_corner(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(xmin, ymin, xmax, ymax)`` over any leading dims."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def random_boxes(
    gen: torch.Generator, n: int, image: tuple[int, int], min_size: float, max_size: float
) -> Tensor:
    """``n`` boxes inside an image, log-uniform in size and in aspect ratio (1/2 to 2).

    Args:
        gen: the random generator (CPU).
        n: number of boxes.
        image: (height, width) in pixels.
        min_size, max_size: range of sqrt(w * h) in pixels.

    Returns:
        Tensor[n, 4]: corner format, float32, every box within the image.
    """
    img_h, img_w = image
    u = torch.rand(4, n, generator=gen, dtype=torch.float64)
    scale = torch.exp(math.log(min_size) + u[0] * (math.log(max_size) - math.log(min_size)))
    ratio = torch.exp(math.log(0.5) + u[1] * math.log(4.0))
    w = torch.clamp(scale * ratio.sqrt(), max=img_w - 1)
    h = torch.clamp(scale / ratio.sqrt(), max=img_h - 1)
    x0, y0 = u[2] * (img_w - w), u[3] * (img_h - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1).to(torch.float32)


def padded_gt(
    gen: torch.Generator,
    size: WorkloadSize,
    min_size: float,
    max_size: float,
    num_fg: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Ground truth padded GluonCV-style: real rows first, then rows of -1.

    Returns:
        boxes (Tensor[B, M, 4]) corner format, float32;
        ids (Tensor[B, M]) int64 class ids in ``[0, num_fg)`` (-1 on padded rows, and
        everywhere when ``num_fg`` is 0);
        counts (Tensor[B]) int64 number of real rows per image.
    """
    B, M = size.batch, size.refs
    lo, hi = size.real_refs
    boxes = torch.full((B, M, 4), -1.0)
    ids = torch.full((B, M), -1, dtype=torch.int64)
    counts = torch.randint(lo, hi + 1, (B,), generator=gen)
    for b, n in enumerate(counts.tolist()):  # input generation only, not timed
        boxes[b, :n] = random_boxes(gen, n, size.image, min_size, max_size)
        if num_fg:
            ids[b, :n] = torch.randint(0, num_fg, (n,), generator=gen)
    return boxes, ids, counts


def make_inputs(name: str, size: WorkloadSize, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The inputs of one workload, generated from a fixed seed.

    Returns a dict of tensors on ``device``:

    - ``ssd_targets``: ``anchors`` (N, 4) corner, ``gt_boxes`` (B, M, 4), ``gt_ids`` (B, M),
      ``n_gt`` (B,), ``logits`` (B, N, C);
    - ``rpn_targets``: ``anchors`` (N, 4) corner, ``gt_boxes`` (B, M, 4), ``n_gt`` (B,);
    - ``ssd_decode``: ``anchors_center`` / ``anchors`` (N, 4), ``box_preds`` (B, N, 4),
      ``scores`` (B, N, C) softmax with a dominant background (about 2% of foreground
      scores above 0.01, like a trained detector);
    - ``iou``: ``a`` (B, N, 4), ``b`` (B, M, 4) corner boxes in a 1000x1000 image;
    - ``ssd_detect``: as ``ssd_decode`` with the logits ``cls_preds`` (B, N, C) instead of the
      scores.
    """
    if name not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")
    gen = torch.Generator().manual_seed(SEED + WORKLOADS.index(name))
    B, C = size.batch, size.classes
    if name == "ssd_targets":
        anchors = center_to_corner(ssd300_anchors())
        gt, ids, n_gt = padded_gt(gen, size, 15.0, 280.0, num_fg=C - 1)
        logits = torch.randn(B, anchors.shape[0], C, generator=gen)
        out = dict(anchors=anchors, gt_boxes=gt, gt_ids=ids, n_gt=n_gt, logits=logits)
    elif name == "rpn_targets":
        anchors = fpn_anchors(*size.image)
        gt, _, n_gt = padded_gt(gen, size, 16.0, 640.0)
        out = dict(anchors=anchors, gt_boxes=gt, n_gt=n_gt)
    elif name == "ssd_decode":
        anchors = ssd300_anchors()
        N = anchors.shape[0]
        logits = 2.0 * torch.randn(B, N, C, generator=gen)
        logits[..., 0] += 10.0  # background dominates
        out = dict(
            anchors_center=anchors,
            anchors=center_to_corner(anchors),
            box_preds=torch.randn(B, N, 4, generator=gen),
            scores=logits.softmax(dim=-1),
        )
    elif name == "ssd_detect":
        anchors = ssd300_anchors()
        N = anchors.shape[0]
        logits = 2.0 * torch.randn(B, N, C, generator=gen)
        logits[..., 0] += 10.0  # background dominates: about 1.8% of foreground scores above 0.01
        box_preds = torch.randn(B, N, 4, generator=gen)
        out = dict(
            anchors_center=anchors, anchors=center_to_corner(anchors), box_preds=box_preds, cls_preds=logits
        )
    else:
        a = torch.stack([random_boxes(gen, size.anchors, size.image, 8.0, 512.0) for _ in range(B)])
        b = torch.stack([random_boxes(gen, size.refs, size.image, 16.0, 512.0) for _ in range(B)])
        out = dict(a=a, b=b)
    return {k: v.to(device) for k, v in out.items()}


def describe(name: str, inputs: dict[str, Tensor]) -> str:
    """A short ``B=.. N=.. M=..`` description of a workload's inputs; for padded ground
    truth also how many of the B x M rows are real (torchvision's loops see only those)."""
    if name == "iou":
        (B, N, _), M = inputs["a"].shape, inputs["b"].shape[1]
        return f"B={B} N={N} M={M}"
    if name in ("ssd_decode", "ssd_detect"):
        B, N, C = inputs["scores" if name == "ssd_decode" else "cls_preds"].shape
        return f"B={B} N={N} C={C}"
    B, M = inputs["gt_boxes"].shape[:2]
    text = f"B={B} N={inputs['anchors'].shape[0]} M={M}"
    text += f" C={inputs['logits'].shape[-1]}" if "logits" in inputs else ""
    return text + f" ({int(inputs['n_gt'].sum())} of {B * M} GT rows real)"


def min_bytes(name: str, inputs: dict[str, Tensor]) -> int:
    """Bytes a perfect implementation of workload ``name`` must move: every input read
    once and every output written once, in the dtypes of the contract (float32 boxes,
    targets, masks and scores; int64 samples, class targets and class ids), with no
    intermediate such as the (B, N, M) IoU matrix unless it is the output."""
    f, i = 4, 8
    if name == "iou":
        (B, N, _), M = inputs["a"].shape, inputs["b"].shape[1]
        return B * (N + M) * 4 * f + B * N * M * f
    if name == "ssd_decode":
        B, N, C = inputs["scores"].shape
        return B * N * 4 * f + N * 4 * f + B * N * C * f + B * N * 4 * f + B * N * (C - 1) * (i + f)
    if name == "ssd_detect":  # logits, deltas, anchors -> ids, scores, boxes of 100 rows
        B, N, C = inputs["cls_preds"].shape
        return B * N * C * f + B * N * 4 * f + N * 4 * f + B * SSD_DETECT["post_nms"] * 6 * f
    B, M = inputs["gt_boxes"].shape[:2]
    N = inputs["anchors"].shape[0]
    read = N * 4 * f + B * M * 4 * f
    write = B * N * i + 2 * B * N * 4 * f  # samples or class targets; box targets and masks
    if name == "ssd_targets":
        read += B * M * i + B * N * inputs["logits"].shape[-1] * f
    return read + write


def copy_bandwidth_gbps(mbytes: int = 256, reps: int = 5) -> float:
    """Practical memory bandwidth: best of ``reps`` ``Tensor.copy_`` of ``mbytes`` MB, in
    GB/s counting bytes read plus bytes written (STREAM's "copy")."""
    src = torch.ones(mbytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


# ----------------------------------------------------------------------------- pipelines
@dataclass
class Pipeline:
    """One library's implementation of one workload, as named stages over a shared state.

    Attributes:
        lib: library name (``"torchvision"`` or ``"detblocks"``).
        stages: ``(name, fn)`` pairs; ``fn(state)`` reads and writes the state dict.
        summary: maps the final state to a few numbers describing the work done
            (counts of positives and negatives, sums), compared across libraries.
        parts: optional sub-steps, each ``fn(state)`` run alone on a finished state
            (e.g. each matcher of a composite), timed by ``--profile``.
    """

    lib: str
    stages: list[tuple[str, Stage]]
    summary: Callable[[State], dict[str, float]]
    parts: dict[str, Stage] = field(default_factory=dict)

    def run(self, sync: Callable[[], None] = lambda: None) -> tuple[State, dict[str, float]]:
        """Run every stage once; returns the state and each stage's milliseconds."""
        state: State = {}
        stage_ms: dict[str, float] = {}
        for name, fn in self.stages:
            t0 = time.perf_counter()
            fn(state)
            sync()
            stage_ms[name] = (time.perf_counter() - t0) * 1e3
        return state, stage_ms


def torchvision_pipeline(name: str, inputs: dict[str, Tensor]) -> Pipeline:
    """torchvision's way of doing workload ``name``: per-image loops over unpadded ground truth.

    ``ssd_targets`` follows ``SSD.forward`` + ``SSD.compute_loss`` (``SSDMatcher(0.5)``,
    ``BoxCoder((10, 10, 5, 5))``, 3:1 hard negatives by background cross-entropy);
    ``rpn_targets`` follows ``RegionProposalNetwork.assign_targets_to_anchors`` +
    ``compute_loss`` (``Matcher(0.7, 0.3, allow_low_quality_matches=True)``,
    ``BoxCoder((1, 1, 1, 1))``, ``BalancedPositiveNegativeSampler(256, 0.5)``);
    ``ssd_decode`` follows ``SSD.postprocess_detections`` up to the score threshold
    (0.01), without top-k and NMS; ``iou`` is ``box_iou`` per image; ``ssd_detect`` is
    ``SSD.postprocess_detections`` whole (per image: softmax scores, per class the top 400
    above 0.01, ``batched_nms`` at 0.45, the first 100).
    """
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import box_iou

    if name == "ssd_targets":
        anchors, logits = inputs["anchors"], inputs["logits"]
        counts = inputs["n_gt"].tolist()
        gts = [inputs["gt_boxes"][b, :n] for b, n in enumerate(counts)]
        labels = [inputs["gt_ids"][b, :n] + 1 for b, n in enumerate(counts)]  # 0 = background
        matcher = det_utils.SSDMatcher(0.5)
        coder = det_utils.BoxCoder(weights=tuple(1.0 / s for s in SSD_STDS))
        B, N, C = logits.shape

        def match_encode(s: State) -> None:  # SSD.forward + the target half of compute_loss
            cls_targets, box_targets = [], []
            for gt, lab in zip(gts, labels):
                matched = matcher(box_iou(gt, anchors))
                fg = torch.where(matched >= 0)[0]
                fg_gt = matched[fg]
                box_targets.append(coder.encode_single(gt[fg_gt], anchors[fg]))
                ct = torch.zeros((N,), dtype=lab.dtype, device=lab.device)
                ct[fg] = lab[fg_gt]
                cls_targets.append(ct)
            s["cls_targets"], s["box_targets"] = torch.stack(cls_targets), box_targets

        def hard_negatives(s: State) -> None:  # SSD.compute_loss, verbatim
            cls_targets = s["cls_targets"]
            cls_loss = F.cross_entropy(logits.view(-1, C), cls_targets.view(-1), reduction="none").view(B, N)
            fg_mask = cls_targets > 0
            num_negative = 3 * fg_mask.sum(1, keepdim=True)
            negative_loss = cls_loss.clone()
            negative_loss[fg_mask] = -float("inf")
            _, idx = negative_loss.sort(1, descending=True)
            s["fg_mask"], s["bg_mask"] = fg_mask, idx.sort(1)[1] < num_negative

        def summary(s: State) -> dict[str, float]:
            return {
                "pos": int(s["fg_mask"].sum()),
                "neg": int(s["bg_mask"].sum()),
                "box_t_abs": float(sum(t.double().abs().sum() for t in s["box_targets"])),
            }

        stages = [("iou+matcher+encoder", match_encode), ("sampler", hard_negatives)]
        return Pipeline("torchvision", stages, summary)

    if name == "rpn_targets":
        anchors = inputs["anchors"]
        gts = [inputs["gt_boxes"][b, :n] for b, n in enumerate(inputs["n_gt"].tolist())]
        matcher = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)
        sampler = det_utils.BalancedPositiveNegativeSampler(256, 0.5)
        coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

        def assign(s: State) -> None:  # RegionProposalNetwork.assign_targets_to_anchors
            labels, matched_gt = [], []
            for gt in gts:
                idx = matcher(box_iou(gt, anchors))
                matched_gt.append(gt[idx.clamp(min=0)])
                lab = (idx >= 0).to(dtype=torch.float32)
                lab[idx == matcher.BELOW_LOW_THRESHOLD] = 0.0
                lab[idx == matcher.BETWEEN_THRESHOLDS] = -1.0
                labels.append(lab)
            s["labels"], s["matched_gt"] = labels, matched_gt

        def encode(s: State) -> None:
            s["box_targets"] = coder.encode(s["matched_gt"], [anchors] * len(gts))

        def sample(s: State) -> None:  # RegionProposalNetwork.compute_loss
            s["pos"], s["neg"] = sampler(s["labels"])

        def summary(s: State) -> dict[str, float]:
            return {"pos": int(sum(p.sum() for p in s["pos"])), "neg": int(sum(n.sum() for n in s["neg"]))}

        stages = [("iou+matcher", assign), ("encoder", encode), ("sampler", sample)]
        return Pipeline("torchvision", stages, summary)

    if name == "ssd_decode":
        anchors, box_preds, scores = inputs["anchors"], inputs["box_preds"], inputs["scores"]
        coder = det_utils.BoxCoder(weights=tuple(1.0 / s for s in SSD_STDS))

        def decode(s: State) -> None:  # SSD.postprocess_detections without top-k and NMS
            decoded, kept = [], []
            for boxes, sc in zip(box_preds, scores):
                boxes = coder.decode_single(boxes, anchors)
                decoded.append(boxes)
                for label in range(1, sc.shape[-1]):
                    score = sc[:, label]
                    keep = score > 0.01
                    kept.append((boxes[keep], score[keep], label))
            s["decoded"], s["kept"] = decoded, kept

        def summary(s: State) -> dict[str, float]:
            return {
                "kept": sum(len(sc) for _, sc, _ in s["kept"]),
                "box_sum": float(sum(b.double().sum() for b in s["decoded"])),
            }

        return Pipeline("torchvision", [("decoder", decode)], summary)

    if name == "iou":
        a, b = inputs["a"], inputs["b"]

        def iou(s: State) -> None:
            s["ious"] = [box_iou(x, y) for x, y in zip(a, b)]

        def summary(s: State) -> dict[str, float]:
            return {"iou_sum": float(sum(x.double().sum() for x in s["ious"]))}

        return Pipeline("torchvision", [("iou", iou)], summary)

    if name == "ssd_detect":
        from torchvision.ops import batched_nms

        anchors, box_preds, logits = inputs["anchors"], inputs["box_preds"], inputs["cls_preds"]
        coder = det_utils.BoxCoder(weights=tuple(1.0 / s for s in SSD_STDS))
        topk, iou_thresh, post = SSD_DETECT["nms_topk"], SSD_DETECT["nms_thresh"], SSD_DETECT["post_nms"]

        def detect(s: State) -> None:  # SSD.postprocess_detections
            out = []
            for boxes, sc in zip(box_preds, F.softmax(logits, dim=-1)):
                boxes = coder.decode_single(boxes, anchors)
                img_boxes, img_scores, img_labels = [], [], []
                for label in range(1, sc.shape[-1]):
                    score = sc[:, label]
                    keep = score > 0.01
                    score, box = score[keep], boxes[keep]
                    score, idxs = score.topk(min(topk, score.size(0)))
                    img_boxes.append(box[idxs])
                    img_scores.append(score)
                    img_labels.append(torch.full_like(idxs, label))
                b, sco, lab = torch.cat(img_boxes), torch.cat(img_scores), torch.cat(img_labels)
                keep = batched_nms(b, sco, lab, iou_thresh)[:post]
                out.append((b[keep], sco[keep], lab[keep]))
            s["detections"] = out

        def summary(s: State) -> dict[str, float]:
            dets = s["detections"]
            return {
                "kept": sum(len(sc) for _, sc, _ in dets),
                "score_sum": float(sum(sc.sum() for _, sc, _ in dets)),
            }

        return Pipeline("torchvision", [("postprocess", detect)], summary)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


def detblocks_pipeline(name: str, inputs: dict[str, Tensor]) -> Pipeline:
    """detblocks' way of doing workload ``name``: its public modules, batched over padded GT.

    Anchors are given as a materialised (B, N, 4) tensor, as the encoder's
    ``anchors (B, N, 4)`` contract reads.
    """
    from detblocks import bbox, coder, matcher, postprocess, sampler

    if name == "ssd_targets":
        gt, ids, logits = inputs["gt_boxes"], inputs["gt_ids"], inputs["logits"]
        B, N = logits.shape[:2]
        anchors = inputs["anchors"][None].expand(B, N, 4).contiguous()
        iou = bbox.BBoxBatchIOU()
        bipartite, maximum = matcher.BipartiteMatcher(share_max=False), matcher.MaximumMatcher(0.5)
        match = matcher.CompositeMatcher([bipartite, maximum])
        ohem = sampler.OHEMSampler(3, thresh=0.5)
        cls_enc = coder.MultiClassEncoder()
        box_enc = coder.NormalizedBoxCenterEncoder(stds=SSD_STDS, means=(0.0, 0.0, 0.0, 0.0))

        def s_iou(s: State) -> None:
            s["ious"] = iou(anchors, gt)  # (B, N, M)

        def s_match(s: State) -> None:
            s["matches"] = match(s["ious"])  # (B, N)

        def s_sample(s: State) -> None:
            s["samples"] = ohem(s["matches"], logits, s["ious"])  # (B, N)

        def s_encode(s: State) -> None:
            s["cls_targets"] = cls_enc(s["samples"], s["matches"], ids)
            s["box_targets"], s["box_masks"] = box_enc(s["samples"], s["matches"], anchors, gt)

        def summary(s: State) -> dict[str, float]:
            return {
                "pos": int((s["samples"] > 0).sum()),
                "neg": int((s["samples"] < 0).sum()),
                "box_t_abs": float(s["box_targets"].double().abs().sum()),
            }

        stages = [("iou", s_iou), ("matcher", s_match), ("sampler", s_sample), ("encoder", s_encode)]
        parts = {
            "matcher: BipartiteMatcher alone": lambda s: bipartite(s["ious"]),
            "matcher: MaximumMatcher alone": lambda s: maximum(s["ious"]),
            "encoder: MultiClassEncoder": lambda s: cls_enc(s["samples"], s["matches"], ids),
            "encoder: NormalizedBoxCenterEncoder": lambda s: box_enc(s["samples"], s["matches"], anchors, gt),
        }
        return Pipeline("detblocks", stages, summary, parts)

    if name == "rpn_targets":
        gt = inputs["gt_boxes"]
        B, N = gt.shape[0], inputs["anchors"].shape[0]
        anchors = inputs["anchors"][None].expand(B, N, 4).contiguous()
        iou = bbox.BBoxBatchIOU()
        bipartite, maximum = matcher.BipartiteMatcher(share_max=True), matcher.MaximumMatcher(0.7)
        match = matcher.CompositeMatcher([bipartite, maximum])
        quota = sampler.QuotaSampler(256, pos_thresh=0.7, neg_thresh_high=0.3, pos_ratio=0.5)
        box_enc = coder.NormalizedBoxCenterEncoder(stds=(1.0, 1.0, 1.0, 1.0), means=(0.0, 0.0, 0.0, 0.0))

        def s_iou(s: State) -> None:
            s["ious"] = iou(anchors, gt)  # (B, N, M)

        def s_match(s: State) -> None:
            s["matches"] = match(s["ious"])  # (B, N)

        def s_sample(s: State) -> None:
            s["samples"] = quota(s["matches"], s["ious"])  # (B, N)

        def s_encode(s: State) -> None:
            s["box_targets"], s["box_masks"] = box_enc(s["samples"], s["matches"], anchors, gt)

        def summary(s: State) -> dict[str, float]:
            return {"pos": int((s["samples"] > 0).sum()), "neg": int((s["samples"] < 0).sum())}

        stages = [("iou", s_iou), ("matcher", s_match), ("sampler", s_sample), ("encoder", s_encode)]
        parts = {
            "matcher: BipartiteMatcher alone": lambda s: bipartite(s["ious"]),
            "matcher: MaximumMatcher alone": lambda s: maximum(s["ious"]),
        }
        return Pipeline("detblocks", stages, summary, parts)

    if name == "ssd_decode":
        anchors = inputs["anchors_center"][None]  # (1, N, 4) center
        box_preds, scores = inputs["box_preds"], inputs["scores"]
        box_dec = coder.NormalizedBoxCenterDecoder(stds=SSD_STDS)
        cls_dec = coder.MultiPerClassDecoder(scores.shape[-1], thresh=0.01)

        def s_box(s: State) -> None:
            s["boxes"] = box_dec(box_preds, anchors)  # (B, N, 4)

        def s_cls(s: State) -> None:
            s["cls_ids"], s["scores"] = cls_dec(scores)  # (B, N, C - 1) each

        def summary(s: State) -> dict[str, float]:
            return {"kept": int((s["cls_ids"] >= 0).sum()), "box_sum": float(s["boxes"].double().sum())}

        stages = [("box decoder", s_box), ("class decoder", s_cls)]
        return Pipeline("detblocks", stages, summary)

    if name == "iou":
        a, b = inputs["a"], inputs["b"]
        iou = bbox.BBoxBatchIOU()

        def s_iou(s: State) -> None:
            s["ious"] = iou(a, b)  # (B, N, M)

        def summary(s: State) -> dict[str, float]:
            return {"iou_sum": float(s["ious"].double().sum())}

        return Pipeline("detblocks", [("iou", s_iou)], summary)

    if name == "ssd_detect":
        anchors = inputs["anchors_center"][None]  # (1, N, 4) center
        box_preds, logits = inputs["box_preds"], inputs["cls_preds"]
        tail = postprocess.SSDDetectionOutput(logits.shape[-1] - 1, stds=SSD_STDS, **SSD_DETECT)

        def s_detect(s: State) -> None:
            s["ids"], s["scores"], s["boxes"] = tail(logits, box_preds, anchors)  # (B, 100, 1|1|4)

        def summary(s: State) -> dict[str, float]:
            kept = s["ids"] >= 0
            return {"kept": int(kept.sum()), "score_sum": float(s["scores"][kept].sum())}

        return Pipeline("detblocks", [("SSDDetectionOutput", s_detect)], summary)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


PIPELINES: dict[str, Callable[[str, dict[str, Tensor]], Pipeline]] = {
    "torchvision": torchvision_pipeline,
    "detblocks": detblocks_pipeline,
}

#: How close the two libraries' summaries must be to count as the same work (relative).
#: The target-assignment matchers differ by design: GluonCV's greedy one-to-one matching
#: gives a reference whose best anchor went to another reference its next-best anchor,
#: where torchvision's per-reference argmax gives it none; crowded images therefore get
#: a few more positives. Decoding and IoU agree to rounding.
CHECK_RTOL = {
    "ssd_targets": {"pos": 0.05, "neg": 0.05, "box_t_abs": 0.05},
    "rpn_targets": {"pos": 0.1, "neg": 0.1},
    "ssd_decode": {"kept": 0.0, "box_sum": 1e-5},
    "iou": {"iou_sum": 1e-5},
    "ssd_detect": {"kept": 0.0, "score_sum": 1e-5},
}


def checks_agree(name: str, ref: dict[str, float], other: dict[str, float]) -> bool:
    """Whether two summaries of workload ``name`` describe comparable work (see ``CHECK_RTOL``)."""
    for key, rtol in CHECK_RTOL[name].items():
        a, b = ref.get(key), other.get(key)
        if a is None or b is None or abs(a - b) > rtol * max(abs(a), abs(b)):
            return False
    return True


# ----------------------------------------------------------------------------- timing
def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class CellResult:
    """Timings of one (workload, library) cell: total and per-stage milliseconds per call."""

    times_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    def stage_medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.stages_ms.items()}


def compare(
    pipelines: Sequence[Pipeline], reps: int, warmup: int = 1, device: torch.device | str = "cpu"
) -> dict[str, CellResult]:
    """Time ``pipelines`` alternately: ``warmup`` untimed calls each, then ``reps`` rounds
    in which every pipeline runs once (order reversed every other round, so drift of the
    machine hits all alike). Returns per library the call times, stage times and summary."""
    sync = _synchronizer(torch.device(device))
    results = {p.lib: CellResult() for p in pipelines}
    for p in pipelines:
        for _ in range(warmup):
            p.run(sync)
    for r in range(reps):
        for p in pipelines if r % 2 == 0 else pipelines[::-1]:
            t0 = time.perf_counter()
            state, stage_ms = p.run(sync)
            dt = (time.perf_counter() - t0) * 1e3
            res = results[p.lib]
            res.times_ms.append(dt)
            for k, v in stage_ms.items():
                res.stages_ms.setdefault(k, []).append(v)
            if r == reps - 1:
                res.summary = p.summary(state)
            del state
    return results


def time_parts(pipeline: Pipeline, reps: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """Median milliseconds of each of ``pipeline.parts`` run alone on a finished state."""
    sync = _synchronizer(torch.device(device))
    state, _ = pipeline.run(sync)
    out = {}
    for name, fn in pipeline.parts.items():
        fn(state)  # warm-up
        sync()
        times = []
        for _ in range(max(1, reps)):
            t0 = time.perf_counter()
            fn(state)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = statistics.median(times)
    return out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's native start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_stages(pipeline: Pipeline, top: int = 8) -> dict[str, list[tuple[str, int, float]]]:
    """Per stage, the ``top`` aten ops by self CPU time in one call under ``torch.profiler``.

    Returns ``{stage: [(op, calls, self_ms), ...]}``; a warm-up call is made first.
    """
    from torch.profiler import ProfilerActivity, profile

    pipeline.run()
    state: State = {}
    out = {}
    for name, fn in pipeline.stages:
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(state)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        out[name] = [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in rows[:top]]
    return out


# ----------------------------------------------------------------------------- memory
_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _release_free_memory() -> None:
    """Collect garbage and give freed heap pages back to the OS (glibc), so the resident
    set before a measurement holds only live data."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float | None:
    """Extra memory one call of ``fn`` touches at its peak, in MB (2**20 bytes).

    On CPU: the resident-set high-water mark during the call (reset just before it through
    ``/proc/self/clear_refs``) minus the resident set just before it; what ``fn`` returns
    counts, as it is alive at the end of the call. On CUDA: ``torch.cuda`` peak allocated
    bytes minus allocated bytes before the call. ``None`` where neither is available.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del out
        return (peak - before) / 2**20
    try:
        _release_free_memory()
        before = _status_kb("VmRSS")
        _CLEAR_REFS.write_text("5")  # 5: reset the peak resident set size to the current one
        out = fn()
        peak = _status_kb("VmHWM")
    except (OSError, KeyError):
        return None
    del out
    return max(0.0, (peak - before) / 1024.0)


def _memory_cell(
    lib: str, name: str, sizes: dict[str, WorkloadSize], device: str, threads: int | None
) -> dict:
    """Child-process side of the memory table: one warm call, then one measured call."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with torch.no_grad():
        inputs = make_inputs(name, sizes[name], device)
        pipeline = PIPELINES[lib](name, inputs)
        pipeline.run()
        extra = peak_memory_mb(lambda: pipeline.run()[0], device)
    return {"lib": lib, "workload": name, "extra_mb": extra, "rss_mb": _status_kb("VmRSS") / 1024.0}


def measure_memory(
    libs: Sequence[str], names: Sequence[str], quick: bool, device: str, threads: int | None
) -> dict[tuple[str, str], float | None]:
    """Peak extra memory per (library, workload), each in a fresh subprocess of this module."""
    out: dict[tuple[str, str], float | None] = {}
    # the child imports this very copy of detblocks, installed or not
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    )
    for name in names:
        for lib in libs:
            cmd = [
                sys.executable,
                "-m",
                "detblocks.bench",
                "--memory-cell",
                f"{lib}:{name}",
                "--device",
                device,
            ]
            cmd += ["--quick"] if quick else []
            cmd += ["--threads", str(threads)] if threads else []
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env)
            except (OSError, subprocess.TimeoutExpired) as exc:
                print(f"  memory {lib} {name}: {exc!r}", file=sys.stderr)
                out[lib, name] = None
                continue
            lines = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY ")]
            if not lines:
                print(f"  memory {lib} {name}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
                out[lib, name] = None
                continue
            out[lib, name] = json.loads(lines[-1][len("MEMORY ") :])["extra_mb"]
    return out


# ----------------------------------------------------------------------------- sweep
@dataclass
class SweepCell:
    """One (N, M) cell of the scaling sweep; times in ms, ``skipped`` says why when set."""

    n: int
    m: int
    iou_ms: float | None = None  # box_iou, then ...
    match_ms: float | None = None  # ... CompositeMatcher on the whole matrix (up to DENSE_SWEEP_PAIRS)
    boxes_ms: float | None = None  # match_boxes: the same result in one call, chunked when large
    peak_mb: float | None = None  # of the match_boxes call
    skipped: str | None = None

    @property
    def pairs(self) -> int:
        return self.n * self.m

    @property
    def total_ms(self) -> float | None:
        """IoU + matching as one call (``match_boxes``)."""
        return self.boxes_ms

    @property
    def ms_per_mpair(self) -> float | None:
        total = self.total_ms
        return None if total is None else total / (self.pairs / 1e6)


def _available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


#: Largest sweep cell also timed as box_iou + matcher on the whole IoU matrix (4 bytes a pair).
DENSE_SWEEP_PAIRS = 2e8


def _run_sweep_cell(
    cell: SweepCell,
    iou: torch.nn.Module,
    match: torch.nn.Module,
    reps: int,
    device: torch.device,
    budget_s: float = SWEEP_CELL_BUDGET_S,
) -> None:
    """Fill ``cell`` with its median milliseconds (``match_boxes``; ``box_iou`` then the
    matcher up to :data:`DENSE_SWEEP_PAIRS` pairs) and the peak memory of ``match_boxes``.

    Makes ``reps`` timed calls of each, fewer (at least one) once ``budget_s`` seconds are spent."""
    from detblocks.matcher import match_boxes

    sync = _synchronizer(device)
    gen = torch.Generator().manual_seed(SEED + cell.n + 7 * cell.m)
    anchors = random_boxes(gen, cell.n, (1000, 1000), 8.0, 512.0)[None].to(device)  # (1, N, 4)
    refs = random_boxes(gen, cell.m, (1000, 1000), 16.0, 512.0)[None].to(device)  # (1, M, 4)
    chain = list(match.matchers)
    iou_t: list[float] = []
    match_t: list[float] = []
    boxes_t: list[float] = []

    def dense() -> Tensor:
        t0 = time.perf_counter()
        ious = iou(anchors, refs)  # (1, N, M)
        sync()
        t1 = time.perf_counter()
        matches = match(ious)  # (1, N)
        sync()
        iou_t.append((t1 - t0) * 1e3)
        match_t.append((time.perf_counter() - t1) * 1e3)
        return matches

    def boxes() -> Tensor:
        t0 = time.perf_counter()
        matches, _ = match_boxes(anchors, refs, chain)
        sync()
        boxes_t.append((time.perf_counter() - t0) * 1e3)
        return matches

    def timed(fn: Callable[[], Tensor], times: list[float], peak: bool) -> None:
        if cell.pairs <= 1e8:  # warm-up
            fn()
            times.clear()
        if peak:
            cell.peak_mb = peak_memory_mb(fn, device)  # also the first timed call
        for _ in range(max(1, reps) - int(peak)):
            if sum(times) / 1e3 > budget_s:
                break
            fn()

    timed(boxes, boxes_t, peak=True)
    cell.boxes_ms = statistics.median(boxes_t)
    if cell.pairs <= DENSE_SWEEP_PAIRS:
        timed(dense, iou_t, peak=False)
        cell.iou_ms, cell.match_ms = statistics.median(iou_t), statistics.median(match_t)


def sweep(
    ns: Sequence[int],
    ms: Sequence[int],
    reps: int = 3,
    max_pairs: float = 1e9,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> list[SweepCell]:
    """Time IoU + ``CompositeMatcher([BipartiteMatcher(share_max=False), MaximumMatcher(0.5)])``
    on one image (B=1) for every N in ``ns`` and M in ``ms``: as one
    :func:`~detblocks.matcher.match_boxes` call (chunked above its dense limit), and up to
    :data:`DENSE_SWEEP_PAIRS` pairs also as ``BBoxBatchIOU`` then the matcher.

    Anchors are random boxes (sizes 8-512 px) and references random boxes (16-512 px)
    in a 1000x1000 image, from a fixed seed. Per cell: one warm-up call (skipped above
    1e8 pairs, where every call pays its page faults anyway), then ``reps`` timed calls
    (fewer once the cell has spent ``SWEEP_CELL_BUDGET_S``), median reported; the first
    timed call also gives the cell's peak extra memory. A cell is skipped when it has
    more than ``max_pairs`` pairs, or when the bytes per pair of the previous cell with
    the same M predict more than 80% of the memory available now.
    """
    from detblocks import bbox, matcher

    device = torch.device(device)
    iou = bbox.BBoxBatchIOU()
    match = matcher.CompositeMatcher([matcher.BipartiteMatcher(share_max=False), matcher.MaximumMatcher(0.5)])
    cells = []
    for m in sorted(ms):
        bytes_per_pair: float | None = None
        for n in sorted(ns):
            cell = SweepCell(n, m)
            cells.append(cell)
            avail = _available_mb()
            predicted = None if bytes_per_pair is None else bytes_per_pair * n * m / 2**20
            if n * m > max_pairs:
                cell.skipped = f"more than --max-pairs {max_pairs:.0e} pairs"
            elif predicted is not None and avail is not None and predicted > 0.8 * avail:
                cell.skipped = f"needs ~{predicted:.0f} MB, {avail:.0f} MB available"
            if cell.skipped:
                log(f"  sweep N={n} M={m}: skipped ({cell.skipped})")
                continue
            _run_sweep_cell(cell, iou, match, reps, device)
            if cell.peak_mb:
                bytes_per_pair = cell.peak_mb * 2**20 / cell.pairs
            log(
                f"  sweep N={n} M={m}: match_boxes {cell.boxes_ms:.2f} ms "
                f"({cell.ms_per_mpair:.3f} ms per million pairs, peak {_fmt(cell.peak_mb)} MB); "
                f"box_iou {_fmt(cell.iou_ms, 2)} ms + matcher {_fmt(cell.match_ms, 2)} ms"
            )
    return cells


def loglog_slope(cells: Sequence[SweepCell], min_pairs: float = 1e6) -> float | None:
    """Least-squares slope of log(total ms) against log(N x M) over cells with at least
    ``min_pairs`` pairs; 1.0 means cost linear in N x M."""
    pts = [(math.log(c.pairs), math.log(c.total_ms)) for c in cells if c.total_ms and c.pairs >= min_pairs]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def plot_sweep(cells: Sequence[SweepCell], path: Path) -> None:
    """Two panels: total ms against N x M (log-log, with a slope-1 guide), and ms per
    million pairs against N x M; one line per M. Written as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in cells if c.total_ms is not None]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in sorted({c.m for c in done}):
        row = sorted((c for c in done if c.m == m), key=lambda c: c.pairs)
        xs = [c.pairs for c in row]
        ax0.plot(xs, [c.total_ms for c in row], "o-", label=f"M={m}")
        ax1.plot(xs, [c.ms_per_mpair for c in row], "o-", label=f"M={m}")
    if done:
        big = max(done, key=lambda c: c.pairs)
        lo = min(c.pairs for c in done)
        ax0.plot(
            [lo, big.pairs], [big.total_ms * lo / big.pairs, big.total_ms], "k--", lw=0.8, label="linear"
        )
    ax0.set(xscale="log", yscale="log", xlabel="N x M pairs", ylabel="ms per call (IoU + matchers)")
    ax1.set(xscale="log", yscale="log", xlabel="N x M pairs", ylabel="ms per million pairs")
    ax0.set_title("BBoxBatchIOU + Bipartite/Maximum matcher, B=1")
    ax1.set_title("cost per pair (flat = linear in N x M)")
    for ax in (ax0, ax1):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- today's assigners
#: The assigner workloads of the shared yardstick this benchmark also runs (SPEC "Beyond
#: GluonCV"): (B, M, objects per image, crowd), 80 classes. ``tal``, ``tal_crowded``,
#: ``simota`` and ``dsl`` at 640 px with 8400 anchor points (strides 8/16/32); ``atss`` on
#: the 18,134 anchors of an 800x1088 batch (P3-P7); ``hungarian`` with 300 queries.
MODERN_WORKLOADS = {
    "tal": (16, 50, (1, 50), 0),
    "tal_crowded": (8, 1500, (1, 30), 1500),
    "simota": (16, 50, (1, 50), 0),
    "dsl": (16, 50, (1, 50), 0),
    "atss": (16, 50, (1, 50), 0),
    "hungarian": (16, 50, (1, 50), 0),
}
MODERN_QUICK = {
    "tal": (2, 8, (1, 8), 0),
    "tal_crowded": (2, 200, (1, 8), 200),
    "simota": (2, 8, (1, 8), 0),
    "dsl": (2, 8, (1, 8), 0),
    "atss": (2, 8, (1, 8), 0),
    "hungarian": (2, 8, (1, 8), 0),
}

#: The library each modern workload is compared with, where it is importable.
MODERN_REFERENCE = {
    "tal": "ultralytics",
    "tal_crowded": "ultralytics",
    "simota": "mmdet",
    "dsl": "mmdet",
    "atss": "mmdet",
    "hungarian": "ultralytics",
}

#: Classes, image (height, width) and pyramid strides of the modern workloads; RT-DETR's queries.
MODERN_CLASSES = 80
MODERN_IMAGE = (640, 640)
MODERN_STRIDES = (8, 16, 32)
ATSS_IMAGE = (800, 1088)
ATSS_STRIDES = (8, 16, 32, 64, 128)
HUNGARIAN_QUERIES = 300

#: One library's side of a modern workload: ``run()`` (timed) returns its raw output,
#: ``check(output)`` (not timed) a few numbers compared across libraries.
ModernPipeline = tuple[Callable[[], Any], Callable[[Any], dict[str, float]]]


def _grid_points(image: tuple[int, int], strides: Sequence[int], offset: float) -> tuple[Tensor, Tensor]:
    """(N, 2) pixel points of every cell, level by level, row-major, and their (N,) strides;
    ``ceil(size / stride)`` cells a side, points at ``(col + offset, row + offset) * stride``."""
    points, per_point = [], []
    for s in strides:
        h, w = -(-image[0] // s), -(-image[1] // s)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        points.append(torch.stack([(xs + offset) * s, (ys + offset) * s], -1).reshape(-1, 2).float())
        per_point.append(torch.full((h * w,), float(s)))
    return torch.cat(points), torch.cat(per_point)


def _modern_gt(
    gen: torch.Generator,
    batch: int,
    m: int,
    counts: tuple[int, int],
    image: tuple[int, int],
    min_size: float = 8.0,
    max_size: float = 400.0,
) -> tuple[Tensor, Tensor]:
    """(B, M, 4) corner boxes (sizes log-uniform, COCO-like) and (B, M) int64 labels in
    ``[0, 80)``, real rows first, padded with -1 rows."""
    boxes = torch.full((batch, m, 4), -1.0)
    labels = torch.full((batch, m), -1, dtype=torch.int64)
    for b in range(batch):  # input generation only, not timed
        count = int(torch.randint(counts[0], counts[1] + 1, (1,), generator=gen))
        boxes[b, :count] = random_boxes(gen, count, image, min_size, max_size)
        labels[b, :count] = torch.randint(0, MODERN_CLASSES, (count,), generator=gen)
    return boxes, labels


def _dense_predictions(
    gen: torch.Generator, points: Tensor, strides: Tensor, gt_boxes: Tensor, gt_labels: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A dense head's outputs early in training: at a point inside a ground truth or within
    2.5 strides of its centre, a jittered copy of the smallest such box (each side moved by
    N(0, sigma * size), sigma 0.02-0.35 per point); elsewhere a random box around the point
    (each side 0.5-4.5 strides away). Class logits N(-5, 1), plus U(0, 8) on the owning
    box's class, plus U(3, 8) on 0.1% of all entries. Returns pixel boxes (B, N, 4), logits
    (B, N, C) and the (B, N) mask of points that have an owner."""
    batch, n = gt_labels.shape[0], points.shape[0]
    x, y, s = points[:, 0, None], points[:, 1, None], strides[:, None]  # (N, 1)
    g = gt_boxes[:, None]  # (B, 1, M, 4)
    inside = (x > g[..., 0]) & (x < g[..., 2]) & (y > g[..., 1]) & (y < g[..., 3])  # (B, N, M)
    cx, cy = (g[..., 0] + g[..., 2]) / 2, (g[..., 1] + g[..., 3]) / 2
    near = (inside | (((x - cx).abs() < 2.5 * s) & ((y - cy).abs() < 2.5 * s))) & (gt_labels >= 0)[:, None]
    area = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    owner = torch.where(near, area, math.inf).argmin(-1)  # (B, N)
    has = near.any(-1)
    box = gt_boxes.gather(1, owner[..., None].expand(-1, -1, 4))
    size = (box[..., 2:] - box[..., :2]).repeat(1, 1, 2)
    sigma = torch.rand(batch, n, 1, generator=gen) * 0.33 + 0.02
    jit = box + torch.randn(batch, n, 4, generator=gen) * sigma * size
    lo, hi = torch.minimum(jit[..., :2], jit[..., 2:]), torch.maximum(jit[..., :2], jit[..., 2:])
    jit = torch.cat([lo, torch.maximum(hi, lo + 1.0)], -1)  # at least 1 px wide and high
    ltrb = (0.5 + 4.0 * torch.rand(batch, n, 4, generator=gen)) * s
    around = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
    boxes = torch.where(has[..., None], jit, around)
    logits = torch.randn(batch, n, MODERN_CLASSES, generator=gen) - 5.0
    boost = torch.rand(batch, n, 1, generator=gen) * 8.0 * has[..., None]
    logits.scatter_add_(2, gt_labels.gather(1, owner).clamp(min=0)[..., None], boost)
    false_pos = torch.rand(batch, n, MODERN_CLASSES, generator=gen) < 0.001
    logits += false_pos * (3.0 + 5.0 * torch.rand(batch, n, MODERN_CLASSES, generator=gen))
    return boxes, logits, has


def _rtdetr_queries(gen: torch.Generator, gt: Tensor, labels: Tensor, queries: int) -> tuple[Tensor, Tensor]:
    """RT-DETR decoder outputs for one image, ``gt`` (n, 4) normalised ``(cx, cy, w, h)``: 60%
    of the queries on a random object (each coordinate moved by N(0, sigma * size), sigma
    0.02-0.4), the rest anywhere (centre U(0.05, 0.95), sides log-uniform 0.02-0.5), clipped
    to [0.001, 0.999]; logits N(-4.5, 1.2), plus U(0, 7) on the object's class for the former."""
    n = gt.shape[0]
    on = torch.rand(queries, generator=gen) < 0.6
    pick = torch.randint(0, max(n, 1), (queries,), generator=gen)
    g = gt[pick] if n else torch.zeros(queries, 4)
    sigma = torch.rand(queries, 1, generator=gen) * 0.38 + 0.02
    near = g + torch.randn(queries, 4, generator=gen) * sigma * g[:, 2:].repeat(1, 2)
    centre = torch.rand(queries, 2, generator=gen) * 0.9 + 0.05
    sides = torch.exp(math.log(0.02) + torch.rand(queries, 2, generator=gen) * math.log(25.0))
    boxes = torch.where((on & (n > 0))[:, None], near, torch.cat([centre, sides], -1)).clamp(0.001, 0.999)
    logits = torch.randn(queries, MODERN_CLASSES, generator=gen) * 1.2 - 4.5
    if n:
        boost = torch.rand(queries, generator=gen) * 7.0 * on
        logits[torch.arange(queries), labels[pick]] += boost
    return boxes, logits


def modern_inputs(name: str, quick: bool = False) -> dict[str, Tensor]:
    """Inputs of one modern workload, from a fixed seed; ground truth ``gt_boxes`` (B, M, 4)
    and ``gt_labels`` (B, M) int64 padded with -1 rows.

    - ``tal``, ``tal_crowded``: YOLOv8 training-step inputs at 640 px: ``make_anchors``
      points (strides 8/16/32), predictions that copy a ground truth near them with some
      noise, sigmoid scores (``tal_crowded``: one image holds a shelf grid of small boxes).
    - ``simota``: YOLOX's: priors ``(cx, cy, stride, stride)`` at cell centres, pixel boxes,
      scores ``sqrt(sigmoid(cls) * sigmoid(obj))``.
    - ``dsl``: RTMDet's: priors ``(x, y, stride, stride)`` at cell corners, class logits.
    - ``atss``: ``anchors`` (18,134, 4), one square of side 8 x stride per cell of P3-P7 on
      800x1088, ``num_level_anchors`` (5,); ground truth 10-600 px.
    - ``hungarian``: RT-DETR's: normalised ``(cx, cy, w, h)`` ``pred_boxes`` (B, 300, 4),
      ``pred_logits`` (B, 300, 80) and ground truth in the same format.
    """
    batch, m, (lo, hi), crowd = (MODERN_QUICK if quick else MODERN_WORKLOADS)[name]
    gen = torch.Generator().manual_seed(SEED + 100 + list(MODERN_WORKLOADS).index(name))
    if name in ("simota", "dsl"):
        points, strides = _grid_points(MODERN_IMAGE, MODERN_STRIDES, 0.5 if name == "simota" else 0.0)
        gt_boxes, gt_labels = _modern_gt(gen, batch, m, (lo, hi), MODERN_IMAGE)
        pred_boxes, logits, has = _dense_predictions(gen, points, strides, gt_boxes, gt_labels)
        out = {
            "priors": torch.cat([points, strides[:, None], strides[:, None]], -1),
            "pred_boxes": pred_boxes,
        }
        if name == "simota":  # objectness logit N(-4, 1.5), plus U(0, 8) near a ground truth
            obj = torch.randn(batch, points.shape[0], generator=gen) * 1.5 - 4.0
            obj += has * torch.rand(batch, points.shape[0], generator=gen) * 8.0
            out["pred_scores"] = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(obj)[..., None])
        else:
            out["pred_logits"] = logits
        return out | {"gt_labels": gt_labels, "gt_boxes": gt_boxes}
    if name == "atss":
        corners, per_level = [], []
        for s in ATSS_STRIDES:
            h, w = -(-ATSS_IMAGE[0] // s), -(-ATSS_IMAGE[1] // s)
            ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
            xy = torch.stack([xs, ys], -1).reshape(-1, 2).float()
            corners.append(torch.cat([xy - 4.0 * s, xy + 4.0 * s], -1))
            per_level.append(h * w)
        gt_boxes, gt_labels = _modern_gt(gen, batch, m, (lo, hi), ATSS_IMAGE, 10.0, 600.0)
        return {
            "anchors": torch.cat(corners),
            "num_level_anchors": torch.tensor(per_level),
            "gt_labels": gt_labels,
            "gt_boxes": gt_boxes,
        }
    if name == "hungarian":
        gt_corner, gt_labels = _modern_gt(gen, batch, m, (lo, hi), MODERN_IMAGE)
        scale = torch.tensor([MODERN_IMAGE[1], MODERN_IMAGE[0]] * 2, dtype=torch.float32)
        norm = gt_corner / scale
        centre = torch.cat([(norm[..., :2] + norm[..., 2:]) / 2, norm[..., 2:] - norm[..., :2]], -1)
        gt_boxes = torch.where((gt_labels >= 0)[..., None], centre, -1.0)
        boxes, logits = [], []
        for b in range(batch):
            real = gt_labels[b] >= 0
            qb, ql = _rtdetr_queries(gen, gt_boxes[b, real], gt_labels[b, real], HUNGARIAN_QUERIES)
            boxes.append(qb)
            logits.append(ql)
        return {
            "pred_boxes": torch.stack(boxes),
            "pred_logits": torch.stack(logits),
            "gt_labels": gt_labels,
            "gt_boxes": gt_boxes,
        }
    points = []
    for stride in MODERN_STRIDES:
        ys, xs = torch.meshgrid(torch.arange(640 // stride), torch.arange(640 // stride), indexing="ij")
        points.append(torch.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 2).float())
    anchor_points = torch.cat(points)
    n = anchor_points.shape[0]
    gt_boxes = torch.full((batch, m, 4), -1.0)
    gt_labels = torch.full((batch, m), -1, dtype=torch.int64)
    for b in range(batch):
        if crowd and b == 0:
            cols = 50
            grid = torch.stack([torch.arange(crowd) % cols * 12.8, torch.arange(crowd) // cols * 21.3], -1)
            xy = grid + torch.rand(crowd, 2, generator=gen)
            wh = torch.rand(crowd, 2, generator=gen) * torch.tensor([5.0, 8.0]) + torch.tensor([8.0, 13.0])
            count = crowd
        else:
            count = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            wh = torch.rand(count, 2, generator=gen) * 250 + 10
            xy = torch.rand(count, 2, generator=gen) * (640 - wh)
        gt_boxes[b, :count] = torch.cat([xy, xy + wh], -1)
        gt_labels[b, :count] = torch.randint(0, 80, (count,), generator=gen)
    # each point predicts a jittered copy of the ground truth whose centre is nearest
    centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    dist = torch.cdist(anchor_points.expand(batch, -1, -1), centres).masked_fill(
        (gt_labels < 0)[:, None], 1e9
    )
    near = gt_boxes.gather(1, dist.argmin(-1)[..., None].expand(-1, -1, 4))
    size = (near[..., 2:] - near[..., :2]).repeat(1, 1, 2)
    pred_boxes = near + torch.randn(batch, n, 4, generator=gen) * 0.1 * size
    pred_boxes = torch.cat(
        [pred_boxes[..., :2], torch.maximum(pred_boxes[..., 2:], pred_boxes[..., :2] + 1)], -1
    )
    logits = torch.randn(batch, n, 80, generator=gen) - 5
    logits.scatter_add_(
        2, gt_labels.gather(1, dist.argmin(-1)).clamp(min=0)[..., None], torch.full((batch, n, 1), 6.0)
    )
    return {
        "pred_scores": torch.sigmoid(logits),
        "pred_boxes": pred_boxes,
        "anchor_points": anchor_points,
        "gt_labels": gt_labels,
        "gt_boxes": gt_boxes,
    }


def _describe_modern(name: str, inputs: dict[str, Tensor]) -> str:
    batch, m = inputs["gt_labels"].shape
    if name == "hungarian":
        return f"B={batch}, Q={inputs['pred_boxes'].shape[1]}, M={m}, C={inputs['pred_logits'].shape[2]}"
    n = inputs["anchors" if name == "atss" else "pred_boxes"].shape[-2]
    return f"B={batch}, N={n}, M={m}" + ("" if name == "atss" else f", C={MODERN_CLASSES}")


def _assignment_check(out: Any) -> dict[str, float]:
    """Positives and the sum of their quality (IoU with their ground truth) of an ``Assignment``."""
    pos = out.matches >= 0
    return {"pos": float(pos.sum()), "quality_sum": float(out.quality[pos].double().sum())}


def _mmdet_check(out: Any) -> dict[str, float]:
    """The same figures from mmdet's per-image ``AssignResult`` list (``gt_inds`` 0 is
    background, ``k >= 1`` the ``(k-1)``-th object; ``max_overlaps`` the IoU there)."""
    pos = [r.gt_inds > 0 for r in out]
    return {
        "pos": float(sum(int(p.sum()) for p in pos)),
        "quality_sum": float(sum(float(r.max_overlaps[p].double().sum()) for r, p in zip(out, pos))),
    }


def _import_mmdet() -> tuple[Any, dict[str, Any]] | None:
    """mmengine's ``InstanceData`` and mmdet's SimOTA, DSL and ATSS assigners, or None when
    mmdet cannot be imported."""
    with contextlib.suppress(ImportError):
        # mmdet on mmcv-lite (no compiled ops) imports only after this module where it is
        # installed; it is absent elsewhere.
        import mmdet_lite_shim  # noqa: F401
    try:
        from mmdet.models.task_modules.assigners import (
            ATSSAssigner,
            DynamicSoftLabelAssigner,
            SimOTAAssigner,
        )
        from mmengine.structures import InstanceData
    except (ImportError, AssertionError):  # mmdet asserts the mmcv version at import
        return None
    return InstanceData, {"simota": SimOTAAssigner, "dsl": DynamicSoftLabelAssigner, "atss": ATSSAssigner}


def _rtdetr_pair_cost(inputs: dict[str, Tensor], pairs: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Total RT-DETR matching cost (ultralytics' ``HungarianMatcher`` defaults: focal class
    cost, L1 x 5, (1 - GIoU) x 2) of ``pairs`` = per image (query indices, object indices), in
    float64 at those pairs only."""
    total = 0.0
    for b, (q, g) in enumerate(pairs):
        pred = inputs["pred_boxes"][b, q].double()
        gt = inputs["gt_boxes"][b, g].double()
        p = torch.sigmoid(inputs["pred_logits"][b, q, inputs["gt_labels"][b, g]].double())
        focal = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
        l1 = (pred - gt).abs().sum(-1)
        a0, a1 = pred[:, :2] - pred[:, 2:] / 2, pred[:, :2] + pred[:, 2:] / 2
        b0, b1 = gt[:, :2] - gt[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2
        inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0).prod(-1)
        union = pred[:, 2:].prod(-1) + gt[:, 2:].prod(-1) - inter + 1e-7
        hull = (torch.maximum(a1, b1) - torch.minimum(a0, b0)).prod(-1) + 1e-7
        giou = inter / union - (hull - union) / hull
        cost = focal + 5.0 * l1 + 2.0 * (1 - giou)
        total += float(torch.where(torch.isfinite(cost), cost, 0.0).sum())
    return total


def _tal_pipelines(inputs: dict[str, Tensor]) -> dict[str, ModernPipeline]:
    from detblocks.assign import TaskAlignedAssigner

    args = (inputs["pred_scores"], inputs["pred_boxes"], inputs["anchor_points"])
    labels, boxes = inputs["gt_labels"], inputs["gt_boxes"]
    hyper = dict(topk=10, num_classes=MODERN_CLASSES, alpha=0.5, beta=6.0)
    tal = TaskAlignedAssigner(**hyper, stride=MODERN_STRIDES)

    def run_detblocks() -> tuple[Any, Tensor]:
        a = tal(*args, labels, boxes)
        return a, a.score_targets(MODERN_CLASSES)  # ultralytics returns its target scores too

    def check_detblocks(out: tuple[Any, Tensor]) -> dict[str, float]:
        return {"fg": float((out[0].matches >= 0).sum()), "target_scores": float(out[1].double().sum())}

    pipelines: dict[str, ModernPipeline] = {"detblocks": (run_detblocks, check_detblocks)}
    try:
        from ultralytics.utils.tal import TaskAlignedAssigner as Reference
    except ImportError:
        return pipelines
    reference = Reference(**hyper, stride=[float(s) for s in MODERN_STRIDES])
    mask = (labels >= 0)[..., None]
    ref_labels = labels.clamp(min=0)[..., None].float()
    ref_boxes = torch.where(mask, boxes, torch.zeros((), dtype=boxes.dtype))

    def run_ultralytics() -> tuple[Tensor, ...]:
        return reference(*args, ref_labels, ref_boxes, mask.float())

    def check_ultralytics(out: tuple[Tensor, ...]) -> dict[str, float]:
        return {"fg": float(out[3].sum()), "target_scores": float(out[2].double().sum())}

    pipelines["ultralytics"] = (run_ultralytics, check_ultralytics)
    return pipelines


def _mmdet_pipelines(name: str, inputs: dict[str, Tensor]) -> dict[str, ModernPipeline]:
    from detblocks.assign import ATSSAssigner, DynamicSoftLabelAssigner, SimOTAAssigner

    labels, boxes = inputs["gt_labels"], inputs["gt_boxes"]
    if name == "atss":
        anchors, per_level = inputs["anchors"], [int(n) for n in inputs["num_level_anchors"]]
        atss = ATSSAssigner(topk=9)  # atss_r50_fpn_1x_coco

        def run_detblocks() -> Any:
            return atss(anchors, per_level, labels, boxes)
    else:
        priors, preds = inputs["priors"], inputs["pred_scores" if name == "simota" else "pred_logits"]
        assigner = SimOTAAssigner() if name == "simota" else DynamicSoftLabelAssigner(topk=13)

        def run_detblocks() -> Any:
            return assigner(priors, preds, inputs["pred_boxes"], labels, boxes)

    pipelines: dict[str, ModernPipeline] = {"detblocks": (run_detblocks, _assignment_check)}
    imported = _import_mmdet()
    if imported is None:
        return pipelines
    instance_data, assigners = imported
    # mmdet's assigners take one image at a time, as the heads' _get_targets_single calls
    # them: the ground truth of each image (its real rows) is built here, the predictions
    # inside the loop.
    gts = [
        instance_data(bboxes=boxes[b][labels[b] >= 0], labels=labels[b][labels[b] >= 0])
        for b in range(len(labels))
    ]
    if name == "atss":
        reference = assigners["atss"](topk=9)

        def run_mmdet() -> list[Any]:
            return [reference.assign(instance_data(priors=anchors), per_level, gt) for gt in gts]
    else:
        reference = assigners["simota"]() if name == "simota" else assigners["dsl"](topk=13)
        pred_boxes = inputs["pred_boxes"]

        def run_mmdet() -> list[Any]:
            with warnings.catch_warnings():  # SimOTA's torch.cuda.amp.autocast deprecation
                warnings.simplefilter("ignore")
                return [
                    reference.assign(instance_data(bboxes=pred_boxes[b], scores=preds[b], priors=priors), gt)
                    for b, gt in enumerate(gts)
                ]

    pipelines["mmdet"] = (run_mmdet, _mmdet_check)
    return pipelines


def _hungarian_pipelines(inputs: dict[str, Tensor]) -> dict[str, ModernPipeline]:
    from detblocks.matcher import HungarianMatcher

    pred_boxes, pred_logits = inputs["pred_boxes"], inputs["pred_logits"]
    gt_boxes, gt_labels = inputs["gt_boxes"], inputs["gt_labels"]
    matcher = HungarianMatcher()  # RT-DETR's defaults: focal class cost, gains 1 / 5 / 2

    def check(pairs: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        return {"pairs": float(sum(len(q) for q, _ in pairs)), "cost": _rtdetr_pair_cost(inputs, pairs)}

    def check_detblocks(matches: Tensor) -> dict[str, float]:
        return check([(torch.nonzero(row >= 0)[:, 0], row[row >= 0]) for row in matches])

    pipelines: dict[str, ModernPipeline] = {
        "detblocks": (lambda: matcher(pred_boxes, pred_logits, gt_boxes, gt_labels), check_detblocks)
    }
    try:
        from ultralytics.models.utils.ops import HungarianMatcher as Reference
    except ImportError:
        return pipelines
    # DETRLoss's call: the real objects of all images concatenated, with their counts.
    real = gt_labels >= 0
    counts = [int(n) for n in real.sum(1)]
    offsets = [sum(counts[:b]) for b in range(len(counts))]
    cat_boxes, cat_labels = gt_boxes[real], gt_labels[real]
    reference = Reference()

    def check_ultralytics(out: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        return check([(q, g - off) for (q, g), off in zip(out, offsets)])

    pipelines["ultralytics"] = (
        lambda: reference(pred_boxes, pred_logits, cat_boxes, cat_labels, counts),
        check_ultralytics,
    )
    return pipelines


def modern_pipelines(name: str, inputs: dict[str, Tensor]) -> dict[str, ModernPipeline]:
    """``{library: (run, check)}`` of one modern workload: detblocks always, and its
    reference (:data:`MODERN_REFERENCE`) where that is importable. ``run()`` makes one call
    (the timed part) and returns its raw output; ``check(output)`` reduces it to a few
    numbers compared across libraries.

    - ``tal``, ``tal_crowded``: ``TaskAlignedAssigner`` and its ``(B, N, C)`` score targets;
      ultralytics' called as ``v8DetectionLoss`` calls it (``gt_labels (B, M, 1)`` float,
      zero-padded boxes, ``mask_gt``). Checks: foreground points, sum of the score targets.
    - ``simota``, ``dsl``, ``atss``: ``SimOTAAssigner()``, ``DynamicSoftLabelAssigner(topk=13)``,
      ``ATSSAssigner(topk=9)`` on the padded batch; mmdet's called per image with
      mmengine's ``InstanceData``, as YOLOX's, RTMDet's and ATSS's heads call them. Checks:
      positives, sum of their IoU with their ground truth.
    - ``hungarian``: ``HungarianMatcher()`` on the padded batch; ultralytics' as ``DETRLoss``
      calls it (objects of all images concatenated, ``gt_groups``; SciPy per image inside).
      Checks: matched pairs, their total RT-DETR cost (float64).
    """
    if name in ("tal", "tal_crowded"):
        return _tal_pipelines(inputs)
    if name == "hungarian":
        return _hungarian_pipelines(inputs)
    return _mmdet_pipelines(name, inputs)


def _checks_same(ref: dict[str, float], mine: dict[str, float]) -> bool:
    return ref.keys() == mine.keys() and all(math.isclose(ref[k], mine[k], rel_tol=1e-5) for k in ref)


def run_modern(names: Sequence[str], quick: bool = False, reps: int = 5) -> dict[str, dict[str, Any]]:
    """Time each modern workload for detblocks, and for its reference where that is
    installed (alternating calls, after one warm-up call each whose outputs give the
    checks); print median milliseconds, the ratio and the checks, then a table. Without the
    reference, detblocks runs alone and the output says so."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        inputs = modern_inputs(name, quick)
        pipelines = modern_pipelines(name, inputs)
        ref_lib = MODERN_REFERENCE[name]
        with torch.no_grad():
            checks = {lib: check(run()) for lib, (run, check) in pipelines.items()}  # warm-up
            times: dict[str, list[float]] = {lib: [] for lib in pipelines}
            for _ in range(reps):
                for lib, (run, _check) in pipelines.items():
                    start = time.perf_counter()
                    run()
                    times[lib].append((time.perf_counter() - start) * 1e3)
        med = {lib: statistics.median(t) for lib, t in times.items()}
        ref = med.get(ref_lib)
        same = None if ref is None else _checks_same(checks[ref_lib], checks["detblocks"])
        results[name] = {
            "shapes": _describe_modern(name, inputs),
            "reference": ref_lib,
            "median_ms": med,
            "ratio": None if ref is None else med["detblocks"] / ref,
            "checks": checks,
            "checks_agree": same,
        }
        line = f"  {name}: detblocks {med['detblocks']:.1f} ms"
        if ref is None:
            line += f" ({ref_lib} is not installed: detblocks alone)"
        else:
            line += f", {ref_lib} {ref:.1f} ms, ratio {med['detblocks'] / ref:.3f}"
            line += ", same assignment" if same else f", checks differ: {checks}"
        print(line + "; " + ", ".join(f"{k} {v:.7g}" for k, v in checks["detblocks"].items()), flush=True)
    print()
    _print_table(
        ["workload", "shapes", "detblocks ms", "reference", "reference ms", "ratio", "checks"],
        [
            [
                name,
                r["shapes"],
                _fmt(r["median_ms"]["detblocks"]),
                r["reference"],
                _fmt(r["median_ms"].get(r["reference"])),
                _fmt(r["ratio"], 3),
                {True: "same", False: "DIFFERENT", None: "not installed"}[r["checks_agree"]],
            ]
            for name, r in results.items()
        ],
    )
    return results


# ----------------------------------------------------------------------------- optimal-matching solver sweep
#: Sizes of the solver sweep (``--lsa-sweep``): queries N, references M, batch B.
LSA_SWEEP_N = (100, 300, 900, 3000)
LSA_SWEEP_M = (10, 100, 300, 1000)
LSA_SWEEP_B = (1, 16)
#: The same with ``--quick``.
LSA_QUICK = ((20, 100), (5, 50), (1, 4))

#: A solver sweep cell repeats its timed calls (both libraries, alternating) until it has
#: made at least the asked number and spent ``LSA_CELL_MIN_S`` seconds, at most
#: ``LSA_CELL_MAX_CALLS``, and stops (after at least one) once it has spent ``LSA_CELL_BUDGET_S``.
LSA_CELL_MIN_S = 0.5
LSA_CELL_MAX_CALLS = 200
LSA_CELL_BUDGET_S = 10.0

#: Default output of the solver sweep plot, beside the scaling sweep's.
DEFAULT_LSA_PLOT = DEFAULT_PLOT.parent / "lsa_sweep.png"


@dataclass
class LsaCell:
    """One (B, N, M) cell of the solver sweep: median ms per call of detblocks'
    ``linear_sum_assignment`` on the batch and of SciPy's over its images (None without
    SciPy), the total cost of each side's assignment, and the timed calls made."""

    b: int
    n: int
    m: int
    detblocks_ms: float | None = None
    scipy_ms: float | None = None
    detblocks_cost: float | None = None
    scipy_cost: float | None = None
    calls: int = 0

    @property
    def ratio(self) -> float | None:
        """detblocks / SciPy (below 1 is faster)."""
        if self.detblocks_ms is None or self.scipy_ms is None:
            return None
        return self.detblocks_ms / self.scipy_ms

    @property
    def same_cost(self) -> bool | None:
        """Both sides found an assignment of the same (minimum) total cost."""
        if self.detblocks_cost is None or self.scipy_cost is None:
            return None
        return math.isclose(self.detblocks_cost, self.scipy_cost, rel_tol=1e-9, abs_tol=1e-9)


def _run_lsa_cell(
    cell: LsaCell, scipy_lsa: Callable[..., Any] | None, reps: int, min_s: float, budget_s: float
) -> None:
    from detblocks.matcher import linear_sum_assignment

    gen = torch.Generator().manual_seed(SEED + 300 + cell.b + 7 * cell.n + 13 * cell.m)
    cost = torch.rand(cell.b, cell.n, cell.m, generator=gen)  # float32, U(0, 1)
    fns: dict[str, Callable[[], Any]] = {"detblocks": lambda: linear_sum_assignment(cost)}
    if scipy_lsa is not None:
        host = cost.numpy()
        fns["scipy"] = lambda: [scipy_lsa(c) for c in host]
    start = time.perf_counter()
    outs = {lib: fn() for lib, fn in fns.items()}  # warm-up
    matches = outs["detblocks"]
    rows = matches >= 0
    picked = cost.double().gather(2, matches.clamp(min=0)[..., None])[..., 0]
    cell.detblocks_cost = float(picked[rows].sum())
    if "scipy" in outs:
        cell.scipy_cost = float(
            sum(float(c[r, k].astype("float64").sum()) for c, (r, k) in zip(host, outs["scipy"]))
        )
    times: dict[str, list[float]] = {lib: [] for lib in fns}
    while True:
        for lib, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[lib].append((time.perf_counter() - t0) * 1e3)
        calls, spent = len(times["detblocks"]), time.perf_counter() - start
        if calls >= LSA_CELL_MAX_CALLS or spent > budget_s or (calls >= reps and spent > min_s):
            break
    cell.calls = len(times["detblocks"])
    cell.detblocks_ms = statistics.median(times["detblocks"])
    if "scipy" in times:
        cell.scipy_ms = statistics.median(times["scipy"])


def lsa_sweep(
    ns: Sequence[int] = LSA_SWEEP_N,
    ms: Sequence[int] = LSA_SWEEP_M,
    batches: Sequence[int] = LSA_SWEEP_B,
    reps: int = 5,
    min_s: float = LSA_CELL_MIN_S,
    budget_s: float = LSA_CELL_BUDGET_S,
    log: Callable[[str], None] = print,
) -> list[LsaCell]:
    """Time :func:`detblocks.matcher.linear_sum_assignment` on a ``(B, N, M)`` batch of
    random float32 costs (U(0, 1), fixed seed) for every B in ``batches``, N in ``ns`` and M
    in ``ms``, against ``scipy.optimize.linear_sum_assignment`` called on each image where
    SciPy is installed (alone otherwise, and the log says so). Per cell: one warm-up call
    of each (whose total costs are compared), then alternating timed calls (at least
    ``reps``, and until the cell has spent ``min_s`` seconds, at most
    :data:`LSA_CELL_MAX_CALLS`), fewer (at least one) once it has spent ``budget_s``
    seconds; medians reported."""
    try:
        from scipy.optimize import linear_sum_assignment as scipy_lsa
    except ImportError:
        scipy_lsa = None
        log("  SciPy is not installed: detblocks alone")
    cells = []
    for b in batches:
        for m in ms:
            for n in ns:
                cell = LsaCell(b, n, m)
                _run_lsa_cell(cell, scipy_lsa, reps, min_s, budget_s)
                cells.append(cell)
                line = f"  lsa B={b} N={n} M={m}: detblocks {cell.detblocks_ms:.3f} ms"
                if cell.scipy_ms is not None:
                    line += f", SciPy {cell.scipy_ms:.3f} ms, ratio {cell.ratio:.3f}"
                    line += ", same total cost" if cell.same_cost else ", TOTAL COSTS DIFFER"
                log(line + f" ({cell.calls} calls)")
    return cells


def plot_lsa_sweep(cells: Sequence[LsaCell], path: Path) -> None:
    """One panel per batch size: ms per call against N (log-log), one colour per M,
    detblocks solid and SciPy dashed; a last panel: the ratio detblocks / SciPy against
    N x M. Written as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({c.b for c in cells})
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5 * (len(batches) + 1), 4.2))
    for ax, b in zip(axes, batches):
        for i, m in enumerate(sorted({c.m for c in cells})):
            row = sorted((c for c in cells if c.b == b and c.m == m), key=lambda c: c.n)
            ns = [c.n for c in row]
            ax.plot(ns, [c.detblocks_ms for c in row], "o-", color=f"C{i}", label=f"detblocks M={m}")
            if any(c.scipy_ms is not None for c in row):
                ax.plot(ns, [c.scipy_ms for c in row], "s--", color=f"C{i}", label=f"SciPy M={m}")
        ax.set(xscale="log", yscale="log", xlabel="N queries", ylabel="ms per call", title=f"B={b}")
    ax = axes[-1]
    for i, b in enumerate(batches):
        row = sorted((c for c in cells if c.b == b and c.ratio is not None), key=lambda c: c.n * c.m)
        ax.plot([c.n * c.m for c in row], [c.ratio for c in row], "o", color=f"C{i}", label=f"B={b}")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="N x M",
        ylabel="detblocks / SciPy",
        title="ratio (below 1 is faster)",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("linear_sum_assignment on random float32 costs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- report
def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _summary_text(summary: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.7g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


def _versions() -> dict[str, str]:
    import torchvision

    import detblocks

    kernels = "native kernels" if detblocks.NATIVE else "no native kernels"
    return {
        "detblocks": f"{detblocks.__version__} ({kernels})",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


#: Environment variables that change CPU timings (threads, huge pages for large tensors,
#: glibc's handling of freed memory); printed with the results when set.
_ENV_KNOBS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "THP_MEM_ALLOC_ENABLE",
    "ATEN_CPU_CAPABILITY",
    "DETBLOCKS_NATIVE",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m detblocks.bench",
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 timed call, small sweep grid")
    ap.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset of %(default)s ('' for none)"
    )
    ap.add_argument(
        "--reps",
        type=int,
        help="timed calls per library and workload, also --modern's; the least per --lsa-sweep cell "
        "(default 11; 1 with --quick)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first (default %(default)s)")
    ap.add_argument(
        "--sweep", action=argparse.BooleanOptionalAction, default=True, help="run the N x M sweep"
    )
    ap.add_argument("--sweep-n", type=_int_list, help="anchor counts (default 1e3,1e4,1e5,1e6)")
    ap.add_argument("--sweep-m", type=_int_list, help="reference counts (default 1,10,100,1000)")
    ap.add_argument(
        "--sweep-reps",
        type=int,
        help="timed calls per sweep cell, fewer past 20 s (default 3; 1 with --quick)",
    )
    ap.add_argument(
        "--max-pairs", type=float, default=1e9, help="skip sweep cells above this many N x M pairs"
    )
    ap.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="peak memory per cell, one subprocess each (default on; off with --quick)",
    )
    ap.add_argument(
        "--modern",
        default="",
        help="comma-separated assigner workloads (" + ", ".join(MODERN_WORKLOADS) + ") against "
        "ultralytics (tal, tal_crowded, hungarian) or mmdet (simota, dsl, atss) where installed",
    )
    ap.add_argument(
        "--lsa-sweep",
        action="store_true",
        help="time matcher.linear_sum_assignment against SciPy over N x M x B (off by default)",
    )
    ap.add_argument(
        "--lsa-n", type=_int_list, help="solver sweep query counts (default 100,300,900,3000; quick 20,100)"
    )
    ap.add_argument(
        "--lsa-m", type=_int_list, help="solver sweep reference counts (default 10,100,300,1000; quick 5,50)"
    )
    ap.add_argument("--lsa-b", type=_int_list, help="solver sweep batch sizes (default 1,16; quick 1,4)")
    ap.add_argument(
        "--lsa-out", type=Path, default=DEFAULT_LSA_PLOT, help="solver sweep plot PNG (default %(default)s)"
    )
    ap.add_argument("--profile", action="store_true", help="per-stage top aten ops and matcher/encoder parts")
    ap.add_argument("--out", type=Path, default=DEFAULT_PLOT, help="sweep plot PNG (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write every raw figure to this JSON file")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument(
        "--device",
        default="cpu",
        help="torch device of the GluonCV workloads and the sweep (default %(default)s); "
        "the --modern workloads and --lsa-sweep run on the CPU",
    )
    ap.add_argument("--memory-cell", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    args.workloads = names
    args.reps = args.reps or (1 if args.quick else 11)
    args.sweep_reps = args.sweep_reps or (1 if args.quick else 3)
    args.sweep_n = args.sweep_n or ([1000, 10000, 100000] if args.quick else [1000, 10000, 100000, 1000000])
    args.sweep_m = args.sweep_m or ([1, 10, 100] if args.quick else [1, 10, 100, 1000])
    lsa_sizes = LSA_QUICK if args.quick else (LSA_SWEEP_N, LSA_SWEEP_M, LSA_SWEEP_B)
    args.lsa_n = args.lsa_n or list(lsa_sizes[0])
    args.lsa_m = args.lsa_m or list(lsa_sizes[1])
    args.lsa_b = args.lsa_b or list(lsa_sizes[2])
    if args.memory is None:
        args.memory = not args.quick
    return args


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


LIBS = ("torchvision", "detblocks")


def _run_workloads(args: argparse.Namespace, sizes: dict[str, WorkloadSize], device: torch.device) -> dict:
    """Time, check, profile and measure every selected workload; print the report; return
    the raw figures per workload."""
    cells: dict[str, dict[str, CellResult]] = {}
    shapes, traffic, parts, profiles = {}, {}, {}, {}
    bandwidth = copy_bandwidth_gbps(64 if args.quick else 256) if device.type == "cpu" else None
    with torch.no_grad():
        for name in args.workloads:
            torch.manual_seed(0)  # the samplers draw from torch's generator
            inputs = make_inputs(name, sizes[name], device)
            shapes[name] = describe(name, inputs)
            traffic[name] = min_bytes(name, inputs)
            pipelines = [PIPELINES[lib](name, inputs) for lib in LIBS]
            cells[name] = compare(pipelines, args.reps, args.warmup, device)
            tv, db = cells[name]["torchvision"], cells[name]["detblocks"]
            print(
                f"  {name}: torchvision {tv.median:.1f} ms, detblocks {db.median:.1f} ms, "
                f"ratio {db.median / tv.median:.3f}",
                flush=True,
            )
            if args.profile:
                parts[name] = time_parts(pipelines[1], args.reps, device)
                profiles[name] = profile_stages(pipelines[1])
            del inputs, pipelines

    memory: dict[tuple[str, str], float | None] = {}
    if args.memory:
        print("  measuring peak memory (one subprocess per cell) ...", flush=True)
        memory = measure_memory(LIBS, args.workloads, args.quick, args.device, args.threads)

    print("\nmedian ms per call; ratio = detblocks / torchvision (below 1 is faster)")
    header = ["workload", "shapes", "floor ms", "torchvision ms", "detblocks ms", "ratio", "goal"]
    if memory:
        header += ["torchvision peak MB", "detblocks peak MB"]
    rows = []
    for name in args.workloads:
        tv, db = cells[name]["torchvision"], cells[name]["detblocks"]
        floor = traffic[name] / (bandwidth * 1e9) * 1e3 if bandwidth else None
        row = [name, shapes[name], _fmt(floor, 2), _fmt(tv.median), _fmt(db.median)]
        row += [_fmt(db.median / tv.median, 3), f"<= {TARGET_RATIO[name]}"]
        if memory:
            row += [_fmt(memory.get(("torchvision", name))), _fmt(memory.get(("detblocks", name)))]
        rows.append(row)
    _print_table(header, rows)
    if bandwidth:
        print(
            f"floor ms: minimum bytes (inputs read once, outputs written once) / copy bandwidth "
            f"{bandwidth:.1f} GB/s measured now"
        )
    if memory:
        print(
            "peak MB: extra resident memory one warm call touches (resident-set high-water mark "
            "during the call minus resident set before it; inputs excluded, outputs included), "
            "fresh process per cell"
        )

    print("\ndetblocks median ms per stage (torchvision's stages for comparison)")
    for name in args.workloads:
        for lib in LIBS:
            st = cells[name][lib].stage_medians()
            print(f"  {name:<12} {lib:<12} " + " | ".join(f"{k} {v:.1f}" for k, v in st.items()))

    print("\nchecks: what each side produced (comparable work when 'ok')")
    check_ok = {}
    for name in args.workloads:
        tv, db = cells[name]["torchvision"].summary, cells[name]["detblocks"].summary
        check_ok[name] = checks_agree(name, tv, db)
        verdict = "ok" if check_ok[name] else "DIFFERENT"
        print(f"  {name:<12} torchvision {_summary_text(tv)} | detblocks {_summary_text(db)} | {verdict}")

    if args.profile:
        print("\ndetblocks parts run alone (median ms)")
        for name, pt in parts.items():
            for k, v in pt.items():
                print(f"  {name:<12} {k:<40} {v:8.2f}")
        print("\ndetblocks top aten ops per stage, one call (self CPU ms, calls)")
        for name, prof in profiles.items():
            for stage, ops in prof.items():
                print(f"  {name} / {stage}: " + ", ".join(f"{op} {ms:.1f} ({n})" for op, n, ms in ops))

    return {
        "copy_bandwidth_gbps": bandwidth,
        "workloads": {
            name: {
                "shapes": shapes[name],
                "min_bytes": traffic[name],
                "checks_agree": check_ok[name],
                **{lib: asdict(cells[name][lib]) | {"median_ms": cells[name][lib].median} for lib in LIBS},
                "ratio": cells[name]["detblocks"].median / cells[name]["torchvision"].median,
                "peak_mb": {lib: memory.get((lib, name)) for lib in LIBS} if memory else None,
                "parts_ms": parts.get(name),
                "profile": profiles.get(name),
            }
            for name in args.workloads
        },
    }


def _run_sweep(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the scaling sweep, print its table and slope, write its plot; return the cells."""
    print(f"\nscaling sweep: N in {args.sweep_n}, M in {args.sweep_m}, B=1, {args.sweep_reps} timed calls")
    with torch.no_grad():
        cells = sweep(args.sweep_n, args.sweep_m, args.sweep_reps, args.max_pairs, device)
    print()
    _print_table(
        ["N", "M", "N x M", "match_boxes ms", "ms / 1e6 pairs", "peak MB", "box_iou ms", "matcher ms"],
        [
            [
                str(c.n),
                str(c.m),
                f"{c.pairs:.0e}",
                _fmt(c.boxes_ms, 2),
                _fmt(c.ms_per_mpair, 3) if not c.skipped else "skipped: " + c.skipped,
                _fmt(c.peak_mb),
                _fmt(c.iou_ms, 2),
                _fmt(c.match_ms, 2),
            ]
            for c in cells
        ],
    )
    slope = loglog_slope(cells)
    if slope is not None:
        print(f"log-log slope of total ms against N x M over cells >= 1e6 pairs: {slope:.2f} (1.00 = linear)")
    plot_sweep(cells, args.out)
    print(f"plot: {args.out}")
    return {
        "sweep_slope": slope,
        "sweep": [asdict(c) | {"total_ms": c.total_ms, "ms_per_mpair": c.ms_per_mpair} for c in cells],
    }


def _run_lsa_sweep(args: argparse.Namespace) -> dict:
    """Run the solver sweep, print its table, write its plot; return the cells."""
    try:
        import scipy

        versus = f"SciPy {scipy.__version__} per image"
    except ImportError:
        versus = "SciPy not installed"
    print(
        f"\nsolver sweep: matcher.linear_sum_assignment on random float32 costs, B in {args.lsa_b}, "
        f"N in {args.lsa_n}, M in {args.lsa_m}; {versus}; detblocks solves the images on "
        f"{torch.get_num_threads()} threads; at least {args.reps} timed calls per cell "
        f"(more up to {LSA_CELL_MIN_S} s, fewer past {LSA_CELL_BUDGET_S:.0f} s)"
    )
    with torch.no_grad():
        cells = lsa_sweep(args.lsa_n, args.lsa_m, args.lsa_b, args.reps)
    print("\nmedian ms per call; ratio = detblocks / SciPy (below 1 is faster)")
    _print_table(
        ["B", "N", "M", "detblocks ms", "SciPy ms", "ratio", "calls", "total cost"],
        [
            [
                str(c.b),
                str(c.n),
                str(c.m),
                _fmt(c.detblocks_ms, 3),
                _fmt(c.scipy_ms, 3),
                _fmt(c.ratio, 3),
                str(c.calls),
                {True: "same", False: "DIFFERENT", None: "-"}[c.same_cost],
            ]
            for c in cells
        ],
    )
    try:
        plot_lsa_sweep(cells, args.lsa_out)
        print(f"plot: {args.lsa_out}")
    except ImportError:
        print("matplotlib is not installed: no plot")
    return {"lsa_sweep": [asdict(c) | {"ratio": c.ratio, "same_cost": c.same_cost} for c in cells]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (see the module docstring); returns the raw results."""
    args = _parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_cell:
        lib, name = args.memory_cell.split(":")
        print("MEMORY " + json.dumps(_memory_cell(lib, name, sizes, args.device, args.threads)), flush=True)
        return {}

    device = torch.device(args.device)
    versions = _versions()
    print(
        "detblocks.bench: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {device.type}, {torch.get_num_threads()} threads, {_cpu_model()}; "
        + f"{args.reps} timed calls per cell after {args.warmup} warm-up, libraries alternating"
        + ("; quick sizes" if args.quick else "")
    )
    knobs = {k: v for k, v in os.environ.items() if k in _ENV_KNOBS or k.startswith("MALLOC_")}
    print("environment: " + (", ".join(f"{k}={v}" for k, v in sorted(knobs.items())) or "defaults"))
    results: dict[str, Any] = {"versions": versions, "args": {k: str(v) for k, v in vars(args).items()}}
    if args.workloads:
        results |= _run_workloads(args, sizes, device)
    modern = [w.strip() for w in args.modern.split(",") if w.strip()]
    if modern:
        unknown = sorted(set(modern) - set(MODERN_WORKLOADS))
        if unknown:
            raise SystemExit(f"--modern takes {sorted(MODERN_WORKLOADS)}, got {unknown}")
        print(
            "\ntoday's assigners (median ms per call; ratio = detblocks / its reference, "
            "ultralytics or mmdet):"
        )
        results["modern"] = run_modern(modern, args.quick, args.reps)
    if args.sweep:
        results |= _run_sweep(args, device)
    if args.lsa_sweep:
        results |= _run_lsa_sweep(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"raw results: {args.json}")
    return results


if __name__ == "__main__":
    main()
