"""Validation: run the inference path over a dataset and score it with pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .data import collate_eval

__all__ = ["Detections", "CocoMetrics", "coco_ground_truth", "coco_evaluate", "predict"]


@dataclass
class Detections:
    """Detections of a whole dataset, stacked: ``boxes (Tensor[I, D, 4])`` corner pixels,
    ``scores (Tensor[I, D])`` and ``classes (Tensor[I, D])`` (``-1`` = empty row)."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor


@dataclass
class CocoMetrics:
    """COCOeval's headline numbers: ``map`` = AP@[.5:.95], ``map50`` = AP@.5, ``stats`` = all 12
    (``-1`` where an area range holds no ground truth)."""

    map: float
    map50: float
    stats: list[float]


@torch.no_grad()
def predict(
    inference: torch.nn.Module, dataset: Dataset, batch_size: int = 16, device: torch.device | str = "cpu"
) -> Detections:
    """Run ``inference`` (image batch in ``[0, 1]`` -> boxes, scores, classes) over ``dataset``."""
    was_training = inference.training
    inference.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_eval)
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    for images, _ in loader:
        x = images.to(device).float().div_(255)
        boxes, scores, classes = inference(x)
        out.append((boxes.cpu(), scores.cpu(), classes.cpu()))
    inference.train(was_training)
    return Detections(*(torch.cat(t) for t in zip(*out)))


def coco_ground_truth(dataset: Dataset, classes: Sequence[str]) -> dict:
    """The ground truth of ``dataset`` as a COCO dict (image ids = dataset positions,
    category ids = label + 1, coordinates of the network input)."""
    images, annotations = [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, target = dataset[i]
        h, w = image.shape[-2:]
        images.append({"id": i, "width": int(w), "height": int(h), "file_name": f"{i}.png"})
        for box, label, crowd in zip(
            target["boxes"].tolist(), target["labels"].tolist(), target["iscrowd"].tolist()
        ):
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": j + 1, "name": name} for j, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_evaluate(ground_truth: dict, detections: Detections) -> CocoMetrics:
    """Score ``detections`` against ``ground_truth`` (from :func:`coco_ground_truth`) with COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for i in range(detections.boxes.shape[0]):
        keep = detections.classes[i] >= 0
        boxes = detections.boxes[i][keep].tolist()
        for (x0, y0, x1, y1), s, c in zip(
            boxes, detections.scores[i][keep].tolist(), detections.classes[i][keep].tolist()
        ):
            results.append(
                {"image_id": i, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
            )
    if not results or not ground_truth["annotations"]:
        return CocoMetrics(0.0, 0.0, [0.0] * 12)
    with contextlib.redirect_stdout(io.StringIO()):  # COCO/COCOeval print progress
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]  # -1 where COCOeval has no ground truth (e.g. no large objects)
    return CocoMetrics(map=max(0.0, stats[0]), map50=max(0.0, stats[1]), stats=stats)
