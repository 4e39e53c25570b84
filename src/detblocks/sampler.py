"""Sample selectors: which anchors are positives, negatives or ignored.

A sampler runs after a matcher (:mod:`detblocks.matcher`). It reads the
matches ``(B, N)`` (a reference index, or :data:`~detblocks.conventions.NO_MATCH`
= ``-1``) and returns samples ``Tensor[B, N]`` of ``torch.int64`` in GluonCV's
convention (:class:`~detblocks.conventions.Sample`):

* ``+1`` (``Sample.POSITIVE``): a positive (foreground) anchor,
* ``-1`` (``Sample.NEGATIVE``): a negative (background) anchor,
* ``0`` (``Sample.IGNORE``): the anchor takes no part in the loss.

Beware: torchvision, detectron2 and mmdet use ``-1`` for *ignore*.

Every sampler is a plain function (:func:`naive_sample`, :func:`ohem_sample`,
:func:`quota_sample`) wrapped by a module of GluonCV's name (:class:`NaiveSampler`,
:class:`OHEMSampler`, :class:`QuotaSampler`). The random part of the quota
sampler lives outside a registered custom operator, ``detblocks::quota_sample``
(:func:`QuotaSamplerOp`, described by :class:`QuotaSamplerProp`), so the
operator is a pure function of its inputs.

The best overlap of an anchor is ``max(0, max_m ious[b, n, m])``: overlaps are
IoUs, never negative, and an image without references (``M = 0``, or only
padded rows whose IoU is 0) has best overlap 0 everywhere. Overlaps are compared
with the thresholds in float32 (float64 for float64 input), as GluonCV's float32
arithmetic did; float16/bfloat16 inputs are upcast for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detblocks import _alloc
from detblocks._checks import (
    check_batch,
    check_bool,
    check_dim,
    check_float,
    check_in_range,
    check_index,
    check_number,
    check_rank,
    eager_cpu,
    shape_str,
    tracing,
)
from detblocks._kernels import native as _native
from detblocks.bbox import _SAME_WIDTH_INT, _recorded_best_iou
from detblocks.conventions import Sample

__all__ = [
    "NaiveSampler",
    "OHEMSampler",
    "QuotaSampler",
    "QuotaSamplerOp",
    "QuotaSamplerProp",
    "naive_sample",
    "ohem_sample",
    "quota_sample",
]


# ----------------------------------------------------------------------------- shared pieces
def _to_samples(positive: Tensor, negative: Tensor) -> Tensor:
    """Bool masks (B, N) -> samples (B, N) int64; ``positive`` wins where both are set."""
    ignore = torch.full_like(positive, int(Sample.IGNORE), dtype=torch.int64)
    return ignore.masked_fill(negative, int(Sample.NEGATIVE)).masked_fill(positive, int(Sample.POSITIVE))


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float16/bfloat16 -> float32 (thresholds and ranks are decided in float32 at least)."""
    return torch.promote_types(x.dtype, torch.float32)


def _best_overlap(ious: Tensor) -> Tensor:
    """``max(0, max_m ious)`` for ious (B, N, M), or ``max(0, ious)`` for ious (B, N).

    Returns Tensor[B, N] in float32 (float64 for float64 input).
    """
    recorded = _recorded_best_iou(ious) if ious.dim() == 3 else None
    ious = ious.detach()
    if recorded is not None:  # box_iou computed the row maxima along with ious
        best = recorded
    elif ious.dim() == 2:
        best = ious
    elif ious.shape[-1] == 0:
        best = ious.new_zeros(ious.shape[:2])
    else:
        # The CPU float max over a short last axis is not vectorised for every M (4x slower at
        # M = 56 than at M = 64); the integer max over the same bits always is. Floats >= 0 order
        # like their bit patterns and every negative float has the sign bit set, so it orders
        # below them all: after the floor at 0 below, this is exactly max(0, max_m ious).
        bits = ious.view(_SAME_WIDTH_INT[ious.dtype])
        best = bits.amax(-1).view(ious.dtype)  # (B, N)
    return best.to(_compute_dtype(best)).clamp_min(0)


def _check_matches_ious(matches: object, ious: object, values: bool = True) -> tuple[Tensor, Tensor]:
    """matches (B, N) of integers -> int64; ious (B, N, M) or (B, N) floating. ``values=False``
    skips the check on match values (fake and meta tensors have none)."""
    matches = check_index("matches", matches, 2, "(B, N)")
    ious = check_float("ious", ious)
    check_rank("ious", ious, (3, 2), "(B, N, M) or (B, N)")
    check_batch(("matches", matches), ("ious", ious))
    check_dim("ious", ious, 1, matches.shape[1], "N", "matches")
    if values and ious.dim() == 3:
        check_in_range("matches", matches, -1, ious.shape[2], "-1 or an index into the M references of ious")
    return matches, ious


def _check_ratio(name: str, value: object) -> float:
    return float(check_number(name, value, low=0.0, high=1.0))


def _check_threshold(name: str, value: object) -> float:
    return float(check_number(name, value))


# ----------------------------------------------------------------------------- naive
def naive_sample(matches: Tensor) -> Tensor:
    """Every matched anchor is a positive, every other anchor a negative.

    Args:
        matches (Tensor[B, N]): matched reference index per anchor, ``-1`` for none
            (any integer dtype; integral floats are accepted as GluonCV passed them).

    Returns:
        Tensor[B, N] int64: ``+1`` where ``matches >= 0`` (positive), else ``-1``
        (negative). Nothing is ignored.

    Example:
        >>> import torch
        >>> naive_sample(torch.tensor([[2, -1, 0, -1]]))
        tensor([[ 1, -1,  1, -1]])
    """
    matches = check_index("matches", matches, 2, "(B, N)")
    matched = matches >= 0
    return _to_samples(matched, ~matched)


class NaiveSampler(nn.Module):
    """A sampler that takes every matching result: matched anchors are positives, the rest negatives.

    Module form of :func:`naive_sample`. forward ``(matches Tensor[B, N])`` returns
    ``Tensor[B, N]`` int64 with ``+1`` positive and ``-1`` negative (no ``0``: nothing ignored).

    Example:
        >>> import torch
        >>> NaiveSampler()(torch.tensor([[-1, 3], [0, -1]]))
        tensor([[-1,  1],
                [ 1, -1]])
    """

    def forward(self, matches: Tensor) -> Tensor:
        return naive_sample(matches)


# ----------------------------------------------------------------------------- OHEM
def _hardest_first(log_p_bg: Tensor, eligible: Tensor) -> Tensor:
    """Per row, the eligible anchors hardest first, then the rest.

    Hardest first means by increasing background log-probability (decreasing hardness
    ``-log_p_bg``), ties by increasing anchor index.

    Args:
        log_p_bg (Tensor[B, N]): float32 or float64 background log-probabilities, ``<= 0``.
        eligible (Tensor[B, N]): bool.

    Returns:
        Tensor[B * N] int64 flat indices into ``(B, N)``: row b's anchors occupy positions
        ``b * N .. b * N + N - 1``, in the order above.
    """
    B, N = log_p_bg.shape
    if log_p_bg.dtype == torch.float32:
        # One stable 1-D sort of an int64 key (row << 32 | rank) is several times faster on CPU
        # than a stable row-wise float sort (integers are radix-sorted). Ineligible anchors get
        # rank 2^31, last.
        rank = _hardness_rank(log_p_bg)  # (B, N) in [0, 2^31)
        rows = torch.arange(B, device=log_p_bg.device, dtype=torch.int64)[:, None] << 32  # (B, 1)
        key = torch.where(eligible, rank + rows, rows + 2**31)  # (B, N)
        return torch.sort(key.flatten(), stable=True).indices
    masked = log_p_bg.masked_fill(~eligible, math.inf)
    order = torch.sort(masked, dim=1, stable=True).indices  # (B, N)
    rows = torch.arange(B, device=log_p_bg.device, dtype=torch.int64)[:, None] * N
    return (order + rows).flatten()


def _hardness_bits(log_p_bg: Tensor) -> Tensor:
    """float32 background log-probabilities ``<= 0`` -> int32 in ``[0, 2^31)`` ordered like
    the hardness ``-log_p_bg``.

    A float ``<= 0`` is its magnitude with the sign bit set, and the magnitude is the hardness;
    magnitudes order like their bit patterns, so these are the bits without the sign bit
    (+0.0 and -0.0 both give 0).
    """
    return log_p_bg.view(torch.int32) & 0x7FFFFFFF


def _hardness_rank(log_p_bg: Tensor) -> Tensor:
    """float32 background log-probabilities ``<= 0`` -> int64 ranks in ``[0, 2^31)``, hardest
    (lowest log-probability) first: ``2^31 - 1 -`` :func:`_hardness_bits`."""
    return (0x7FFFFFFF - _hardness_bits(log_p_bg)).to(torch.int64)


def _hardest_k(log_p_bg: Tensor, eligible: Tensor, num_neg: Tensor) -> tuple[Tensor, Tensor]:
    """The ``num_neg[b]`` hardest eligible anchors of every row (ties: lower anchor first):
    ``index (B, k)`` and ``take (B, k)`` bool, the anchors of row b being ``index[b][take[b]]``.
    One top-k of unique int64 keys per row, k the largest count (read back to the host:
    eager float32 on CPU only, where the read is free).

    The key ``bits * N - anchor`` (bits of :func:`_hardness_bits`) is larger for a harder
    anchor and, on equal hardness, for a lower one; ineligible anchors take bits ``-1``,
    which puts them below every eligible key.
    """
    B, N = log_p_bg.shape
    k = int(num_neg.max()) if B > 0 and N > 0 else 0
    bits = torch.where(eligible, _hardness_bits(log_p_bg), -1)  # (B, N) int32
    anchor = torch.arange(0, -N, -1, device=log_p_bg.device)  # int64
    key = torch.add(anchor, bits, alpha=N)  # (B, N) int64, unique per row
    index = key.topk(k, 1).indices  # (B, k), hardest first
    take = torch.arange(k, device=log_p_bg.device) < num_neg[:, None]  # (B, k)
    return index, take


def _log_p_bg(logits: Tensor) -> Tensor:
    """Background log-probabilities ``log_softmax(logits)[..., 0]`` (B, N), in float32 for
    half-precision logits."""
    if logits.dtype == torch.float32 and not tracing():
        # (the (B, N, C) log-probabilities go to reused memory: a fresh buffer costs the
        # kernel a page fill as long as the softmax itself)
        log_p = _alloc.empty_large(logits.shape, logits.dtype, logits.device)
        return torch.log_softmax(logits, -1, out=log_p)[..., 0]
    return torch.log_softmax(logits, -1, dtype=_compute_dtype(logits))[..., 0]


def _native_ohem_applies(logits: Tensor, best: Tensor) -> bool:
    """Whether the native kernel samples: eager float32 logits and best IoU on CPU."""
    if _native is None or logits.dtype != torch.float32 or best.dtype != torch.float32:
        return False
    return eager_cpu(logits, best)


def _native_ohem(
    matches: Tensor, log_p_bg: Tensor, best: Tensor, ratio: float, min_samples: int, thresh: float
) -> Tensor:
    """The samples of :func:`_ohem` by the native kernel: the eligible anchors, the number of
    negatives by the same float32 formula, and per image a selection of that many of the
    largest keys of :func:`_hardest_k`, so the same anchors."""
    B, N = matches.shape
    matches, best = matches.contiguous(), best.contiguous()
    samples = _alloc.empty_large((B, N), torch.int64, matches.device)
    size = log_p_bg.element_size()
    _native.ohem_samples(
        matches.data_ptr(),
        log_p_bg.data_ptr(),
        log_p_bg.stride(0) * size,
        log_p_bg.stride(1) * size,
        best.data_ptr(),
        float(ratio),
        int(min_samples),
        float(thresh),
        B,
        N,
        samples.data_ptr(),
        torch.get_num_threads(),
    )
    return samples


def ohem_sample(
    matches: Tensor,
    logits: Tensor,
    ious: Tensor,
    ratio: float,
    min_samples: int = 0,
    thresh: float = 0.5,
) -> Tensor:
    """Online hard negative mining (Shrivastava et al., https://arxiv.org/abs/1604.03540).

    Positives are the matched anchors. In image b, with ``P_b`` positives, the number of
    negatives is ``int(min(max(min_samples, ratio * P_b), N - P_b))`` (``ratio * P_b`` in
    float32, as GluonCV computed it), and never more than there are eligible anchors:
    unmatched anchors whose best IoU is below ``thresh``. They are the hardest eligible
    anchors, hardness being the background cross-entropy ``-log softmax(logits)[..., 0]``
    (ties: lower anchor index first). Unlike GluonCV, a positive is never turned into a
    negative when the eligible anchors run out.

    Args:
        matches (Tensor[B, N]): matched reference index per anchor, ``-1`` for none.
        logits (Tensor[B, N, C]): class scores before softmax, class 0 = background
            (float16/bfloat16 are scored in float32).
        ious (Tensor[B, N, M] or Tensor[B, N]): IoU of every anchor with every reference,
            or already the best IoU per anchor. Padded references (IoU 0) are harmless.
        ratio (float): negatives per positive, ``> 0``.
        min_samples (int): at least this many negatives per image (if eligible).
        thresh (float): anchors whose best IoU is ``>= thresh`` are never negatives.

    Returns:
        Tensor[B, N] int64: ``+1`` positive, ``-1`` negative, ``0`` ignored.

    The hardness is PyTorch's ``log_softmax``. In eager float32 on CPU, detblocks' native
    kernel (:data:`detblocks.NATIVE`) picks each image's negatives by quickselect on unique
    integer keys made from its bits, otherwise (on CPU) one top-k of the same keys does; on
    other devices and under tracing, a full sort, with no host read. All three give the
    same samples.

    Example:
        >>> import torch
        >>> matches = torch.tensor([[0, -1, -1, -1, -1]])
        >>> logits = torch.tensor([[[0., 0.], [0., 3.], [0., 1.], [0., 2.], [0., 5.]]])
        >>> ious = torch.tensor([[[0.9], [0.1], [0.2], [0.3], [0.6]]])
        >>> ohem_sample(matches, logits, ious, ratio=2)  # anchor 4 is hardest but overlaps
        tensor([[ 1, -1,  0, -1,  0]])
    """
    return _ohem(matches, logits, ious, *_check_ohem_params(ratio, min_samples, thresh))


def _ohem(
    matches: Tensor, logits: Tensor, ious: Tensor, ratio: float, min_samples: int, thresh: float
) -> Tensor:
    """:func:`ohem_sample` with hyper-parameters already checked (they may be symbolic under
    ``torch.compile(dynamic=True)``)."""
    matches, ious = _check_matches_ious(matches, ious)
    logits = check_float("logits", logits)
    check_rank("logits", logits, 3, "(B, N, C)")
    check_batch(("matches", matches), ("logits", logits))
    B, N = matches.shape
    check_dim("logits", logits, 1, N, "N", "matches")
    if logits.shape[2] < 1:
        raise ValueError(f"logits must have C >= 1 classes, got shape {shape_str(logits)}")

    best = _best_overlap(ious)  # (B, N)
    logits = logits.detach()
    if _native_ohem_applies(logits, best):
        return _native_ohem(matches, _log_p_bg(logits), best, ratio, min_samples, thresh)
    positive = matches >= 0  # (B, N)
    eligible = ~positive & (best < thresh)  # (B, N)
    num_pos = positive.sum(1)  # (B,)
    num_eligible = eligible.sum(1)  # (B,)
    # GluonCV: min(max(min_samples, ratio * P), N - P) in float32, truncated. The cap at the
    # number of eligible anchors (a subset of the N - P unmatched ones) is our deviation.
    wanted = (num_pos.to(torch.float32) * ratio).clamp(min=min_samples, max=N).floor()
    num_neg = torch.minimum(wanted.to(torch.int64), num_eligible)  # (B,)

    log_p_bg = _log_p_bg(logits)
    if log_p_bg.dtype == torch.float32 and eager_cpu(log_p_bg):  # k read back: free on CPU only
        index, take = _hardest_k(log_p_bg, eligible, num_neg)
        # +1 positive, -1 negative (never both: negatives are unmatched)
        return positive.to(torch.int64).scatter_add_(1, index, take.to(torch.int64).neg_())
    order = _hardest_first(log_p_bg, eligible)  # (B * N,)
    take = torch.arange(N, device=matches.device) < num_neg[:, None]  # (B, N), in sorted order
    negative = torch.zeros_like(eligible).flatten().scatter_(0, order, take.flatten()).view(B, N)
    return _to_samples(positive, negative)


def _check_ohem_params(ratio: object, min_samples: object, thresh: object) -> tuple[float, int, float]:
    ratio = float(check_number("ratio", ratio, low=0.0, low_open=True))
    if not math.isfinite(ratio):
        raise ValueError(f"ratio must be finite, got {ratio!r}")
    min_samples = int(check_number("min_samples", min_samples, low=0, integer=True))
    return ratio, min_samples, _check_threshold("thresh", thresh)


class OHEMSampler(nn.Module):
    """A sampler implementing online hard negative mining (module form of :func:`ohem_sample`).

    Args:
        ratio (float): negatives per positive, ``> 0`` (``>= 1`` recommended).
        min_samples (int): at least this many negatives per image, even without positives.
        thresh (float): anchors whose best IoU is ``>= thresh`` are never negatives.

    forward ``(matches Tensor[B, N], logits Tensor[B, N, C], ious Tensor[B, N, M] or
    Tensor[B, N])`` returns ``Tensor[B, N]`` int64: ``+1`` positive, ``-1`` negative,
    ``0`` ignored.

    Example:
        >>> import torch
        >>> sampler = OHEMSampler(ratio=1, min_samples=2)
        >>> matches = torch.tensor([[-1, -1, -1, -1]])  # no positive at all
        >>> logits = torch.tensor([[[0., 1.], [0., 4.], [0., 2.], [0., 3.]]])
        >>> sampler(matches, logits, torch.zeros(1, 4, 3))
        tensor([[ 0, -1,  0, -1]])
    """

    def __init__(self, ratio: float, min_samples: int = 0, thresh: float = 0.5) -> None:
        super().__init__()
        self.ratio, self.min_samples, self.thresh = _check_ohem_params(ratio, min_samples, thresh)

    def forward(self, matches: Tensor, logits: Tensor, ious: Tensor) -> Tensor:
        return _ohem(matches, logits, ious, self.ratio, self.min_samples, self.thresh)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, min_samples={self.min_samples}, thresh={self.thresh}"


# ----------------------------------------------------------------------------- quota
def _quota_params(
    num_sample: object,
    pos_thresh: object,
    neg_thresh_high: object,
    neg_thresh_low: object,
    pos_ratio: object,
    neg_ratio: object,
    fill_negative: object,
) -> dict:
    """Validated quota hyper-parameters, ``neg_ratio`` resolved (``None`` -> ``1 - pos_ratio``)."""
    num_sample = int(check_number("num_sample", num_sample, low=1, integer=True))
    pos_ratio = _check_ratio("pos_ratio", pos_ratio)
    neg_ratio = 1.0 - pos_ratio if neg_ratio is None else _check_ratio("neg_ratio", neg_ratio)
    if pos_ratio + neg_ratio > 1.0:
        raise ValueError(
            f"pos_ratio + neg_ratio must be <= 1, got pos_ratio={pos_ratio!r} + neg_ratio={neg_ratio!r}"
        )
    check_bool("fill_negative", fill_negative)
    return dict(
        num_sample=num_sample,
        pos_thresh=_check_threshold("pos_thresh", pos_thresh),
        neg_thresh_high=_check_threshold("neg_thresh_high", neg_thresh_high),
        neg_thresh_low=_check_threshold("neg_thresh_low", neg_thresh_low),
        pos_ratio=pos_ratio,
        neg_ratio=neg_ratio,
        fill_negative=fill_negative,
    )


def _check_quota_inputs(
    matches: object, ious: object, keys: object, values: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    matches, ious = _check_matches_ious(matches, ious, values)
    keys = check_float("keys", keys)
    check_rank("keys", keys, 2, "(B, N)")
    check_batch(("matches", matches), ("keys", keys))
    check_dim("keys", keys, 1, matches.shape[1], "N", "matches")
    return matches, ious, keys


def _random_subset(keys: Tensor, candidate: Tensor, quota: int | Tensor, bound: int) -> Tensor:
    """Per row, the ``min(#candidates, quota)`` candidates with the smallest keys.

    Args:
        keys (Tensor[B, N]): random priorities.
        candidate (Tensor[B, N]): bool.
        quota (int or Tensor[B, 1]): how many to keep per row, ``<= bound``.
        bound (int): static upper bound of ``quota``.

    Returns:
        Tensor[B, N] bool.
    """
    k = min(bound, keys.shape[1])
    smallest = torch.where(candidate, keys, math.inf).topk(k, dim=1, largest=False, sorted=True).indices
    rank = torch.arange(k, device=keys.device)  # (k,)
    keep = candidate.gather(1, smallest) & (rank < quota)  # (B, k)
    return torch.zeros_like(candidate).scatter_(1, smallest, keep)


def _operator(qualname: str) -> Callable[[Callable[..., Tensor]], Any]:
    """``torch.library.custom_op(qualname, mutates_args=())`` that keeps the function's docstring."""

    def register(fn: Callable[..., Tensor]) -> Any:
        op = torch.library.custom_op(qualname, mutates_args=())(fn)
        op.__doc__ = fn.__doc__
        return op

    return register


@_operator("detblocks::quota_sample")
def QuotaSamplerOp(
    matches: Tensor,
    ious: Tensor,
    keys: Tensor,
    num_sample: int,
    pos_thresh: float,
    neg_thresh_high: float,
    neg_thresh_low: float,
    pos_ratio: float,
    neg_ratio: float,
    fill_negative: bool,
) -> Tensor:
    """The registered operator ``detblocks::quota_sample`` (``torch.ops.detblocks.quota_sample``).

    The quota selection of :func:`quota_sample` as a pure function: the random
    priorities are an input, and per image, among the candidates of each kind, those
    with the smallest keys are kept (ties in an unspecified but fixed order). It has a
    fake implementation for shape inference, so it runs under ``torch.compile``,
    ``torch.export`` and ``torch.library.opcheck``, and no gradient (its output is
    integer). :class:`QuotaSamplerProp` describes it.

    Args:
        matches (Tensor[B, N]): matched reference index per anchor, ``-1`` for none.
        ious (Tensor[B, N, M] or Tensor[B, N]): IoU with every reference, or the best IoU.
        keys (Tensor[B, N]): floating random priorities, e.g. ``torch.rand(B, N)``.
        num_sample (int): samples per image.
        pos_thresh (float): best IoU making an anchor a positive candidate.
        neg_thresh_high (float): negatives have best IoU below this ...
        neg_thresh_low (float): ... and at least this.
        pos_ratio (float): share of positives.
        neg_ratio (float): share of negatives (a number here, not ``None``).
        fill_negative (bool): let negatives fill the places positives leave.

    Returns:
        Tensor[B, N] int64: ``+1`` positive, ``-1`` negative, ``0`` ignored.

    Example:
        >>> import torch
        >>> matches = torch.tensor([[0, 1, -1, -1, -1, -1]])
        >>> ious = torch.tensor([[0.8, 0.6, 0.1, 0.0, 0.2, 0.4]])
        >>> keys = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.2, 0.0]])
        >>> QuotaSamplerOp(matches, ious, keys, 4, 0.7, 0.3, 0.0, 0.25, 0.5, False)
        tensor([[ 0,  1,  0, -1, -1,  0]])
    """
    matches, ious, keys = _check_quota_inputs(matches, ious, keys)
    p = _quota_params(
        num_sample, pos_thresh, neg_thresh_high, neg_thresh_low, pos_ratio, neg_ratio, fill_negative
    )
    num_sample = p["num_sample"]
    max_pos = int(round(p["pos_ratio"] * num_sample))  # Python's round, as GluonCV
    max_neg = int(p["neg_ratio"] * num_sample)
    # GluonCV clips both thresholds to [0, 1].
    pos_thresh = min(1.0, max(0.0, p["pos_thresh"]))
    neg_thresh_high = min(1.0, max(0.0, p["neg_thresh_high"]))

    best = _best_overlap(ious)  # (B, N)
    pos_cand = (matches >= 0) | (best >= pos_thresh)  # (B, N)
    neg_cand = (best >= p["neg_thresh_low"]) & (best < neg_thresh_high) & ~pos_cand  # (B, N)
    keys = keys.detach()
    positive = _random_subset(keys, pos_cand, max_pos, bound=max_pos)
    if p["fill_negative"]:
        # Negatives fill the places positives left: max(max_neg, num_sample - kept positives).
        neg_quota = (num_sample - positive.sum(1, keepdim=True)).clamp_min(max_neg)  # (B, 1), <= num_sample
        negative = _random_subset(keys, neg_cand, neg_quota, bound=num_sample)
    else:
        negative = _random_subset(keys, neg_cand, max_neg, bound=max_neg)
    return _to_samples(positive, negative)


@QuotaSamplerOp.register_fake
def _quota_sample_fake(
    matches: Tensor,
    ious: Tensor,
    keys: Tensor,
    num_sample: int,
    pos_thresh: float,
    neg_thresh_high: float,
    neg_thresh_low: float,
    pos_ratio: float,
    neg_ratio: float,
    fill_negative: bool,
) -> Tensor:
    # Shapes only: hyper-parameters may be symbolic while tracing; the real kernel checks them.
    matches, _, _ = _check_quota_inputs(matches, ious, keys, values=False)
    return torch.empty_like(matches, dtype=torch.int64)


def quota_sample(
    matches: Tensor,
    ious: Tensor,
    num_sample: int,
    pos_thresh: float,
    neg_thresh_high: float,
    neg_thresh_low: float = -math.inf,
    pos_ratio: float = 0.5,
    neg_ratio: float | None = None,
    fill_negative: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Keep at most a quota of positives and negatives per image, chosen uniformly at random.

    Candidates for positive are the matched anchors and the anchors whose best IoU is
    ``>= pos_thresh``; candidates for negative have best IoU in
    ``[neg_thresh_low, neg_thresh_high)`` and are not positive candidates (a matched anchor
    is never a negative). Per image ``min(#candidates, quota)`` of each kind are kept:
    ``round(pos_ratio * num_sample)`` positives (Python's ``round``) and
    ``int(neg_ratio * num_sample)`` negatives, or with ``fill_negative``
    ``max(int(neg_ratio * num_sample), num_sample - kept positives)`` negatives. As in
    GluonCV, ``pos_thresh`` and ``neg_thresh_high`` are clipped to ``[0, 1]``.

    The choice draws ``torch.rand(B, N)`` priorities on the input's device, from
    ``generator`` or else torch's default generator (so ``torch.manual_seed`` reproduces
    it), and hands them to :func:`QuotaSamplerOp`, which keeps the candidates with the
    smallest priorities. ``torch.export`` records the draw as ``aten.rand`` before the
    operator, so the exported program draws from the default generator when it runs
    (under the same seed it equals eager). ``torch.compile`` uses inductor's own random
    numbers (reproducible under ``torch.manual_seed``; eager's exactly with
    ``torch._inductor.config.fallback_random = True``). An explicit ``generator`` is for
    eager use (Dynamo does not trace generators); a graph that must be a pure function
    draws the priorities itself and calls :func:`QuotaSamplerOp`.

    Args:
        matches (Tensor[B, N]): matched reference index per anchor, ``-1`` for none.
        ious (Tensor[B, N, M] or Tensor[B, N]): IoU with every reference, or the best IoU.
        num_sample (int): samples per image, ``>= 1``.
        pos_thresh (float): best IoU making an anchor a positive candidate.
        neg_thresh_high (float): negatives have best IoU below this ...
        neg_thresh_low (float): ... and at least this.
        pos_ratio (float): share of positives in ``[0, 1]``.
        neg_ratio (float, optional): share of negatives in ``[0, 1]``, default
            ``1 - pos_ratio``; ``pos_ratio + neg_ratio <= 1``.
        fill_negative (bool): let negatives fill the places positives leave.
        generator (torch.Generator, optional): source of randomness, on the input's device.

    Returns:
        Tensor[B, N] int64: ``+1`` positive, ``-1`` negative, ``0`` ignored.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> matches = torch.tensor([[0, 0, 0, -1, -1, -1, -1, -1]])
        >>> ious = torch.tensor([[[0.9], [0.8], [0.7], [0.1], [0.0], [0.2], [0.5], [0.1]]])
        >>> out = quota_sample(matches, ious, num_sample=4, pos_thresh=0.7, neg_thresh_high=0.3)
        >>> int((out == 1).sum()), int((out == -1).sum()), int(out[0, 6])  # anchor 6: in between
        (2, 2, 0)
    """
    params = _quota_params(
        num_sample, pos_thresh, neg_thresh_high, neg_thresh_low, pos_ratio, neg_ratio, fill_negative
    )
    return _quota(matches, ious, params, generator)


def _quota(matches: Tensor, ious: Tensor, params: dict, generator: torch.Generator | None) -> Tensor:
    """:func:`quota_sample` with hyper-parameters already checked (``params`` from :func:`_quota_params`)."""
    matches = check_index("matches", matches, 2, "(B, N)")  # the operator checks the rest
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    # (B, N) priorities; the generator-less call is the one torch.export traces with symbolic sizes.
    if generator is None:
        keys = torch.rand(matches.shape, device=matches.device)
    else:
        keys = torch.rand(matches.shape, generator=generator, device=matches.device)
    return QuotaSamplerOp(matches, ious, keys, **params)


class QuotaSampler(nn.Module):
    """Sampler that handles limited quotas for positive and negative samples.

    Module form of :func:`quota_sample` (see there for the rules). forward
    ``(matches Tensor[B, N], ious Tensor[B, N, M] or Tensor[B, N], *, generator=None)``
    returns ``Tensor[B, N]`` int64: ``+1`` positive, ``-1`` negative, ``0`` ignored.

    Args:
        num_sample (int): samples per image.
        pos_thresh (float): best IoU making an anchor a positive candidate.
        neg_thresh_high (float): negatives have best IoU below this ...
        neg_thresh_low (float): ... and at least this.
        pos_ratio (float): share of positives.
        neg_ratio (float, optional): share of negatives, default ``1 - pos_ratio``.
        fill_negative (bool): let negatives fill the places positives leave; with
            ``num_sample=100``, ``pos_ratio=0.5`` and only 10 positive candidates, 90
            negatives are kept instead of 50.

    Example:
        >>> import torch
        >>> sampler = QuotaSampler(num_sample=4, pos_thresh=0.5, neg_thresh_high=0.5, pos_ratio=0.25)
        >>> matches = torch.tensor([[0, 1, -1, -1, -1, -1, -1, -1]])
        >>> ious = torch.rand(1, 8, 2, generator=torch.Generator().manual_seed(0)) * 0.4
        >>> out = sampler(matches, ious, generator=torch.Generator().manual_seed(1))
        >>> out.dtype, int((out == 1).sum()), int((out == -1).sum())
        (torch.int64, 1, 3)
    """

    def __init__(
        self,
        num_sample: int,
        pos_thresh: float,
        neg_thresh_high: float,
        neg_thresh_low: float = -math.inf,
        pos_ratio: float = 0.5,
        neg_ratio: float | None = None,
        fill_negative: bool = True,
    ) -> None:
        super().__init__()
        self._params = _quota_params(
            num_sample, pos_thresh, neg_thresh_high, neg_thresh_low, pos_ratio, neg_ratio, fill_negative
        )

    def forward(self, matches: Tensor, ious: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return _quota(matches, ious, self._params, generator)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._params.items())


class QuotaSamplerProp:
    """Properties of the operator :func:`QuotaSamplerOp` (``detblocks::quota_sample``).

    The counterpart of GluonCV's ``QuotaSamplerProp`` (an MXNet ``CustomOpProp``): it holds
    the hyper-parameters (same names and defaults as GluonCV's), names the operator's
    tensor arguments and outputs, infers the output shape from the input shapes with the
    operator's registered fake implementation, and creates the operator bound to the
    hyper-parameters.

    Tensor arguments: ``matches`` Tensor[B, N] (integers, ``-1`` = no match), ``ious``
    Tensor[B, N, M] or Tensor[B, N], ``keys`` Tensor[B, N] (random priorities; GluonCV drew
    them inside the operator, here they are an input). Output: ``output`` Tensor[B, N]
    int64, ``+1`` positive, ``-1`` negative, ``0`` ignored.

    Example:
        >>> import torch
        >>> prop = QuotaSamplerProp(num_sample=4, pos_thresh=0.7, neg_thresh_high=0.3)
        >>> prop.list_arguments(), prop.list_outputs()
        (['matches', 'ious', 'keys'], ['output'])
        >>> prop.infer_shape([(2, 100), (2, 100, 5), (2, 100)])
        ([(2, 100), (2, 100, 5), (2, 100)], [(2, 100)], [])
        >>> op = prop.create_operator()
        >>> op(torch.full((2, 100), -1), torch.zeros(2, 100, 5), torch.rand(2, 100)).shape
        torch.Size([2, 100])
    """

    def __init__(
        self,
        num_sample: int,
        pos_thresh: float,
        neg_thresh_high: float = 0.5,
        neg_thresh_low: float = 0.0,
        pos_ratio: float = 0.5,
        neg_ratio: float | None = None,
        fill_negative: bool = True,
    ) -> None:
        self.params = _quota_params(
            num_sample, pos_thresh, neg_thresh_high, neg_thresh_low, pos_ratio, neg_ratio, fill_negative
        )

    def list_arguments(self) -> list[str]:
        """Names of the tensor arguments, in order."""
        return ["matches", "ious", "keys"]

    def list_outputs(self) -> list[str]:
        """Names of the outputs."""
        return ["output"]

    def infer_shape(
        self, in_shape: Sequence[Sequence[int]]
    ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, ...]]]:
        """``(input shapes, output shapes, auxiliary shapes)`` from the three input shapes.

        Runs the operator's fake implementation on meta tensors, so it raises the same
        ``ValueError`` as the operator for inconsistent shapes.
        """
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must hold 3 shapes (matches, ious, keys), got {len(in_shape)}")
        shapes = [tuple(int(s) for s in shape) for shape in in_shape]
        matches, ious, keys = (
            torch.empty(shape, dtype=dtype, device="meta")
            for shape, dtype in zip(shapes, (torch.int64, torch.float32, torch.float32))
        )
        out = QuotaSamplerOp(matches, ious, keys, **self.params)
        return shapes, [tuple(out.shape)], []

    def infer_type(self, in_type: Sequence[torch.dtype]) -> tuple[list[torch.dtype], list[torch.dtype], list]:
        """``(input dtypes, output dtypes, auxiliary dtypes)``: the output is always int64."""
        return list(in_type), [torch.int64], []

    def create_operator(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """:func:`QuotaSamplerOp` with these hyper-parameters bound: ``op(matches, ious, keys)``."""
        return functools.partial(QuotaSamplerOp, **self.params)


__test__ = {"QuotaSamplerOp": QuotaSamplerOp.__doc__}
