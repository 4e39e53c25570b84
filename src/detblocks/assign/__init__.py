"""Target assigners of today's detectors, batched over a padded batch.

Each rule reproduces its reference exactly (named in its docstring) and returns an
:class:`Assignment`; see SPEC "detblocks.assign" for the shared conventions.
"""

from __future__ import annotations

from detblocks.assign._common import Assignment
from detblocks.assign.atss import ATSSAssigner, atss_assign
from detblocks.assign.dsl import DynamicSoftLabelAssigner, dsl_assign
from detblocks.assign.max_iou import MaxIoUAssigner, max_iou_assign
from detblocks.assign.simota import SimOTAAssigner, simota_assign
from detblocks.assign.tal import TaskAlignedAssigner, task_aligned_assign

__all__ = ["Assignment", "ATSSAssigner", "atss_assign", "MaxIoUAssigner", "max_iou_assign"]
__all__ += ["SimOTAAssigner", "simota_assign", "DynamicSoftLabelAssigner", "dsl_assign"]
__all__ += ["TaskAlignedAssigner", "task_aligned_assign"]
