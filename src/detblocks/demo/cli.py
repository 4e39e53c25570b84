"""Command line of ``detblocks demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields

from .data import DatasetError
from .train import ASSIGNER_NAMES, RECIPE_EPOCHS, RECIPES, CheckpointError, DemoConfig, run_demo

__all__ = ["build_parser", "config_from_args", "main"]

_DEFAULTS = DemoConfig()

DESCRIPTION = """\
Train, evaluate and ship a detector built from detblocks: an SSD (the default) or,
with --recipe anchor-free, a YOLOv8-style anchor-free detector.

With no arguments: draws a synthetic dataset of coloured shapes (circle, square,
triangle, cross, diamond, ring) on cluttered backgrounds, trains an SSD
(torchvision backbone, random init, FeatureExpander, ConvPredictor heads;
targets from BBoxBatchIOU, CompositeMatcher, OHEMSampler and the encoders),
reports COCO mAP on the validation split, saves a checkpoint, exports the
inference path (NMS included) to ONNX and checks it in onnxruntime against
eager PyTorch, and draws pictures. About 3 minutes of CPU time: a few minutes
on an idle 2-core machine, well under 10 on a busy one.

--recipe anchor-free: the same backbone tapped at strides 8 and 16, an FPN
(FPNFeatureExpander, with P6 as the stride-32 level) and a bottom-up pass, decoupled
class and box-distribution heads on the anchor points of detblocks.anchor; targets from a detblocks.assign
rule (--assigner: tal = TaskAlignedAssigner, simota = SimOTAAssigner, dsl =
DynamicSoftLabelAssigner, atss = ATSSAssigner); loss BCE on the assignment's
score targets, 1 - CIoU (aligned_box_iou) and DFL; NMS by detblocks.postprocess.

Distributed: run the same command under
  torchrun --nproc_per_node=2 -m detblocks demo ...
(DistributedDataParallel with gloo; --batch-size is then the total over processes).
"""


def build_parser(prog: str = "detblocks demo") -> argparse.ArgumentParser:
    """The argument parser of the demo."""
    d = _DEFAULTS
    p = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--recipe", default=d.recipe, choices=list(RECIPES),
        help="detector: the SSD, or a YOLOv8-style anchor-free detector (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--assigner", default=d.assigner, choices=list(ASSIGNER_NAMES),
        help="target assignment of --recipe anchor-free: TaskAlignedAssigner (tal), SimOTAAssigner, "
        "DynamicSoftLabelAssigner (dsl) or ATSSAssigner (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--epochs", type=int, default=d.epochs,
        help="passes over the training split (default: "
        + ", ".join(f"{n} for {r}" for r, n in RECIPE_EPOCHS.items()) + ")",
    )  # fmt: skip
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size,
        help="images per optimizer step, over all processes (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--image-size", type=int, default=d.image_size,
        help="side of the square network input in pixels; sets the default boxes (default %(default)s)",
    )  # fmt: skip
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of AdamW (default %(default)s)")
    g.add_argument(
        "--weight-decay", type=float, default=d.weight_decay,
        help="AdamW weight decay of conv and linear weights (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--warmup", type=int, default=d.warmup, help="linear warm-up iterations (default %(default)s)"
    )
    g.add_argument(
        "--iters", type=int, default=None,
        help="stop each epoch after this many iterations (quick runs; default: whole split)",
    )  # fmt: skip
    g.add_argument(
        "--backbone", default=d.backbone, choices=["mobilenet_v3_small", "resnet18"],
        help="torchvision backbone, random initialisation (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of data, initialisation and order (default %(default)s)",
    )
    g.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda (default %(default)s)")
    g.add_argument(
        "--threads", type=int, default=d.threads,
        help="torch CPU threads per process (default %(default)s: on a small or shared CPU one thread "
        "per process beats several that wait on each other; under torchrun, one process per core)",
    )  # fmt: skip
    g.add_argument(
        "--resume", metavar="CHECKPOINT", default=None,
        help="continue training from a checkpoint written by an earlier run, up to --epochs",
    )  # fmt: skip

    g = p.add_argument_group("data")
    g.add_argument(
        "--data", metavar="ANNOTATIONS.json", default=None,
        help="train on a COCO-format detection dataset (read by torchvision's CocoDetection) instead of "
        "the synthetic shapes; images are resized to --image-size squares",
    )  # fmt: skip
    g.add_argument(
        "--images", metavar="DIR", default=None, help="image folder of --data (default: the json's folder)"
    )
    g.add_argument(
        "--val-data", metavar="ANNOTATIONS.json", default=None,
        help="COCO-format validation set (default: hold out --val-fraction of --data)",
    )  # fmt: skip
    g.add_argument(
        "--val-images",
        metavar="DIR",
        default=None,
        help="image folder of --val-data (default: the json's folder)",
    )
    g.add_argument(
        "--val-fraction", type=float, default=d.val_fraction,
        help="share of --data held out for validation when --val-data is not given (default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--train-size", type=int, default=d.train_size, help="synthetic training images (default %(default)s)"
    )
    g.add_argument(
        "--val-size", type=int, default=d.val_size, help="synthetic validation images (default %(default)s)"
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--out", default=d.out,
        help="output folder: checkpoint, ONNX file, pictures, metrics.json (default %(default)s)",
    )  # fmt: skip
    g.add_argument("--no-export", dest="export", action="store_false", help="skip the ONNX export and check")
    g.add_argument("--no-plots", dest="plots", action="store_false", help="skip the pictures")
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DemoConfig:
    """Turn parsed arguments into a :class:`DemoConfig`, rejecting impossible values."""
    positive = ("epochs", "batch_size", "train_size", "val_size")
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.image_size < 32:
        parser.error(f"--image-size must be >= 32, got {args.image_size}")
    if args.recipe == "anchor-free" and args.image_size % 32:
        parser.error(f"--recipe anchor-free needs an --image-size multiple of 32, got {args.image_size}")
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    for flag in ("images", "val_data", "val_images"):
        if getattr(args, flag) is not None and args.data is None:
            parser.error(f"--{flag.replace('_', '-')} needs --data")
    names = {f.name for f in fields(DemoConfig)}
    return DemoConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(argv: Sequence[str] | None = None, prog: str = "detblocks demo") -> int:
    """Run the demo with command-line arguments ``argv``; returns the exit code."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    cfg = config_from_args(args, parser)
    try:
        run_demo(cfg)
    except (DatasetError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
