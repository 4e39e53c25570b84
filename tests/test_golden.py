"""Conformance with GluonCV: every golden case of ``shared/fixtures/gluoncv`` and
``shared/fixtures/gluoncv_plumbing``.

The cases were produced by running GluonCV 0.10.5 on MXNet 1.9.1; the rules for
reading them are in that folder's README. Each case builds the detblocks class
of the same name with the same constructor arguments, feeds it the stored
inputs and compares with the stored outputs as the case's ``check`` says.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from conftest import DEVICE, load_manifest

MANIFEST = load_manifest() + load_manifest("gluoncv_plumbing")
# Inputs that hold integers (stored as float32 by GluonCV): passed as int64.
INT_INPUTS = {"matches", "samples", "labels"}


def _case_id(case: dict) -> str:
    return case["id"]


def _build(module: str, cls: str, kwargs: dict) -> torch.nn.Module:
    mod = importlib.import_module(f"detblocks.{module}")
    kwargs = dict(kwargs)
    if cls == "CompositeMatcher":
        kwargs["matchers"] = [getattr(mod, name)(**kw) for name, kw in kwargs["matchers"]]
    for key in ("stds", "means", "kernel", "pad", "stride"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return getattr(mod, cls)(**kwargs)


def _inputs(case: dict, data) -> list[torch.Tensor]:
    out = []
    for name in case["inputs"]:
        t = torch.from_numpy(np.asarray(data[f"in_{name}"]))
        if name in INT_INPUTS or (case["cls"] == "MultiClassEncoder" and name == "refs"):
            t = t.to(torch.int64)
        out.append(t.to(DEVICE))
    return out


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _load_params(block: torch.nn.Module, data, x: torch.Tensor) -> None:
    """Give a predictor's single conv/linear layer the stored weights."""
    with torch.no_grad():
        block(x)  # materialise lazily-shaped parameters
        layers = [m for m in block.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(layers) == 1, f"expected one conv/linear layer, found {len(layers)}"
        layer = layers[0]
        layer.weight.copy_(torch.from_numpy(data["param_weight"]))
        if "param_bias" in data:
            layer.bias.copy_(torch.from_numpy(data["param_bias"]))
        else:
            assert layer.bias is None


def _check_allclose(case, data, outs):
    assert len(outs) == len(case["outputs"])
    for name, got in zip(case["outputs"], outs):
        want = torch.from_numpy(data[f"out_{name}"])
        if name in case["int_outputs"]:
            assert got.dtype == torch.int64, f"{name}: {got.dtype}"
            torch.testing.assert_close(got, want.to(torch.int64), rtol=0, atol=0)
        else:
            assert got.is_floating_point(), f"{name}: {got.dtype}"
            torch.testing.assert_close(
                got.to(torch.float32), want.to(torch.float32), rtol=case["rtol"], atol=case["atol"]
            )


def _check_exact(case, data, outs):
    assert len(outs) == len(case["outputs"])
    for name, got in zip(case["outputs"], outs):
        want = torch.from_numpy(data[f"out_{name}"])
        if name in case["int_outputs"]:
            assert got.dtype == torch.int64, f"{name}: {got.dtype}"
        assert torch.equal(got.to(want.dtype), want), f"{case['id']} {name} differs"


def _check_perclass(case, data, outs):
    targets, masks, indices = outs
    samples = torch.from_numpy(data["in_samples"])
    agnostic = torch.from_numpy(data["ref_agnostic_targets"])
    anchor_cls = torch.from_numpy(data["ref_anchor_cls"])
    B, N = samples.shape
    max_pos, C = case["kwargs"]["max_pos"], case["kwargs"]["num_class"]
    assert indices.dtype == torch.int64
    assert targets.shape == (B, max_pos, C, 4) and masks.shape == (B, max_pos, C, 4)
    for b in range(B):
        pos = [n for n in range(N) if samples[b, n] > 0.5]
        rest = [n for n in range(N) if not samples[b, n] > 0.5]
        want_idx = torch.tensor((pos + rest)[:max_pos])
        assert torch.equal(indices[b], want_idx), f"image {b}: {indices[b]} != {want_idx}"
        rows = agnostic[b, want_idx]  # (max_pos, 4)
        torch.testing.assert_close(
            targets[b], rows[:, None, :].expand(-1, C, -1), rtol=case["rtol"], atol=case["atol"]
        )
        keep = samples[b, want_idx] > 0.5
        want_mask = (torch.arange(C)[None, :] == anchor_cls[b, want_idx][:, None]) & keep[:, None]
        torch.testing.assert_close(masks[b], want_mask[..., None].expand(-1, -1, 4).to(masks.dtype))


def _quota_run(block, inputs, seed):
    torch.manual_seed(seed)
    return block(*inputs)


def _check_quota(case, data, block, inputs):
    kw = case["kwargs"]
    matches, ious = inputs
    best = ious.max(-1).values
    pos_cand = (matches >= 0) | (best >= kw["pos_thresh"])
    neg_cand = (best >= kw.get("neg_thresh_low", -np.inf)) & (best < kw["neg_thresh_high"]) & ~pos_cand
    pos_ratio = kw.get("pos_ratio", 0.5)
    num_sample = kw["num_sample"]
    pos_quota = round(pos_ratio * num_sample)
    out = _quota_run(block, inputs, 0)
    assert out.dtype == torch.int64 and out.shape == matches.shape
    assert set(out.unique().tolist()) <= {-1, 0, 1}
    for b in range(matches.shape[0]):
        n_pos = int((out[b] == 1).sum())
        n_neg = int((out[b] == -1).sum())
        assert n_pos == min(int(pos_cand[b].sum()), pos_quota)
        if kw.get("fill_negative", True):
            neg_quota = num_sample - n_pos
        else:
            neg_quota = int((1 - pos_ratio) * num_sample)
        assert n_neg == min(int(neg_cand[b].sum()), neg_quota)
        assert bool(pos_cand[b][out[b] == 1].all())
        assert bool(neg_cand[b][out[b] == -1].all())
    assert torch.equal(out, _quota_run(block, inputs, 0)), "same seed must give the same samples"
    assert not torch.equal(out, _quota_run(block, inputs, 1)), "different seeds should differ"


def _check_shapes(case, data):
    from detblocks import feature

    kwargs = dict(case["kwargs"])
    x = torch.zeros(tuple(data["in_x"].shape))
    want = [tuple(s) for s in case["shapes"]]
    tv_name = kwargs["network"].removesuffix("_v1")
    tv_kwargs = dict(kwargs, network=tv_name, outputs=case["torchvision_outputs"])
    for kw in (kwargs, tv_kwargs):
        block = getattr(feature, case["cls"])(**kw).eval().to(DEVICE)
        with torch.no_grad():
            outs = block(x)
        assert [tuple(o.shape) for o in outs] == want, kw["network"]


@pytest.mark.parametrize("case", MANIFEST, ids=_case_id)
def test_golden_case(case):
    data = np.load(case["path"])
    if case["check"] == "shapes":
        _check_shapes(case, data)
        return
    block = _build(case["module"], case["cls"], case["kwargs"]).to(DEVICE)
    inputs = _inputs(case, data)
    if "param_weight" in data:
        _load_params(block, data, inputs[0])
    if case["check"] == "quota_invariants":
        _check_quota(case, data, block, inputs)
        return
    with torch.no_grad():
        outs = tuple(o.cpu() for o in _as_tuple(block(*inputs)))
    {"allclose": _check_allclose, "exact": _check_exact, "perclass": _check_perclass}[case["check"]](
        case, data, outs
    )


def test_manifest_is_fully_covered():
    """Every class named by the golden cases exists in detblocks (nothing skipped)."""
    classes = {(c["module"], c["cls"]) for c in MANIFEST}
    assert len(MANIFEST) >= 90
    for module, cls in classes:
        assert hasattr(importlib.import_module(f"detblocks.{module}"), cls), f"{module}.{cls}"
