"""No hidden host reads: the hot paths, as they run on an accelerator, never wait on the host.

On CUDA a host read (``.item()``, ``bool(t)``, ``.tolist()``, a boolean-mask index, ``nonzero``,
``unique`` ...) stops the CPU until the GPU has caught up. Without a GPU these tests run each
hot path on CPU *the way it runs on CUDA*: the CPU-only fast paths (native kernels, reused
output memory, blocked IoU) are turned off by making :func:`detblocks._checks.eager_cpu`
answer ``False``, value checks are off (their automatic default on CUDA), and every ATen
operator that synchronises on CUDA is counted by a dispatch mode, together with the
Python-level reads ``tolist``/``numpy``. Paths that read sizes back on purpose (the bipartite
matcher's eager rounds) must read exactly as many times as their docstring says.

Under ``torch.compile(fullgraph=True)`` a host read is a graph break and fails the contract
test (``tests/test_contract.py``), so the traced paths are covered there.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import detblocks
from detblocks import _alloc, _checks, anchor, assign, bbox, coder, matcher, postprocess, sampler
from detblocks.assign import _common, _dynamic_k, atss, dsl, max_iou, simota, tal

aten = torch.ops.aten

#: ATen operators that make the host wait for a CUDA device: they return a host value or
#: an output whose size depends on tensor values.
SYNC_OPS = {
    aten._local_scalar_dense.default: "item/bool/int/float",
    aten.is_nonzero.default: "bool",
    aten.equal.default: "torch.equal",
    aten.nonzero.default: "nonzero",
    aten.masked_select.default: "masked_select",
    aten._unique2.default: "unique",
    aten.unique_consecutive.default: "unique_consecutive",
    aten.unique_dim.default: "unique(dim)",
    aten.bincount.default: "bincount",
    aten.repeat_interleave.Tensor: "repeat_interleave without output_size",
    # torch.tensor(python numbers): made on the host and copied to the device, a blocking copy.
    aten.lift_fresh.default: "torch.tensor (a blocking host-to-device copy)",
}


class HostReads(TorchDispatchMode):
    """Counts the operators of :data:`SYNC_OPS` and boolean-mask indexing."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            if not (func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None):
                self.reads[SYNC_OPS[func]] += 1
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
                self.reads["boolean-mask index"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def accelerator_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Run the code the way it runs on CUDA (no CPU-only shortcut, no value checks) and count
    host reads."""
    no = lambda *tensors: False  # noqa: E731
    for module in (_checks, _alloc, matcher, sampler):
        monkeypatch.setattr(module, "eager_cpu", no)
    for module in (_checks, matcher):
        monkeypatch.setattr(module, "host_reads_free", no)
    monkeypatch.setattr(_checks, "on_host", no)
    monkeypatch.setattr(bbox, "_native", None)
    monkeypatch.setattr(coder, "_native", None)
    monkeypatch.setattr(matcher, "_native", None)
    monkeypatch.setattr(sampler, "_native", None)
    mode = HostReads()
    for name in ("tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            mode.reads[_name] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    detblocks.set_value_checks(False)
    try:
        with mode:
            yield mode.reads
    finally:
        detblocks.set_value_checks(None)


def _scene(seed: int = 0, B: int = 3, N: int = 200, M: int = 7, C: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(B, N, 2, generator=g) * 80
    anchors = torch.cat([low, low + 4 + torch.rand(B, N, 2, generator=g) * 30], -1)
    low = torch.rand(B, M, 2, generator=g) * 80
    refs = torch.cat([low, low + 6 + torch.rand(B, M, 2, generator=g) * 30], -1)
    refs[0, -2:] = -1  # padding
    refs[2] = -1  # an image without objects
    ids = torch.randint(0, C - 1, (B, M), generator=g)
    ids = torch.where(refs[..., 0] < 0, -1, ids)
    logits = torch.randn(B, N, C, generator=g)
    return {"anchors": anchors, "refs": refs, "ids": ids, "logits": logits}


def _inputs(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scene and the targets computed from it (outside the counted region)."""
    ious = bbox.box_iou(s["anchors"], s["refs"])
    matches = matcher.MaximumMatcher(0.5)(ious)
    samples = sampler.OHEMSampler(3, thresh=0.5)(matches, s["logits"], ious)
    image = torch.zeros(3, 3, 64, 48)
    out = {**s, "ious": ious, "matches": matches, "samples": samples, "probs": s["logits"].softmax(-1)}
    # Clones: nothing recorded by the CPU paths (box_iou's row maxima) reaches the counted call.
    return {k: v.clone() for k, v in {**out, "image": image}.items()}


#: Modules are built once, outside the counted call (construction may read Python numbers back).
_SSD_ANCHORS = functools.cache(lambda: anchor.SSDAnchorGenerator((300, 300), (30, 60), (1, 2), 8))
_RPN_ANCHORS = functools.cache(lambda: anchor.RPNAnchorGenerator(16, 16, (0.5, 1, 2), (8,)))

#: (name, hot path) pairs that must not read from the host at all.
SYNC_FREE: list[tuple[str, Callable[[dict[str, torch.Tensor]], object]]] = [
    ("box_iou", lambda t: bbox.BBoxBatchIOU()(t["anchors"], t["refs"])),
    ("box conversions", lambda t: bbox.BBoxCenterToCorner()(bbox.BBoxCornerToCenter()(t["anchors"]))),
    ("box_area", lambda t: bbox.BBoxArea()(t["anchors"])),
    ("clip_to_image", lambda t: bbox.BBoxClipToImage()(t["anchors"], t["image"])),
    ("MaximumMatcher", lambda t: matcher.MaximumMatcher(0.5)(t["ious"])),
    ("NaiveSampler", lambda t: sampler.NaiveSampler()(t["matches"])),
    ("OHEMSampler", lambda t: sampler.OHEMSampler(3, thresh=0.5)(t["matches"], t["logits"], t["ious"])),
    ("QuotaSampler", lambda t: sampler.QuotaSampler(32, 0.5, 0.3)(t["matches"], t["ious"])),
    (
        "NormalizedBoxCenterEncoder",
        lambda t: coder.NormalizedBoxCenterEncoder()(t["samples"], t["matches"], t["anchors"], t["refs"]),
    ),
    (
        "NormalizedPerClassBoxCenterEncoder",
        lambda t: coder.NormalizedPerClassBoxCenterEncoder(num_class=5, max_pos=16)(
            t["samples"], t["matches"], t["anchors"], t["ids"], t["refs"]
        ),
    ),
    ("MultiClassEncoder", lambda t: coder.MultiClassEncoder()(t["samples"], t["matches"], t["ids"])),
    ("SigmoidClassEncoder", lambda t: coder.SigmoidClassEncoder()(t["samples"])),
    (
        "NormalizedBoxCenterDecoder",
        lambda t: coder.NormalizedBoxCenterDecoder()(t["logits"][..., :4], t["anchors"]),
    ),
    ("MultiClassDecoder", lambda t: coder.MultiClassDecoder()(t["probs"])),
    ("MultiPerClassDecoder", lambda t: coder.MultiPerClassDecoder(6)(t["probs"])),
    ("generalized_box_iou", lambda t: bbox.generalized_box_iou(t["anchors"], t["refs"])),
    ("distance_box_iou", lambda t: bbox.distance_box_iou(t["anchors"], t["refs"])),
    ("complete_box_iou", lambda t: bbox.complete_box_iou(t["anchors"], t["refs"])),
    ("aligned_box_iou", lambda t: bbox.aligned_box_iou(t["anchors"], t["anchors"].flip(1), kind="ciou")),
    ("SSDAnchorGenerator", lambda t: _SSD_ANCHORS()(t["image"])),
    ("RPNAnchorGenerator", lambda t: _RPN_ANCHORS()(t["image"])),
    ("anchor_points", lambda t: anchor.anchor_points([(8, 6), (4, 3)], [8, 16], device=t["image"].device)),
]


@pytest.mark.cpu_only("runs the accelerator path on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("name,path", SYNC_FREE, ids=[n for n, _ in SYNC_FREE])
def test_hot_path_never_reads_from_the_host(name, path, monkeypatch):
    """From its second call on (the first copies its constants, such as ``stds``, to the
    device once), a hot path never makes the host wait."""
    t = _inputs(_scene())
    _SSD_ANCHORS(), _RPN_ANCHORS()
    with accelerator_path(monkeypatch) as reads:
        path(t)
        reads.clear()
        path(t)
    assert not reads, f"{name} reads from the host on an accelerator: {dict(reads)}"


#: Eager paths that read sizes back on purpose, with the bound their docstrings give.
def _bipartite_reads_bound(t: dict[str, torch.Tensor]) -> int:
    """``bipartite_match`` on an accelerator: one read per round of mutually best pairs (at
    most ``Q + 1`` per candidate-list size, ``Q`` the references), and one per list size
    (``k = 4, 8, ...`` up to ``min(Q, N)``), plus one for the spill check of each list."""
    q = t["ious"].shape[2]
    sizes = 1 + max(0, (min(q, t["ious"].shape[1]) - 1).bit_length() - 1)
    return sizes * (q + 1 + 2) + 1


@pytest.mark.cpu_only("runs the accelerator path on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("share_max", [True, False])
def test_bipartite_reads_at_most_its_documented_bound(share_max, monkeypatch):
    t = _inputs(_scene())
    m = matcher.BipartiteMatcher(share_max=share_max)
    want = m(t["ious"].clone())
    with accelerator_path(monkeypatch) as reads:
        got = m(t["ious"])
    assert torch.equal(got, want)
    assert 0 < sum(reads.values()) <= _bipartite_reads_bound(t), dict(reads)


@pytest.mark.cpu_only("runs the accelerator path on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["maximum", "bipartite", "composite", "ascend"])
def test_the_accelerator_path_gives_the_cpu_path_s_matches(kind, seed, monkeypatch):
    """The static-shape path the matchers take on an accelerator equals the CPU path, ties
    (a coarse IoU grid) and NaN included."""
    t = _inputs(_scene(seed, N=300, M=9))
    x = (t["ious"] * 8).round() / 8  # many exact ties
    x[0, 5] = float("nan")
    m = {
        "maximum": matcher.MaximumMatcher(0.5),
        "bipartite": matcher.BipartiteMatcher(share_max=False),
        "composite": matcher.CompositeMatcher([matcher.BipartiteMatcher(), matcher.MaximumMatcher(0.5)]),
        "ascend": matcher.BipartiteMatcher(is_ascend=True, threshold=0.6),
    }[kind]
    want = m(x.clone())
    with accelerator_path(monkeypatch):
        got = m(x.clone())
    assert torch.equal(got, want)


@pytest.mark.cpu_only("the counter's own test, on CPU tensors")
def test_the_counter_sees_host_reads(monkeypatch):
    """The instrument itself: each kind of read is counted."""
    x = torch.arange(6.0)
    with accelerator_path(monkeypatch) as reads:
        float(x.sum())
        x[x > 2]
        x.nonzero()
        x.tolist()
        torch.unique(x)
    assert reads == Counter(
        {"item/bool/int/float": 1, "boolean-mask index": 1, "nonzero": 1, "tolist": 1, "unique": 1}
    )


@pytest.mark.meta_ok
@pytest.mark.parametrize("name,path", SYNC_FREE, ids=[n for n, _ in SYNC_FREE])
def test_hot_path_runs_on_the_test_device(name, path, device):
    """On the test device (``DETBLOCKS_TEST_DEVICE``) the sync-free paths run and give the CPU
    results. Also on ``meta``, which has no values to read: a path that read one would fail."""
    t = _inputs(_scene())
    got = path(t)
    got = got if isinstance(got, tuple) else (got,)
    assert all(g.device.type == device.type for g in got), name
    if device.type == "meta" or name == "QuotaSampler":  # no values; or random on each device
        return
    with torch.device("cpu"):
        want = path({k: v.cpu() for k, v in t.items()})
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=1e-5, equal_nan=True)


# ------------------------------------------------------------------ the dense assigners
@contextlib.contextmanager
def traceable_formulation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the assigners' ``torch.compile``/``torch.export`` formulation eagerly: every
    module that asks :func:`detblocks._checks.tracing` is told yes, every CPU shortcut no."""
    yes = lambda: True  # noqa: E731
    no = lambda *tensors: False  # noqa: E731
    for module in (_checks, tal, simota, dsl, _dynamic_k, max_iou):
        monkeypatch.setattr(module, "tracing", yes)
    for module in (atss, _common):
        for name in ("eager_cpu", "host_reads_free"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, no)
    try:
        yield
    finally:
        monkeypatch.undo()


def _dense_scene(seed: int = 0) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    points, strides = anchor.anchor_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32])
    b, n, m, c = 2, points.shape[0], 5, 4
    low = torch.rand(b, m, 2, generator=g) * 40
    gt_boxes = torch.cat([low, low + 8 + torch.rand(b, m, 2, generator=g) * 20], -1)
    gt_labels = torch.randint(0, c, (b, m), generator=g)
    gt_labels[0, 1] = -1  # padding in the middle
    gt_labels[1] = -1  # an image without objects... but one
    gt_labels[1, 3] = 2
    scores = torch.rand(b, n, c, generator=g).clamp(1e-3, 1 - 1e-3)
    low = torch.rand(b, n, 2, generator=g) * 50
    pred_boxes = torch.cat([low, low + 5 + torch.rand(b, n, 2, generator=g) * 20], -1)
    return {
        "points": points,
        "priors": torch.cat([points, strides[:, None].expand(-1, 2)], -1),
        "anchors": torch.cat([points - 12, points + 12], -1),
        "scores": scores,
        "pred_boxes": pred_boxes,
        "gt_labels": gt_labels,
        "gt_boxes": gt_boxes,
        "c": c,
    }


#: (name, assigner call, whether the eager CPU path reads sizes back).
DENSE: list[tuple[str, Callable[[dict], assign.Assignment], bool]] = [
    (
        "task_aligned_assign",
        lambda t: assign.task_aligned_assign(
            t["scores"], t["pred_boxes"], t["points"], t["gt_labels"], t["gt_boxes"], num_classes=t["c"]
        ),
        True,
    ),
    (
        "simota_assign",
        lambda t: assign.simota_assign(
            t["priors"], t["scores"].logit(), t["pred_boxes"], t["gt_labels"], t["gt_boxes"]
        ),
        True,
    ),
    (
        "dsl_assign",
        lambda t: assign.dsl_assign(
            t["priors"], t["scores"].logit(), t["pred_boxes"], t["gt_labels"], t["gt_boxes"]
        ),
        True,
    ),
    (
        "atss_assign",
        lambda t: assign.atss_assign(t["anchors"], [64, 16, 4], t["gt_labels"], t["gt_boxes"]),
        True,
    ),
    (
        "max_iou_assign",
        lambda t: assign.max_iou_assign(t["anchors"], t["gt_labels"], t["gt_boxes"], 0.5, 0.4),
        False,
    ),
]


@pytest.mark.cpu_only("runs the traceable formulation eagerly on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name,call,eager_reads", DENSE, ids=[n for n, _, _ in DENSE])
def test_dense_assigners_traceable_formulation_reads_nothing(name, call, eager_reads, seed, monkeypatch):
    """The formulation ``torch.compile``/``torch.export`` trace (and so what runs compiled on
    CUDA) has no host read, and assigns exactly as the eager path, which does read sizes
    back on CPU as its docstring says (the counter would see a read in the formulation)."""
    t = _dense_scene(seed)
    with HostReads() as eager:
        want = call(t)
    assert (sum(eager.reads.values()) > 0) == eager_reads, dict(eager.reads)
    detblocks.set_value_checks(False)
    try:
        with traceable_formulation(monkeypatch), HostReads() as traced:
            got = call(t)
    finally:
        detblocks.set_value_checks(None)
    assert not traced.reads, f"{name}'s traceable formulation reads from the host: {dict(traced.reads)}"
    assert torch.equal(got.matches, want.matches) and torch.equal(got.labels, want.labels)
    torch.testing.assert_close(got.quality, want.quality, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ greedy NMS
@pytest.mark.cpu_only("runs the accelerator path on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("force_suppress", [True, False])
def test_box_nms_reads_one_flag_per_round(force_suppress, monkeypatch):
    """``box_nms`` off the CPU reads back one flag per suppression round (its docstring),
    never more than ``topk + 1``, and keeps the rows the CPU path keeps."""
    g = torch.Generator().manual_seed(3)
    b, n = 3, 300
    low = torch.rand(b, n, 2, generator=g) * 60
    rows = torch.cat(
        [
            torch.randint(0, 3, (b, n, 1), generator=g).float(),
            torch.rand(b, n, 1, generator=g),
            low,
            low + 5 + torch.rand(b, n, 2, generator=g) * 30,
        ],
        -1,
    )
    kwargs = dict(overlap_thresh=0.45, valid_thresh=0.05, topk=200, id_index=0, force_suppress=force_suppress)
    want = postprocess.box_nms(rows, **kwargs)
    monkeypatch.setattr(_checks, "eager_cpu", lambda *tensors: False)
    with accelerator_path(monkeypatch) as reads:
        got = postprocess.box_nms(rows, **kwargs)
    assert torch.equal(got, want)
    assert set(reads) <= {"torch.equal", "item/bool/int/float"}, dict(reads)
    assert 1 < sum(reads.values()) <= kwargs["topk"] + 1, dict(reads)


# ------------------------------------------------------------------ on CUDA itself
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,path", SYNC_FREE, ids=[n for n, _ in SYNC_FREE])
def test_hot_path_never_synchronises_on_cuda(name, path):
    """On CUDA itself: a hot path under ``torch.cuda.set_sync_debug_mode("error")`` raises
    on any synchronising call."""
    t = {k: v.to("cuda") for k, v in _inputs(_scene()).items()}
    detblocks.set_value_checks(False)
    path(t)  # the first call copies its constants to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        path(t)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        detblocks.set_value_checks(None)
