"""Pictures of a demo run: validation detections, and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .evaluate import Detections

__all__ = ["plot_detections", "plot_training"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_detections(
    dataset: Dataset,
    detections: Detections,
    classes: Sequence[str],
    path: str | Path,
    num_images: int = 16,
    score_thresh: float = 0.4,
    columns: int = 4,
) -> Path:
    """PNG grid of the first ``num_images`` images: ground truth dashed white, predictions
    (score above ``score_thresh``) solid, coloured by class, labelled with class and score."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    n = min(num_images, len(dataset))  # type: ignore[arg-type]
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in zip(range(n), axes.flat):
        image, target = dataset[i]
        ax.imshow(image.permute(1, 2, 0).numpy())
        for x0, y0, x1, y1 in target["boxes"].tolist():
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.0, ls="--"))
        keep = (detections.classes[i] >= 0) & (detections.scores[i] > score_thresh)
        for (x0, y0, x1, y1), s, c in zip(
            detections.boxes[i][keep].tolist(),
            detections.scores[i][keep].tolist(),
            detections.classes[i][keep].tolist(),
        ):
            colour = cmap(c % 10)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5))
            ax.text(
                x0, y0 - 1, f"{classes[c]} {s:.2f}", color="black", fontsize=6, va="bottom",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0},
            )  # fmt: skip
    fig.suptitle(f"validation: predictions (solid, score > {score_thresh:.2f}) and ground truth (dashed)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training(history: dict, path: str | Path) -> Path:
    """PNG of the training loss per iteration (raw and smoothed) and validation mAP per epoch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    loss = torch.tensor(history.get("loss", []), dtype=torch.float64)
    if loss.numel():
        it = torch.arange(1, loss.numel() + 1)
        ax1.plot(it, loss, lw=0.5, alpha=0.4, label="loss")
        w = max(1, min(50, loss.numel() // 10))
        smooth = torch.nn.functional.avg_pool1d(loss.view(1, 1, -1), w, stride=1).view(-1)
        ax1.plot(it[w - 1 :], smooth, lw=1.5, label=f"loss (mean of {w})")
        for key in ("cls_loss", "box_loss"):
            part = torch.tensor(history.get(key, []), dtype=torch.float64)
            if part.numel() >= w:
                ps = torch.nn.functional.avg_pool1d(part.view(1, 1, -1), w, stride=1).view(-1)
                ax1.plot(it[w - 1 :], ps, lw=1.0, label=key.replace("_", " "))
        ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_title("training loss")
    ax1.legend(fontsize=8)
    epochs = list(range(1, len(history.get("map", [])) + 1))
    ax2.plot(epochs, history.get("map50", []), "o-", label="mAP@.5")
    ax2.plot(epochs, history.get("map", []), "s-", label="mAP@[.5:.95]")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.set_title("validation mAP (COCOeval)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
