"""Smoke test of the benchmark machinery (``python -m detblocks.bench``) at tiny sizes.

No timing assertions: only that the benchmark runs end to end, prints its figures and
ratios, writes its plot and raw results, and that detblocks and torchvision do
comparable work on every workload (the benchmark's own check table says ``ok``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace

import pytest
import torch

from conftest import ROOT
from detblocks import bench

pytestmark = pytest.mark.cpu_only(
    "the benchmark harness is tested on CPU (its --device option is an argument of the tool)"
)

# Tiny versions of the four workloads: same layouts, a few milliseconds each.
TINY = {
    "ssd_targets": replace(bench.FULL_SIZES["ssd_targets"], batch=2),
    "rpn_targets": replace(bench.FULL_SIZES["rpn_targets"], image=(160, 256)),
    "ssd_decode": replace(bench.FULL_SIZES["ssd_decode"], batch=2),
    "iou": replace(bench.FULL_SIZES["iou"], batch=2, anchors=500, refs=20),
    "ssd_detect": replace(bench.FULL_SIZES["ssd_detect"], batch=2),
}

NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def test_anchor_layouts_have_the_documented_sizes():
    ssd = bench.ssd300_anchors()
    assert ssd.shape == (8732, 4) and ssd.dtype == torch.float32
    assert bench.fpn_anchors(800, 1216).shape == (242991, 4)
    corner = bench.center_to_corner(ssd)
    assert torch.all(corner[:, 2] > corner[:, 0]) and torch.all(corner[:, 3] > corner[:, 1])


def test_anchor_layouts_equal_the_shared_benchmark():
    common_py = ROOT.parent / "shared" / "bench" / "common.py"
    if not common_py.exists():
        pytest.skip(f"{common_py} not found")
    spec = importlib.util.spec_from_file_location("shared_bench_common", common_py)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert torch.equal(bench.ssd300_anchors(), torch.from_numpy(common.ssd300_anchors()))
    assert torch.equal(bench.fpn_anchors(800, 1216), torch.from_numpy(common.fpn_anchors(800, 1216)))


def test_inputs_are_seeded_and_padded_gluoncv_style():
    a = bench.make_inputs("ssd_targets", TINY["ssd_targets"])
    b = bench.make_inputs("ssd_targets", TINY["ssd_targets"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    lo, hi = TINY["ssd_targets"].real_refs
    for img, n in enumerate(a["n_gt"].tolist()):
        assert lo <= n <= hi
        assert torch.all(a["gt_boxes"][img, n:] == -1) and torch.all(a["gt_ids"][img, n:] == -1)
        real = a["gt_boxes"][img, :n]
        assert torch.all(real[:, 2:] > real[:, :2]) and torch.all(real >= 0) and torch.all(real <= 300)
        assert torch.all((a["gt_ids"][img, :n] >= 0) & (a["gt_ids"][img, :n] < 20))


def test_bench_runs_and_both_libraries_do_the_same_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "QUICK_SIZES", TINY)
    png, raw = tmp_path / "sweep.png", tmp_path / "results.json"
    args = ["--quick", "--warmup", "0", "--no-memory", "--sweep-n", "500,2000", "--sweep-m", "1,8"]
    results = bench.main([*args, "--out", str(png), "--json", str(raw)])
    out = capsys.readouterr().out

    for name in bench.WORKLOADS:
        row = re.search(
            rf"^\| {name} \| [^|]+ \| {NUMBER} \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \|", out, re.M
        )
        assert row, f"no figures for {name} in\n{out}"
        tv_ms, db_ms, ratio = (float(g) for g in row.groups())
        cell = results["workloads"][name]
        assert tv_ms > 0 and db_ms > 0 and ratio > 0
        assert ratio == pytest.approx(cell["ratio"], abs=1e-3)
        tv_median, db_median = cell["torchvision"]["median_ms"], cell["detblocks"]["median_ms"]
        assert cell["ratio"] == pytest.approx(db_median / tv_median)
        assert re.search(rf"^  {name} +torchvision .* \| detblocks .* \| ok$", out, re.M), out
        assert results["workloads"][name]["checks_agree"]

    assert re.search(r"^\| 2000 \| 8 \| 2e\+04 \|", out, re.M), out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dumped = json.loads(raw.read_text())
    assert set(dumped["workloads"]) == set(bench.WORKLOADS)
    assert len(dumped["sweep"]) == 4 and all(c["total_ms"] > 0 for c in dumped["sweep"])


def test_sweep_skips_cells_over_the_pair_limit():
    cells = bench.sweep([100, 1000], [4], reps=1, max_pairs=1000, log=lambda _: None)
    assert [c.skipped is None for c in cells] == [True, False]
    assert cells[0].ms_per_mpair > 0 and cells[1].total_ms is None


def test_peak_memory_sees_torch_allocations():
    peak = bench.peak_memory_mb(lambda: torch.ones(16 * 2**20))  # 64 MB of float32, returned
    if peak is None:
        pytest.skip("resident-set high-water mark cannot be reset on this platform")
    assert 60 <= peak < 200


def test_memory_cell_reports_both_libraries():
    for lib in ("torchvision", "detblocks"):
        res = bench._memory_cell(lib, "iou", TINY, "cpu", None)
        assert res["lib"] == lib and res["rss_mb"] > 0
        assert res["extra_mb"] is None or res["extra_mb"] >= 0


def test_checks_agree_tolerances():
    assert bench.checks_agree("ssd_decode", {"kept": 10, "box_sum": 1.0}, {"kept": 10, "box_sum": 1.0})
    assert not bench.checks_agree("ssd_decode", {"kept": 10, "box_sum": 1.0}, {"kept": 11, "box_sum": 1.0})
    assert bench.checks_agree("rpn_targets", {"pos": 100, "neg": 156}, {"pos": 99, "neg": 157})
    assert not bench.checks_agree("iou", {"iou_sum": 1.0}, {})


def test_modern_workloads_run_detblocks_alone_without_ultralytics(capsys, monkeypatch):
    """``--modern``: the assigner workloads run; without ultralytics (hidden here) detblocks
    runs alone and the output says so; the inputs are seeded and padded with -1 rows."""
    import builtins

    real_import = builtins.__import__

    def no_ultralytics(name, *args, **kwargs):
        if name.startswith("ultralytics"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ultralytics)
    first, again = (
        bench.modern_inputs("tal_crowded", quick=True),
        bench.modern_inputs("tal_crowded", quick=True),
    )
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["anchor_points"].shape == (8400, 2) and (first["gt_labels"] == -1).any()
    assert int((first["gt_labels"][0] >= 0).sum()) == bench.MODERN_QUICK["tal_crowded"][3]
    results = bench.main(["--quick", "--workloads", "", "--no-sweep", "--modern", "tal,tal_crowded"])
    out = capsys.readouterr().out
    assert out.count("ultralytics is not installed: detblocks alone") == 2
    for name in ("tal", "tal_crowded"):
        assert set(results["modern"][name]["median_ms"]) == {"detblocks"}
        assert results["modern"][name]["checks"]["detblocks"]["fg"] > 0


def test_modern_workloads_reject_unknown_names():
    with pytest.raises(SystemExit, match="simota"):
        bench.main(["--quick", "--workloads", "", "--no-sweep", "--modern", "simota"])
