"""What every assigner shares: the :class:`Assignment` result and the ground-truth checks.

Conventions (SPEC, "detblocks.assign"): ground truth is a padded batch, ``gt_boxes
(B, M, 4)`` corner pixels and ``gt_labels (B, M)`` int64 in ``[0, num_classes)``; a
padding row has label ``-1`` (its box is ``-1`` s) and never becomes a match.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detblocks._alloc import empty_large
from detblocks._checks import check_batch, check_boxes, check_index, eager_cpu, shape_str

__all__ = ["Assignment", "BACKGROUND", "IGNORE"]

#: ``Assignment.matches`` of an anchor assigned to no ground truth (a negative).
BACKGROUND: int = -1
#: ``Assignment.matches`` of an anchor that takes no part in the loss (MaxIoU only).
IGNORE: int = -2


class Assignment(NamedTuple):
    """The result of every assigner of :mod:`detblocks.assign`.

    Attributes:
        matches (Tensor[B, N] int64): the row of the assigned ground truth in the padded
            ``(B, M)`` batch; ``-1`` background, ``-2`` ignore (where the rule has one).
        labels (Tensor[B, N] int64): the class of that ground truth, ``-1`` elsewhere.
        quality (Tensor[B, N]): the rule's quality of the assignment (IoU with the
            assigned ground truth, or TAL's normalised alignment metric), in the floating
            dtype of the inputs; 0 wherever ``matches < 0`` unless the rule says otherwise.
    """

    matches: Tensor
    labels: Tensor
    quality: Tensor

    def score_targets(self, num_classes: int) -> Tensor:
        """Soft class targets ``one_hot(labels) * quality``, zero rows for background.

        Args:
            num_classes (int): C, the number of foreground classes.

        Returns:
            Tensor[B, N, C] in the dtype of ``quality``.

        Example:
            >>> import torch
            >>> a = Assignment(torch.tensor([[0, -1]]), torch.tensor([[2, -1]]), torch.tensor([[0.5, 0.0]]))
            >>> a.score_targets(3)
            tensor([[[0.0000, 0.0000, 0.5000],
                     [0.0000, 0.0000, 0.0000]]])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        quality, labels = self.quality, self.labels
        hot = (self.matches >= 0) & (labels >= 0) & (labels < num_classes)  # (B, N)
        value = torch.where(hot, quality, torch.zeros((), dtype=quality.dtype, device=quality.device))
        index = labels.clamp(0, num_classes - 1).unsqueeze(-1)
        shape = (*labels.shape, num_classes)
        if eager_cpu(value):  # one scatter into reused zeroed memory, not a (B, N, C) compare
            out = empty_large(shape, quality.dtype, quality.device).zero_()
            return out.scatter_(-1, index, value.unsqueeze(-1))
        out = torch.zeros(shape, dtype=quality.dtype, device=quality.device)
        return out.scatter(-1, index, value.unsqueeze(-1))


def check_ground_truth(gt_labels: object, gt_boxes: object) -> tuple[Tensor, Tensor]:
    """``gt_labels (B, M)`` integer, ``gt_boxes (B, M, 4)`` floating; returns them with the
    labels as int64."""
    gt_boxes = check_boxes("gt_boxes", gt_boxes, 3, "(B, M, 4)")
    gt_labels = check_index("gt_labels", gt_labels, 2, "(B, M)")
    check_batch(("gt_boxes", gt_boxes), ("gt_labels", gt_labels))
    if gt_labels.shape[1] != gt_boxes.shape[1]:
        raise ValueError(
            f"gt_labels {shape_str(gt_labels)} must have the M of gt_boxes {shape_str(gt_boxes)}"
        )
    return gt_labels, gt_boxes


def real_rows(gt_labels: Tensor) -> Tensor:
    """``(B, M)`` bool: the ground-truth rows that are not padding (label >= 0)."""
    return gt_labels >= 0
