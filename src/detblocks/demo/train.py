"""Training loop of the demo, single process or DistributedDataParallel (gloo).

:func:`run_demo` does the whole job: data, model, training with a progress
bar and a per-phase timing table, validation mAP after every epoch,
checkpoint, ONNX export and check, pictures. Under ``torchrun`` every rank
trains on its share of each batch (:class:`~torch.utils.data.DistributedSampler`)
and only rank 0 prints, evaluates and writes files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .anchor_free import (
    ASSIGNERS,
    AnchorFreeDetector,
    AnchorFreeInference,
    AnchorFreeTargets,
    anchor_free_loss,
)
from .data import CocoJsonDataset, DatasetError, ShapesDataset, collate, split_indices
from .evaluate import CocoMetrics, Detections, coco_evaluate, coco_ground_truth, predict
from .model import BACKBONES, SSD, SSDInference
from .targets import SSDTargets, ssd_loss

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "DemoConfig",
    "DemoResult",
    "RECIPES",
    "build_datasets",
    "load_checkpoint",
    "run_demo",
]

CHECKPOINT_NAME = "checkpoint.pt"
# Images per inference call in evaluation: NMS runs over the whole batch at once (one group per
# image and class) and its cost grows with the batch, the convolutions prefer larger ones.
EVAL_BATCH = 16
# Gradient norm cap: the loss of a randomly initialised detector can spike early on.
GRAD_CLIP = 10.0
ONNX_NAME = "detector.onnx"
#: The detectors the demo trains (``--recipe``); the first one is the default.
RECIPES: tuple[str, ...] = ("ssd", "anchor-free")
#: Default ``--epochs`` of each recipe: about 2.5 minutes on an idle 2-core machine each (the
#: anchor-free detector costs more per iteration and learns faster per image).
RECIPE_EPOCHS: dict[str, int] = {"ssd": 4, "anchor-free": 3}
#: Target assigners of the anchor-free recipe (``--assigner``), :mod:`detblocks.assign`'s rules.
ASSIGNER_NAMES: tuple[str, ...] = tuple(ASSIGNERS)
# Without a terminal (a log file, CI), the progress bar prints a plain line this often
# (in seconds) and at the end of each epoch, instead of carriage-return updates.
LOG_INTERVAL = 15.0


@dataclass
class DemoConfig:
    """Every setting of the demo (the command line maps onto these fields one to one)."""

    recipe: str = "ssd"
    assigner: str = "tal"
    epochs: int | None = None  # None: the recipe's default, RECIPE_EPOCHS
    batch_size: int = 32
    image_size: int = 128
    out: str = "runs/demo"
    seed: int = 0
    device: str = "cpu"
    data: str | None = None
    images: str | None = None
    val_data: str | None = None
    val_images: str | None = None
    val_fraction: float = 0.2
    train_size: int = 6000
    val_size: int = 500
    iters: int | None = None
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 100
    backbone: str = "mobilenet_v3_small"
    resume: str | None = None
    threads: int = 1
    export: bool = True
    plots: bool = True
    quiet: bool = False


@dataclass
class DemoResult:
    """What a run produced (on rank 0; other ranks get the model and an empty rest)."""

    model: SSD | AnchorFreeDetector
    metrics: CocoMetrics | None = None
    dets: Detections | None = None
    history: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    onnx_check: dict | None = None
    minutes: float = 0.0


# --------------------------------------------------------------------------- helpers


def _log(cfg: DemoConfig, rank: int, msg: str) -> None:
    """Print on rank 0 unless ``--quiet``."""
    if rank == 0 and not cfg.quiet:
        print(msg, flush=True)


def _init_distributed() -> tuple[int, int]:
    """Join the process group when started by torchrun; returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def build_datasets(cfg: DemoConfig) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    """Train and validation datasets and the class names, from ``cfg``.

    Raises:
        DatasetError: the ``--data`` dataset is missing or malformed.
    """
    if cfg.data is None:
        train = ShapesDataset(cfg.train_size, cfg.image_size, seed=cfg.seed, split="train")
        val = ShapesDataset(cfg.val_size, cfg.image_size, seed=cfg.seed, split="val")
        return train, val, ShapesDataset.classes
    ann = Path(cfg.data)
    images = Path(cfg.images) if cfg.images else ann.parent
    if cfg.val_data is not None:
        train_ds = CocoJsonDataset(ann, images, cfg.image_size)
        val_images = Path(cfg.val_images) if cfg.val_images else Path(cfg.val_data).parent
        val_ds = CocoJsonDataset(cfg.val_data, val_images, cfg.image_size)
        if val_ds.classes != train_ds.classes:
            raise DatasetError(
                f"validation categories {list(val_ds.classes)} differ from "
                f"training categories {list(train_ds.classes)}"
            )
        return train_ds, val_ds, train_ds.classes
    full = CocoJsonDataset(ann, images, cfg.image_size)
    train_idx, val_idx = split_indices(len(full), cfg.val_fraction, cfg.seed)
    train_ds = CocoJsonDataset(ann, images, cfg.image_size, indices=train_idx)
    val_ds = CocoJsonDataset(ann, images, cfg.image_size, indices=val_idx)
    return train_ds, val_ds, full.classes


def _hflip(images: Tensor, boxes: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror the images where ``flip`` (Tensor[B] bool) is set; padded box rows stay -1."""
    size = images.shape[-1]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    x0, y0, x1, y1 = boxes.unbind(-1)
    mirrored = torch.stack([size - x1, y0, size - x0, y1], dim=-1)
    padded = (boxes < 0).all(dim=-1, keepdim=True)
    mirrored = torch.where(padded, boxes, mirrored)
    return images, torch.where(flip[:, None, None], mirrored, boxes)


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero, per iteration."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


@dataclass
class _Recipe:
    """What differs between the recipes: the model, its inference path and the three phases of
    a training step (timed apart), ``forward(net, images) -> outputs``,
    ``targets(outputs, gt_boxes, gt_labels) -> targets`` (ground truth normalised to the
    image, padded rows -1) and ``loss(outputs, targets) -> (cls_loss, box_loss)``."""

    model: SSD | AnchorFreeDetector
    inference: nn.Module
    forward: Callable[[nn.Module, Tensor], tuple[Tensor, ...]]
    targets: Callable[[tuple[Tensor, ...], Tensor, Tensor], Any]
    loss: Callable[[tuple[Tensor, ...], Any], tuple[Tensor, Tensor]]
    describe: str


def _build_recipe(cfg: DemoConfig, num_classes: int, device: torch.device) -> _Recipe:
    """The model and training step of ``cfg.recipe``."""
    if cfg.recipe == "ssd":
        ssd = SSD(num_classes, cfg.image_size, backbone=cfg.backbone).to(device)
        ssd_targets = SSDTargets().to(device)
        return _Recipe(
            model=ssd,
            inference=SSDInference(ssd),
            forward=lambda net, images: net(images),
            targets=lambda out, gt_boxes, gt_labels: ssd_targets(
                ssd.anchors, out[0].detach(), gt_boxes, gt_labels
            ),
            loss=lambda out, tgt: ssd_loss(*out, *tgt),
            describe=f"SSD on {cfg.backbone} ({_millions(ssd)}M parameters), maps {ssd.feature_sizes}, "
            f"{ssd.num_anchors} default boxes",
        )
    model = AnchorFreeDetector(num_classes, cfg.image_size, backbone=cfg.backbone).to(device)
    assigner = AnchorFreeTargets(cfg.assigner, num_classes).to(device)
    size = float(cfg.image_size)

    def forward(net: nn.Module, images: Tensor) -> tuple[Tensor, ...]:
        cls_logits, box_logits = net(images)
        return cls_logits, box_logits, model.decode(box_logits)

    def targets(out: tuple[Tensor, ...], gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Any, Tensor]:
        pixels = torch.where((gt_labels < 0).unsqueeze(-1), -1.0, gt_boxes * size)
        return assigner(model, out[0], out[2], pixels, gt_labels), pixels

    return _Recipe(
        model=model,
        inference=AnchorFreeInference(model),
        forward=forward,
        targets=targets,
        loss=lambda out, tgt: anchor_free_loss(model, out[0], out[1], out[2], tgt[0], tgt[1]),
        describe=f"anchor-free (YOLOv8-style) on {cfg.backbone} ({_millions(model)}M parameters), "
        f"maps {model.feature_sizes}, {model.num_points} anchor points, assigner {cfg.assigner} "
        f"({type(assigner.rule).__name__})",
    )


def _millions(model: nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}"


def _checkpoint_meta(cfg: DemoConfig, classes: tuple[str, ...]) -> dict:
    """What a checkpoint must agree on to be resumed by a run."""
    return {
        "recipe": cfg.recipe,
        "image_size": cfg.image_size,
        "backbone": cfg.backbone,
        "classes": list(classes),
    }


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: missing, unreadable, or from another configuration."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a demo checkpoint with ``weights_only=True`` (tensors and plain containers only).

    Raises:
        CheckpointError: the file is missing or is not a demo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "scheduler", "epoch", "meta"} <= ckpt.keys():
        raise CheckpointError(f"{path} is not a detblocks demo checkpoint")
    return ckpt


# --------------------------------------------------------------------------- main loop


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Train, evaluate and ship the demo detector (``cfg.recipe``) as configured by ``cfg``."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    rank, world = _init_distributed()
    torch.set_num_threads(cfg.threads)
    if cfg.batch_size % world != 0:
        raise ValueError(
            f"--batch-size {cfg.batch_size} must be divisible by the number of processes {world}"
        )
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"--backbone must be one of {sorted(BACKBONES)}, got {cfg.backbone!r}")
    if cfg.recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {list(RECIPES)}, got {cfg.recipe!r}")
    if cfg.epochs is None:
        cfg = replace(cfg, epochs=RECIPE_EPOCHS[cfg.recipe])
    if cfg.assigner not in ASSIGNER_NAMES:
        raise ValueError(f"--assigner must be one of {list(ASSIGNER_NAMES)}, got {cfg.assigner!r}")
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    train_ds, val_ds, classes = build_datasets(cfg)
    _log(
        cfg,
        rank,
        f"data: {len(train_ds)} train / {len(val_ds)} val images of {cfg.image_size}px, "
        f"{len(classes)} classes ({', '.join(classes)}) [{time.perf_counter() - t0:.1f}s]",
    )

    torch.manual_seed(cfg.seed)
    recipe = _build_recipe(cfg, len(classes), device)
    model = recipe.model.to(memory_format=torch.channels_last)
    params_bn = [p for n, p in model.named_parameters() if p.ndim <= 1]
    params_w = [p for n, p in model.named_parameters() if p.ndim > 1]
    optimizer = torch.optim.AdamW(
        [{"params": params_w, "weight_decay": cfg.weight_decay}, {"params": params_bn, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    per_rank_batch = cfg.batch_size // world
    # The shuffling order is a function of (seed, epoch) (set_epoch below), so a resumed run sees
    # the same batches as an uninterrupted one; with one process this sampler is a plain shuffle.
    sampler = DistributedSampler(
        train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        train_ds, batch_size=per_rank_batch, sampler=sampler, drop_last=True, collate_fn=collate
    )
    if len(loader) == 0:
        raise DatasetError(
            f"the training split has {len(train_ds)} images, fewer than one batch of {cfg.batch_size}; "
            "lower --batch-size"
        )
    iters_per_epoch = len(loader) if cfg.iters is None else min(cfg.iters, len(loader))
    total_iters = cfg.epochs * iters_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_iters, min(cfg.warmup, total_iters))
    )
    history: dict = {"loss": [], "cls_loss": [], "box_loss": [], "epoch_iters": [], "map": [], "map50": []}
    start_epoch = 0
    meta = _checkpoint_meta(cfg, classes)
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        if ckpt["meta"] != meta:
            raise CheckpointError(
                f"checkpoint {cfg.resume} was trained with {ckpt['meta']}, this run uses {meta}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = ckpt["history"]
        start_epoch = int(ckpt["epoch"])
        _log(cfg, rank, f"resumed from {cfg.resume} after epoch {start_epoch}")

    net: nn.Module = DistributedDataParallel(model) if world > 1 else model
    flip_gen = torch.Generator()
    ground_truth = coco_ground_truth(val_ds, classes) if rank == 0 else None
    inference = recipe.inference
    timing = {"data": 0.0, "forward": 0.0, "targets": 0.0, "backward": 0.0}
    timed_iters = 0
    metrics: CocoMetrics | None = None
    dets: Detections | None = None
    _log(
        cfg,
        rank,
        f"model: {recipe.describe}; {world} process(es), batch {cfg.batch_size}, "
        f"{iters_per_epoch} iterations/epoch",
    )

    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        flip_gen.manual_seed(
            cfg.seed * 1_000_003 + epoch * 1009 + rank
        )  # flips depend on (seed, epoch, rank)
        net.train()
        bar = _progress_bar(iters_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", rank != 0 or cfg.quiet)
        sums = torch.zeros(3)
        t_epoch = time.perf_counter()
        t_data = time.perf_counter()
        for it, (images, gt_boxes, gt_labels) in enumerate(loader):
            if it >= iters_per_epoch:
                break
            images, gt_boxes = _hflip(images, gt_boxes, torch.rand(images.shape[0], generator=flip_gen) < 0.5)
            images = images.to(device).float().div_(255).contiguous(memory_format=torch.channels_last)
            gt_labels = gt_labels.to(device)
            padded = (gt_labels < 0).unsqueeze(-1)  # (B, M, 1)
            gt_boxes = torch.where(padded, -1.0, gt_boxes.to(device) / cfg.image_size)  # normalised
            t1 = time.perf_counter()
            outputs = recipe.forward(net, images)
            t2 = time.perf_counter()
            step_targets = recipe.targets(outputs, gt_boxes, gt_labels)
            t3 = time.perf_counter()
            cls_loss, box_loss = recipe.loss(outputs, step_targets)
            loss = cls_loss + box_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, iteration {it + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            t4 = time.perf_counter()
            if it > 0 or epoch > start_epoch:  # the first iteration carries one-off start-up costs
                timing["data"] += t1 - t_data
                timing["forward"] += t2 - t1
                timing["targets"] += t3 - t2
                timing["backward"] += t4 - t3
                timed_iters += 1
            vals = torch.stack([loss.detach(), cls_loss.detach(), box_loss.detach()]).cpu()
            sums += vals
            history["loss"].append(float(vals[0]))
            history["cls_loss"].append(float(vals[1]))
            history["box_loss"].append(float(vals[2]))
            seen = (it + 1) * cfg.batch_size
            bar.set_postfix(
                loss=f"{vals[0]:.3f}",
                cls=f"{vals[1]:.3f}",
                box=f"{vals[2]:.3f}",
                lr=f"{scheduler.get_last_lr()[0]:.3g}",
                img_s=f"{seen / (time.perf_counter() - t_epoch):.0f}",
            )
            bar.update(1)
            t_data = time.perf_counter()
        bar.close()
        history["epoch_iters"].append(len(history["loss"]))
        if world > 1:
            _average_buffers(model, world)

        if rank == 0:
            t_eval = time.perf_counter()
            dets = predict(inference, val_ds, batch_size=EVAL_BATCH, device=device)
            metrics = coco_evaluate(ground_truth, dets)  # type: ignore[arg-type]
            history["map"].append(metrics.map)
            history["map50"].append(metrics.map50)
            n = iters_per_epoch
            _log(
                cfg,
                rank,
                f"epoch {epoch + 1}: loss {sums[0] / n:.3f} (cls {sums[1] / n:.3f}, box {sums[2] / n:.3f}), "
                f"val mAP@[.5:.95] {metrics.map:.3f}, mAP@.5 {metrics.map50:.3f} "
                f"[eval {time.perf_counter() - t_eval:.1f}s]",
            )
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "meta": meta,
                    "config": {k: v for k, v in asdict(cfg).items()},
                },
                out / CHECKPOINT_NAME,
            )
        if world > 1:
            dist.barrier()

    result = DemoResult(model=model, history=history)
    if rank == 0:
        if timed_iters:
            _log(cfg, rank, _timing_table(timing, timed_iters, cfg.batch_size))
        if metrics is None or dets is None:  # nothing left to train after --resume: evaluate once
            dets = predict(inference, val_ds, batch_size=EVAL_BATCH, device=device)
            metrics = coco_evaluate(ground_truth, dets)  # type: ignore[arg-type]
        result.metrics = metrics
        result.files["checkpoint"] = str(out / CHECKPOINT_NAME)
        if not (out / CHECKPOINT_NAME).exists():
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": cfg.epochs,
                    "history": history,
                    "meta": meta,
                    "config": asdict(cfg),
                },
                out / CHECKPOINT_NAME,
            )
        _finish(cfg, inference, dets, val_ds, classes, result, out)
        result.minutes = (time.perf_counter() - t_start) / 60
        cpu_minutes = (time.process_time() - cpu_start) / 60
        summary = {
            "map": metrics.map,
            "map50": metrics.map50,
            "coco_stats": metrics.stats,
            "minutes": result.minutes,
            "cpu_minutes": cpu_minutes,
            "epochs": cfg.epochs,
            "ms_per_iteration": {k: 1000 * v / max(1, timed_iters) for k, v in timing.items()},
            "onnx_check": result.onnx_check,
            "files": result.files,
            "config": asdict(cfg),
        }
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        result.files["metrics"] = str(out / "metrics.json")
        _log(
            cfg,
            rank,
            f"\nvalidation ({len(val_ds)} images, COCOeval): mAP@[.5:.95] = {metrics.map:.3f}, "
            f"mAP@.5 = {metrics.map50:.3f}; total {result.minutes:.1f} min "
            f"({cpu_minutes:.1f} min of CPU time in this process)\noutput folder: {out.resolve()}\n"
            + "".join(f"  {k:<11} {v}\n" for k, v in result.files.items()),
        )
    if world > 1:
        dist.barrier()
    return result


class _LogProgress:
    """The progress bar without a terminal: a plain line every :data:`LOG_INTERVAL` seconds
    and one at the end, so that a log file reads line by line (tqdm's interface, the part used)."""

    def __init__(self, total: int, desc: str, interval: float = LOG_INTERVAL) -> None:
        self.total, self.desc, self.interval = total, desc, interval
        self.n = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last = time.perf_counter()

    def set_postfix(self, **values: str) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval and self.n < self.total:
            self._print(now)

    def close(self) -> None:
        self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        self.last = now
        values = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        print(
            f"{self.desc}: {self.n}/{self.total} iterations [{now - self.start:.0f}s] {values}",
            file=sys.stdout,
            flush=True,
        )


class _NoProgress:
    """A disabled progress bar (other ranks, ``--quiet``)."""

    def set_postfix(self, **values: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, disable: bool) -> Any:
    """tqdm's bar on a terminal; periodic plain lines otherwise (:class:`_LogProgress`)."""
    if disable:
        return _NoProgress()
    if not sys.stdout.isatty():
        return _LogProgress(total, desc)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, file=sys.stdout)


def _average_buffers(model: nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over the ranks (DDP keeps parameters in step,
    but each rank's last forward updates its buffers with its own batch)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def _timing_table(timing: dict[str, float], iters: int, batch_size: int) -> str:
    total = sum(timing.values())
    lines = [f"time per iteration ({iters} iterations, batch {batch_size}):"]
    for k, v in timing.items():
        lines.append(f"  {k:<9} {1000 * v / iters:8.1f} ms  {100 * v / total:5.1f}%")
    lines.append(
        f"  {'total':<9} {1000 * total / iters:8.1f} ms  ({iters * batch_size / total:.0f} images/s)"
    )
    return "\n".join(lines)


def _finish(
    cfg: DemoConfig,
    inference: nn.Module,
    dets: Detections,
    val_ds: Dataset,
    classes: tuple[str, ...],
    result: DemoResult,
    out: Path,
) -> None:
    """Export and check ONNX against the eager detections ``dets``, draw the pictures (rank 0)."""
    inference.eval()
    inference.cpu()  # the exported graph and onnxruntime run on the CPU
    if cfg.export:
        from .export import check_onnx, export_onnx

        path = out / ONNX_NAME
        t = time.perf_counter()
        export_onnx(inference, cfg.image_size, path)
        check = check_onnx(path, val_ds, dets)
        result.onnx_check = check
        result.files["onnx"] = str(path)
        _log(
            cfg,
            0,
            f"ONNX: exported {path.name} ({check['nms']}); onnxruntime on {check['images']} val images: "
            f"{'MATCH' if check['equal'] else 'MISMATCH'} with eager PyTorch "
            f"({check['detections']} detections, max |d box| {check['max_box_diff']:.2g} px, "
            f"max |d score| {check['max_score_diff']:.2g}; tolerance {check['tolerance']}) "
            f"[{time.perf_counter() - t:.1f}s]",
        )
        if not check["equal"]:
            raise RuntimeError(f"ONNX detections differ from eager PyTorch: {check}")
    if cfg.plots:
        from .plots import plot_detections, plot_training

        result.files["detections"] = str(plot_detections(val_ds, dets, classes, out / "detections.png"))
        result.files["training"] = str(plot_training(result.history, out / "training.png"))
