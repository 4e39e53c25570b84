"""Training-target encoders and prediction decoders.

Encoders turn matching and sampling results into regression and classification
targets; decoders invert them at inference time. Sample values follow
:class:`~detblocks.conventions.Sample` (``1`` positive, ``-1`` negative, ``0``
ignored) and matches use :data:`~detblocks.conventions.NO_MATCH` for "matched to
nothing". ``samples``, ``matches`` and integer ``labels`` may be any integer
dtype or integral floats (as GluonCV passed them); integer outputs are
``torch.int64``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detblocks import _alloc, _checks
from detblocks._kernels import native as _native
from detblocks.bbox import corner_to_center
from detblocks.conventions import BACKGROUND, NO_MATCH, Sample

__all__ = [
    "encode_boxes",
    "decode_boxes",
    "encode_boxes_per_class",
    "encode_class",
    "encode_sigmoid_class",
    "decode_class",
    "decode_per_class",
    "NormalizedBoxCenterEncoder",
    "NormalizedPerClassBoxCenterEncoder",
    "MultiClassEncoder",
    "SigmoidClassEncoder",
    "NormalizedBoxCenterDecoder",
    "MultiClassDecoder",
    "MultiPerClassDecoder",
]

# Floor of widths and heights before division and log: zero-area or inverted boxes give
# large but finite targets, and any real box (wider than 1e-6 pixel or normalised unit) is exact.
_MIN_SIZE = 1e-6

# Cap of the scaled width/height delta before exp() when `clip` is None: a box at most 1e8
# times its anchor is far beyond any image, and float32 stays finite for anchors up to 1e30.
_MAX_EXP_DELTA = math.log(1e8)

# The sample values as plain ints: IntEnum members do not trace as numbers under torch.compile.
_POSITIVE, _NEGATIVE, _IGNORE = int(Sample.POSITIVE), int(Sample.NEGATIVE), int(Sample.IGNORE)

_DEFAULT_STDS = (0.1, 0.1, 0.2, 0.2)
_DEFAULT_MEANS = (0.0, 0.0, 0.0, 0.0)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (pixel offsets and logs lose too much in 16 bits)."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _to_output(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a result to the output dtype, saturating at its largest finite value instead of
    overflowing to inf (float16 above 65504, any dtype for huge predictions); NaN stays NaN."""
    fmax = torch.finfo(dtype).max
    return x.clamp(-fmax, fmax).to(dtype)


def _check_stds_means(stds: object, means: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stds_t = _checks.check_four("stds", stds)
    means_t = _checks.check_four("means", means)
    if not all(s > 0 for s in stds_t):
        raise ValueError(f"stds must all be > 0, got {stds!r}")
    if not all(math.isfinite(v) for v in stds_t + means_t):
        raise ValueError(f"stds and means must be finite, got stds={stds!r}, means={means!r}")
    return stds_t, means_t


def _check_samples_matches(samples: object, matches: object) -> tuple[Tensor, Tensor]:
    samples = _checks.check_index("samples", samples, 2, "(B, N)")
    matches = _checks.check_index("matches", matches, 2, "(B, N)")
    if samples.shape != matches.shape:
        raise ValueError(
            f"matches must have the shape of samples {_checks.shape_str(samples)}, "
            f"got {_checks.shape_str(matches)}"
        )
    _checks.check_in_range(
        "samples",
        samples,
        _NEGATIVE,
        _POSITIVE + 1,
        "1 positive, -1 negative, 0 ignore",
    )
    return samples, matches


def _check_positive_matches(positive: Tensor, matches: Tensor, num_refs: int) -> None:
    """Value check: every positive sample is matched to a reference in ``[0, num_refs)``."""
    if positive.numel() == 0 or not _checks.value_checks_enabled(matches):
        return
    bad = positive & ((matches < 0) | (matches >= num_refs))
    if bool(bad.any()):
        got = int(matches[bad][0])
        raise ValueError(
            f"matches must hold a reference index in [0, {num_refs}) at every positive sample, got {got}"
        )


def _valid(matches: Tensor, num_refs: int) -> Tensor:
    """Where ``matches`` holds an index into ``num_refs`` references."""
    return (matches >= 0) & (matches < num_refs)


def _pick(refs: Tensor, matches: Tensor, fill: float) -> Tensor:
    """``refs[b, matches[b, n]]`` for every anchor: ``refs (B, M, K), matches (B, N) -> (B, N, K)``.

    NO_MATCH picks row 0 (GluonCV's clipping ``pick``); a ``fill`` row appended to ``refs``
    keeps the gather valid when there are no references at all (M = 0), and indices beyond
    M pick it too. Callers mask what non-positive anchors pick.
    """
    k = refs.shape[2]
    index = matches.clamp(0, refs.shape[1])[:, :, None].expand(-1, -1, k)  # (B, N, K), in range
    return torch.gather(_with_fill_row(refs, fill), 1, index)


def _with_fill_row(refs: Tensor, fill: float) -> Tensor:
    """``refs (B, M, K)`` with a row of ``fill`` appended: ``(B, M + 1, K)``, where match
    indices clamped to ``[0, M]`` are always valid."""
    return torch.cat([refs, refs.new_full((refs.shape[0], 1, refs.shape[2]), fill)], dim=1)


def _center_codes(anchors: Tensor, refs: Tensor, std: Tensor, mean: Tensor) -> Tensor:
    """The regression targets of corner ``anchors`` against their corner ``refs`` (``(..., 4)``
    each, same shape): the formula of :func:`encode_boxes`, element by element."""
    a = corner_to_center(anchors)
    g = corner_to_center(refs)
    a_wh, g_wh = a[..., 2:].clamp(min=_MIN_SIZE), g[..., 2:].clamp(min=_MIN_SIZE)
    codes = torch.cat([(g[..., :2] - a[..., :2]) / a_wh, torch.log(g_wh / a_wh)], dim=-1)
    return (codes - mean) / std


def _positives_only(positive: Tensor, anchors: Tensor, refs: Tensor) -> bool:
    """Whether to encode the positive anchors alone and scatter them (eager CPU, no autograd):
    a few hundred positives among 10^5 anchors make that much cheaper than encoding every
    anchor. Accelerators and tracing keep the dense path (no host read of the count)."""
    return _checks.eager_cpu(positive, anchors, refs)


def _encode_positives(
    positive: Tensor,
    matches: Tensor,
    anchors: Tensor,
    refs: Tensor,
    std: Tensor,
    mean: Tensor,
    out_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """:func:`encode_boxes` computed at the positive anchors only, then scattered."""
    work = std.dtype
    image, anchor = positive.nonzero(as_tuple=True)  # (K,) each
    m = matches[image, anchor]
    a = anchors[image if anchors.shape[0] > 1 else torch.zeros_like(image), anchor]  # (K, 4)
    g = _with_fill_row(refs, 1.0)[image, m.clamp(0, refs.shape[1])]  # (K, 4), as _pick picks
    codes = _center_codes(a.to(work), g.to(work), std, mean)  # (K, 4)
    keep = (_valid(m, refs.shape[1]) & torch.isfinite(codes).all(-1))[:, None]  # (K, 1)
    batch, n = positive.shape
    targets = _alloc.empty_large((batch, n, 4), out_dtype, positive.device).zero_()
    masks = _alloc.empty_large((batch, n, 4), out_dtype, positive.device).zero_()
    targets[image, anchor] = _to_output(torch.where(keep, codes, 0.0), out_dtype)
    masks[image, anchor] = keep.expand_as(codes).to(out_dtype)
    return targets, masks


def encode_boxes(
    samples: Tensor,
    matches: Tensor,
    anchors: Tensor,
    refs: Tensor,
    stds: Sequence[float] = _DEFAULT_STDS,
    means: Sequence[float] = _DEFAULT_MEANS,
) -> tuple[Tensor, Tensor]:
    """Regression targets of positive anchors, as normalised center offsets.

    For an anchor ``a`` matched to reference ``g`` (both in center form)::

        t = ((gx - ax) / aw - m0) / s0,  ((gy - ay) / ah - m1) / s1,
            (log(gw / aw) - m2) / s2,    (log(gh / ah) - m3) / s3

    Widths and heights are floored at ``1e-6`` first, so degenerate boxes give finite targets.
    A positive whose target is not finite (its anchor or reference has a NaN or infinite
    coordinate) gets target 0 and mask 0, and so does, when value checks are off (see
    :func:`~detblocks.set_value_checks`), a positive whose match is not an index into ``refs``.

    Args:
        samples (Tensor[B, N]): 1 positive, -1 negative, 0 ignore; only positives get targets.
        matches (Tensor[B, N]): index into ``refs`` per anchor, -1 (NO_MATCH) for none; only
            read at positives, which must be matched.
        anchors (Tensor[B, N, 4]): corner anchors; batch size 1 broadcasts.
        refs (Tensor[B, M, 4]): corner reference (ground-truth) boxes, padded rows allowed.
        stds (sequence of 4 floats): divisors of the offsets.
        means (sequence of 4 floats): subtracted from the offsets first.

    Returns:
        (Tensor[B, N, 4], Tensor[B, N, 4]): ``targets`` (0 where not positive) and ``masks``
        (1 at positives, else 0), in the promoted dtype of ``anchors`` and ``refs``.

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
        >>> refs = torch.tensor([[[0.5, 0.0, 2.5, 2.0]]])
        >>> targets, masks = encode_boxes(torch.tensor([[1, -1]]), torch.tensor([[0, -1]]), anchors, refs)
        >>> targets
        tensor([[[2.5000, 0.0000, 0.0000, 0.0000],
                 [0.0000, 0.0000, 0.0000, 0.0000]]])
        >>> masks[..., 0]
        tensor([[1., 0.]])
    """
    samples, matches = _check_samples_matches(samples, matches)
    anchors = _checks.check_boxes("anchors", anchors, 3, "(B, N, 4)")
    refs = _checks.check_boxes("refs", refs, 3, "(B, M, 4)")
    stds, means = _check_stds_means(stds, means)
    _checks.check_batch(("samples", samples), ("refs", refs))
    if anchors.shape[0] not in (1, samples.shape[0]):
        _checks.check_batch(("samples", samples), ("anchors", anchors))
    _checks.check_dim("anchors", anchors, 1, samples.shape[1], "N", "samples")
    positive = samples == _POSITIVE  # (B, N)
    _check_positive_matches(positive, matches, refs.shape[1])

    out_dtype = torch.promote_types(anchors.dtype, refs.dtype)
    work = _compute_dtype(out_dtype)
    std = _checks.constant(stds, work, anchors.device)
    mean = _checks.constant(means, work, anchors.device)
    if _positives_only(positive, anchors, refs):
        return _encode_positives(positive, matches, anchors, refs, std, mean, out_dtype)
    g = _pick(refs.to(work), matches, 1.0)  # (B, N, 4), the matched reference of every anchor
    codes = _center_codes(anchors.to(work), g, std, mean)  # (B, N, 4)
    # A target that is not finite (a NaN or infinite box) or has no reference is dropped.
    keep = (positive & _valid(matches, refs.shape[1]) & torch.isfinite(codes).all(-1))[..., None]  # (B, N, 1)
    targets = _to_output(torch.where(keep, codes, 0.0), out_dtype)
    masks = keep.expand_as(targets).to(out_dtype)
    return targets, masks


def decode_boxes(
    x: Tensor,
    anchors: Tensor,
    stds: Sequence[float] = _DEFAULT_STDS,
    means: Sequence[float] = _DEFAULT_MEANS,
    convert_anchor: bool = False,
    clip: float | None = None,
) -> Tensor:
    """Corner boxes from normalised center offsets: the inverse of :func:`encode_boxes`.

    ``ox = (x0 * s0 + m0) * aw + ax`` (``oy`` likewise), ``w = exp(min(x2 * s2 + m2, clip)) * aw``
    (``h`` likewise); returns ``(ox - w/2, oy - h/2, ox + w/2, oy + h/2)``. Without ``clip``
    the exponent is still capped at ``log(1e8)``, and the result saturates at the dtype's
    largest finite value, so that huge or infinite predictions give finite boxes (for finite
    anchors); a NaN prediction gives a NaN box.

    Args:
        x (Tensor[B, N, 4]): predicted offsets.
        anchors (Tensor[B, N, 4]): anchors, center form (corner with ``convert_anchor``);
            batch size 1 broadcasts over B.
        stds, means (sequence of 4 floats): as given to the encoder.
        convert_anchor (bool): anchors are corner boxes.
        clip (float | None): cap of the scaled width/height deltas before ``exp``.

    Returns:
        Tensor[B, N, 4]: corner boxes in the promoted dtype of ``x`` and ``anchors``.

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[[1.0, 1.0, 2.0, 2.0]]])  # center form
        >>> decode_boxes(torch.tensor([[[2.5, 0.0, 0.0, 0.0]]]), anchors)
        tensor([[[0.5000, 0.0000, 2.5000, 2.0000]]])
    """
    x = _checks.check_boxes("x", x, 3, "(B, N, 4)")
    anchors = _checks.check_boxes("anchors", anchors, 3, "(B, N, 4) or (1, N, 4)")
    stds, means = _check_stds_means(stds, means)
    if anchors.shape[0] not in (1, x.shape[0]):
        _checks.check_batch(("x", x), ("anchors", anchors))
    _checks.check_dim("anchors", anchors, 1, x.shape[1], "N", "x")
    bound = _MAX_EXP_DELTA
    if clip is not None:
        bound = min(float(_checks.check_number("clip", clip)), _MAX_EXP_DELTA)

    out_dtype = torch.promote_types(x.dtype, anchors.dtype)
    work = _compute_dtype(out_dtype)
    a = anchors.to(work)
    if convert_anchor:
        a = corner_to_center(a)
    std = _checks.constant(stds, work, x.device)
    mean = _checks.constant(means, work, x.device)
    fmax = torch.finfo(work).max
    deltas = (x.to(work) * std + mean).clamp(-fmax, fmax)  # (B, N, 4); inf saturates, NaN stays
    center = deltas[..., :2] * a[..., 2:] + a[..., :2]  # (B, N, 2)
    half = torch.exp(deltas[..., 2:].clamp(max=bound)) * a[..., 2:] / 2  # (B, N, 2)
    return _to_output(torch.cat([center - half, center + half], dim=-1), out_dtype)


def encode_boxes_per_class(
    samples: Tensor,
    matches: Tensor,
    anchors: Tensor,
    labels: Tensor,
    refs: Tensor,
    num_class: int,
    max_pos: int = 128,
    stds: Sequence[float] = _DEFAULT_STDS,
    means: Sequence[float] = _DEFAULT_MEANS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class regression targets of the first ``max_pos`` anchors, positives first.

    ``indices`` lists the positive anchors in ascending order, then the other anchors in
    ascending order, cut at ``K = max_pos``; with fewer than ``max_pos`` anchors the last
    rows hold index -1 and zero targets and masks, so the shape never depends on N. The
    targets at those anchors are the class-agnostic ones of :func:`encode_boxes`, repeated
    over the classes; masks keep only the class of the matched reference (and only at
    positives).

    Args:
        samples (Tensor[B, N]): 1 positive, -1 negative, 0 ignore.
        matches (Tensor[B, N]): index into ``refs`` per anchor, -1 (NO_MATCH) for none.
        anchors (Tensor[B, N, 4]): corner anchors; batch size 1 broadcasts.
        labels (Tensor[B, M]): class id in ``[0, num_class)`` of every reference (padded
            rows may hold -1).
        refs (Tensor[B, M, 4]): corner reference boxes.
        num_class (int): number of foreground classes C.
        max_pos (int): number of anchors kept per image.
        stds, means (sequence of 4 floats): as in :func:`encode_boxes`.

    Returns:
        (Tensor[B, K, C, 4], Tensor[B, K, C, 4], Tensor[B, K]): ``targets``, ``masks`` (float,
        dtype of the boxes) and the anchor ``indices`` (int64, -1 for filler rows).

    Example:
        >>> import torch
        >>> anchors = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
        >>> refs = torch.tensor([[[2.0, 2.0, 4.0, 4.5]]])
        >>> t, m, idx = encode_boxes_per_class(torch.tensor([[-1, 1]]), torch.tensor([[-1, 0]]),
        ...                                    anchors, torch.tensor([[2]]), refs, num_class=3, max_pos=1)
        >>> idx
        tensor([[1]])
        >>> m[0, 0, :, 0]
        tensor([0., 0., 1.])
        >>> t[0, 0, 2]
        tensor([0.0000, 1.2500, 0.0000, 1.1157])
    """
    samples, matches = _check_samples_matches(samples, matches)
    labels = _checks.check_index("labels", labels, 2, "(B, M)")
    refs = _checks.check_boxes("refs", refs, 3, "(B, M, 4)")
    anchors = _checks.check_boxes("anchors", anchors, 3, "(B, N, 4)")
    num_class = int(_checks.check_number("num_class", num_class, low=1, integer=True))
    max_pos = int(_checks.check_number("max_pos", max_pos, low=1, integer=True))
    _checks.check_batch(("samples", samples), ("labels", labels), ("refs", refs))
    _checks.check_dim("labels", labels, 1, refs.shape[1], "M", "refs")
    if anchors.shape[0] not in (1, samples.shape[0]):
        _checks.check_batch(("samples", samples), ("anchors", anchors))
    _checks.check_dim("anchors", anchors, 1, samples.shape[1], "N", "samples")

    batch, n = samples.shape
    positive = samples == _POSITIVE  # (B, N)
    ref_labels = _pick(labels[:, :, None], matches, fill=0)[..., 0]  # (B, N)
    if _checks.value_checks_enabled(ref_labels):
        _check_positive_matches(positive, matches, refs.shape[1])
        _checks.check_in_range(
            "labels", ref_labels[positive], 0, num_class, "class of a reference matched to a positive sample"
        )

    # Unique keys, larger for positives and then for lower anchor indices, so that top-k gives
    # the contract's order; max_pos filler keys rank last and keep the output (B, max_pos) for
    # any N (fillers only show when N < max_pos: index -1, zero targets and masks).
    order = torch.arange(n - 1, -1, -1, device=samples.device)  # (N,)
    keys = positive.to(torch.int64) * n + order  # (B, N)
    keys = torch.cat([keys, keys.new_full((batch, max_pos), -1)], dim=1)  # (B, N + max_pos)
    picked = keys.topk(max_pos, dim=1).indices  # (B, K)
    real = picked < n  # (B, K)
    # Fillers read one appended ignored anchor (row N), so the gathers are valid even for N = 0.
    index = torch.where(real, picked, n)  # (B, K)
    anchors = torch.cat([anchors.expand(batch, -1, -1), anchors.new_zeros(batch, 1, 4)], dim=1)
    samples = torch.cat([samples, samples.new_full((batch, 1), _IGNORE)], dim=1)
    matches = torch.cat([matches, matches.new_full((batch, 1), NO_MATCH)], dim=1)
    ref_labels = torch.cat([ref_labels, ref_labels.new_zeros(batch, 1)], dim=1)

    picked_anchors = torch.gather(anchors, 1, index[:, :, None].expand(-1, -1, 4))
    targets, masks = encode_boxes(
        torch.gather(samples, 1, index),
        torch.gather(matches, 1, index),
        picked_anchors,
        refs,
        stds,
        means,
    )  # (B, K, 4) each
    classes = torch.arange(num_class, device=samples.device)  # (C,)
    same_class = torch.gather(ref_labels, 1, index)[:, :, None] == classes  # (B, K, C)
    targets = targets[:, :, None, :].expand(-1, -1, num_class, -1).contiguous()  # (B, K, C, 4)
    masks = masks[:, :, None, :] * same_class[..., None].to(masks.dtype)  # (B, K, C, 4)
    indices = torch.where(real, picked, NO_MATCH)
    return targets, masks, indices


def encode_class(samples: Tensor, matches: Tensor, refs: Tensor, ignore_label: int = -1) -> Tensor:
    """Classification targets: matched class + 1 at positives, 0 (background) at negatives.

    Args:
        samples (Tensor[B, N]): 1 positive, -1 negative, 0 ignore.
        matches (Tensor[B, N]): index into ``refs`` per anchor, -1 (NO_MATCH) for none.
        refs (Tensor[B, M]): foreground class id of every reference, in ``[0, num_fg_class)``.
        ignore_label (int): target of ignored anchors.

    Returns:
        Tensor[B, N]: int64 targets in ``[0, num_fg_class]``, ``ignore_label`` where ignored.

    Example:
        >>> import torch
        >>> encode_class(torch.tensor([[1, -1, 0]]), torch.tensor([[1, -1, -1]]), torch.tensor([[4, 7]]))
        tensor([[ 8,  0, -1]])
    """
    samples, matches = _check_samples_matches(samples, matches)
    refs = _checks.check_index("refs", refs, 2, "(B, M) class ids")
    ignore_label = _check_integral("ignore_label", ignore_label)
    _checks.check_batch(("samples", samples), ("refs", refs))
    _check_positive_matches(samples == _POSITIVE, matches, refs.shape[1])
    ids = _pick(refs[:, :, None], matches, fill=0)[..., 0] + 1  # (B, N), foreground shifted by one
    # A positive without a valid match (possible only with value checks off) is ignored.
    targets = torch.where((samples == _POSITIVE) & _valid(matches, refs.shape[1]), ids, ignore_label)
    return torch.where(samples == _NEGATIVE, BACKGROUND, targets)


def encode_sigmoid_class(samples: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Targets for a sigmoid cross-entropy loss.

    Args:
        samples (Tensor[B, N]): 1 positive, -1 negative, 0 ignore.
        dtype (torch.dtype | None): floating dtype of the outputs; default: that of
            ``samples`` if floating, else the default dtype.

    Returns:
        (Tensor[B, N], Tensor[B, N]): ``target`` (1 positive, 0 negative, -1 ignored) and
        ``mask`` (0 where ignored, else 1).

    Example:
        >>> import torch
        >>> encode_sigmoid_class(torch.tensor([[1, -1, 0]]))
        (tensor([[ 1.,  0., -1.]]), tensor([[1., 1., 0.]]))
    """
    if dtype is None:
        given = _checks.check_tensor("samples", samples)
        dtype = given.dtype if given.is_floating_point() else torch.get_default_dtype()
    elif not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    samples = _checks.check_index("samples", samples, 2, "(B, N)")
    _checks.check_in_range(
        "samples",
        samples,
        _NEGATIVE,
        _POSITIVE + 1,
        "1 positive, -1 negative, 0 ignore",
    )
    ignored = samples == _IGNORE
    target = torch.where(ignored, -1.0, (samples == _POSITIVE).to(dtype)).to(dtype)
    return target, (~ignored).to(dtype)


def _class_last(x: object, axis: int) -> Tensor:
    x = _checks.check_float("x", x)
    _checks.check_rank("x", x, 3, "(B, N, C)")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -3 <= axis < 3:
        raise ValueError(f"axis must be an int in [-3, 3) for x (B, N, C), got {axis!r}")
    x = x if axis % 3 == 2 else x.movedim(axis, -1)
    if x.shape[-1] < 2:
        raise ValueError(
            f"x must hold background and at least one class (C >= 2), got shape {_checks.shape_str(x)}"
        )
    return x


def decode_class(x: Tensor, thresh: float = 0.01, axis: int = -1) -> tuple[Tensor, Tensor]:
    """Best foreground class per anchor.

    Args:
        x (Tensor[B, N, C]): class scores (after softmax), class 0 = background.
        thresh (float): scores not above it are dropped.
        axis (int): the class axis.

    Returns:
        (Tensor[B, N], Tensor[B, N]): ``cls_id`` (int64, 0-based among foreground classes,
        -1 where dropped) and ``scores`` (0 where dropped), dtype of ``x``.

    Example:
        >>> import torch
        >>> decode_class(torch.tensor([[[0.5, 0.1, 0.4], [0.995, 0.003, 0.002]]]))
        (tensor([[ 1, -1]]), tensor([[0.4000, 0.0000]]))
    """
    x = _class_last(x, axis)
    thresh = _checks.check_number("thresh", thresh)
    scores, cls_id = x[..., 1:].max(dim=-1)  # (B, N)
    keep = _above(scores, thresh)
    return torch.where(keep, cls_id, NO_MATCH), torch.where(keep, scores, 0.0)


def decode_per_class(x: Tensor, thresh: float = 0.01, axis: int = -1) -> tuple[Tensor, Tensor]:
    """Every foreground class of every anchor, thresholded separately.

    Args:
        x (Tensor[B, N, C]): class scores (after softmax), class 0 = background.
        thresh (float): scores not above it are dropped.
        axis (int): the class axis.

    Returns:
        (Tensor[B, N, C - 1], Tensor[B, N, C - 1]): ``cls_id`` (int64 foreground class
        ``0..C-2``, -1 where dropped) and ``scores`` (0 where dropped), dtype of ``x``.

    Eager float32 scores on CPU are decoded by detblocks' native kernel when it is built
    (:data:`detblocks.NATIVE`), in one pass with the same results; both outputs reuse the
    memory of earlier outputs that nothing references any more.

    Example:
        >>> import torch
        >>> decode_per_class(torch.tensor([[[0.5, 0.1, 0.4]]]), thresh=0.2)
        (tensor([[[-1,  1]]]), tensor([[[0.0000, 0.4000]]]))
    """
    x = _class_last(x, axis)
    thresh = _checks.check_number("thresh", thresh)
    if _native_decodes(x):
        return _decode_per_class_native(x, thresh)
    scores = x[..., 1:]  # (B, N, C - 1)
    keep = _above(scores, thresh)
    classes = torch.arange(scores.shape[-1], device=x.device)  # (C - 1,)
    # Large outputs (hundreds of MB for SSD-sized batches) reuse cached buffers (see _alloc).
    cls_id = _alloc.where_large(keep, classes, classes.new_full((), NO_MATCH))
    return cls_id, _alloc.where_large(keep, scores, scores.new_zeros(()))


def _native_decodes(x: Tensor) -> bool:
    """Whether the native kernel decodes ``x``: eager float32 on CPU, no gradient to record."""
    return _native is not None and x.dtype == torch.float32 and _checks.eager_cpu(x)


def _decode_per_class_native(x: Tensor, thresh: float) -> tuple[Tensor, Tensor]:
    """:func:`decode_per_class` in one pass by the native kernel (same comparison in float32,
    same outputs), into reused memory."""
    b, n, c = x.shape
    cls_id = _alloc.empty_large((b, n, c - 1), torch.int64, x.device)
    scores = _alloc.empty_large((b, n, c - 1), torch.float32, x.device)
    _native.decode_per_class(
        x.data_ptr(),
        *x.stride(),
        b,
        n,
        c,
        float(thresh),
        cls_id.data_ptr(),
        scores.data_ptr(),
        torch.get_num_threads(),
    )
    return cls_id, scores


def _above(scores: Tensor, thresh: float) -> Tensor:
    """``scores > thresh``; half dtypes compare in float32, where ``thresh`` is not rounded to 16 bits."""
    return (scores.float() if scores.dtype in _HALF_DTYPES else scores) > thresh


def _check_integral(name: str, value: object) -> int:
    value = _checks.check_number(name, value)
    if value != int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


class NormalizedBoxCenterEncoder(nn.Module):
    """Encode regression targets as normalised center offsets (see :func:`encode_boxes`).

    forward ``(samples (B, N), matches (B, N), anchors (B, N, 4), refs (B, M, 4))`` ->
    ``(targets (B, N, 4), masks (B, N, 4))``, boxes in corner form.

    Example:
        >>> import torch
        >>> enc = NormalizedBoxCenterEncoder(stds=(1.0, 1.0, 1.0, 1.0))
        >>> t, m = enc(torch.tensor([[1]]), torch.tensor([[0]]), torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]),
        ...            torch.tensor([[[1.0, 0.0, 3.0, 2.0]]]))
        >>> t
        tensor([[[0.5000, 0.0000, 0.0000, 0.0000]]])
    """

    def __init__(
        self, stds: Sequence[float] = _DEFAULT_STDS, means: Sequence[float] = _DEFAULT_MEANS
    ) -> None:
        super().__init__()
        self.stds, self.means = _check_stds_means(stds, means)

    def forward(
        self, samples: Tensor, matches: Tensor, anchors: Tensor, refs: Tensor
    ) -> tuple[Tensor, Tensor]:
        return encode_boxes(samples, matches, anchors, refs, self.stds, self.means)

    def extra_repr(self) -> str:
        return f"stds={self.stds}, means={self.means}"


class NormalizedPerClassBoxCenterEncoder(nn.Module):
    """Per-class regression targets of the first ``max_pos`` anchors (see :func:`encode_boxes_per_class`).

    forward ``(samples, matches, anchors, labels (B, M), refs (B, M, 4))`` ->
    ``(targets (B, K, C, 4), masks (B, K, C, 4), indices (B, K))`` with ``K = max_pos``.
    ``per_device_batch_size`` is accepted for GluonCV compatibility; the batch size comes
    from the inputs.

    Example:
        >>> import torch
        >>> enc = NormalizedPerClassBoxCenterEncoder(num_class=2, max_pos=2)
        >>> t, m, idx = enc(torch.tensor([[-1, 1, 1]]), torch.tensor([[-1, 0, 0]]),
        ...                 torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * 3]), torch.tensor([[1]]),
        ...                 torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
        >>> idx, m[0, :, :, 0]
        (tensor([[1, 2]]), tensor([[0., 1.],
                [0., 1.]]))
    """

    def __init__(
        self,
        num_class: int,
        max_pos: int = 128,
        per_device_batch_size: int = 1,
        stds: Sequence[float] = _DEFAULT_STDS,
        means: Sequence[float] = _DEFAULT_MEANS,
    ) -> None:
        super().__init__()
        self.num_class = int(_checks.check_number("num_class", num_class, low=1, integer=True))
        self.max_pos = int(_checks.check_number("max_pos", max_pos, low=1, integer=True))
        self.per_device_batch_size = int(
            _checks.check_number("per_device_batch_size", per_device_batch_size, low=1, integer=True)
        )
        self.stds, self.means = _check_stds_means(stds, means)

    def forward(
        self, samples: Tensor, matches: Tensor, anchors: Tensor, labels: Tensor, refs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return encode_boxes_per_class(
            samples, matches, anchors, labels, refs, self.num_class, self.max_pos, self.stds, self.means
        )

    def extra_repr(self) -> str:
        return f"num_class={self.num_class}, max_pos={self.max_pos}, stds={self.stds}, means={self.means}"


class MultiClassEncoder(nn.Module):
    """Classification targets for softmax losses (see :func:`encode_class`).

    forward ``(samples (B, N), matches (B, N), refs (B, M) class ids)`` -> ``(B, N)`` int64.

    Example:
        >>> import torch
        >>> encoder = MultiClassEncoder(ignore_label=-100)
        >>> encoder(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]), torch.tensor([[2]]))
        tensor([[   3, -100]])
    """

    def __init__(self, ignore_label: int = -1) -> None:
        super().__init__()
        self.ignore_label = _check_integral("ignore_label", ignore_label)

    def forward(self, samples: Tensor, matches: Tensor, refs: Tensor) -> Tensor:
        return encode_class(samples, matches, refs, self.ignore_label)

    def extra_repr(self) -> str:
        return f"ignore_label={self.ignore_label}"


class SigmoidClassEncoder(nn.Module):
    """Targets and masks for sigmoid cross-entropy (see :func:`encode_sigmoid_class`).

    Example:
        >>> import torch
        >>> SigmoidClassEncoder()(torch.tensor([[1.0, 0.0, -1.0]]))
        (tensor([[ 1., -1.,  0.]]), tensor([[1., 0., 1.]]))
    """

    def forward(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        return encode_sigmoid_class(samples)


class NormalizedBoxCenterDecoder(nn.Module):
    """Decode normalised center offsets to corner boxes (see :func:`decode_boxes`).

    forward ``(x (B, N, 4), anchors (B or 1, N, 4))`` -> ``(B, N, 4)``.

    Example:
        >>> import torch
        >>> dec = NormalizedBoxCenterDecoder(convert_anchor=True)
        >>> dec(torch.zeros(1, 1, 4), torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]))
        tensor([[[0., 0., 2., 2.]]])
    """

    def __init__(
        self,
        stds: Sequence[float] = _DEFAULT_STDS,
        means: Sequence[float] = _DEFAULT_MEANS,
        convert_anchor: bool = False,
        clip: float | None = None,
    ) -> None:
        super().__init__()
        self.stds, self.means = _check_stds_means(stds, means)
        self.convert_anchor = bool(convert_anchor)
        self.clip = None if clip is None else float(_checks.check_number("clip", clip))

    def forward(self, x: Tensor, anchors: Tensor) -> Tensor:
        return decode_boxes(x, anchors, self.stds, self.means, self.convert_anchor, self.clip)

    def extra_repr(self) -> str:
        return f"stds={self.stds}, means={self.means}, convert_anchor={self.convert_anchor}, clip={self.clip}"


class MultiClassDecoder(nn.Module):
    """Best foreground class and score per anchor (see :func:`decode_class`).

    forward ``(x (B, N, C))`` -> ``(cls_id (B, N), scores (B, N))``.

    Example:
        >>> import torch
        >>> MultiClassDecoder(thresh=0.3)(torch.tensor([[[0.1, 0.2, 0.7]]]))
        (tensor([[1]]), tensor([[0.7000]]))
    """

    def __init__(self, axis: int = -1, thresh: float = 0.01) -> None:
        super().__init__()
        self.axis = axis
        self.thresh = float(_checks.check_number("thresh", thresh))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return decode_class(x, self.thresh, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, thresh={self.thresh}"


class MultiPerClassDecoder(nn.Module):
    """Every foreground class per anchor, thresholded (see :func:`decode_per_class`).

    forward ``(x (B, N, num_class))`` -> ``(cls_id (B, N, num_class - 1), scores (B, N, num_class - 1))``.

    Example:
        >>> import torch
        >>> MultiPerClassDecoder(3, thresh=0.15)(torch.tensor([[[0.1, 0.2, 0.7]]]))
        (tensor([[[0, 1]]]), tensor([[[0.2000, 0.7000]]]))
    """

    def __init__(self, num_class: int, axis: int = -1, thresh: float = 0.01) -> None:
        super().__init__()
        self.num_class = int(_checks.check_number("num_class", num_class, low=2, integer=True))
        self.axis = axis
        self.thresh = float(_checks.check_number("thresh", thresh))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _checks.check_float("x", x)
        _checks.check_rank("x", x, 3, "(B, N, C)")
        if not isinstance(self.axis, bool) and isinstance(self.axis, int) and -3 <= self.axis < 3:
            _checks.check_dim("x", x, self.axis, self.num_class, "C on the class axis", "num_class")
        return decode_per_class(x, self.thresh, self.axis)

    def extra_repr(self) -> str:
        return f"num_class={self.num_class}, axis={self.axis}, thresh={self.thresh}"
