"""The cache of large CPU output buffers (detblocks._alloc): reuse only once idle."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

import detblocks
from detblocks import _alloc
from detblocks.bbox import box_iou

pytestmark = pytest.mark.cpu_only("the reused output memory is a CPU fast path")

SHAPE = (4, 1024, 1024)  # 16 MiB of float32: above the size that takes the cache


def test_buffer_is_reused_only_when_nothing_references_it():
    detblocks.empty_cache()
    a = _alloc.empty_large(SHAPE, torch.float32, "cpu")
    first = a.data_ptr()
    b = _alloc.empty_large(SHAPE, torch.float32, "cpu")
    assert b.data_ptr() != first  # a is alive
    view = a[1:3]
    del a
    c = _alloc.empty_large(SHAPE, torch.float32, "cpu")
    assert c.data_ptr() != first  # a view of a still holds it
    del view
    d = _alloc.empty_large(SHAPE, torch.float32, "cpu")
    assert d.data_ptr() == first  # idle now: reused
    del b, c, d
    assert detblocks.empty_cache() >= 3 * 16 << 20
    assert detblocks.empty_cache() == 0


def test_reused_memory_never_changes_a_live_result():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 40000, 4, generator=g) * 50
    a[..., 2:] += a[..., :2]
    b1, b2 = a[:, :60].clone(), a[:, 100:160].clone()
    first = box_iou(a, b1)
    kept = first.clone()
    for _ in range(3):  # more results while `first` is alive, then some that may reuse memory
        second = box_iou(a, b2)
        del second
    assert torch.equal(first, kept)
    again = box_iou(a, b1)
    assert torch.equal(again, kept)


def test_idle_buffers_beyond_the_cap_are_released(monkeypatch):
    detblocks.empty_cache()
    monkeypatch.setattr(_alloc, "CACHE_BYTES", 20 << 20)
    tensors = [_alloc.empty_large(SHAPE, torch.float32, "cpu") for _ in range(3)]
    del tensors
    kept = _alloc.empty_large((17, 256, 1024), torch.float32, "cpu")  # 17 MiB: no idle one fits
    idle = sum(len(buf) for buf, free in zip(_alloc._buffers, _alloc._idle_flags(_alloc._buffers)) if free)
    assert 0 < idle <= 20 << 20
    del kept
    detblocks.empty_cache()


def test_cached_outputs_behave_like_ordinary_tensors():
    x = _alloc.empty_large(SHAPE, torch.float32, "cpu").fill_(1.5)
    buf = io.BytesIO()
    torch.save(x, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=True), x)
    assert torch.equal(pickle.loads(pickle.dumps(x)), x)
    shared = x.clone().share_memory_()
    assert shared.is_shared() and torch.equal(shared, x)
    x.share_memory_()
    assert x.is_shared() and float(x[0, 0, 0]) == 1.5
    y = _alloc.where_large(x > 1, x, torch.tensor(0.0))
    assert y.shape == SHAPE and torch.equal(y, x)


def test_small_accelerator_and_traced_requests_take_torch_empty():
    small = _alloc.empty_large((10, 10), torch.float32, "cpu")
    assert small.shape == (10, 10) and small.untyped_storage().resizable()
    big = _alloc.empty_large(SHAPE, torch.float64, "cpu")
    assert big.dtype == torch.float64 and big.shape == SHAPE and big.is_contiguous()
    meta = _alloc.empty_large(SHAPE, torch.float32, "meta")
    assert meta.device.type == "meta"


def _child_fills(value: float) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: the parent's thread pool is not forked
    _alloc.empty_large(SHAPE, torch.float32, "cpu").fill_(value)


def test_forked_child_never_writes_into_the_parents_buffers():
    """A forked worker (DataLoader) that reuses an inherited idle buffer writes a private copy."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return
    detblocks.empty_cache()
    x = _alloc.empty_large(SHAPE, torch.float32, "cpu").fill_(1.0)
    address = x.data_ptr()
    del x  # idle, inherited by the child
    child = mp.get_context("fork").Process(target=_child_fills, args=(7.0,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    y = _alloc.empty_large(SHAPE, torch.float32, "cpu")
    assert y.data_ptr() == address  # the same buffer, reused here too
    assert bool((y == 1.0).all())  # untouched by the child
