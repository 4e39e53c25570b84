"""The demo (``detblocks demo``): whole path, COCO-json data, dataset errors, DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from detblocks.__main__ import main as detblocks_main
from detblocks.assign import Assignment
from detblocks.demo.anchor_free import AnchorFreeDetector, AnchorFreeInference, anchor_free_loss
from detblocks.demo.cli import main as demo_main
from detblocks.demo.data import (
    SHAPE_CLASSES,
    CocoJsonDataset,
    DatasetError,
    ShapesDataset,
    collate,
    draw_shapes,
)
from detblocks.demo.evaluate import Detections, coco_evaluate, coco_ground_truth
from detblocks.demo.export import compare_detections
from detblocks.demo.model import SSD, SSDInference, ssd_anchors
from detblocks.demo.train import ASSIGNER_NAMES, CHECKPOINT_NAME, DemoConfig, load_checkpoint, run_demo

pytestmark = pytest.mark.cpu_only("the demo trains, evaluates and exports on CPU")

TINY = ["--image-size", "64", "--batch-size", "4", "--train-size", "16", "--val-size", "8", "--threads", "1"]


# --------------------------------------------------------------------------- pieces


def test_shapes_dataset_is_deterministic_and_splits_differ():
    a = ShapesDataset(6, 64, seed=3, split="train")
    b = ShapesDataset(6, 64, seed=3, split="train")
    v = ShapesDataset(6, 64, seed=3, split="val")
    assert a.images.dtype == torch.uint8 and a.images.shape == (6, 3, 64, 64)
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not torch.equal(a.images, v.images)
    for boxes, labels in zip(a.boxes, a.labels):
        assert boxes.shape[0] >= 1 and boxes.shape[0] == labels.shape[0]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((labels >= 0) & (labels < len(SHAPE_CLASSES))).all()


CLASS_COLOURS = {
    "circle": [0.9, 0.15, 0.15],
    "square": [0.15, 0.7, 0.2],
    "triangle": [0.2, 0.35, 0.95],
    "cross": [0.95, 0.85, 0.1],
    "diamond": [0.85, 0.2, 0.85],
    "ring": [0.1, 0.85, 0.9],
}


def test_drawn_objects_have_their_class_colour_inside_their_box():
    g = torch.Generator().manual_seed(0)
    images, boxes, labels = draw_shapes(8, 96, g, max_objects=1, min_size=0.3, max_size=0.4, clutter=False)
    for img, bx, lb in zip(images, boxes, labels):
        x0, y0, x1, y1 = bx[0].round().int().tolist()
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        if SHAPE_CLASSES[lb[0]] == "ring":  # hollow centre: sample the ring itself
            cx = x0 + max(1, round((x1 - x0) * 0.12))
        if SHAPE_CLASSES[lb[0]] == "triangle":  # the centre of the box is inside, lower half wider
            cy = y0 + (y1 - y0) * 3 // 4
        centre = img[:, cy, cx].float() / 255
        corner = img[:, y0 + 1, x0 + 1].float() / 255
        base = torch.tensor(CLASS_COLOURS[SHAPE_CLASSES[lb[0]]])
        assert (centre - base).abs().max() < 0.35, (SHAPE_CLASSES[lb[0]], centre, base)
        if SHAPE_CLASSES[lb[0]] != "square":  # the box corner is background for every other shape
            assert (corner - centre).abs().max() > 0.02 or (corner - base).abs().max() > 0.2


def test_collate_pads_with_minus_one():
    ds = ShapesDataset(4, 32, seed=1)
    images, boxes, labels = collate([ds[i] for i in range(4)])
    counts = [ds[i][1]["boxes"].shape[0] for i in range(4)]
    assert images.shape == (4, 3, 32, 32) and boxes.shape == (4, max(counts), 4)
    for i, k in enumerate(counts):
        assert torch.equal(boxes[i, :k], ds[i][1]["boxes"])
        assert (boxes[i, k:] == -1).all() and (labels[i, k:] == -1).all()


def test_ssd_anchors_layout():
    anchors = ssd_anchors([(2, 2), (1, 1)], [0.2, 0.5, 0.8], [[1, 2, 0.5], [1, 2, 0.5]])
    assert anchors.shape == ((4 + 1) * 4, 4)
    # first cell of the first map: centre (0.25, 0.25), square 0.2, square sqrt(0.2*0.5),
    # then ratios 2 and 1/2
    expected = torch.tensor(
        [[0.25, 0.25, 0.2, 0.2], [0.25, 0.25, 0.1 ** 0.5, 0.1 ** 0.5],
         [0.25, 0.25, 0.2 * 2 ** 0.5, 0.2 / 2 ** 0.5], [0.25, 0.25, 0.2 / 2 ** 0.5, 0.2 * 2 ** 0.5]]
    )  # fmt: skip
    torch.testing.assert_close(anchors[:4], expected)
    torch.testing.assert_close(anchors[4, :2], torch.tensor([0.75, 0.25]))  # next column
    torch.testing.assert_close(anchors[16], torch.tensor([0.5, 0.5, 0.5, 0.5]))  # the 1x1 map


def test_coco_evaluate_perfect_and_wrong_detections():
    ds = ShapesDataset(5, 64, seed=2, split="val")
    gt = coco_ground_truth(ds, SHAPE_CLASSES)
    d = 10
    boxes = torch.zeros(5, d, 4)
    scores = torch.zeros(5, d)
    classes = torch.full((5, d), -1)
    for i in range(5):
        t = ds[i][1]
        k = t["boxes"].shape[0]
        boxes[i, :k], scores[i, :k], classes[i, :k] = t["boxes"], 0.9, t["labels"]
    perfect = coco_evaluate(gt, Detections(boxes, scores, classes))
    assert perfect.map50 == pytest.approx(1.0) and perfect.map == pytest.approx(1.0)
    wrong = coco_evaluate(
        gt, Detections(boxes, scores, torch.where(classes >= 0, (classes + 1) % 6, classes))
    )
    assert wrong.map50 < 0.01


def test_compare_detections_finds_differences():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(3, 5, 4, generator=g) * 50
    scores = torch.linspace(0.9, 0.1, 5).expand(3, 5).clone()
    classes = torch.randint(0, 4, (3, 5), generator=g)
    a = Detections(boxes, scores, classes)
    same = compare_detections(a, Detections(boxes + 1e-5, scores, classes))
    assert same["equal"] and same["mismatches"] == 0 and same["matched"] == 15
    moved = boxes.clone()
    moved[1, 2, 0] += 1.0
    res = compare_detections(a, Detections(moved, scores, classes))
    assert not res["equal"] and res["matched"] == 14
    other = classes.clone()
    other[2, 0] = (other[2, 0] + 1) % 4
    res = compare_detections(a, Detections(boxes, scores, other))
    assert not res["equal"] and res["matched"] == 14
    lower = scores.clone()
    lower[0, 4] -= 0.01
    res = compare_detections(a, Detections(boxes, lower, classes))
    assert not res["equal"] and res["mismatches"] == 2
    # Rows in another order (runtimes may sort exact ties differently): still equal.
    perm = [1, 0, 2, 4, 3]
    assert compare_detections(a, Detections(boxes[:, perm], scores[:, perm], classes[:, perm]))["equal"]
    # One near-tie swap (the other runtime kept another candidate of the same score) in 200 detections.
    big = Detections(
        torch.rand(2, 100, 4, generator=g) * 50, torch.rand(2, 100, generator=g), torch.zeros(2, 100).long()
    )
    other = Detections(big.boxes.clone(), big.scores.clone(), big.classes)
    other.boxes[1, 7] += 5.0
    other.scores[1, 7] += 1e-7
    res = compare_detections(big, other)
    assert res["equal"] and res["tie_swaps"] == 1 and res["mismatches"] == 0


def test_inference_output_contract():
    torch.manual_seed(0)
    model = SSD(len(SHAPE_CLASSES), 64).eval()
    boxes, scores, classes = SSDInference(model, max_detections=20)(torch.rand(3, 3, 64, 64))
    assert boxes.shape == (3, 20, 4) and scores.shape == (3, 20) and classes.shape == (3, 20)
    assert classes.dtype == torch.int64
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted
    assert ((classes >= -1) & (classes < len(SHAPE_CLASSES))).all()
    assert ((classes == -1) == (scores == 0)).all()
    assert (boxes >= 0).all() and (boxes <= 64).all()


# --------------------------------------------------------------------------- whole path


def test_demo_smoke_whole_path(tmp_path, capsys):
    """Train a few iterations, evaluate, checkpoint, export to ONNX and check it, draw, then resume."""
    out = tmp_path / "run"
    code = detblocks_main(["demo", *TINY, "--epochs", "1", "--iters", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for name in ("checkpoint.pt", "detector.onnx", "detections.png", "training.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "forward" in printed and "targets" in printed and "backward" in printed  # timing table
    assert "mAP@.5" in printed and str(out.resolve()) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["onnx_check"]
    assert check["equal"] and check["mismatches"] == 0 and check["images"] == 8
    assert check["matched"] + check["tie_swaps"] == check["detections"] > 0
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0

    ckpt = load_checkpoint(out / CHECKPOINT_NAME)  # weights_only=True inside
    assert ckpt["epoch"] == 1 and len(ckpt["history"]["loss"]) == 3
    model = SSD(len(SHAPE_CLASSES), 64)
    model.load_state_dict(ckpt["model"])

    # --resume continues from epoch 1 to epoch 2, from the saved weights.
    code = demo_main([*TINY, "--epochs", "2", "--iters", "2", "--out", str(out), "--resume",
                      str(out / CHECKPOINT_NAME), "--no-export", "--no-plots"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "resumed" in printed and "epoch 2/2" in printed and "epoch 1/2" not in printed
    ckpt2 = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt2["epoch"] == 2 and len(ckpt2["history"]["map"]) == 2
    assert ckpt2["history"]["loss"][:3] == ckpt["history"]["loss"]
    changed = any(not torch.equal(ckpt["model"][k], ckpt2["model"][k]) for k in ckpt["model"])
    assert changed


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as e:
        demo_main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--epochs",
        "--batch-size",
        "--image-size",
        "--out",
        "--seed",
        "--device",
        "--data",
        "--resume",
    ):
        assert flag in text
    with pytest.raises(SystemExit) as e:
        demo_main(["--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert detblocks_main(["nonsense"]) == 2


@pytest.mark.parametrize(
    "kind, message", [("missing", "checkpoint not found"), ("foreign", "not a detblocks demo")]
)
def test_resume_from_bad_checkpoint_gives_clear_error(tmp_path, capsys, kind, message):
    path = tmp_path / "ckpt.pt"
    if kind == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    args = [*TINY, "--epochs", "1", "--iters", "1", "--out", str(tmp_path / "run"), "--resume", str(path)]
    assert demo_main([*args, "--no-export", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err


# --------------------------------------------------------------------------- COCO json


def _write_coco(root: Path, n: int = 12, size: tuple[int, int] = (96, 80)) -> tuple[Path, Path, dict]:
    """A small COCO-format dataset: PNGs drawn with the shape generator, resized to ``size`` (w, h)."""
    from PIL import Image

    w, h = size
    g = torch.Generator().manual_seed(7)
    images, boxes, labels = draw_shapes(n, 64, g, max_objects=3, min_size=0.2, max_size=0.5)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    data: dict = {"images": [], "annotations": [], "categories": []}
    # Category ids need not be contiguous or zero-based.
    cat_ids = [10 + 3 * k for k in range(len(SHAPE_CLASSES))]
    data["categories"] = [{"id": c, "name": name} for c, name in zip(cat_ids, SHAPE_CLASSES)]
    sx, sy = w / 64, h / 64
    for i in range(n):
        name = f"img_{i:03d}.png"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).resize((w, h)).save(img_dir / name)
        data["images"].append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for (x0, y0, x1, y1), lab in zip(boxes[i].tolist(), labels[i].tolist()):
            bw, bh = (x1 - x0) * sx, (y1 - y0) * sy
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": 100 + i,
                    "category_id": cat_ids[lab],
                    "bbox": [x0 * sx, y0 * sy, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    ann = root / "annotations.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir, data


def test_coco_json_dataset_reads_and_rescales(tmp_path):
    ann, img_dir, data = _write_coco(tmp_path, n=3)
    ds = CocoJsonDataset(ann, img_dir, image_size=64)
    assert len(ds) == 3 and ds.classes == SHAPE_CLASSES
    image, target = ds[1]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    rows = [a for a in data["annotations"] if a["image_id"] == 101]
    sx, sy = 64 / 96, 64 / 80
    expect = torch.tensor(
        [[x * sx, y * sy, (x + bw) * sx, (y + bh) * sy] for x, y, bw, bh in (a["bbox"] for a in rows)]
    )
    torch.testing.assert_close(target["boxes"], expect)
    assert target["labels"].tolist() == [(a["category_id"] - 10) // 3 for a in rows]


@pytest.mark.parametrize("recipe", ["ssd", "anchor-free"])
def test_demo_trains_on_coco_json(tmp_path, capsys, recipe):
    ann, img_dir, _ = _write_coco(tmp_path / "coco")
    out = tmp_path / "run"
    code = demo_main([*TINY, "--recipe", recipe, "--epochs", "2", "--iters", "2", "--data", str(ann),
                      "--images", str(img_dir), "--val-fraction", "0.25", "--out", str(out),
                      "--no-export"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "9 train / 3 val images" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["coco_stats"]) == 12
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["meta"]["classes"] == list(SHAPE_CLASSES)
    assert len(ckpt["history"]["loss"]) == 4 and all(v == v for v in ckpt["history"]["loss"])
    assert (out / "detections.png").is_file()


def _malformed(tmp_path: Path, kind: str) -> list[str]:
    ann, img_dir, data = _write_coco(tmp_path / "coco", n=3)
    if kind == "missing_file":
        return ["--data", str(tmp_path / "nope.json")]
    if kind == "not_json":
        ann.write_text("{this is not json")
    elif kind == "no_annotations_key":
        del data["annotations"]
        ann.write_text(json.dumps(data))
    elif kind == "bad_bbox":
        data["annotations"][0]["bbox"] = [1, 2, 3]
        ann.write_text(json.dumps(data))
    elif kind == "unknown_category":
        data["annotations"][0]["category_id"] = 999
        ann.write_text(json.dumps(data))
    elif kind == "missing_image":
        (img_dir / "img_001.png").unlink()
    elif kind == "missing_folder":
        return ["--data", str(ann), "--images", str(tmp_path / "no_such_dir")]
    return ["--data", str(ann), "--images", str(img_dir)]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing_file", "annotations file not found"),
        ("not_json", "not valid JSON"),
        ("no_annotations_key", "needs a list under 'annotations'"),
        ("bad_bbox", "bbox must be [x, y, w, h]"),
        ("unknown_category", "unknown category_id 999"),
        ("missing_image", "'img_001.png'"),
        ("missing_folder", "image folder not found"),
    ],
)
def test_bad_dataset_gives_clear_error(tmp_path, capsys, kind, message):
    args = _malformed(tmp_path, kind)
    code = demo_main([*TINY, "--epochs", "1", "--iters", "1", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and message in err, err
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()
    with pytest.raises(DatasetError, match="not found|JSON|annotations|bbox|category|img_001|folder"):
        from detblocks.demo.train import build_datasets

        build_datasets(DemoConfig(data=args[1], images=args[3] if len(args) > 2 else None, image_size=64))


# --------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, recipe: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    cfg = DemoConfig(
        recipe=recipe, epochs=1, iters=3, batch_size=4, image_size=64, train_size=16, val_size=4, threads=1,
        out=out, export=False, plots=False, quiet=True,
    )  # fmt: skip
    try:
        result = run_demo(cfg)
        torch.save(
            {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _fresh_model(recipe: str) -> torch.nn.Module:
    if recipe == "ssd":
        return SSD(len(SHAPE_CLASSES), 64)
    return AnchorFreeDetector(len(SHAPE_CLASSES), 64)


@pytest.mark.parametrize("recipe", ["ssd", "anchor-free"])
def test_distributed_two_processes_stay_in_sync(tmp_path, recipe):
    """A 2-process gloo job (as under torchrun): both ranks end with identical parameters."""
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out), recipe), nprocs=2, join=True)
    s0 = torch.load(out / "rank0.pt", weights_only=True)
    s1 = torch.load(out / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    params = {name for name, _ in _fresh_model(recipe).named_parameters()}
    assert params <= s0.keys()
    for k in sorted(params):
        assert torch.equal(s0[k], s1[k]), f"parameter {k} differs between ranks"
    for k in s0.keys() - params:  # BatchNorm statistics, averaged over the ranks after each epoch
        torch.testing.assert_close(s0[k], s1[k], msg=f"buffer {k} differs between ranks")
    # Training happened: the weights moved away from the common initialisation.
    torch.manual_seed(0)
    init = _fresh_model(recipe).state_dict()
    assert any(not torch.equal(init[k], s0[k]) for k in init if init[k].is_floating_point())
    # Only rank 0 wrote the checkpoint, after one epoch of 3 iterations.
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]["loss"]) == 3


# --------------------------------------------------------------------------- both recipes

RECIPE_RUNS = [
    pytest.param(["--recipe", "ssd"], id="ssd"),
    *(pytest.param(["--recipe", "anchor-free", "--assigner", a], id=f"af-{a}") for a in ASSIGNER_NAMES),
]


@pytest.mark.parametrize("recipe", RECIPE_RUNS)
def test_recipe_whole_path_and_loss_falls(tmp_path, capsys, recipe):
    """Every recipe and assigner: one short epoch on small data (the loss falls), evaluation,
    checkpoint, ONNX export checked in onnxruntime, pictures; the log has plain lines only."""
    out = tmp_path / "run"
    args = [*TINY, "--train-size", "96"]  # 24 iterations of 4 images
    code = demo_main([*args, *recipe, "--epochs", "1", "--warmup", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for name in ("checkpoint.pt", "detector.onnx", "detections.png", "training.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "\r" not in printed  # not a terminal: plain progress lines, no carriage returns
    assert "epoch 1/1: 24/24 iterations" in printed
    assert "targets" in printed and "backward" in printed  # the time split, assignment on its own line
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["onnx_check"]
    assert check["equal"] and check["mismatches"] == 0 and check["images"] == 8
    assert check["matched"] + check["tie_swaps"] == check["detections"] > 0
    losses = load_checkpoint(out / CHECKPOINT_NAME)["history"]["loss"]
    assert len(losses) == 24 and all(v == v for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses  # measured: 0.41 (ATSS) to 0.77 (DSL)


def test_anchor_free_resume_and_meta(tmp_path, capsys):
    """--resume continues an anchor-free run; an SSD checkpoint is refused by it."""
    out = tmp_path / "run"
    af = [*TINY, "--recipe", "anchor-free", "--no-export", "--no-plots", "--out", str(out)]
    assert demo_main([*af, "--epochs", "1", "--iters", "2"]) == 0
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["meta"]["recipe"] == "anchor-free" and ckpt["epoch"] == 1
    capsys.readouterr()
    assert demo_main([*af, "--epochs", "2", "--iters", "2", "--resume", str(out / CHECKPOINT_NAME)]) == 0
    printed = capsys.readouterr().out
    assert "resumed" in printed and "epoch 2/2" in printed and "epoch 1/2" not in printed
    ckpt2 = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt2["epoch"] == 2 and ckpt2["history"]["loss"][:2] == ckpt["history"]["loss"]
    ssd_out = tmp_path / "ssd"
    ssd = [*TINY, "--epochs", "1", "--iters", "1", "--no-export", "--no-plots", "--out", str(ssd_out)]
    assert demo_main(ssd) == 0
    capsys.readouterr()
    assert demo_main([*af, "--epochs", "2", "--resume", str(ssd_out / CHECKPOINT_NAME)]) == 2
    assert "'recipe': 'ssd'" in capsys.readouterr().err


def test_anchor_free_flags(capsys):
    with pytest.raises(SystemExit) as e:
        demo_main(["--help"])
    text = capsys.readouterr().out
    assert "--recipe" in text and "--assigner" in text and "anchor-free" in text
    with pytest.raises(SystemExit) as e:
        demo_main(["--recipe", "anchor-free", "--image-size", "100"])
    assert e.value.code == 2 and "multiple of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        demo_main(["--recipe", "anchor-free", "--assigner", "hungarian"])
    assert e.value.code == 2 and "--assigner" in capsys.readouterr().err


def test_anchor_free_inference_output_contract():
    torch.manual_seed(0)
    model = AnchorFreeDetector(len(SHAPE_CLASSES), 64).eval()
    assert model.num_points == 8 * 8 + 4 * 4 + 2 * 2
    boxes, scores, classes = AnchorFreeInference(model, max_detections=20)(torch.rand(3, 3, 64, 64))
    assert boxes.shape == (3, 20, 4) and scores.shape == (3, 20) and classes.shape == (3, 20)
    assert classes.dtype == torch.int64
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted
    assert ((classes >= -1) & (classes < len(SHAPE_CLASSES))).all()
    assert ((classes == -1) == (scores == 0)).all()
    assert (boxes >= 0).all() and (boxes <= 64).all()


def test_anchor_free_decode_and_loss_at_the_target():
    """Box logits peaked on a target's side distances decode to that box, and its CIoU loss is 0."""
    torch.manual_seed(0)
    model = AnchorFreeDetector(2, 64, reg_max=8)
    n = model.num_points
    i = 8 * 3 + 4  # level 8: row 3, column 4 -> centre (36, 28)
    assert model.points[i].tolist() == [36.0, 28.0] and model.point_strides[i] == 8
    gt = torch.tensor([[[20.0, 12.0, 60.0, 52.0]]])  # sides 16, 16, 24, 24 px = 2, 2, 3, 3 strides
    logits = torch.full((1, n, 4, 8), -30.0)
    for side, bin_ in enumerate([2, 2, 3, 3]):
        logits[0, i, side, bin_] = 30.0
    logits = logits.reshape(1, n, 32)
    boxes = model.decode(logits)
    torch.testing.assert_close(boxes[0, i], gt[0, 0])
    matches = torch.full((1, n), -1)
    matches[0, i] = 0
    labels = torch.where(matches >= 0, 1, -1)
    a = Assignment(matches, labels, (matches >= 0).float())
    cls_logits = torch.full((1, n, 2), -30.0)
    cls_logits[0, i, 1] = 30.0
    cls_loss, box_loss = anchor_free_loss(model, cls_logits, logits, boxes, a, gt)
    assert cls_loss < 1e-6 and box_loss < 1e-4
    worse = anchor_free_loss(model, cls_logits, logits, boxes + 2.0, a, gt)[1]
    assert worse > box_loss + 0.1
