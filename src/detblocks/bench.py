"""Speed benchmark: detblocks against torchvision on the same inputs, in one process.

Usage::

    python -m detblocks.bench                  # five workloads, peak memory, scaling sweep
    python -m detblocks.bench --quick          # small sizes, one timed call each: a smoke run
    python -m detblocks.bench --workloads iou,ssd_decode --reps 15 --no-sweep
    python -m detblocks.bench --profile        # detblocks time per stage and per aten op
    python -m detblocks.bench --json runs/bench/results.json   # also dump every raw figure
    python -m detblocks.bench --workloads "" --no-sweep --modern tal,tal_crowded   # today's assigners

``--modern`` runs the assigner workloads of the shared yardstick (``tal``: B=16, M=50, 1-50
objects; ``tal_crowded``: B=8, M=1500, one image of 1500 small boxes) at 640 px with 8400
anchor points: detblocks' ``TaskAlignedAssigner`` against ultralytics' where ultralytics is
installed (same inputs, alternating calls, checks compared); without it detblocks runs
alone and says so.

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
#: GluonCV"): (B, M, objects per image, crowd) at 640 px, 8400 anchor points, 80 classes.
MODERN_WORKLOADS = {"tal": (16, 50, (1, 50), 0), "tal_crowded": (8, 1500, (1, 30), 1500)}
MODERN_QUICK = {"tal": (2, 8, (1, 8), 0), "tal_crowded": (2, 200, (1, 8), 200)}


def modern_inputs(name: str, quick: bool = False) -> dict[str, Tensor]:
    """YOLOv8 training-step inputs at 640 px: ``make_anchors`` points (strides 8/16/32),
    ground truth padded with -1 rows (``tal_crowded``: one image holds a shelf grid of small
    boxes), predictions that copy a ground truth near it with some noise, sigmoid scores."""
    batch, m, (lo, hi), crowd = (MODERN_QUICK if quick else MODERN_WORKLOADS)[name]
    gen = torch.Generator().manual_seed(SEED + 100 + list(MODERN_WORKLOADS).index(name))
    points = []
    for stride in (8, 16, 32):
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


def modern_pipelines(name: str, inputs: dict[str, Tensor]) -> dict[str, Callable[[], dict[str, float]]]:
    """detblocks' ``TaskAlignedAssigner`` (and its ``(B, N, C)`` score targets), and
    ultralytics' own where it is installed, called as ``v8DetectionLoss`` calls it
    (``gt_labels (B, M, 1)`` float, zero-padded boxes, ``mask_gt``)."""
    from detblocks.assign import TaskAlignedAssigner

    args = (inputs["pred_scores"], inputs["pred_boxes"], inputs["anchor_points"])
    labels, boxes = inputs["gt_labels"], inputs["gt_boxes"]
    hyper = dict(topk=10, num_classes=80, alpha=0.5, beta=6.0)
    tal = TaskAlignedAssigner(**hyper, stride=(8, 16, 32))

    def run_detblocks() -> dict[str, float]:
        a = tal(*args, labels, boxes)
        return {
            "fg": float((a.matches >= 0).sum()),
            "target_scores": float(a.score_targets(80).double().sum()),
        }

    pipelines: dict[str, Callable[[], dict[str, float]]] = {"detblocks": run_detblocks}
    try:
        from ultralytics.utils.tal import TaskAlignedAssigner as Reference
    except ImportError:
        return pipelines
    reference = Reference(**hyper, stride=[8, 16, 32])
    mask = (labels >= 0)[..., None]
    ref_labels = labels.clamp(min=0)[..., None].float()
    ref_boxes = torch.where(mask, boxes, torch.zeros((), dtype=boxes.dtype))

    def run_ultralytics() -> dict[str, float]:
        out = reference(*args, ref_labels, ref_boxes, mask.float())
        return {"fg": float(out[3].sum()), "target_scores": float(out[2].double().sum())}

    pipelines["ultralytics"] = run_ultralytics
    return pipelines


def run_modern(names: Sequence[str], quick: bool = False, reps: int = 5) -> dict[str, dict[str, Any]]:
    """Time each modern workload for detblocks, and for ultralytics where it is installed
    (alternating calls); print median milliseconds, the ratio and the checks. Without
    ultralytics, detblocks runs alone and the table says so."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        pipelines = modern_pipelines(name, modern_inputs(name, quick))
        times: dict[str, list[float]] = {lib: [] for lib in pipelines}
        checks = {lib: fn() for lib, fn in pipelines.items()}  # warm-up
        for _ in range(reps):
            for lib, fn in pipelines.items():
                start = time.perf_counter()
                fn()
                times[lib].append((time.perf_counter() - start) * 1e3)
        med = {lib: statistics.median(t) for lib, t in times.items()}
        results[name] = {"median_ms": med, "checks": checks}
        ref = med.get("ultralytics")
        line = f"  {name}: detblocks {med['detblocks']:.1f} ms"
        if ref is None:
            line += " (ultralytics is not installed: detblocks alone)"
        else:
            same = checks["ultralytics"]["fg"] == checks["detblocks"]["fg"] and math.isclose(
                checks["ultralytics"]["target_scores"], checks["detblocks"]["target_scores"], rel_tol=1e-5
            )
            line += f", ultralytics {ref:.1f} ms, ratio {med['detblocks'] / ref:.3f}"
            line += ", same assignment" if same else f", checks differ: {checks}"
        mine = checks["detblocks"]
        print(line + f"; fg {mine['fg']:.0f}, target scores {mine['target_scores']:.3f}")
    return results


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
        "--reps", type=int, help="timed calls per library and workload (default 11; 1 with --quick)"
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
        help="comma-separated assigner workloads (tal, tal_crowded) against ultralytics where installed",
    )
    ap.add_argument("--profile", action="store_true", help="per-stage top aten ops and matcher/encoder parts")
    ap.add_argument("--out", type=Path, default=DEFAULT_PLOT, help="sweep plot PNG (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write every raw figure to this JSON file")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
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
        print("\ntoday's assigners (median ms per call; ratio = detblocks / ultralytics):")
        results["modern"] = run_modern(modern, args.quick, args.reps)
    if args.sweep:
        results |= _run_sweep(args, device)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"raw results: {args.json}")
    return results


if __name__ == "__main__":
    main()
