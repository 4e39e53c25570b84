"""The value conventions of detblocks, written down once.

Every sampler, matcher and encoder refers to these names at its boundary, so
the classic porting bug (GluonCV's ``-1`` means *negative* while torchvision,
detectron2 and mmdet use ``-1`` for *ignore*) can only be made in one place.

========================  =====  ===========================================
name                      value  meaning
========================  =====  ===========================================
``Sample.POSITIVE``        ``1``  anchor is a positive (foreground) sample
``Sample.NEGATIVE``       ``-1``  anchor is a negative (background) sample
``Sample.IGNORE``          ``0``  anchor takes no part in the loss
``NO_MATCH``              ``-1``  matcher output: anchor matched to nothing
``PAD``                   ``-1``  value of every coordinate of a padded
                                  ground-truth row (GluonCV's loaders)
``BACKGROUND``             ``0``  class target of a negative anchor in
                                  :class:`~detblocks.coder.MultiClassEncoder`
========================  =====  ===========================================

Example:
    >>> from detblocks.conventions import Sample, NO_MATCH
    >>> int(Sample.POSITIVE), int(Sample.NEGATIVE), int(Sample.IGNORE), NO_MATCH
    (1, -1, 0, -1)
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Sample", "NO_MATCH", "PAD", "BACKGROUND"]


class Sample(IntEnum):
    """Sampler output values (GluonCV's convention, kept as-is)."""

    POSITIVE = 1
    NEGATIVE = -1
    IGNORE = 0


#: Matcher output for an anchor that is matched to no reference.
NO_MATCH: int = -1

#: Coordinate value of a padded ground-truth row.
PAD: int = -1

#: Class target of a negative anchor (foreground classes are shifted by one).
BACKGROUND: int = 0
