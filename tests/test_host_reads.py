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
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import detblocks
from detblocks import _alloc, _checks, bbox, coder, matcher, sampler

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
    monkeypatch.setattr(bbox, "_native", None)
    monkeypatch.setattr(coder, "_native", None)
    monkeypatch.setattr(matcher, "_native", None)
    monkeypatch.setattr(sampler, "_native", None)
    python_reads: Counter[str] = Counter()
    for name in ("tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            python_reads[_name] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    detblocks.set_value_checks(False)
    mode = HostReads()
    try:
        with mode:
            yield mode.reads
    finally:
        detblocks.set_value_checks(None)
        mode.reads.update(python_reads)


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
]


@pytest.mark.cpu_only("runs the accelerator path on CPU tensors, with CPU shortcuts patched off")
@pytest.mark.parametrize("name,path", SYNC_FREE, ids=[n for n, _ in SYNC_FREE])
def test_hot_path_never_reads_from_the_host(name, path, monkeypatch):
    t = _inputs(_scene())
    with accelerator_path(monkeypatch) as reads:
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
