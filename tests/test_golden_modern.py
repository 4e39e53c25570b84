"""Conformance with today's references: every golden case of ``shared/fixtures/modern``.

The cases were produced by running torchvision 0.29.1, ultralytics 8.4.190, mmdet 3.3.0
and SciPy 1.17.1 themselves; the rules for reading them (check kinds ``allclose``,
``exact``, ``assignment``, ``lsa``) are in that folder's README.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from conftest import DEVICE, load_manifest

MANIFEST = load_manifest("modern")
#: Constructor arguments given as JSON lists that the classes take as tuples.
TUPLE_KWARGS = {"stride", "neg_iou_thr"}


def _target(case: dict):
    module = importlib.import_module(f"detblocks.{case['module']}")
    return getattr(module, case["cls"])


def _inputs(case: dict, data) -> list[object]:
    out: list[object] = []
    for name in case["inputs"]:
        value = np.asarray(data[f"in_{name}"])
        if name in case.get("list_inputs", ()):
            out.append([int(v) for v in value])
        else:
            out.append(torch.from_numpy(value).to(DEVICE))
    return out


def _call(case: dict, inputs: list[object]):
    kwargs = {
        k: tuple(v) if k in TUPLE_KWARGS and isinstance(v, list) else v for k, v in case["kwargs"].items()
    }
    target = _target(case)
    if case.get("kind") == "function":
        return target(*inputs, **kwargs)
    return target(**kwargs)(*inputs)


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _check_allclose(case, data, outs):
    assert len(outs) == len(case["outputs"])
    for name, got in zip(case["outputs"], outs):
        want = torch.from_numpy(data[f"out_{name}"])
        assert got.is_floating_point(), f"{name}: {got.dtype}"
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        torch.testing.assert_close(got.float(), want.float(), rtol=case["rtol"], atol=case["atol"])


def _check_exact(case, data, outs):
    assert len(outs) == len(case["outputs"])
    for name, got in zip(case["outputs"], outs):
        want = torch.from_numpy(data[f"out_{name}"])
        if name in case["int_outputs"]:
            assert got.dtype == torch.int64, f"{name}: {got.dtype}"
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        assert torch.equal(got.to(want.dtype), want), f"{case['id']} {name}: {got} != {want}"


def _check_assignment(case, data, outs):
    from detblocks.assign import Assignment

    assert isinstance(outs, Assignment), f"an assigner returns an Assignment, got {type(outs).__name__}"
    matches, labels, quality = outs
    for name, got in (("matches", matches), ("labels", labels)):
        assert got.dtype == torch.int64, f"{name}: {got.dtype}"
    want_m = torch.from_numpy(data["out_out0"]).to(torch.int64)
    want_l = torch.from_numpy(data["out_out1"]).to(torch.int64)
    want_q = torch.from_numpy(data["out_out2"])
    assert matches.shape == want_m.shape, f"matches: shape {tuple(matches.shape)} != {tuple(want_m.shape)}"
    diff = (matches != want_m).nonzero().tolist()
    assert not diff, f"matches differ at {diff[:10]}: got {[int(matches[tuple(i)]) for i in diff[:10]]}, " + (
        f"want {[int(want_m[tuple(i)]) for i in diff[:10]]}"
    )
    assert torch.equal(labels, want_l), "labels differ"
    assert quality.is_floating_point(), f"quality: {quality.dtype}"
    torch.testing.assert_close(quality.float(), want_q.float(), rtol=case["rtol"], atol=case["atol"])
    if "ref_target_scores" in data:
        want_t = torch.from_numpy(data["ref_target_scores"])
        got_t = outs.score_targets(want_t.shape[-1])
        torch.testing.assert_close(got_t.float(), want_t.float(), rtol=case["rtol"], atol=case["atol"])


def _check_lsa(case, data, outs):
    (got,) = outs
    cost = data["in_cost"].astype(np.float64)
    valid = data["in_valid"] if "in_valid" in data else np.ones(cost.shape[::2], dtype=bool)
    want = data["out_out"]
    ref_total = data["ref_total_cost"]
    assert got.dtype == torch.int64 and tuple(got.shape) == cost.shape[:2]
    got = got.numpy()
    for b in range(cost.shape[0]):
        rows = np.nonzero(got[b] >= 0)[0]
        cols = got[b, rows]
        assert len(set(cols.tolist())) == len(cols), f"image {b}: a column used twice"
        assert valid[b, cols].all(), f"image {b}: a padded column matched"
        assert len(rows) == min(cost.shape[1], int(valid[b].sum())), f"image {b}: {len(rows)} pairs"
        total = cost[b, rows, cols].sum()
        assert np.isfinite(total), f"image {b}: a forbidden (+inf) pair"
        assert abs(total - ref_total[b]) <= 1e-5 * max(1.0, abs(ref_total[b])), (
            f"image {b}: {total} != {ref_total[b]}"
        )
    if case.get("unique", False):
        np.testing.assert_array_equal(got, want)


CHECKS = {
    "allclose": _check_allclose,
    "exact": _check_exact,
    "assignment": _check_assignment,
    "lsa": _check_lsa,
}


@pytest.mark.parametrize("case", MANIFEST, ids=lambda c: c["id"])
def test_golden_case(case):
    data = np.load(case["path"])
    with torch.no_grad():
        out = _call(case, _inputs(case, data))
    if isinstance(out, tuple):  # an Assignment (NamedTuple) or a plain tuple
        out = type(out)(*(o.cpu() for o in out)) if hasattr(out, "_fields") else tuple(o.cpu() for o in out)
    else:
        out = out.cpu()
    CHECKS[case["check"]](case, data, out if case["check"] == "assignment" else _as_tuple(out))


def test_manifest_is_fully_covered():
    """Every function and class named by the golden cases exists in detblocks."""
    assert len(MANIFEST) >= 90
    for module, cls in sorted({(c["module"], c["cls"]) for c in MANIFEST}):
        assert hasattr(importlib.import_module(f"detblocks.{module}"), cls), f"{module}.{cls}"
