"""detblocks.anchor.anchor_points: one point per cell centre, level by level, row-major.

The expected values are worked out by hand from the rule ``((j + 0.5) * s, (i + 0.5) * s)``
(ultralytics 8.4.190's ``make_anchors`` in cells, times the stride).
"""

from __future__ import annotations

import pytest
import torch

from detblocks.anchor import anchor_points


def test_cell_centres_level_by_level_row_major():
    points, strides = anchor_points([(2, 3), (1, 2)], [8, 16])
    expected = torch.tensor(
        [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0], [12.0, 12.0], [20.0, 12.0],  # stride 8, 2 x 3
         [8.0, 8.0], [24.0, 8.0]]  # stride 16, 1 x 2
    )  # fmt: skip
    assert points.dtype == torch.float32 and strides.dtype == torch.float32
    assert torch.equal(points, expected)
    assert torch.equal(strides, torch.tensor([8.0] * 6 + [16.0] * 2))


def test_yolov8_layout_at_640():
    """80 x 80, 40 x 40, 20 x 20 cells of strides 8, 16, 32: 8400 points."""
    points, strides = anchor_points([(80, 80), (40, 40), (20, 20)], [8, 16, 32])
    assert points.shape == (8400, 2) and strides.shape == (8400,)
    assert points[0].tolist() == [4.0, 4.0] and points[1].tolist() == [12.0, 4.0]
    assert points[80].tolist() == [4.0, 12.0]  # second row
    assert points[6399].tolist() == [636.0, 636.0]  # last cell of stride 8
    assert points[6400].tolist() == [8.0, 8.0] and strides[6400] == 16
    assert points[-1].tolist() == [624.0, 624.0] and strides[-1] == 32


def test_offset_dtype_device_and_empty():
    points, _ = anchor_points([(1, 2)], [10], offset=0.0, dtype=torch.float64)
    assert points.dtype == torch.float64 and points.tolist() == [[0.0, 0.0], [10.0, 0.0]]
    points, strides = anchor_points([], [])
    assert points.shape == (0, 2) and strides.shape == (0,)
    points, strides = anchor_points([(0, 4), (1, 1)], [8, 16])
    assert points.tolist() == [[8.0, 8.0]] and strides.tolist() == [16.0]


@pytest.mark.parametrize(
    "sizes, strides, error, message",
    [
        ([(2, 2)], [8, 16], ValueError, "one value per feature map (1), got 2"),
        ([], [8], ValueError, "one value per feature map (0), got 1"),
        ([(2, 2)], [0], ValueError, "positive"),
        ([(2, 2, 2)], [8], ValueError, "(H, W) pairs"),
        ([(2, 2)], [8.0], None, None),
    ],
)
def test_bad_arguments(sizes, strides, error, message):
    if error is None:
        anchor_points(sizes, strides)
        return
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        anchor_points(sizes, strides)


def _tal_golden_cases() -> list[dict]:
    from conftest import load_manifest

    return [c for c in load_manifest("modern") if c["cls"] == "TaskAlignedAssigner"]


@pytest.mark.parametrize("case", _tal_golden_cases(), ids=lambda c: c["id"])
def test_equals_ultralytics_make_anchors_in_the_golden_cases(case):
    """The TAL golden cases hold ultralytics 8.4.190's ``make_anchors(feats, (8, 16, 32),
    0.5) * stride``: some image size (multiples of 32 up to 256 px) gives exactly them."""
    import numpy as np

    with np.load(case["path"]) as z:
        want = torch.from_numpy(z["in_anchor_points"])
    sizes = [(h, w) for h in range(32, 257, 32) for w in range(32, 257, 32)]
    found = []
    for h, w in sizes:
        levels = [(h // s, w // s) for s in (8, 16, 32)]
        if sum(a * b for a, b in levels) != want.shape[0]:
            continue
        points, _ = anchor_points(levels, [8, 16, 32])
        if torch.equal(points, want.to(points.device, points.dtype)):
            found.append((h, w))
    assert found, f"no image size reproduces the {want.shape[0]} points of {case['id']}"
