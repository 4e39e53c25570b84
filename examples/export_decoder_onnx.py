"""Export a detection decoder to ONNX and run it in onnxruntime.

The inference half of an SSD head: box offsets are decoded against the anchors
(``NormalizedBoxCenterDecoder``) and softmax class scores are split per
foreground class (``MultiPerClassDecoder``). The module is exported with
``torch.onnx.export(..., dynamo=True)`` with a dynamic batch size and a dynamic
number of anchors, then run in onnxruntime on inputs of other sizes than the
ones it was exported with, and compared with eager PyTorch.

Run: ``python examples/export_decoder_onnx.py [output.onnx]``
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from detblocks.coder import MultiPerClassDecoder, NormalizedBoxCenterDecoder

NUM_CLASSES = 4  # foreground classes; the scores have NUM_CLASSES + 1 columns, 0 = background


class Decoder(nn.Module):
    """``(box_preds (B, N, 4), cls_logits (B, N, C + 1), anchors (1, N, 4) center form)`` ->
    ``boxes (B, N, 4)`` corner, ``cls_ids (B, N, C)`` int64 (-1 = below threshold),
    ``scores (B, N, C)``."""

    def __init__(self, num_classes: int = NUM_CLASSES, thresh: float = 0.05) -> None:
        super().__init__()
        # clip: the cap of the width/height deltas used by GluonCV's Faster R-CNN, log(1000 / 16).
        self.box_decoder = NormalizedBoxCenterDecoder(stds=(0.1, 0.1, 0.2, 0.2), clip=math.log(1000 / 16))
        self.cls_decoder = MultiPerClassDecoder(num_classes + 1, thresh=thresh)

    def forward(
        self, box_preds: Tensor, cls_logits: Tensor, anchors: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        boxes = self.box_decoder(box_preds, anchors)
        cls_ids, scores = self.cls_decoder(torch.softmax(cls_logits, dim=-1))
        return boxes, cls_ids, scores


def inputs(batch: int, num_anchors: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    box_preds = torch.randn(batch, num_anchors, 4, generator=g)
    cls_logits = 3 * torch.randn(batch, num_anchors, NUM_CLASSES + 1, generator=g)
    centers = torch.rand(1, num_anchors, 2, generator=g)
    sizes = 0.05 + 0.5 * torch.rand(1, num_anchors, 2, generator=g)
    return box_preds, cls_logits, torch.cat([centers, sizes], dim=-1)


def export(model: nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1024)
    anchors = torch.export.Dim("anchors", min=2, max=100_000)
    dynamic_shapes = {
        "box_preds": {0: batch, 1: anchors},
        "cls_logits": {0: batch, 1: anchors},
        "anchors": {1: anchors},
    }
    # The exporter reports its progress on stdout; keep the tutorial's output short.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs(2, 100, seed=0),
            str(path),
            input_names=["box_preds", "cls_logits", "anchors"],
            output_names=["boxes", "cls_ids", "scores"],
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            external_data=False,
        )
    return path


def main(path: Path | None = None) -> dict[str, object]:
    model = Decoder().eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(model, path or Path(tmp) / "decoder.onnx")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        checked = []
        for batch, num_anchors in [(1, 37), (3, 500), (8, 2000)]:  # not the export sizes
            args = inputs(batch, num_anchors, seed=batch)
            with torch.no_grad():
                expected = model(*args)
            feeds = {name: t.numpy() for name, t in zip(["box_preds", "cls_logits", "anchors"], args)}
            got = session.run(["boxes", "cls_ids", "scores"], feeds)
            for name, want, have in zip(["boxes", "cls_ids", "scores"], expected, got):
                assert have.shape == tuple(want.shape), (name, have.shape, want.shape)
                assert have.dtype == want.numpy().dtype, (name, have.dtype)
                np.testing.assert_allclose(have, want.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
            kept = int((expected[1] >= 0).sum())
            checked.append((batch, num_anchors))
            print(
                f"B={batch:<2d} N={num_anchors:<5d} onnxruntime == eager "
                f"(boxes float32, cls_ids int64, {kept} scores above the threshold)"
            )
    return {"checked": checked}


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
