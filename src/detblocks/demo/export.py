"""ONNX export of the whole inference path, and its check in onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .data import collate_eval
from .evaluate import Detections

__all__ = ["export_onnx", "check_onnx", "compare_detections", "BOX_ATOL", "SCORE_ATOL", "MAX_TIE_SWAPS"]

#: Largest box coordinate difference (pixels) accepted between onnxruntime and eager PyTorch.
BOX_ATOL = 1e-2
#: Largest score difference accepted between onnxruntime and eager PyTorch.
SCORE_ATOL = 1e-4
#: Largest share of detections allowed to be near-tie swaps (see :func:`compare_detections`).
MAX_TIE_SWAPS = 0.01


@contextlib.contextmanager
def _quiet_loggers(names: tuple[str, ...] = ("torch.onnx", "onnxscript", "onnx_ir")) -> Iterator[None]:
    """Silence the exporter's progress and advice messages (errors still raise)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(inference: torch.nn.Module, image_size: int, path: str | Path, opset: int = 18) -> Path:
    """Export ``inference`` (images ``(B, 3, S, S)`` in ``[0, 1]`` -> boxes, scores, classes)
    to ONNX with a dynamic batch axis; non-maximum suppression is part of the graph."""
    path = Path(path)
    inference.eval()
    example = torch.rand(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            inference,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["boxes", "scores", "classes"],
            dynamic_shapes={"images": {0: batch}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
    return path


def _greedy_pairs(ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy one-to-one pairing of rows and columns of a boolean matrix, rows in order.

    Returns the boolean "paired" flags of rows and of columns.
    """
    rows = torch.zeros(ok.shape[0], dtype=torch.bool)
    cols = torch.zeros(ok.shape[1], dtype=torch.bool)
    for r in range(ok.shape[0]):
        free = (ok[r] & ~cols).nonzero()
        if free.numel():
            cols[free[0, 0]] = True
            rows[r] = True
    return rows, cols


def compare_detections(a: Detections, b: Detections) -> dict[str, int | float]:
    """Compare two detection sets image by image.

    A detection of ``a`` equals one of ``b`` when the classes are the same, the boxes
    within :data:`BOX_ATOL` pixels and the scores within :data:`SCORE_ATOL`. Two
    candidates whose scores tie within :data:`SCORE_ATOL` may legitimately be ranked,
    suppressed or cut at the ``max_detections`` limit in either order by two
    runtimes; such leftover pairs (same score within tolerance) are counted as
    ``tie_swaps``. Everything else left over is a ``mismatch``. The two sets are
    called equal (``equal``) when nothing mismatches and at most :data:`MAX_TIE_SWAPS`
    of the detections are tie swaps.
    """
    matched = tie_swaps = mismatches = total = 0
    box_diff = score_diff = 0.0
    for i in range(a.boxes.shape[0]):
        va, vb = a.classes[i] >= 0, b.classes[i] >= 0
        ba, sa, ca = a.boxes[i][va], a.scores[i][va], a.classes[i][va]
        bb, sb, cb = b.boxes[i][vb], b.scores[i][vb], b.classes[i][vb]
        total += int(va.sum())
        d_box = (ba[:, None, :] - bb[None, :, :]).abs().amax(dim=-1)  # (Da, Db)
        d_score = (sa[:, None] - sb[None, :]).abs()
        same = (ca[:, None] == cb[None, :]) & (d_box <= BOX_ATOL) & (d_score <= SCORE_ATOL)
        ra, rb = _greedy_pairs(same)
        matched += int(ra.sum())
        if ra.any():
            pa, pb = ra.nonzero()[:, 0], same[ra].float().argmax(dim=1)  # a representative pair per row
            box_diff = max(box_diff, float(d_box[pa, pb].max()))
            score_diff = max(score_diff, float(d_score[pa, pb].max()))
        tie = d_score[~ra][:, ~rb] <= SCORE_ATOL
        ta, tb = _greedy_pairs(tie)
        tie_swaps += int(ta.sum())
        mismatches += int((~ta).sum()) + int((~tb).sum())
    return {
        "detections": total,
        "matched": matched,
        "tie_swaps": tie_swaps,
        "mismatches": mismatches,
        "max_box_diff": box_diff,
        "max_score_diff": score_diff,
        "equal": mismatches == 0 and tie_swaps <= MAX_TIE_SWAPS * max(1, total),
    }


def check_onnx(path: str | Path, dataset: Dataset, eager: Detections, batch_size: int = 16) -> dict:
    """Run the ONNX file in onnxruntime over ``dataset`` and compare with the eager ``Detections``
    (:func:`compare_detections`)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_eval)
    outs = []
    for images, _ in loader:
        x = images.float().div_(255).numpy()
        outs.append(sess.run(["boxes", "scores", "classes"], {"images": x}))
    onnx_dets = Detections(
        boxes=torch.from_numpy(np.concatenate([o[0] for o in outs])),
        scores=torch.from_numpy(np.concatenate([o[1] for o in outs])),
        classes=torch.from_numpy(np.concatenate([o[2] for o in outs])).long(),
    )
    result: dict = {"images": int(onnx_dets.boxes.shape[0])}
    result.update(compare_detections(eager, onnx_dets))
    result["tolerance"] = (
        f"same class, boxes within {BOX_ATOL} px, scores within {SCORE_ATOL}; "
        f"at most {MAX_TIE_SWAPS:.0%} near-tie swaps"
    )
    result["nms"] = "NMS inside the graph"
    return result
