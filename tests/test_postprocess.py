"""detblocks.postprocess against plain loop references of MXNet's box_nms and of GluonCV's
SSD output, the eager fast paths against the traceable formulation bit for bit, and the
degenerate cases by name: no boxes, every score below the threshold, topk > N, N = 0,
NaN scores and NaN boxes."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch

from detblocks import _checks, postprocess
from detblocks.postprocess import BoxNMS, RPNProposal, SSDDetectionOutput, box_nms, ssd_detection_output

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


# ------------------------------------------------------------------ references
def _iou(a: list[float], b: list[float]) -> float:
    """MXNet's overlap of two corner boxes (negative sides: empty intersection, zero area)."""

    def side(lo1, hi1, lo2, hi2):
        w = min(hi1, hi2) - max(lo1, lo2)
        return 0.0 if w < 0 else w

    def area(x):
        w, h = x[2] - x[0], x[3] - x[1]
        return 0.0 if (w < 0 or h < 0) else w * h

    inter = side(a[0], a[2], b[0], b[2]) * side(a[1], a[3], b[1], b[3])
    union = area(a) + area(b) - inter
    return inter / union if union != 0 else math.nan


def _to_corner(box, fmt):
    if fmt == "center":
        x, y, w, h = box
        return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
    return list(box)


def nms_reference(rows, overlap=0.5, valid=0.0, topk=-1, coord=2, score=1, idx=-1, bg=-1, force=False,
                  in_fmt="corner", out_fmt="corner"):  # fmt: skip
    """MXNet's box_nms on one image, one row at a time (float64 Python)."""
    n, k = len(rows), len(rows[0]) if rows else 0
    ok = [r for r in range(n) if rows[r][score] > valid and (idx < 0 or rows[r][idx] != bg)]
    ok.sort(key=lambda r: -rows[r][score])  # Python's sort is stable
    if topk > 0:
        ok = ok[:topk]
    kept = []
    for r in ok:
        box = _to_corner(rows[r][coord : coord + 4], in_fmt)
        suppressed = False
        for q in kept:
            if not force and idx >= 0 and rows[q][idx] != rows[r][idx]:
                continue
            iou = _iou(_to_corner(rows[q][coord : coord + 4], in_fmt), box)
            if iou > overlap:
                suppressed = True
                break
        if not suppressed:
            kept.append(r)
    out = []
    for r in kept:
        row = list(rows[r])
        if in_fmt != out_fmt:
            x1, y1, x2, y2 = _to_corner(row[coord : coord + 4], in_fmt)
            center = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            row[coord : coord + 4] = center if out_fmt == "center" else [x1, y1, x2, y2]
        out.append(row)
    return out + [[-1.0] * k for _ in range(n - len(out))]


def ssd_reference(cls_preds, box_preds, anchors, num_classes, nms_thresh, nms_topk, post_nms, thresh=0.01):
    """GluonCV's SSD inference tail, as its hybrid_forward builds it: the full (N * C) rows."""
    from detblocks.coder import decode_boxes, decode_per_class

    boxes = decode_boxes(box_preds.float(), anchors.float())
    ids, scores = decode_per_class(torch.softmax(cls_preds.float(), -1), thresh=thresh)
    rows = torch.cat(
        [
            torch.cat([ids[..., c : c + 1].float(), scores[..., c : c + 1], boxes], -1)
            for c in range(num_classes)
        ],
        1,
    )
    out = []
    for b in range(rows.shape[0]):
        res = nms_reference(rows[b].tolist(), nms_thresh, thresh, nms_topk, idx=0)
        res = (res + [[-1.0] * 6] * post_nms)[:post_nms]
        out.append(res)
    return torch.tensor(out, dtype=torch.float64).reshape(-1, post_nms, 6)


def _rows(b: int, n: int, seed: int, ids: int = 3, spread: float = 40.0) -> torch.Tensor:
    """Rows [id, score, xmin, ymin, xmax, ymax]: many overlapping boxes, a few ties in score."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g) * spread
    wh = torch.rand(b, n, 2, generator=g) * 20 + 1
    score = (torch.rand(b, n, 1, generator=g) * 8).round() / 8  # ties on purpose
    cls = torch.randint(-1, ids, (b, n, 1), generator=g).float()
    return torch.cat([cls, score, xy, xy + wh], -1).double()


# ------------------------------------------------------------------ box_nms
NMS_ARGS = [
    dict(),
    dict(overlap=0.3, idx=0),
    dict(overlap=0.7, valid=0.2, topk=7, idx=0),
    dict(topk=5, idx=0, force=True),
    dict(idx=0, bg=0, topk=50),
    dict(in_fmt="center", out_fmt="corner", idx=0),
    dict(in_fmt="corner", out_fmt="center"),
]


def _call(data, a):
    return box_nms(
        data,
        overlap_thresh=a.get("overlap", 0.5),
        valid_thresh=a.get("valid", 0.0),
        topk=a.get("topk", -1),
        id_index=a.get("idx", -1),
        background_id=a.get("bg", -1),
        force_suppress=a.get("force", False),
        in_format=a.get("in_fmt", "corner"),
        out_format=a.get("out_fmt", "corner"),
    )


@pytest.mark.parametrize("args", NMS_ARGS, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_box_nms_equals_the_loop_reference(args, seed):
    data = _rows(3, 40, seed)
    got = _call(data, args)
    want = torch.tensor([nms_reference(data[b].tolist(), **args) for b in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("args", NMS_ARGS[:5], ids=str)
def test_box_nms_dense_matrix_equals_the_pair_path(args):
    """The eager CPU path compares same-id pairs only; the traceable one builds the matrix."""
    data = _rows(2, 60, 7)
    eager = _call(data, args)
    with mock.patch.object(postprocess._checks, "eager_cpu", lambda *t: False):
        dense = _call(data, args)
    assert torch.equal(eager, dense)


def test_ties_go_to_the_earlier_row():
    rows = torch.tensor([[[0, 0.5, 0, 0, 10, 10], [0, 0.5, 1, 1, 11, 11], [0, 0.5, 50, 50, 60, 60]]])
    out = box_nms(rows)
    assert out[0, 0, 2].item() == 0 and out[0, 1, 2].item() == 50  # row 1 suppressed by the earlier row 0


def test_nan_scores_are_never_kept_and_nan_boxes_never_suppress():
    rows = torch.tensor(
        [
            [
                [0, math.nan, 0, 0, 10, 10],  # NaN score: dropped
                [0, 0.9, math.nan, 0, 10, 10],  # NaN box: kept, suppresses nothing
                [0, 0.8, 0, 0, 10, 10],
                [0, 0.7, 0, 0, 10, 10],  # suppressed by row 2
            ]
        ]
    )
    out = box_nms(rows)
    assert out[0, :, 1].tolist()[:2] == [pytest.approx(0.9), pytest.approx(0.8)]
    assert (out[0, 2:] == -1).all()
    assert not out[0, :, 1].isnan().any()


def test_degenerate_boxes_never_suppress():
    """Zero-area and inverted boxes overlap nothing (MXNet's zero area, 0/0 compares false)."""
    rows = torch.tensor(
        [[[0, 0.9, 5, 5, 5, 5], [0, 0.8, 5, 5, 5, 5], [0, 0.7, 9, 9, 1, 1], [0, 0.6, 0, 0, 10, 10]]]
    )
    assert (box_nms(rows)[0, :, 1] > 0).all()


def test_box_nms_degenerate_inputs():
    data = _rows(2, 6, 0)
    none_valid = box_nms(data, valid_thresh=2.0)
    assert (none_valid == -1).all()
    assert torch.equal(box_nms(data, topk=100, id_index=0), box_nms(data, id_index=0))  # topk > N
    assert box_nms(data[:, :0]).shape == (2, 0, 6) and box_nms(data[:0]).shape == (0, 6, 6)
    assert box_nms(data[0]).shape == (6, 6)  # a single image (N, K)
    assert torch.equal(box_nms(data[0]), box_nms(data)[0])


def test_box_nms_extra_columns_and_other_layouts():
    """Case 7 of the golden set carries a 7th value; score first, id last here."""
    data = _rows(2, 30, 3)
    moved = torch.cat([data[..., 1:2], data[..., 2:6], torch.rand(2, 30, 1).double(), data[..., 0:1]], -1)
    got = box_nms(moved, score_index=0, coord_start=1, id_index=6)
    want = torch.tensor(
        [nms_reference(moved[b].tolist(), score=0, coord=1, idx=6) for b in range(2)], dtype=torch.float64
    )
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_box_nms_dtypes(dtype):
    data = _rows(2, 30, 5).to(dtype)
    got = box_nms(data, id_index=0)
    assert got.dtype == dtype
    want = torch.tensor([nms_reference(data[b].double().tolist(), idx=0) for b in range(2)])
    torch.testing.assert_close(got.double(), want.double())


# ------------------------------------------------------------------ SSD detection output
def _ssd_inputs(b, n, c, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, c + 1, generator=g) * 2
    logits[..., 0] += 3
    cxcy = torch.rand(1, n, 2, generator=g)
    anchors = torch.cat([cxcy, torch.rand(1, n, 2, generator=g) * 0.3 + 0.05], -1)
    return logits.to(dtype), (torch.randn(b, n, 4, generator=g) * 0.5).to(dtype), anchors.to(dtype)


@pytest.mark.parametrize(("n", "c", "topk", "post"), [(60, 4, 50, 20), (30, 3, 400, 100), (200, 6, 40, 10)])
@pytest.mark.parametrize("seed", range(2))
def test_ssd_output_equals_gluoncv_rows_and_box_nms(n, c, topk, post, seed):
    cls_preds, box_preds, anchors = _ssd_inputs(3, n, c, seed)
    ids, scores, boxes = ssd_detection_output(cls_preds, box_preds, anchors, nms_topk=topk, post_nms=post)
    got = torch.cat([ids, scores, boxes], -1).double()
    want = ssd_reference(cls_preds, box_preds, anchors, c, 0.45, topk, post)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ssd_compact_path_equals_the_dense_one_bit_for_bit():
    """Eager CPU: entries above thresh gathered chunk by chunk, pair-wise NMS, sorted order.
    Otherwise: one softmax, the full top-k, the matrix NMS. Same outputs, bit for bit."""
    cls_preds, box_preds, anchors = _ssd_inputs(5, 300, 8, 0)
    cls_preds[1, 3:9] = 4.0  # identical rows: ties in score
    cls_preds[2, :, 0] = 20.0  # an image with nothing above the threshold
    with mock.patch.object(postprocess, "_SOFTMAX_CHUNK_ELEMENTS", 2 * 300 * 9):  # several chunks
        eager = ssd_detection_output(cls_preds, box_preds, anchors, nms_topk=120, post_nms=50)
    with mock.patch.object(postprocess._checks, "eager_cpu", lambda *t: False):
        dense = ssd_detection_output(cls_preds, box_preds, anchors, nms_topk=120, post_nms=50)
    for x, y in zip(eager, dense):
        assert torch.equal(x, y)
    assert (eager[0][2] == -1).all()


def test_stable_topk_orders_the_same_by_sorts_and_by_counting():
    g = torch.Generator().manual_seed(0)
    key = (torch.rand(4, 300, generator=g) * 10).round()  # many ties
    key[0, :200] = float("-inf")
    rank = torch.randperm(300, generator=g).expand(4, 300)
    eager = postprocess._stable_topk(key, rank, 120)
    with mock.patch.object(_checks, "tracing", lambda: True):
        counted = postprocess._stable_topk(key, rank, 120)
    for x, y in zip(eager, counted):
        assert torch.equal(x, y)
    # the reference: sort by (key descending, rank ascending)
    for b in range(1, 4):
        pairs = sorted(zip(key[b].tolist(), rank[b].tolist()), key=lambda p: (-p[0], p[1]))[:120]
        assert eager[0][b].tolist() == [p[0] for p in pairs] and eager[1][b].tolist() == [p[1] for p in pairs]


def test_ssd_ties_in_score_go_to_the_lower_class_then_the_lower_anchor():
    logits = torch.zeros(1, 3, 3)  # every class scores 1/3: all tie
    anchors = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]]])
    ids, scores, boxes = ssd_detection_output(logits, torch.zeros(1, 3, 4), anchors, post_nms=6)
    assert ids[0, :, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert boxes[0, :3, 0].tolist() == pytest.approx([0.15, 0.55, 0.85])


def test_ssd_output_degenerate_inputs():
    cls_preds, box_preds, anchors = _ssd_inputs(2, 20, 3, 1)
    quiet = cls_preds.clone()
    quiet[..., 0] = 50.0  # every foreground score below the threshold
    for out in ssd_detection_output(quiet, box_preds, anchors):
        assert (out == -1).all() and out.shape[1] == 100
    # topk larger than N * C, post_nms larger than the candidates: -1 rows pad the output
    ids, scores, boxes = ssd_detection_output(cls_preds, box_preds, anchors, nms_topk=1000, post_nms=70)
    assert ids.shape == (2, 70, 1) and (ids[:, 60:] == -1).all()
    # no anchors, no images
    for b, n in ((2, 0), (0, 20)):
        outs = ssd_detection_output(cls_preds[:b, :n], box_preds[:b, :n], anchors[:, :n], post_nms=5)
        assert [tuple(o.shape) for o in outs] == [(b, 5, 1), (b, 5, 1), (b, 5, 4)]
        assert all((o == -1).all() for o in outs)


def test_ssd_nan_scores_are_never_kept_and_nan_boxes_never_suppress():
    logits = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 4.0, 0.0], [0.0, 3.0, 0.0]]])
    anchors = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 3])
    preds = torch.zeros(1, 3, 4)
    ids, scores, boxes = ssd_detection_output(logits, preds, anchors, post_nms=4, nms_thresh=0.5)
    assert scores[0, :, 0].gt(0).sum() == 2  # one box per class: the same box suppresses the rest
    nan_logits = logits.clone()
    nan_logits[0, 0, 1] = math.nan  # anchor 0: NaN softmax row, never kept
    ids, scores, boxes = ssd_detection_output(nan_logits, preds, anchors, post_nms=4, nms_thresh=0.5)
    assert not scores.isnan().any() and scores[0, 0, 0] == pytest.approx(
        torch.softmax(logits[0, 1], 0)[1].item()
    )
    nan_box = preds.clone()
    nan_box[0, 0, 0] = math.nan  # anchor 0's box is NaN: kept, but suppresses nothing
    ids, scores, boxes = ssd_detection_output(logits, nan_box, anchors, post_nms=6, nms_thresh=0.5)
    assert boxes[0, 0].isnan().any() and ids[0, :, 0].tolist()[:3] == [0, 0, 1]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_ssd_output_dtypes(dtype):
    cls_preds, box_preds, anchors = _ssd_inputs(2, 40, 4, 3, dtype)
    ids, scores, boxes = SSDDetectionOutput(4, nms_topk=50, post_nms=20)(cls_preds, box_preds, anchors)
    assert ids.dtype == scores.dtype == boxes.dtype == dtype
    want = ssd_reference(cls_preds, box_preds, anchors, 4, 0.45, 50, 20)
    got = torch.cat([ids, scores, boxes], -1).double()
    if dtype in (torch.float16, torch.bfloat16):  # same detections, values rounded to 16 bits
        tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ RPN proposals
def test_rpn_proposal_drops_small_and_nan_rows():
    anchor = torch.tensor(
        [[[0.0, 0.0, 15.0, 15.0], [0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 31.0, 31.0], [8, 8, 23, 23]]]
    )
    score = torch.tensor([[[0.9], [0.8], [math.nan], [0.6]]])
    pred = torch.zeros(1, 4, 4)
    pred[0, 3, 0] = math.nan
    out = RPNProposal(clip=None, min_size=8, stds=(1.0, 1.0, 1.0, 1.0))(
        anchor, score, pred, torch.zeros(1, 3, 20, 20)
    )
    assert out.shape == (1, 4, 5)
    assert out[0, 0].tolist() == [pytest.approx(0.9), 0, 0, 15, 15]
    assert (out[0, 1:] == -1).all()  # too small, NaN score, NaN box
    assert out[0, 0, 3] <= 20  # clipped to the image


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_rpn_proposal_dtypes(dtype):
    g = torch.Generator().manual_seed(0)
    anchor = torch.rand(1, 30, 2, generator=g) * 100
    anchor = torch.cat([anchor, anchor + 20], -1)
    pred = torch.randn(2, 30, 4, generator=g) * 0.2
    score = torch.rand(2, 30, 1, generator=g)
    img = torch.zeros(2, 3, 90, 110)
    prop = RPNProposal(clip=4.0, min_size=16, stds=(1.0, 1.0, 1.0, 1.0))
    want = prop(anchor.double(), score.double(), pred.double(), img)
    got = prop(anchor.to(dtype), score.to(dtype), pred.to(dtype), img)
    assert got.dtype == dtype
    tol = {torch.float16: 0.5, torch.bfloat16: 2.0}.get(dtype, 1e-4)  # 16-bit pixel coordinates
    same = (got[..., 0] == -1) == (want[..., 0] == -1)
    assert same.float().mean() > 0.9  # rounding may move a box across min_size
    torch.testing.assert_close(got[same].double(), want[same], rtol=1e-2, atol=tol)


def test_modules_repr_and_gluoncv_defaults():
    assert "overlap_thresh=0.5" in repr(BoxNMS()) and BoxNMS().topk == -1
    tail = SSDDetectionOutput(80)
    assert (tail.nms_thresh, tail.nms_topk, tail.post_nms, tail.thresh) == (0.45, 400, 100, 0.01)
