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
    with pytest.raises(SystemExit, match="yolo_nas"):
        bench.main(["--quick", "--workloads", "", "--no-sweep", "--modern", "yolo_nas"])


def _hide_modules(monkeypatch, *prefixes):
    """Make ``import`` of any module under ``prefixes`` fail, as if it were not installed."""
    import builtins

    real_import = builtins.__import__

    def hidden(name, *args, **kwargs):
        if name.split(".")[0] in prefixes:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hidden)


def test_new_modern_inputs_have_the_yardstick_layouts():
    for name in ("simota", "dsl", "atss", "hungarian"):
        first, again = bench.modern_inputs(name, quick=True), bench.modern_inputs(name, quick=True)
        assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
        batch, m, (lo, hi), _ = bench.MODERN_QUICK[name]
        labels, boxes = first["gt_labels"], first["gt_boxes"]
        assert labels.shape == (batch, m) and labels.dtype == torch.int64 and boxes.shape == (batch, m, 4)
        for b in range(batch):
            n = int((labels[b] >= 0).sum())
            assert lo <= n <= hi and torch.all(labels[b, :n] >= 0) and torch.all(labels[b, :n] < 80)
            assert torch.all(labels[b, n:] == -1) and torch.all(boxes[b, n:] == -1)
    full = bench.MODERN_WORKLOADS
    assert all(full[name] == (16, 50, (1, 50), 0) for name in ("simota", "dsl", "atss", "hungarian"))

    simota, dsl = bench.modern_inputs("simota", quick=True), bench.modern_inputs("dsl", quick=True)
    assert simota["priors"].shape == dsl["priors"].shape == (8400, 4)
    assert simota["priors"][0].tolist() == [4.0, 4.0, 8.0, 8.0]  # YOLOX: cell centres
    assert dsl["priors"][0].tolist() == [0.0, 0.0, 8.0, 8.0]  # RTMDet: cell corners
    assert simota["priors"][-1].tolist() == [624.0, 624.0, 32.0, 32.0]
    scores = simota["pred_scores"]
    assert scores.shape == (2, 8400, 80) and torch.all((scores > 0) & (scores < 1))
    assert dsl["pred_logits"].shape == (2, 8400, 80) and dsl["pred_logits"].median() < -3
    for out in (simota, dsl):
        pred = out["pred_boxes"]
        assert pred.shape == (2, 8400, 4) and torch.all(pred[..., 2:] > pred[..., :2])

    atss = bench.modern_inputs("atss", quick=True)
    assert atss["anchors"].shape == (18134, 4)
    assert atss["num_level_anchors"].tolist() == [13600, 3400, 850, 221, 63]
    assert atss["anchors"][0].tolist() == [-32.0, -32.0, 32.0, 32.0]  # side 8 x stride 8 at (0, 0)

    hungarian = bench.modern_inputs("hungarian", quick=True)
    assert hungarian["pred_boxes"].shape == (2, 300, 4) and hungarian["pred_logits"].shape == (2, 300, 80)
    pred = hungarian["pred_boxes"]
    assert torch.all((pred >= 0.001) & (pred <= 0.999))
    real = hungarian["gt_labels"] >= 0
    gt = hungarian["gt_boxes"][real]
    assert torch.all((gt[:, :2] > 0) & (gt[:, :2] < 1) & (gt[:, 2:] > 0) & (gt[:, 2:] <= 1))


def test_new_modern_workloads_run_detblocks_alone_without_references(capsys, monkeypatch):
    """simota, dsl and atss (mmdet's) and hungarian (ultralytics'): each runs and gives its
    figures for detblocks; with the references hidden the output says they run alone."""
    _hide_modules(monkeypatch, "mmdet", "mmengine", "mmcv", "mmdet_lite_shim", "ultralytics")
    names = ("simota", "dsl", "atss", "hungarian")
    results = bench.main(["--quick", "--workloads", "", "--no-sweep", "--modern", ",".join(names)])
    out = capsys.readouterr().out
    assert out.count("mmdet is not installed: detblocks alone") == 3, out
    assert out.count("ultralytics is not installed: detblocks alone") == 1, out
    assert set(results["modern"]) == set(names)
    for name in names:
        res = results["modern"][name]
        assert res["reference"] == bench.MODERN_REFERENCE[name]
        assert set(res["median_ms"]) == {"detblocks"} and res["median_ms"]["detblocks"] > 0
        assert res["ratio"] is None and res["checks_agree"] is None
        row = re.search(
            rf"^\| {name} \| B=2, [^|]+ \| ({NUMBER}) \| {res['reference']} \| - \| - \|", out, re.M
        )
        assert row and float(row.group(1)) == pytest.approx(res["median_ms"]["detblocks"], abs=0.06), out
    for name in ("simota", "dsl", "atss"):
        check = results["modern"][name]["checks"]["detblocks"]
        assert check["pos"] > 0 and 0 < check["quality_sum"] <= check["pos"]  # IoUs in (0, 1]
    # every real object of every image gets one of the 300 queries
    objects = int((bench.modern_inputs("hungarian", quick=True)["gt_labels"] >= 0).sum())
    assert results["modern"]["hungarian"]["checks"]["detblocks"]["pairs"] == objects


def test_hungarian_check_cost_is_the_matchers_own_cost():
    """The float64 cost the hungarian check sums equals detblocks' matching cost at the pairs."""
    from detblocks import _optimal
    from detblocks.matcher import HungarianMatcher

    inputs = bench.modern_inputs("hungarian", quick=True)
    args = (inputs["pred_boxes"], inputs["pred_logits"], inputs["gt_boxes"], inputs["gt_labels"])
    matcher = HungarianMatcher()
    matches = matcher(*args)
    cost = _optimal._matching_cost(*args, matcher._params)  # (B, Q, M) float32
    pairs = [(torch.nonzero(row >= 0)[:, 0], row[row >= 0]) for row in matches]
    expected = sum(float(cost[b, q, g].double().sum()) for b, (q, g) in enumerate(pairs))
    assert bench._rtdetr_pair_cost(inputs, pairs) == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_modern_checks_compare_every_figure():
    assert bench._checks_same({"pos": 10.0, "quality_sum": 5.0}, {"pos": 10.0, "quality_sum": 5.0})
    assert not bench._checks_same({"pos": 10.0, "quality_sum": 5.0}, {"pos": 11.0, "quality_sum": 5.0})
    assert not bench._checks_same({"pairs": 9.0, "cost": -1.0}, {"pairs": 9.0, "cost": -1.01})
    assert not bench._checks_same({"pairs": 9.0}, {"pairs": 9.0, "cost": 1.0})


def test_lsa_sweep_matches_scipy_on_tiny_cells():
    pytest.importorskip("scipy")
    lines = []
    cells = bench.lsa_sweep((4, 20), (5,), (1, 3), reps=2, min_s=0.0, log=lines.append)
    assert [(c.b, c.n, c.m) for c in cells] == [(1, 4, 5), (1, 20, 5), (3, 4, 5), (3, 20, 5)]
    for c in cells:
        assert c.detblocks_ms > 0 and c.scipy_ms > 0 and c.calls >= 2
        assert c.ratio == pytest.approx(c.detblocks_ms / c.scipy_ms)
        assert c.same_cost and c.detblocks_cost == pytest.approx(c.scipy_cost, rel=1e-12)
        # min(N, M) pairs of U(0, 1) costs, at most 1 each; the batch sums its images
        assert 0 < c.detblocks_cost < c.b * min(c.n, c.m)
    assert cells[1].detblocks_cost < cells[0].detblocks_cost  # more rows to choose from: cheaper
    assert len(lines) == 4 and all("same total cost" in line for line in lines)


def test_lsa_sweep_runs_detblocks_alone_without_scipy(monkeypatch):
    _hide_modules(monkeypatch, "scipy")
    lines = []
    (cell,) = bench.lsa_sweep((6,), (3,), (2,), reps=1, min_s=0.0, log=lines.append)
    assert cell.detblocks_ms > 0 and cell.detblocks_cost > 0
    assert cell.scipy_ms is None and cell.ratio is None and cell.same_cost is None
    assert lines[0] == "  SciPy is not installed: detblocks alone"


def test_lsa_sweep_cli_prints_its_table_and_plot(tmp_path, capsys):
    pytest.importorskip("scipy")
    png, raw = tmp_path / "lsa.png", tmp_path / "results.json"
    args = ["--workloads", "", "--no-sweep", "--reps", "1", "--lsa-sweep", "--lsa-n", "12", "--lsa-m", "3,30"]
    results = bench.main([*args, "--lsa-b", "2", "--lsa-out", str(png), "--json", str(raw)])
    out = capsys.readouterr().out
    for m in (3, 30):
        row = re.search(
            rf"^\| 2 \| 12 \| {m} \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \| [0-9]+ \| same \|$", out, re.M
        )
        assert row, out
        ours, theirs, ratio = (float(g) for g in row.groups())
        assert ours > 0 and theirs > 0 and ratio > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dumped = json.loads(raw.read_text())["lsa_sweep"]
    assert dumped == json.loads(json.dumps(results["lsa_sweep"]))
    assert [(c["b"], c["n"], c["m"]) for c in dumped] == [(2, 12, 3), (2, 12, 30)]
    assert all(c["same_cost"] and c["ratio"] > 0 for c in dumped)
