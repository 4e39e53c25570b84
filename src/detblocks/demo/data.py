"""Datasets of the demo: procedurally drawn shapes, and COCO-json folders.

Every dataset item is ``(image, target)`` with ``image`` a ``uint8`` tensor
``(3, S, S)`` and ``target`` a dict of ``boxes`` (``Tensor[K, 4]``, corner
form, pixels of the ``S x S`` image), ``labels`` (``Tensor[K]`` int64 in
``[0, num_classes)``) and ``iscrowd`` (``Tensor[K]`` bool; crowd regions take
no part in training and are "ignore" regions for the evaluator).
:func:`collate` pads a batch to GluonCV's layout: ground-truth rows of ``-1``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_CLASSES",
    "CocoJsonDataset",
    "DatasetError",
    "ShapesDataset",
    "collate",
    "collate_eval",
    "draw_shapes",
]

#: The classes of the synthetic dataset, in label order.
SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")

# Base RGB colour of each class (jittered per object), so colour and shape both carry the class.
_CLASS_COLOURS = torch.tensor(
    [
        [0.90, 0.15, 0.15],  # circle: red
        [0.15, 0.70, 0.20],  # square: green
        [0.20, 0.35, 0.95],  # triangle: blue
        [0.95, 0.85, 0.10],  # cross: yellow
        [0.85, 0.20, 0.85],  # diamond: magenta
        [0.10, 0.85, 0.90],  # ring: cyan
    ]
)

# Half-width of the cross arms and inner radius of the ring, relative to the object's half-size.
_CROSS_ARM = 0.34
_RING_INNER = 0.5


class DatasetError(ValueError):
    """A dataset that cannot be used: missing files, malformed annotations."""


# --------------------------------------------------------------------------- synthetic shapes


def _shape_distance(cls: int, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance-like field of one shape class, in units of the object's half-size.

    Args:
        cls: class index into :data:`SHAPE_CLASSES`.
        u, v (Tensor[P, S, S]): pixel coordinates relative to each object's centre,
            divided by its half-width / half-height.

    Returns:
        Tensor[P, S, S]: negative inside the shape, positive outside, about the distance
        to the outline (in half-sizes).
    """
    au, av = u.abs(), v.abs()
    name = SHAPE_CLASSES[cls]
    if name == "circle":
        return torch.sqrt(u * u + v * v) - 1.0
    if name == "square":
        return torch.maximum(au, av) - 1.0
    if name == "triangle":  # upward: apex at v = -1, base at v = +1 spanning u in [-1, 1]
        return torch.maximum(v - 1.0, (au - (v + 1.0) * 0.5) * (2.0 / math.sqrt(5.0)))
    if name == "cross":
        return torch.minimum(
            torch.maximum(au - 1.0, av - _CROSS_ARM), torch.maximum(au - _CROSS_ARM, av - 1.0)
        )
    if name == "diamond":
        return (au + av - 1.0) * (1.0 / math.sqrt(2.0))
    # ring
    return (torch.sqrt(u * u + v * v) - (1.0 + _RING_INNER) / 2).abs() - (1.0 - _RING_INNER) / 2


def _place_objects(
    n: int, size: int, max_objects: int, min_size: float, max_size: float, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Random object layout: sizes log-uniform, large objects first, limited occlusion.

    Returns:
        boxes (Tensor[n, K, 4]) corner pixels, labels (Tensor[n, K]) int64,
        valid (Tensor[n, K]) bool: objects kept in each image.
    """
    k = max_objects
    lo, hi = math.log(min_size * size), math.log(max_size * size)
    side = torch.exp(lo + (hi - lo) * torch.rand(n, k, generator=g))  # (n, K) box side in px
    side, _ = side.sort(dim=1, descending=True)  # draw large objects first, small ones on top
    aspect = torch.exp((torch.rand(n, k, generator=g) - 0.5) * 0.6)  # width / height in ~[0.74, 1.35]
    w = (side * aspect.sqrt()).clamp(max=size - 2.0)
    h = (side / aspect.sqrt()).clamp(max=size - 2.0)
    x0 = torch.rand(n, k, generator=g) * (size - w)
    y0 = torch.rand(n, k, generator=g) * (size - h)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=-1)  # (n, K, 4)
    labels = torch.randint(0, len(SHAPE_CLASSES), (n, k), generator=g)
    count = torch.randint(1, k + 1, (n, 1), generator=g)
    valid = torch.arange(k).unsqueeze(0) < count  # (n, K)
    # Greedy occlusion limit: an object may cover at most 40% of any earlier (larger) one.
    area = w * h
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (n, K, K)
    cover = inter / area[:, :, None]  # cover[i, j]: share of object i hidden by object j
    for j in range(1, k):
        blocked = ((cover[:, :j, j] > 0.4) & valid[:, :j]).any(dim=1)
        valid[:, j] &= ~blocked
    return boxes, labels, valid


def draw_shapes(
    n: int,
    size: int,
    generator: torch.Generator,
    *,
    max_objects: int = 6,
    min_size: float = 0.08,
    max_size: float = 0.45,
    clutter: bool = True,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Draw ``n`` images of coloured shapes on cluttered backgrounds, all at once.

    Backgrounds are a random colour gradient with soft blobs, random line segments
    and pixel noise; objects are anti-aliased shapes from :data:`SHAPE_CLASSES` with
    jittered class colours, sizes from ``min_size`` to ``max_size`` of the image
    side (log-uniform, so small objects are common), partial overlaps allowed.

    Args:
        n: number of images.
        size: image side ``S`` in pixels.
        generator: source of all randomness (the output is a function of its state).
        max_objects: at most this many objects per image (at least one).
        min_size, max_size: object box side range as a fraction of ``size``.
        clutter: add blobs and lines to the background.

    Returns:
        images (Tensor[n, 3, S, S] uint8), boxes (list of Tensor[K_i, 4] corner pixels),
        labels (list of Tensor[K_i] int64).
    """
    g = generator
    ys = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = ys.view(1, 1, size, 1), ys.view(1, 1, 1, size)

    # Background: a linear colour gradient.
    c0 = torch.rand(n, 3, 1, 1, generator=g) * 0.7 + 0.15
    c1 = torch.rand(n, 3, 1, 1, generator=g) * 0.7 + 0.15
    theta = torch.rand(n, 1, 1, 1, generator=g) * (2 * math.pi)
    ramp = ((xx - size / 2) * torch.cos(theta) + (yy - size / 2) * torch.sin(theta)) / size + 0.5
    img = c0 + (c1 - c0) * ramp.clamp(0, 1)  # (n, 3, S, S)

    if clutter:
        # Soft blobs: translucent separable Gaussians of random colour.
        nb = 4
        bc = torch.rand(n, nb, 2, 1, 1, generator=g) * size
        bs = (torch.rand(n, nb, 1, 1, generator=g) * 0.12 + 0.03) * size
        ba = torch.rand(n, nb, 1, 1, generator=g) * 0.6
        bcol = torch.rand(n, nb, 3, 1, 1, generator=g)
        gx = torch.exp(-((xx - bc[:, :, 0]) ** 2) / (2 * bs * bs))  # (n, nb, 1, S)
        gy = torch.exp(-((yy - bc[:, :, 1]) ** 2) / (2 * bs * bs))  # (n, nb, S, 1)
        alpha = ba * gx * gy  # (n, nb, S, S)
        for b in range(nb):
            img.lerp_(bcol[:, b], alpha[:, b : b + 1])
        # Line segments, 1-2.5 px wide.
        nl = 4
        p0 = torch.rand(n, nl, 2, 1, 1, generator=g) * size
        p1 = p0 + (torch.rand(n, nl, 2, 1, 1, generator=g) - 0.5) * size
        width = torch.rand(n, nl, 1, 1, generator=g) * 1.5 + 1.0
        keep = torch.rand(n, nl, 1, 1, generator=g) < 0.7
        lcol = torch.rand(n, nl, 3, 1, 1, generator=g)
        dx, dy = p1[:, :, 0] - p0[:, :, 0], p1[:, :, 1] - p0[:, :, 1]
        px, py = xx - p0[:, :, 0], yy - p0[:, :, 1]
        t = ((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6)).clamp(0, 1)
        dist = torch.hypot(px - t * dx, py - t * dy)  # (n, nl, S, S)
        alpha = (width / 2 + 0.5 - dist).clamp(0, 1) * keep
        for b in range(nl):
            img.lerp_(lcol[:, b], alpha[:, b : b + 1])

    boxes, labels, valid = _place_objects(n, size, max_objects, min_size, max_size, g)
    k = boxes.shape[1]
    colour = _CLASS_COLOURS[labels] + (torch.rand(n, k, 3, generator=g) - 0.5) * 0.25
    colour = colour.clamp(0, 1)
    # Coverage of every kept object, computed class by class on kept objects only.
    obj = valid.nonzero()  # (P, 2): (image, slot)
    bx, lb = boxes[obj[:, 0], obj[:, 1]], labels[obj[:, 0], obj[:, 1]]  # (P, 4), (P,)
    half = (bx[:, 2:] - bx[:, :2]) / 2  # (P, 2)
    ctr = (bx[:, 2:] + bx[:, :2]) / 2
    u = (xx[0] - ctr[:, 0, None, None]) / half[:, 0, None, None]  # (P, 1, S)
    v = (yy[0] - ctr[:, 1, None, None]) / half[:, 1, None, None]  # (P, S, 1)
    dist = torch.empty(obj.shape[0], size, size)
    for c in range(len(SHAPE_CLASSES)):
        sel = lb == c
        uu, vv = torch.broadcast_tensors(u[sel], v[sel])
        dist[sel] = _shape_distance(c, uu, vv)
    scale = half.min(dim=1).values[:, None, None]  # half-size in px: distances to ~pixels
    alpha = torch.zeros(n, k, size, size)
    alpha[obj[:, 0], obj[:, 1]] = (0.5 - dist * scale).clamp(0, 1)  # 1 px anti-aliased edge
    for j in range(k):
        img.lerp_(colour[:, j, :, None, None], alpha[:, j : j + 1])

    sigma = torch.rand(n, 1, 1, 1, generator=g) * 0.06 + 0.01
    img = img + torch.randn(img.shape, generator=g) * sigma
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    out_boxes = [boxes[i][valid[i]] for i in range(n)]
    out_labels = [labels[i][valid[i]] for i in range(n)]
    return images, out_boxes, out_labels


class ShapesDataset(Dataset):
    """The demo's synthetic detection dataset, drawn in memory at construction.

    Images are a pure function of ``(seed, split, image_size, num_images)``: the
    ``"train"`` and ``"val"`` splits come from different random streams.

    Args:
        num_images: number of images.
        image_size: side ``S`` of the square images in pixels.
        seed: base seed.
        split: ``"train"`` or ``"val"``.
        max_objects: at most this many objects per image.
        chunk: images drawn per vectorised call (bounds peak memory).
    """

    classes: tuple[str, ...] = SHAPE_CLASSES

    def __init__(
        self,
        num_images: int,
        image_size: int,
        seed: int = 0,
        split: str = "train",
        max_objects: int = 6,
        chunk: int = 64,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        g = torch.Generator().manual_seed(seed * 2 + (0 if split == "train" else 1))
        images, boxes, labels = [], [], []
        for start in range(0, num_images, chunk):
            m = min(chunk, num_images - start)
            im, bx, lb = draw_shapes(m, image_size, g, max_objects=max_objects)
            images.append(im)
            boxes += bx
            labels += lb
        self.images = torch.cat(images)
        self.boxes = boxes
        self.labels = labels
        self.image_size = image_size

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        boxes = self.boxes[i]
        target = {
            "boxes": boxes,
            "labels": self.labels[i],
            "iscrowd": torch.zeros(boxes.shape[0], dtype=torch.bool),
        }
        return self.images[i], target


# --------------------------------------------------------------------------- COCO json


def _load_coco_json(path: Path) -> dict:
    """Read and sanity-check a COCO detection annotations file; raise DatasetError."""
    if not path.exists():
        raise DatasetError(f"annotations file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"annotations path is not a file: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"annotations file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"annotations file {path} must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"annotations file {path} needs a list under {key!r} (COCO detection format)")
    if not data["categories"]:
        raise DatasetError(f"annotations file {path} defines no categories")
    for where, items, keys in (
        ("images", data["images"], ("id", "file_name")),
        ("categories", data["categories"], ("id", "name")),
        ("annotations", data["annotations"], ("id", "image_id", "category_id", "bbox")),
    ):
        for j, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in keys):
                raise DatasetError(f"{path}: {where}[{j}] must be an object with keys {keys}")
    image_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for j, ann in enumerate(data["annotations"]):
        bbox = ann["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bbox)
        ):
            raise DatasetError(f"{path}: annotations[{j}].bbox must be [x, y, w, h], got {bbox!r}")
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"{path}: annotations[{j}] refers to unknown image_id {ann['image_id']!r}")
        if ann["category_id"] not in cat_ids:
            raise DatasetError(
                f"{path}: annotations[{j}] refers to unknown category_id {ann['category_id']!r}"
            )
    return data


class CocoJsonDataset(Dataset):
    """A COCO-format detection dataset (annotations json + image folder), resized to ``S x S``.

    Reading goes through :class:`torchvision.datasets.CocoDetection`. Category ids
    are mapped to contiguous labels in ascending id order; images are resized
    (aspect ratio not kept) to ``image_size`` and boxes scaled with them.

    Args:
        annotations: path of the COCO json file.
        images: folder holding the ``file_name`` of every image.
        image_size: side ``S`` of the network input.
        indices: optional subset (positions in the file's ``images`` list).

    Raises:
        DatasetError: missing files or folder, malformed json, annotations that
            refer to unknown images or categories, images listed but not on disk.
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        image_size: int,
        indices: Sequence[int] | None = None,
    ) -> None:
        from torchvision.datasets import CocoDetection

        ann_path, img_dir = Path(annotations), Path(images)
        data = _load_coco_json(ann_path)
        if not img_dir.is_dir():
            raise DatasetError(f"image folder not found: {img_dir}")
        missing = [im["file_name"] for im in data["images"] if not (img_dir / im["file_name"]).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetError(f"image {missing[0]!r}{more} listed in {ann_path} is not in {img_dir}")
        if not data["images"]:
            raise DatasetError(f"annotations file {ann_path} lists no images")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = CocoDetection(str(img_dir), str(ann_path))
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.classes: tuple[str, ...] = tuple(str(c["name"]) for c in cats)
        self.cat_to_label = {c["id"]: i for i, c in enumerate(cats)}
        order = {im["id"]: j for j, im in enumerate(data["images"])}
        # CocoDetection iterates its ids in sorted order; map file positions to them.
        pos = {order[i]: k for k, i in enumerate(self.coco.ids)}
        if indices is None:
            indices = range(len(data["images"]))
        self.items = [pos[j] for j in indices]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        from torchvision.transforms.v2 import functional as TF

        try:
            pil, anns = self.coco[self.items[i]]
        except OSError as e:
            raise DatasetError(f"cannot read image #{i} of the dataset: {e}") from None
        w, h = pil.size
        s = self.image_size
        image = TF.pil_to_tensor(pil.convert("RGB"))
        image = TF.resize(image, [s, s], antialias=True)
        rows = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        if rows:
            xywh = torch.tensor([a["bbox"] for a in rows], dtype=torch.float32)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
            boxes = boxes * torch.tensor([s / w, s / h, s / w, s / h])
            boxes = boxes.clamp(0, s)
            labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in rows], dtype=torch.int64)
            crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in rows], dtype=torch.bool)
        else:
            boxes = torch.zeros(0, 4)
            labels = torch.zeros(0, dtype=torch.int64)
            crowd = torch.zeros(0, dtype=torch.bool)
        return image, {"boxes": boxes, "labels": labels, "iscrowd": crowd}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split of ``range(n)`` (at least one image in each when n >= 2)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise DatasetError(f"a dataset needs at least 2 images to split into train and validation, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


# --------------------------------------------------------------------------- batching


def collate(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]], min_rows: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Stack images and pad ground truth to GluonCV's layout.

    Crowd boxes are left out (they are not training targets).

    Returns:
        images (Tensor[B, 3, S, S] uint8), boxes (Tensor[B, M, 4] float32, padded rows -1),
        labels (Tensor[B, M] int64, padded -1), with ``M = max(min_rows, most boxes in an image)``.
    """
    images = torch.stack([im for im, _ in batch])
    keep = [~t["iscrowd"] for _, t in batch]
    m = max([min_rows] + [int(k.sum()) for k in keep])
    boxes = torch.full((len(batch), m, 4), -1.0)
    labels = torch.full((len(batch), m), -1, dtype=torch.int64)
    for i, ((_, t), k) in enumerate(zip(batch, keep)):
        b, lab = t["boxes"][k], t["labels"][k]
        boxes[i, : b.shape[0]] = b
        labels[i, : lab.shape[0]] = lab
    return images, boxes, labels


def collate_eval(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Stack images, keep targets as a list (evaluation and pictures)."""
    return torch.stack([im for im, _ in batch]), [t for _, t in batch]
