"""Tests of detblocks.coder against plain float64 references written from SPEC.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import detblocks
from detblocks.coder import (
    MultiClassDecoder,
    MultiClassEncoder,
    MultiPerClassDecoder,
    NormalizedBoxCenterDecoder,
    NormalizedBoxCenterEncoder,
    NormalizedPerClassBoxCenterEncoder,
    SigmoidClassEncoder,
    decode_boxes,
    decode_class,
    decode_per_class,
    encode_boxes,
    encode_boxes_per_class,
    encode_class,
    encode_sigmoid_class,
)
from detblocks.conventions import NO_MATCH, Sample

HYPOTHESIS = settings(max_examples=40, deadline=None)
STDS, MEANS = (0.1, 0.1, 0.2, 0.2), (0.0, 0.0, 0.0, 0.0)
POS, NEG, IGN = int(Sample.POSITIVE), int(Sample.NEGATIVE), int(Sample.IGNORE)


# --------------------------------------------------------------------------- references
def reference_encode(samples, matches, anchors, refs, stds=STDS, means=MEANS):
    """SPEC.md's NormalizedBoxCenterEncoder, one anchor at a time in Python floats."""
    B, N = samples.shape
    targets, masks = torch.zeros(B, N, 4, dtype=torch.float64), torch.zeros(B, N, 4, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            if samples[b, n] <= 0.5:
                continue
            ax0, ay0, ax1, ay1 = anchors[b if anchors.shape[0] > 1 else 0, n].double().tolist()
            gx0, gy0, gx1, gy1 = refs[b, int(matches[b, n])].double().tolist()
            aw, ah, gw, gh = ax1 - ax0, ay1 - ay0, gx1 - gx0, gy1 - gy0
            ax, ay, gx, gy = ax0 + aw / 2, ay0 + ah / 2, gx0 + gw / 2, gy0 + gh / 2
            raw = ((gx - ax) / aw, (gy - ay) / ah, math.log(gw / aw), math.log(gh / ah))
            targets[b, n] = torch.tensor(
                [(r - m) / s for r, m, s in zip(raw, means, stds)], dtype=torch.float64
            )
            masks[b, n] = 1.0
    return targets, masks


def reference_decode(x, anchors, stds=STDS, means=MEANS, clip=None):
    """GluonCV's NormalizedBoxCenterDecoder (center anchors), one box at a time."""
    B, N = x.shape[:2]
    out = torch.zeros(B, N, 4, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            p = x[b, n].double().tolist()
            ax, ay, aw, ah = anchors[b if anchors.shape[0] > 1 else 0, n].double().tolist()
            ox = (p[0] * stds[0] + means[0]) * aw + ax
            oy = (p[1] * stds[1] + means[1]) * ah + ay
            dw, dh = p[2] * stds[2] + means[2], p[3] * stds[3] + means[3]
            if clip is not None:
                dw, dh = min(dw, clip), min(dh, clip)
            w, h = math.exp(dw) * aw / 2, math.exp(dh) * ah / 2
            out[b, n] = torch.tensor([ox - w, oy - h, ox + w, oy + h], dtype=torch.float64)
    return out


def random_boxes(shape, scale=100.0, min_size=1.0, generator=None, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * scale / 2 + min_size
    return torch.cat([xy, xy + wh], dim=-1).to(dtype)


def random_targets(B=2, N=30, M=5, seed=0, dtype=torch.float32):
    """samples/matches as a sampler and matcher would give them, with padded gt rows."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.randint(-1, 2, (B, N), generator=g)
    matches = torch.randint(0, M, (B, N), generator=g)
    matches[samples < 0] = NO_MATCH
    refs = random_boxes((B, M), generator=g, dtype=dtype)
    refs[:, -1] = -1.0  # a padded row ...
    matches[matches == M - 1] = 0  # ... that nothing matches
    anchors = random_boxes((B, N), generator=g, dtype=dtype)
    return samples, matches, anchors, refs


# --------------------------------------------------------------------------- box encoder / decoder
@pytest.mark.parametrize("stds,means", [(STDS, MEANS), ((0.2, 0.3, 0.4, 0.5), (0.01, -0.02, 0.03, -0.04))])
def test_encode_boxes_matches_loop_reference(stds, means):
    samples, matches, anchors, refs = random_targets(seed=1)
    targets, masks = NormalizedBoxCenterEncoder(stds, means)(samples, matches, anchors, refs)
    want_t, want_m = reference_encode(samples, matches, anchors, refs, stds, means)
    assert targets.dtype == masks.dtype == torch.float32
    torch.testing.assert_close(targets.double(), want_t, rtol=1e-5, atol=1e-5)
    assert torch.equal(masks.double(), want_m)


def test_encode_boxes_accepts_float_indices_and_shared_anchors():
    samples, matches, anchors, refs = random_targets(seed=2)
    shared = anchors[:1]
    want = encode_boxes(samples, matches, shared.expand(2, -1, -1), refs)
    got = encode_boxes(samples.float(), matches.float(), shared, refs)  # GluonCV passed floats
    torch.testing.assert_close(got, want)


def test_encode_boxes_in_float64_is_exact():
    samples, matches, anchors, refs = random_targets(seed=3, dtype=torch.float64)
    targets, _ = encode_boxes(samples, matches, anchors, refs)
    torch.testing.assert_close(
        targets, reference_encode(samples, matches, anchors, refs)[0], rtol=1e-12, atol=1e-12
    )


@HYPOTHESIS
@given(
    st.integers(0, 2**31 - 1),
    st.tuples(*[st.floats(0.05, 2.0)] * 4),
    st.tuples(*[st.floats(-0.5, 0.5)] * 4),
)
def test_decode_inverts_encode(seed, stds, means):
    samples, matches, anchors, refs = random_targets(seed=seed, dtype=torch.float64)
    targets, masks = encode_boxes(samples, matches, anchors, refs, stds, means)
    decoded = decode_boxes(targets, anchors, stds, means, convert_anchor=True)
    positive = samples == POS
    matched = refs[torch.arange(2)[:, None], matches.clamp(min=0)]
    torch.testing.assert_close(decoded[positive], matched[positive], rtol=1e-9, atol=1e-9)
    assert torch.equal(masks[..., 0].bool(), positive)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_decode_boxes_matches_loop_reference(clip):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 20, 4, generator=g) * 3
    anchors = detblocks.bbox.corner_to_center(random_boxes((1, 20), generator=g))
    out = NormalizedBoxCenterDecoder(clip=clip)(x, anchors)  # (1, N, 4) anchors broadcast over B
    assert out.shape == (3, 20, 4)
    torch.testing.assert_close(out.double(), reference_decode(x, anchors, clip=clip), rtol=1e-5, atol=1e-4)
    corner = detblocks.bbox.center_to_corner(anchors)
    torch.testing.assert_close(NormalizedBoxCenterDecoder(convert_anchor=True, clip=clip)(x, corner), out)


def test_decode_boxes_with_means():
    g = torch.Generator().manual_seed(5)
    x, anchors = torch.randn(2, 10, 4, generator=g), random_boxes((2, 10), generator=g, dtype=torch.float64)
    stds, means = (0.2, 0.3, 0.4, 0.5), (0.1, -0.1, 0.2, -0.2)
    anchors = detblocks.bbox.corner_to_center(anchors)
    out = decode_boxes(x.double(), anchors, stds, means)
    torch.testing.assert_close(out, reference_decode(x, anchors, stds, means), rtol=1e-12, atol=1e-12)


def test_decode_boxes_huge_regression_stays_finite(dtype):
    x = torch.tensor([[[1e4, -1e4, 1e4, 1e4], [0.0, 0.0, -1e4, 500.0]]], dtype=dtype)
    anchors = torch.tensor([[[50.0, 50.0, 20.0, 30.0], [10.0, 10.0, 4.0, 4.0]]], dtype=dtype)
    out = decode_boxes(x, anchors)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert bool((out[..., 2:] >= out[..., :2]).all())


def test_decode_boxes_clip_caps_width():
    anchors = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    out = decode_boxes(torch.tensor([[[0.0, 0.0, 100.0, 100.0]]]), anchors, clip=math.log(2.0))
    torch.testing.assert_close(out, torch.tensor([[[-10.0, -10.0, 10.0, 10.0]]]))


# --------------------------------------------------------------------------- box encoder edge cases
def test_encode_boxes_with_empty_gt(dtype):
    samples = torch.full((2, 6), NEG)
    matches = torch.full((2, 6), NO_MATCH)
    anchors = random_boxes((2, 6), dtype=dtype)
    targets, masks = encode_boxes(samples, matches, anchors, torch.zeros(2, 0, 4, dtype=dtype))
    assert targets.dtype == masks.dtype == dtype
    assert torch.equal(targets, torch.zeros(2, 6, 4, dtype=dtype)) and not masks.any()


def test_encode_boxes_all_padded(dtype):
    samples = torch.tensor([[NEG, IGN, NEG]])
    matches = torch.full((1, 3), NO_MATCH)
    targets, masks = encode_boxes(
        samples, matches, random_boxes((1, 3), dtype=dtype), -torch.ones(1, 4, 4, dtype=dtype)
    )
    assert torch.equal(targets, torch.zeros_like(targets)) and not masks.any()


def test_encode_boxes_zero_area_boxes(dtype):
    """Degenerate matched references and anchors give finite targets (never NaN/Inf)."""
    anchors = torch.tensor(
        [[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 4.0, 4.0]]], dtype=dtype
    )
    refs = torch.tensor([[[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 1.0, 1.0]]], dtype=dtype)
    samples, matches = torch.full((1, 3), POS), torch.tensor([[0, 1, 2]])
    targets, masks = encode_boxes(samples, matches, anchors, refs)
    assert masks.all() and torch.isfinite(targets).all()


def test_encode_boxes_fewer_anchors_than_gt(dtype):
    samples, matches = torch.tensor([[POS, NEG]]), torch.tensor([[7, NO_MATCH]])
    anchors = random_boxes((1, 2), dtype=torch.float64)
    refs = random_boxes((1, 9), dtype=torch.float64)
    targets, masks = encode_boxes(samples, matches, anchors.to(dtype), refs.to(dtype))
    want, _ = reference_encode(samples, matches, anchors.to(dtype), refs.to(dtype))
    rtol, atol = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 3e-2)}.get(dtype, (1e-5, 1e-5))
    torch.testing.assert_close(targets.double(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_encode_decode_half_precision_large_pixels(half):
    """1000-4096 px boxes: offsets and logs are computed in float32, so the only error left
    is the rounding of the coordinates to the half dtype (float16: 2 px at 4096, bfloat16: 16 px)."""
    g = torch.Generator().manual_seed(6)
    xy = torch.rand(2, 50, 2, generator=g) * 3000
    anchors = torch.cat([xy, xy + 1000 + torch.rand(2, 50, 2, generator=g) * 96], dim=-1)
    refs = anchors[:, :10] + torch.randn(2, 10, 4, generator=g) * 40
    samples = torch.full((2, 50), NEG)
    samples[:, :10] = POS
    matches = torch.where(samples == POS, torch.arange(50) % 10, NO_MATCH)
    want, _ = encode_boxes(samples, matches, anchors.to(half).float(), refs.to(half).float())
    got, _ = encode_boxes(samples, matches, anchors.to(half), refs.to(half))
    assert got.dtype == half
    tol = 2e-2 if half == torch.float16 else 0.1
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    centers = detblocks.bbox.corner_to_center(anchors)
    boxes = decode_boxes(want.to(half), centers.to(half))
    assert boxes.dtype == half and torch.isfinite(boxes).all()
    torch.testing.assert_close(
        boxes.float(),
        decode_boxes(want.to(half).float(), centers),
        rtol=tol,
        atol=2.0 if half == torch.float16 else 16.0,
    )


# --------------------------------------------------------------------------- per-class encoder
def test_encode_boxes_per_class_matches_reference():
    samples, matches, anchors, refs = random_targets(B=3, N=40, M=6, seed=7)
    labels = torch.randint(0, 5, (3, 6), generator=torch.Generator().manual_seed(7))
    labels[:, -1] = -1  # padded reference
    agnostic, _ = encode_boxes(samples, matches, anchors, refs)
    enc = NormalizedPerClassBoxCenterEncoder(num_class=5, max_pos=12, per_device_batch_size=3)
    targets, masks, indices = enc(samples, matches, anchors, labels.float(), refs)
    assert targets.shape == masks.shape == (3, 12, 5, 4) and indices.dtype == torch.int64
    for b in range(3):
        pos = [n for n in range(40) if samples[b, n] == POS]
        rest = [n for n in range(40) if samples[b, n] != POS]
        want_idx = torch.tensor((pos + rest)[:12])
        assert torch.equal(indices[b], want_idx)
        torch.testing.assert_close(targets[b], agnostic[b, want_idx][:, None].expand(-1, 5, -1))
        for k, n in enumerate(want_idx.tolist()):
            want_mask = torch.zeros(5, 4)
            if samples[b, n] == POS:
                want_mask[int(labels[b, matches[b, n]])] = 1.0
            assert torch.equal(masks[b, k], want_mask)


def test_encode_boxes_per_class_max_pos_above_n():
    """Fewer anchors than max_pos: every anchor once, then filler rows of index -1."""
    samples, matches, anchors, refs = random_targets(B=2, N=5, M=3, seed=8)
    labels = torch.zeros(2, 3)
    t, m, idx = encode_boxes_per_class(samples, matches, anchors, labels, refs, num_class=2, max_pos=9)
    assert idx.shape == (2, 9) and t.shape == m.shape == (2, 9, 2, 4)
    t5, m5, idx5 = encode_boxes_per_class(samples, matches, anchors, labels, refs, num_class=2, max_pos=5)
    assert torch.equal(idx[:, :5], idx5) and torch.equal(t[:, :5], t5) and torch.equal(m[:, :5], m5)
    assert sorted(idx[0, :5].tolist()) == list(range(5))
    assert bool((idx[:, 5:] == NO_MATCH).all()) and not t[:, 5:].any() and not m[:, 5:].any()


def test_encode_boxes_per_class_with_empty_gt(dtype):
    samples, matches = torch.full((2, 4), NEG), torch.full((2, 4), NO_MATCH)
    anchors = random_boxes((2, 4), dtype=dtype)
    t, m, idx = encode_boxes_per_class(
        samples,
        matches,
        anchors,
        torch.zeros(2, 0),
        torch.zeros(2, 0, 4, dtype=dtype),
        num_class=3,
        max_pos=2,
    )
    assert t.dtype == dtype and not t.any() and not m.any()
    assert torch.equal(idx, torch.tensor([[0, 1], [0, 1]]))
    _, _, idx = encode_boxes_per_class(
        samples,
        matches,
        anchors,
        torch.zeros(2, 0),
        torch.zeros(2, 0, 4, dtype=dtype),
        num_class=3,
        max_pos=6,
    )
    assert torch.equal(idx, torch.tensor([[0, 1, 2, 3, -1, -1]] * 2))


# --------------------------------------------------------------------------- class encoders
@pytest.mark.parametrize("ignore_label", [-1, -100])
def test_encode_class_matches_reference(ignore_label):
    samples, matches, _, _ = random_targets(B=3, N=25, M=6, seed=9)
    refs = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(9))
    out = MultiClassEncoder(ignore_label)(samples, matches, refs)
    assert out.dtype == torch.int64
    for b in range(3):
        for n in range(25):
            s = int(samples[b, n])
            want = int(refs[b, matches[b, n]]) + 1 if s == POS else (0 if s == NEG else ignore_label)
            assert int(out[b, n]) == want


def test_encode_class_with_empty_gt_and_all_padded():
    samples = torch.tensor([[NEG, IGN, NEG]])
    matches = torch.full((1, 3), NO_MATCH)
    assert torch.equal(encode_class(samples, matches, torch.zeros(1, 0)), torch.tensor([[0, -1, 0]]))
    assert torch.equal(encode_class(samples, matches, -torch.ones(1, 4)), torch.tensor([[0, -1, 0]]))


def test_sigmoid_class_encoder(dtype):
    samples = torch.tensor([[POS, NEG, IGN, POS]])
    target, mask = SigmoidClassEncoder()(samples.to(dtype))
    assert target.dtype == mask.dtype == dtype
    assert torch.equal(target, torch.tensor([[1.0, 0.0, -1.0, 1.0]], dtype=dtype))
    assert torch.equal(mask, torch.tensor([[1.0, 1.0, 0.0, 1.0]], dtype=dtype))
    target, mask = encode_sigmoid_class(samples)
    assert target.dtype == torch.get_default_dtype()


# --------------------------------------------------------------------------- class decoders
@pytest.mark.parametrize("thresh", [0.01, 0.3])
def test_class_decoders_match_reference(thresh, dtype):
    x = torch.softmax(torch.randn(2, 30, 6, generator=torch.Generator().manual_seed(10)) * 2, dim=-1).to(
        dtype
    )
    cls_id, scores = MultiClassDecoder(thresh=thresh)(x)
    per_id, per_scores = MultiPerClassDecoder(6, thresh=thresh)(x)
    assert cls_id.dtype == per_id.dtype == torch.int64 and scores.dtype == per_scores.dtype == dtype
    assert per_id.shape == per_scores.shape == (2, 30, 5)
    for b in range(2):
        for n in range(30):
            row = x[b, n, 1:].tolist()
            best = max(range(5), key=lambda c: (row[c], -c))
            keep = row[best] > thresh
            assert int(cls_id[b, n]) == (best if keep else -1)
            assert float(scores[b, n]) == (row[best] if keep else 0.0)
            for c in range(5):
                assert int(per_id[b, n, c]) == (c if row[c] > thresh else -1)
                assert float(per_scores[b, n, c]) == (row[c] if row[c] > thresh else 0.0)


def test_class_decoders_drop_scores_equal_to_thresh(dtype):
    x = torch.tensor([[[0.5, 0.25, 0.125], [0.25, 0.375, 0.375]]], dtype=dtype)
    cls_id, scores = decode_class(x, thresh=0.25)
    assert torch.equal(cls_id, torch.tensor([[-1, 0]]))  # 0.25 is not above 0.25; ties take the first
    per_id, _ = decode_per_class(x, thresh=0.25)
    assert torch.equal(per_id, torch.tensor([[[-1, -1], [0, 1]]]))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_class_decoders_compare_half_scores_with_the_exact_thresh(half):
    """0.3 is not a half value: a score just above 0.3 must stay, one just below must go."""
    above = torch.tensor(0.3, dtype=half)
    above = above if float(above) > 0.3 else torch.nextafter(above, torch.tensor(1.0, dtype=half))
    below = torch.nextafter(above, torch.tensor(0.0, dtype=half))
    x = torch.stack([torch.zeros_like(above), above, below]).reshape(1, 1, 3)
    assert torch.equal(decode_per_class(x, thresh=0.3)[0], torch.tensor([[[0, -1]]]))
    assert torch.equal(MultiClassDecoder(thresh=0.3)(x)[0], torch.tensor([[0]]))


def test_class_decoders_on_axis_1():
    x = torch.softmax(torch.randn(2, 10, 4), dim=-1)
    for a, b in zip(decode_class(x.transpose(1, 2), axis=1), decode_class(x)):
        assert torch.equal(a, b)
    for a, b in zip(MultiPerClassDecoder(4, axis=1)(x.transpose(1, 2)), decode_per_class(x)):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_with_the_argument_named():
    samples, matches, anchors, refs = random_targets(seed=11)
    with pytest.raises(ValueError, match=r"matches must have the shape of samples \(2, 30\), got \(2, 29\)"):
        encode_boxes(samples, matches[:, :-1], anchors, refs)
    with pytest.raises(
        ValueError, match=r"anchors must be \(B, N, 4\) with a last axis of 4, got shape \(2, 30, 5\)"
    ):
        encode_boxes(samples, matches, torch.rand(2, 30, 5), refs)
    with pytest.raises(
        ValueError, match=r"anchors must have N = 30 \(from samples\), got shape \(2, 31, 4\)"
    ):
        encode_boxes(samples, matches, torch.rand(2, 31, 4), refs)
    with pytest.raises(ValueError, match=r"batch size of refs \(3, 5, 4\)"):
        encode_boxes(samples, matches, anchors, torch.rand(3, 5, 4))
    with pytest.raises(TypeError, match="anchors must have a floating dtype"):
        encode_boxes(samples, matches, anchors.long(), refs)
    with pytest.raises(TypeError, match="samples must hold integer values"):
        encode_boxes(samples.bool(), matches, anchors, refs)
    with pytest.raises(ValueError, match="stds must have 4 values"):
        NormalizedBoxCenterEncoder(stds=(0.1, 0.1, 0.2))
    with pytest.raises(ValueError, match="stds must all be > 0"):
        NormalizedBoxCenterDecoder(stds=(0.1, 0.0, 0.2, 0.2))
    bad = matches.clone()
    bad[samples == POS] = NO_MATCH
    with pytest.raises(
        ValueError, match=r"matches must hold a reference index in \[0, 5\) at every positive"
    ):
        encode_boxes(samples, bad, anchors, refs)
    with pytest.raises(ValueError, match="samples must lie in"):
        encode_boxes(samples + 5, matches, anchors, refs)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        encode_boxes_per_class(samples, matches, anchors, torch.full((2, 5), 7), refs, num_class=3)
    with pytest.raises(ValueError, match=r"x must have C on the class axis = 7 \(from num_class\)"):
        MultiPerClassDecoder(7)(torch.rand(2, 3, 6))
    with pytest.raises(ValueError, match=r"x must be \(B, N, C\)"):
        decode_class(torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"anchors must have N = 30 \(from x\)"):
        decode_boxes(torch.rand(2, 30, 4), torch.rand(1, 29, 4))
    with pytest.raises(ValueError, match="ignore_label must be an integer"):
        MultiClassEncoder(ignore_label=-0.5)
    with pytest.raises(TypeError, match="clip must be a number"):
        NormalizedBoxCenterDecoder(clip="4")


# --------------------------------------------------------------------------- eager fast paths
def _with_grad_path(fn, anchors):
    """Run fn(anchors) with anchors recorded by autograd: that takes the dense (traceable) path."""
    with torch.enable_grad():
        out = fn(anchors.clone().requires_grad_(True))
    return tuple(o.detach() for o in out)


@pytest.mark.parametrize("shared_anchors", [False, True])
def test_encode_boxes_positives_only_path_equals_dense_path(dtype, shared_anchors):
    """The CPU path that encodes positives only gives the dense path's targets, bit for bit,
    including non-finite boxes and (with value checks off) matches outside [0, M)."""
    g = torch.Generator().manual_seed(3)
    B, N, M = 3, 4000, 7
    anchors = torch.rand(1 if shared_anchors else B, N, 4, generator=g) * 300
    anchors[..., 2:] += anchors[..., :2] + 1
    refs = torch.rand(B, M, 4, generator=g) * 300
    refs[..., 2:] += refs[..., :2]
    refs[:, 5:] = -1  # padding
    refs[1, 0, 2] = float("inf")
    anchors[0, 3, 0] = float("nan")
    samples = torch.randint(-1, 2, (B, N), generator=g)
    matches = torch.randint(-1, M + 2, (B, N), generator=g)
    anchors, refs = anchors.to(dtype), refs.to(dtype)
    stds, means = (0.1, 0.2, 0.3, 0.4), (0.01, 0.0, -0.02, 0.0)
    detblocks.set_value_checks(False)
    try:
        fast = encode_boxes(samples, matches, anchors, refs, stds, means)
        dense = _with_grad_path(lambda a: encode_boxes(samples, matches, a, refs, stds, means), anchors)
    finally:
        detblocks.set_value_checks(None)
    assert int(fast[1][..., 0].sum()) > 100  # the scene has positives that keep their targets
    for f, d in zip(fast, dense):
        assert f.dtype == d.dtype == dtype
        assert torch.equal(f, d)


def test_encode_boxes_positives_only_path_without_positives_or_refs():
    anchors = torch.tensor([[[0.0, 0.0, 2.0, 2.0]] * 3])
    samples = torch.tensor([[-1, 0, -1]])
    for refs in (torch.zeros(1, 0, 4), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])):
        targets, masks = encode_boxes(samples, torch.full((1, 3), -1), anchors, refs)
        assert torch.equal(targets, torch.zeros(1, 3, 4)) and torch.equal(masks, torch.zeros(1, 3, 4))


def test_per_class_decoder_large_output_equals_reference():
    """Outputs above the huge-page size threshold take pre-allocated buffers: same values."""
    x = torch.softmax(torch.randn(2, 20000, 81, generator=torch.Generator().manual_seed(1)), dim=-1)
    cls_id, scores = decode_per_class(x, thresh=0.02)
    keep = x[..., 1:] > 0.02
    assert cls_id.nbytes > 8 << 20
    assert torch.equal(cls_id, torch.where(keep, torch.arange(80).expand(2, 20000, 80), torch.tensor(-1)))
    assert torch.equal(scores, x[..., 1:] * keep)
