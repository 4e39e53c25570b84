"""NaiveSampler / OHEMSampler / QuotaSampler and the ``detblocks::quota_sample`` operator.

Loop-based references written from SPEC.md, properties over generated inputs,
determinism, named edge cases per dtype, argument errors, and the operator's
opcheck, torch.compile and torch.export behaviour.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.export import Dim, export

from detblocks import set_value_checks
from detblocks.conventions import NO_MATCH, Sample
from detblocks.sampler import (
    NaiveSampler,
    OHEMSampler,
    QuotaSampler,
    QuotaSamplerOp,
    QuotaSamplerProp,
    naive_sample,
    ohem_sample,
    quota_sample,
)

POS, NEG, IGN = int(Sample.POSITIVE), int(Sample.NEGATIVE), int(Sample.IGNORE)
# IoU values the generated inputs draw from: every threshold below is one of them, so
# ">=" versus ">" at a threshold is exercised.
IOU_LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]


# ----------------------------------------------------------------------------- input makers
def _matches(g: torch.Generator, B: int, N: int, M: int, p_match: float) -> torch.Tensor:
    if M == 0:
        return torch.full((B, N), NO_MATCH, dtype=torch.int64)
    idx = torch.randint(0, M, (B, N), generator=g)
    return torch.where(torch.rand(B, N, generator=g) < p_match, idx, NO_MATCH)


def _ious(g: torch.Generator, B: int, N: int, M: int, pad: int = 0) -> torch.Tensor:
    """(B, N, M + pad) IoUs from IOU_LEVELS; the last ``pad`` columns are padded references (0)."""
    levels = torch.tensor(IOU_LEVELS)
    ious = levels[torch.randint(0, len(levels), (B, N, M), generator=g)]
    return torch.cat([ious, torch.zeros(B, N, pad)], -1)


def _logits_with_ties(g: torch.Generator, B: int, N: int, C: int) -> torch.Tensor:
    """Logits where every anchor copies one of a few rows, so hardness has many exact ties."""
    rows = torch.randn(B, max(1, N // 4), C, generator=g) * 2
    pick = torch.randint(0, rows.shape[1], (B, N), generator=g)
    return torch.gather(rows, 1, pick[..., None].expand(B, N, C))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _as_compute(value: float, dtype: torch.dtype) -> float:
    """A threshold as the sampler compares it: rounded to float32 (float64 for float64 input)."""
    return float(torch.tensor(value, dtype=_compute_dtype(dtype)))


def _best_iou_loop(ious: torch.Tensor, b: int, n: int) -> float:
    """max(0, max_m ious[b, n, m]) (or max(0, ious[b, n]) for best IoUs given as (B, N))."""
    if ious.dim() == 2:
        return max(0.0, float(ious[b, n]))
    best = 0.0
    for m in range(ious.shape[2]):
        best = max(best, float(ious[b, n, m]))
    return best


# ----------------------------------------------------------------------------- references
def reference_ohem(matches, logits, ious, ratio, min_samples=0, thresh=0.5):
    """SPEC's OHEM, one image and one anchor at a time."""
    B, N = matches.shape
    # -log softmax(logits)[..., 0], in float32 at least (the definition, taken as given here).
    hardness = -torch.log_softmax(logits.to(_compute_dtype(logits.dtype)), -1)[..., 0]
    thresh = _as_compute(thresh, ious.dtype)
    out = torch.zeros(B, N, dtype=torch.int64)
    for b in range(B):
        positives = [n for n in range(N) if int(matches[b, n]) >= 0]
        eligible = [n for n in range(N) if int(matches[b, n]) < 0 and _best_iou_loop(ious, b, n) < thresh]
        num_pos = len(positives)
        wanted = float(np.float32(ratio) * np.float32(num_pos))  # ratio * P in float32, as GluonCV
        num_neg = min(int(min(max(min_samples, wanted), N - num_pos)), len(eligible))
        hardest = sorted(eligible, key=lambda n: (-float(hardness[b, n]), n))  # ties: lower index
        for n in positives:
            out[b, n] = POS
        for n in hardest[:num_neg]:
            out[b, n] = NEG
    return out


def quota_candidates(matches, ious, pos_thresh, neg_thresh_high, neg_thresh_low):
    """Per image, (positive candidates, negative candidates) as lists of anchor indices."""
    B, N = matches.shape
    pos_t = _as_compute(min(1.0, max(0.0, pos_thresh)), ious.dtype)
    high = _as_compute(min(1.0, max(0.0, neg_thresh_high)), ious.dtype)
    low = _as_compute(neg_thresh_low, ious.dtype)
    pos, neg = [], []
    for b in range(B):
        best = [_best_iou_loop(ious, b, n) for n in range(N)]
        p = [n for n in range(N) if int(matches[b, n]) >= 0 or best[n] >= pos_t]
        pos.append(p)
        neg.append([n for n in range(N) if low <= best[n] < high and n not in p])
    return pos, neg


def quota_counts(num_sample, pos_ratio, neg_ratio, fill_negative, n_pos_cand, n_neg_cand):
    """(#positives, #negatives) SPEC asks for in one image."""
    neg_ratio = 1 - pos_ratio if neg_ratio is None else neg_ratio
    n_pos = min(n_pos_cand, round(pos_ratio * num_sample))
    neg_quota = int(neg_ratio * num_sample)
    if fill_negative:
        neg_quota = max(neg_quota, num_sample - n_pos)
    return n_pos, min(n_neg_cand, neg_quota)


def reference_quota(
    matches,
    ious,
    keys,
    num_sample,
    pos_thresh,
    neg_thresh_high,
    neg_thresh_low=-math.inf,
    pos_ratio=0.5,
    neg_ratio=None,
    fill_negative=True,
):
    """SPEC's quota selection given the random priorities: per image, the candidates with the
    smallest keys, one image and one anchor at a time."""
    B, N = matches.shape
    pos, neg = quota_candidates(matches, ious, pos_thresh, neg_thresh_high, neg_thresh_low)
    out = torch.zeros(B, N, dtype=torch.int64)
    for b in range(B):
        n_pos, n_neg = quota_counts(num_sample, pos_ratio, neg_ratio, fill_negative, len(pos[b]), len(neg[b]))
        for n in sorted(pos[b], key=lambda n: float(keys[b, n]))[:n_pos]:
            out[b, n] = POS
        for n in sorted(neg[b], key=lambda n: float(keys[b, n]))[:n_neg]:
            out[b, n] = NEG
    return out


def _distinct_keys(g: torch.Generator, B: int, N: int) -> torch.Tensor:
    """Random priorities without ties (a random permutation per image)."""
    return torch.argsort(torch.rand(B, N, generator=g), dim=1).to(torch.float32) / max(N, 1)


# ----------------------------------------------------------------------------- naive
def test_naive_sampler_signs():
    matches = torch.tensor([[0, -1, 5, -1], [-1, -1, -1, -1]])
    want = torch.tensor([[POS, NEG, POS, NEG], [NEG, NEG, NEG, NEG]])
    assert torch.equal(NaiveSampler()(matches), want)
    assert torch.equal(naive_sample(matches.float()), want)  # integral floats, as GluonCV passed them


# ----------------------------------------------------------------------------- OHEM: reference
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "ratio,min_samples,thresh", [(3, 0, 0.5), (1, 11, 0.5), (2.5, 0, 0.3), (0.7, 4, 0.7), (40, 0, 1.0)]
)
def test_ohem_matches_loop_reference(seed, ratio, min_samples, thresh):
    g = torch.Generator().manual_seed(seed)
    B, N, C, M = 4, 64, 6, 5
    matches = _matches(g, B, N, M, p_match=[0.0, 0.05, 0.3, 0.9][seed % 4])
    matches[0] = NO_MATCH  # an image with no positive at all
    logits = _logits_with_ties(g, B, N, C) if seed % 2 else torch.randn(B, N, C, generator=g)
    ious = _ious(g, B, N, M, pad=seed % 3)
    got = ohem_sample(matches, logits, ious, ratio, min_samples, thresh)
    assert torch.equal(got, reference_ohem(matches, logits, ious, ratio, min_samples, thresh))
    # More negatives wanted than eligible (ratio 40): the count stops at the eligible ones.
    assert torch.equal(OHEMSampler(ratio, min_samples, thresh)(matches, logits, ious), got)


def test_ohem_ties_go_to_lower_anchor_index():
    matches = torch.full((1, 6), NO_MATCH)
    logits = torch.zeros(1, 6, 3)  # every anchor equally hard
    out = ohem_sample(matches, logits, torch.zeros(1, 6, 1), ratio=1, min_samples=3)
    assert out.tolist() == [[NEG, NEG, NEG, IGN, IGN, IGN]]


def test_ohem_best_iou_given_directly_equals_full_ious():
    g = torch.Generator().manual_seed(1)
    matches, ious = _matches(g, 3, 50, 4, 0.2), _ious(g, 3, 50, 4, pad=2)
    logits = torch.randn(3, 50, 4, generator=g)
    full = ohem_sample(matches, logits, ious, 2)
    assert torch.equal(ohem_sample(matches, logits, ious.amax(-1), 2), full)


def test_ohem_hardness_is_stable_for_large_logits():
    # exp(1000) overflows float32: a naive softmax would make every hardness inf (all tied).
    matches = torch.full((1, 4), NO_MATCH)
    logits = torch.tensor([[[0.0, 997.0], [0.0, 1000.0], [0.0, 998.0], [0.0, 999.0]]])
    out = ohem_sample(matches, logits, torch.zeros(1, 4, 1), ratio=1, min_samples=2)
    assert out.tolist() == [[IGN, NEG, IGN, NEG]]


def test_ohem_hardness_is_background_cross_entropy(dtype):
    """The hardest anchors are those whose float64 -log softmax(logits)[..., 0] is largest."""
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 40, 5, generator=g, dtype=torch.float64) * 3).to(dtype)
    hardness = -torch.log_softmax(logits.double(), -1)[..., 0]
    out = ohem_sample(torch.full((2, 40), NO_MATCH), logits, torch.zeros(2, 40, 1, dtype=dtype), 1, 10)
    chosen = out == NEG
    assert chosen.sum(1).tolist() == [10, 10]
    gap = hardness[chosen].view(2, 10).amin(1) - hardness[~chosen].view(2, 30).amax(1)
    assert bool((gap >= -1e-2).all())  # every chosen one at least as hard (up to half-precision logits)


def test_ohem_accepts_logits_that_require_grad():
    g = torch.Generator().manual_seed(0)
    matches, ious = _matches(g, 2, 30, 3, 0.2), _ious(g, 2, 30, 3)
    logits = torch.randn(2, 30, 4, generator=g, requires_grad=True)
    out = ohem_sample(matches, logits, ious.requires_grad_(), 3)
    assert out.dtype == torch.int64 and not out.requires_grad
    with torch.no_grad():
        assert torch.equal(ohem_sample(matches, logits, ious, 3), out)


# ----------------------------------------------------------------------------- OHEM: properties
@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 3),
    N=st.integers(0, 40),
    M=st.integers(0, 4),
    C=st.integers(1, 5),
    p_match=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    ratio=st.floats(0.01, 8.0),
    min_samples=st.integers(0, 12),
    thresh=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_ohem_properties(B, N, M, C, p_match, ratio, min_samples, thresh, seed):
    g = torch.Generator().manual_seed(seed)
    matches, ious = _matches(g, B, N, M, p_match), _ious(g, B, N, M)
    logits = _logits_with_ties(g, B, N, C)
    out = ohem_sample(matches, logits, ious, ratio, min_samples, thresh)
    assert out.dtype == torch.int64 and out.shape == (B, N)
    assert set(out.unique().tolist()) <= {POS, NEG, IGN}
    matched = matches >= 0
    assert torch.equal(out == POS, matched)  # positives are exactly the matched anchors
    best = torch.cat([ious, torch.zeros(B, N, 1)], -1).amax(-1)
    eligible = ~matched & (best < _as_compute(thresh, torch.float32))
    assert not bool((out == NEG)[~eligible].any())  # never a matched or overlapping negative
    hardness = -torch.log_softmax(logits, -1)[..., 0]
    for b in range(B):
        P = int(matched[b].sum())
        wanted = float(np.float32(ratio) * np.float32(P))
        want = min(int(min(max(min_samples, wanted), N - P)), int(eligible[b].sum()))
        neg = out[b] == NEG
        assert int(neg.sum()) == want
        if 0 < want < int(eligible[b].sum()):
            assert float(hardness[b][neg].min()) >= float(hardness[b][eligible[b] & ~neg].max())
    assert torch.equal(out, reference_ohem(matches, logits, ious, ratio, min_samples, thresh))


# ----------------------------------------------------------------------------- quota: reference
QUOTA_SETTINGS = [
    dict(num_sample=16, pos_thresh=0.7, neg_thresh_high=0.3),
    dict(
        num_sample=8,
        pos_thresh=0.5,
        neg_thresh_high=0.5,
        neg_thresh_low=0.1,
        pos_ratio=0.25,
        fill_negative=False,
    ),
    dict(num_sample=40, pos_thresh=0.6, neg_thresh_high=0.4, pos_ratio=0.3, neg_ratio=0.2),
    dict(
        num_sample=40, pos_thresh=0.6, neg_thresh_high=0.4, pos_ratio=0.3, neg_ratio=0.2, fill_negative=False
    ),
    dict(num_sample=3, pos_thresh=0.5, neg_thresh_high=0.5, pos_ratio=0.5),  # round(1.5) = 2
    dict(num_sample=500, pos_thresh=1.5, neg_thresh_high=-2.0),  # clipped to [0, 1]
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("params", QUOTA_SETTINGS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_quota_op_matches_loop_reference(seed, params):
    g = torch.Generator().manual_seed(seed)
    B, N, M = 4, 90, 6
    matches = _matches(g, B, N, M, p_match=[0.0, 0.02, 0.2, 0.9][seed])
    matches[0] = NO_MATCH  # an image without matched anchors
    ious = _ious(g, B, N, M, pad=seed % 3)
    keys = _distinct_keys(g, B, N)
    p = dict(neg_thresh_low=-math.inf, pos_ratio=0.5, neg_ratio=None, fill_negative=True) | params
    neg_ratio = 1 - p["pos_ratio"] if p["neg_ratio"] is None else p["neg_ratio"]
    got = QuotaSamplerOp(
        matches, ious, keys, p["num_sample"], p["pos_thresh"], p["neg_thresh_high"], p["neg_thresh_low"],
        p["pos_ratio"], neg_ratio, p["fill_negative"],
    )  # fmt: skip
    assert torch.equal(got, reference_quota(matches, ious, keys, **params))


def test_quota_sample_draws_torch_rand_keys():
    """quota_sample = QuotaSamplerOp fed with torch.rand(B, N) from the same generator."""
    g = torch.Generator().manual_seed(5)
    matches, ious = _matches(g, 3, 200, 4, 0.1), _ious(g, 3, 200, 4)
    out = quota_sample(matches, ious, 32, 0.5, 0.3, generator=torch.Generator().manual_seed(11))
    keys = torch.rand(3, 200, generator=torch.Generator().manual_seed(11))
    assert torch.equal(out, QuotaSamplerOp(matches, ious, keys, 32, 0.5, 0.3, -math.inf, 0.5, 0.5, True))
    assert torch.equal(out, reference_quota(matches, ious, keys, 32, 0.5, 0.3))


def test_quota_best_iou_given_directly_equals_full_ious():
    g = torch.Generator().manual_seed(2)
    matches, ious = _matches(g, 2, 100, 3, 0.1), _ious(g, 2, 100, 3, pad=4)
    sampler = QuotaSampler(20, 0.6, 0.3)
    full = sampler(matches, ious, generator=torch.Generator().manual_seed(0))
    best = sampler(matches, ious.amax(-1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, best)


def test_quota_matched_anchor_is_never_negative():
    # Anchor 0 is matched but overlaps little: a negative by IoU, a positive candidate by match.
    matches = torch.tensor([[0, -1, -1]])
    ious = torch.tensor([[[0.1], [0.1], [0.9]]])
    out = quota_sample(matches, ious, 10, pos_thresh=0.7, neg_thresh_high=0.3)
    assert out.tolist() == [[POS, NEG, POS]]


def test_quota_fill_negative_example_from_gluoncv_docs():
    # num_sample 100, pos/neg ratio 0.5, 10 positive and 10000 negative candidates:
    # 10 positives and 90 negatives; without fill_negative only 50 negatives.
    matches = torch.cat([torch.zeros(10, dtype=torch.int64), torch.full((10_000,), NO_MATCH)])[None]
    ious = torch.cat([torch.ones(10), torch.zeros(10_000)])[None, :, None]
    for fill, n_neg in ((True, 90), (False, 50)):
        out = QuotaSampler(100, 0.5, 0.5, pos_ratio=0.5, neg_ratio=0.5, fill_negative=fill)(matches, ious)
        assert int((out == POS).sum()) == 10 and int((out == NEG).sum()) == n_neg


# ----------------------------------------------------------------------------- quota: properties
@settings(max_examples=80, deadline=None)
@given(
    B=st.integers(1, 3),
    N=st.integers(0, 60),
    M=st.integers(0, 4),
    pad=st.integers(0, 2),
    p_match=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    num_sample=st.integers(1, 40),
    pos_ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 1.0]),
    neg_share=st.sampled_from([None, 0.0, 0.5, 1.0]),
    fill_negative=st.booleans(),
    pos_thresh=st.sampled_from(IOU_LEVELS),
    neg_thresh_high=st.sampled_from(IOU_LEVELS),
    neg_thresh_low=st.sampled_from([-math.inf, 0.0, 0.1, 0.3]),
    tied_keys=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_quota_properties(
    B, N, M, pad, p_match, num_sample, pos_ratio, neg_share, fill_negative, pos_thresh, neg_thresh_high,
    neg_thresh_low, tied_keys, seed,
):  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    matches, ious = _matches(g, B, N, M, p_match), _ious(g, B, N, M, pad)
    neg_ratio = None if neg_share is None else neg_share * (1 - pos_ratio)  # pos_ratio + neg_ratio <= 1
    params = dict(
        num_sample=num_sample, pos_thresh=pos_thresh, neg_thresh_high=neg_thresh_high,
        neg_thresh_low=neg_thresh_low, pos_ratio=pos_ratio, neg_ratio=neg_ratio, fill_negative=fill_negative,
    )  # fmt: skip
    if tied_keys:  # priorities with many ties: the counts must still be exact
        keys = torch.randint(0, 3, (B, N), generator=g).float()
        resolved = dict(params, neg_ratio=1 - pos_ratio if neg_ratio is None else neg_ratio)
        out = QuotaSamplerOp(matches, ious, keys, **resolved)
    else:
        out = quota_sample(matches, ious, **params, generator=g)
    assert out.dtype == torch.int64 and out.shape == (B, N)
    assert set(out.unique().tolist()) <= {POS, NEG, IGN}
    assert not bool((out[matches >= 0] == NEG).any())  # a matched anchor is never a negative
    pos, neg = quota_candidates(matches, ious, pos_thresh, neg_thresh_high, neg_thresh_low)
    for b in range(B):
        chosen_pos = set(torch.nonzero(out[b] == POS).flatten().tolist())
        chosen_neg = set(torch.nonzero(out[b] == NEG).flatten().tolist())
        assert chosen_pos <= set(pos[b]) and chosen_neg <= set(neg[b])
        assert (len(chosen_pos), len(chosen_neg)) == quota_counts(
            num_sample, pos_ratio, neg_ratio, fill_negative, len(pos[b]), len(neg[b])
        )


def test_quota_is_uniform_over_candidates():
    """Each of 8 candidates is kept with probability quota / 8 (here 2 / 8)."""
    matches = torch.full((500, 8), NO_MATCH)
    ious = torch.full((500, 8, 1), 0.9)  # all positive candidates
    out = quota_sample(matches, ious, 4, 0.5, 0.3, generator=torch.Generator().manual_seed(0))
    assert bool(((out == POS).sum(1) == 2).all())
    freq = (out == POS).float().mean(0)
    assert bool(((freq - 0.25).abs() < 0.07).all()), freq


# ----------------------------------------------------------------------------- determinism
def _quota_inputs(seed=0, B=3, N=500, M=5):
    g = torch.Generator().manual_seed(seed)
    return _matches(g, B, N, M, 0.05), _ious(g, B, N, M)


def test_quota_manual_seed_reproduces():
    matches, ious = _quota_inputs()
    sampler = QuotaSampler(64, 0.6, 0.3, pos_ratio=0.25)
    torch.manual_seed(7)
    first = sampler(matches, ious)
    torch.manual_seed(7)
    assert torch.equal(sampler(matches, ious), first)
    torch.manual_seed(8)
    assert not torch.equal(sampler(matches, ious), first)


def test_quota_explicit_generator_reproduces():
    matches, ious = _quota_inputs()
    sampler = QuotaSampler(64, 0.6, 0.3)
    first = sampler(matches, ious, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global generator plays no part
    assert torch.equal(sampler(matches, ious, generator=torch.Generator().manual_seed(3)), first)
    assert not torch.equal(sampler(matches, ious, generator=torch.Generator().manual_seed(4)), first)


@pytest.mark.cpu_only("thread counts of the CPU backend")
@pytest.mark.parametrize("which", ["quota", "ohem"])
def test_same_result_with_one_or_two_threads(which):
    g = torch.Generator().manual_seed(4)
    B, N, M = 16, 3000, 6  # B * N above the size where CPU sorts go parallel
    matches, ious = _matches(g, B, N, M, 0.02), _ious(g, B, N, M)
    logits = _logits_with_ties(g, B, N, 5)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            if which == "quota":
                results.append(
                    quota_sample(matches, ious, 256, 0.6, 0.3, generator=torch.Generator().manual_seed(1))
                )
            else:
                results.append(ohem_sample(matches, logits, ious, 3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


# ----------------------------------------------------------------------------- edge cases per dtype
def _run_both(matches, ious, logits):
    ohem = OHEMSampler(3, min_samples=2)(matches, logits, ious)
    quota = QuotaSampler(8, 0.5, 0.3, pos_ratio=0.25)(
        matches, ious, generator=torch.Generator().manual_seed(0)
    )
    for out in (ohem, quota):
        assert out.dtype == torch.int64 and out.shape == matches.shape
    return ohem, quota


def test_sampler_with_empty_n(dtype):
    ohem, quota = _run_both(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 3, dtype=dtype),
                            torch.zeros(2, 0, 4, dtype=dtype))  # fmt: skip
    assert ohem.shape == quota.shape == (2, 0)
    assert naive_sample(torch.zeros(2, 0, dtype=torch.int64)).shape == (2, 0)


def test_sampler_with_no_references(dtype):
    """M = 0: nothing matched, best IoU 0 everywhere, every anchor a negative candidate."""
    N = 20
    matches = torch.full((2, N), NO_MATCH)
    logits = torch.randn(2, N, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    ohem, quota = _run_both(matches, torch.zeros(2, N, 0, dtype=dtype), logits)
    assert (ohem == NEG).sum(1).tolist() == [2, 2] and not bool((ohem == POS).any())  # min_samples
    assert (quota == NEG).sum(1).tolist() == [8, 8] and not bool((quota == POS).any())  # filled


def test_sampler_with_all_padded_references(dtype):
    """Padded reference rows have IoU 0 with every anchor: same as no references."""
    matches = torch.full((2, 20), NO_MATCH)
    logits = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    padded = _run_both(matches, torch.zeros(2, 20, 7, dtype=dtype), logits)
    empty = _run_both(matches, torch.zeros(2, 20, 0, dtype=dtype), logits)
    assert torch.equal(padded[0], empty[0]) and torch.equal(padded[1], empty[1])


def test_sampler_with_all_unmatched(dtype):
    g = torch.Generator().manual_seed(1)
    matches = torch.full((3, 40), NO_MATCH)
    ious = (_ious(g, 3, 40, 4) * 0.4).to(dtype)  # nothing reaches 0.5
    logits = torch.randn(3, 40, 4, generator=g).to(dtype)
    ohem, quota = _run_both(matches, ious, logits)
    assert torch.equal(ohem, reference_ohem(matches, logits, ious, 3, 2))
    assert not bool((quota == POS).any())
    pos, neg = quota_candidates(matches, ious, 0.5, 0.3, -math.inf)
    assert (quota == NEG).sum(1).tolist() == [min(8, len(n)) for n in neg]


def test_sampler_with_all_matched(dtype):
    g = torch.Generator().manual_seed(2)
    matches = torch.randint(0, 4, (3, 40), generator=g)
    ious = _ious(g, 3, 40, 4).to(dtype)
    logits = torch.randn(3, 40, 4, generator=g).to(dtype)
    ohem, quota = _run_both(matches, ious, logits)
    assert bool((ohem == POS).all())  # no room for negatives: N - P = 0
    assert (quota == POS).sum(1).tolist() == [2, 2, 2] and not bool((quota == NEG).any())


def test_sampler_dtypes_match_float64(dtype):
    """Half-precision inputs give what their values give in float64 (thresholds in float32)."""
    g = torch.Generator().manual_seed(3)
    matches, ious = _matches(g, 2, 80, 4, 0.1), _ious(g, 2, 80, 4).to(dtype)
    logits = torch.randn(2, 80, 5, generator=g).to(dtype)
    assert torch.equal(ohem_sample(matches, logits, ious, 2), reference_ohem(matches, logits, ious, 2))
    keys = _distinct_keys(g, 2, 80)
    got = QuotaSamplerOp(matches, ious, keys, 20, 0.7, 0.3, 0.1, 0.25, 0.75, True)
    assert torch.equal(got, reference_quota(matches, ious, keys, 20, 0.7, 0.3, 0.1, pos_ratio=0.25))


def test_best_overlap_is_floored_at_zero(dtype):
    """Negative overlaps count as 0 (ious are IoUs): a row of negatives has best overlap 0."""
    ious = torch.tensor([[[-0.5, -0.25], [-0.0, -0.75], [0.25, -0.875], [-0.125, 0.625]]], dtype=dtype)
    matches = torch.full((1, 4), NO_MATCH)  # best overlaps: 0, 0, 0.25, 0.625
    keys = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = QuotaSamplerOp(matches, ious, keys, 10, 0.5, 0.1, 0.0, 0.5, 0.5, True)
    assert out.tolist() == [[NEG, NEG, IGN, POS]]
    logits = torch.zeros(1, 4, 2, dtype=dtype)
    out = ohem_sample(matches, logits, ious, ratio=1, min_samples=4, thresh=0.0)  # 0 is not below 0
    assert out.tolist() == [[IGN, IGN, IGN, IGN]]


# ----------------------------------------------------------------------------- bad inputs
M3, I3, L3 = torch.full((2, 5), NO_MATCH), torch.zeros(2, 5, 3), torch.zeros(2, 5, 4)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: naive_sample(torch.zeros(5, dtype=torch.int64)), ValueError, r"matches must be \(B, N\)"),
        (lambda: naive_sample(torch.zeros(2, 5, dtype=torch.bool)), TypeError, "matches must hold integer"),
        (lambda: naive_sample([[0, -1]]), TypeError, "matches must be a torch.Tensor"),
        (lambda: ohem_sample(M3, L3, torch.zeros(2, 5, 3, 1), 3), ValueError, r"ious must be \(B, N, M\)"),
        (lambda: ohem_sample(M3, L3, torch.zeros(2, 6, 3), 3), ValueError, r"ious must have N = 5"),
        (lambda: ohem_sample(M3, L3, torch.zeros(3, 5, 3), 3), ValueError, "batch size of ious"),
        (lambda: ohem_sample(M3, L3, I3.long(), 3), TypeError, "ious must have a floating"),
        (lambda: ohem_sample(M3, torch.zeros(2, 5), I3, 3), ValueError, r"logits must be \(B, N, C\)"),
        (lambda: ohem_sample(M3, torch.zeros(2, 4, 4), I3, 3), ValueError, "logits must have N = 5"),
        (lambda: ohem_sample(M3, torch.zeros(2, 5, 0), I3, 3), ValueError, "logits must have C >= 1"),
        (lambda: ohem_sample(M3, torch.zeros(3, 5, 4), I3, 3), ValueError, "batch size of logits"),
        (lambda: ohem_sample(M3, L3.long(), I3, 3), TypeError, "logits must have a floating"),
        (lambda: ohem_sample(torch.full((2, 5), 3), L3, I3, 3), ValueError, r"matches must lie in \[-1, 3\)"),
        (lambda: OHEMSampler(0), ValueError, "ratio must be > 0"),
        (lambda: OHEMSampler(-1.0), ValueError, "ratio must be > 0"),
        (lambda: OHEMSampler(math.inf), ValueError, "ratio must be finite"),
        (lambda: OHEMSampler("3"), TypeError, "ratio must be a number"),
        (lambda: OHEMSampler(3, min_samples=-1), ValueError, "min_samples must be >= 0"),
        (lambda: OHEMSampler(3, min_samples=1.5), TypeError, "min_samples must be an integer"),
        (lambda: OHEMSampler(3, thresh=math.nan), ValueError, "thresh must not be NaN"),
        (lambda: QuotaSampler(0, 0.5, 0.3), ValueError, "num_sample must be >= 1"),
        (lambda: QuotaSampler(10.0, 0.5, 0.3), TypeError, "num_sample must be an integer"),
        (lambda: QuotaSampler(10, 0.5, 0.3, pos_ratio=1.5), ValueError, "pos_ratio must be <= 1"),
        (lambda: QuotaSampler(10, 0.5, 0.3, pos_ratio=-0.1), ValueError, "pos_ratio must be >= 0"),
        (lambda: QuotaSampler(10, 0.5, 0.3, neg_ratio=2.0), ValueError, "neg_ratio must be <= 1"),
        (lambda: QuotaSampler(10, 0.5, 0.3, pos_ratio=0.6, neg_ratio=0.5), ValueError, r"pos_ratio \+ neg"),
        (lambda: QuotaSampler(10, 0.5, 0.3, fill_negative=1), TypeError, "fill_negative must be a bool"),
        (lambda: QuotaSampler(10, "0.5", 0.3), TypeError, "pos_thresh must be a number"),
        (lambda: QuotaSampler(10, 0.5, math.nan), ValueError, "neg_thresh_high must not be NaN"),
        (lambda: QuotaSampler(10, 0.5, 0.3, neg_thresh_low=None), TypeError, "neg_thresh_low must be a"),
        (lambda: QuotaSampler(10, 0.5, 0.3)(M3, I3[..., None]), ValueError, r"ious must be \(B, N, M\)"),
        (lambda: QuotaSampler(10, 0.5, 0.3)(M3, torch.zeros(2, 4, 3)), ValueError, r"ious must have N = 5"),
        (lambda: QuotaSampler(10, 0.5, 0.3)(M3, I3, generator=0), TypeError, "generator must be a torch.Gen"),
        (lambda: QuotaSamplerOp(M3, I3, torch.zeros(2, 4), 10, 0.5, 0.3, 0.0, 0.5, 0.5, True), ValueError,
         "keys must have N = 5"),
        (lambda: QuotaSamplerOp(M3, I3, torch.zeros(2, 5), 10, 0.5, 0.3, 0.0, 0.9, 0.5, True), ValueError,
         "pos_ratio \\+ neg_ratio"),
        (lambda: QuotaSamplerProp(10, 0.5).infer_shape([(2, 5), (2, 4, 3), (2, 5)]), ValueError,
         r"ious must have N = 5"),
        (lambda: QuotaSamplerProp(10, 0.5).infer_shape([(2, 5), (2, 5, 3)]), ValueError, "in_shape must hol"),
    ],
)  # fmt: skip
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_match_values_checked_only_when_value_checks_are_on():
    bad = torch.full((2, 5), 7)
    set_value_checks(False)
    try:
        QuotaSampler(4, 0.5, 0.3)(bad, I3)  # no host read: accepted as matched anchors
    finally:
        set_value_checks(None)
    with pytest.raises(ValueError, match="matches must lie in"):
        QuotaSampler(4, 0.5, 0.3)(bad, I3)


# ----------------------------------------------------------------------------- the operator
def _op_args(requires_grad: bool = False, fill_negative: bool = True):
    g = torch.Generator().manual_seed(0)
    matches, ious = _matches(g, 3, 40, 4, 0.2), _ious(g, 3, 40, 4)
    keys = torch.rand(3, 40, generator=g)
    if requires_grad:
        ious, keys = ious.requires_grad_(), keys.requires_grad_()
    return (matches, ious, keys, 8, 0.5, 0.3, 0.0, 0.25, 0.5, fill_negative)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("fill_negative", [True, False])
def test_quota_op_passes_opcheck(requires_grad, fill_negative):
    torch.library.opcheck(QuotaSamplerOp, _op_args(requires_grad, fill_negative))


def test_quota_op_is_the_registered_operator_without_gradient():
    args = _op_args(requires_grad=True)
    out = QuotaSamplerOp(*args)
    assert torch.equal(torch.ops.detblocks.quota_sample(*args), out)
    assert out.dtype == torch.int64 and not out.requires_grad
    with torch.no_grad():
        assert torch.equal(QuotaSamplerOp(*args), out)


def test_quota_sampler_prop_describes_the_operator():
    prop = QuotaSamplerProp(8, 0.5, 0.3, pos_ratio=0.25, neg_ratio=0.5)
    assert prop.list_arguments() == ["matches", "ious", "keys"]
    assert prop.list_outputs() == ["output"]
    assert prop.infer_shape([(3, 40), (3, 40, 4), (3, 40)]) == ([(3, 40), (3, 40, 4), (3, 40)], [(3, 40)], [])
    assert prop.infer_shape([(3, 40), (3, 40), (3, 40)])[1] == [(3, 40)]  # best IoUs given as (B, N)
    assert prop.infer_type([torch.int64, torch.float32, torch.float32])[1] == [torch.int64]
    matches, ious, keys, *_ = _op_args()
    op = prop.create_operator()
    assert torch.equal(
        op(matches, ious, keys), QuotaSamplerOp(matches, ious, keys, 8, 0.5, 0.3, 0.0, 0.25, 0.5, True)
    )


# ----------------------------------------------------------------------------- compile and export
def _ohem_inputs(seed, B, N, M=4, C=5):
    g = torch.Generator().manual_seed(seed)
    return _matches(g, B, N, M, 0.2), _logits_with_ties(g, B, N, C), _ious(g, B, N, M)


def test_ohem_sampler_compiles_fullgraph():
    torch._dynamo.reset()
    sampler = OHEMSampler(3, min_samples=2)
    compiled = torch.compile(sampler, fullgraph=True, dynamic=True)  # one compilation for both shapes
    for seed, (B, N) in enumerate([(3, 50), (2, 70)]):
        inputs = _ohem_inputs(seed, B, N)
        assert torch.equal(compiled(*inputs), sampler(*inputs))


def test_ohem_sampler_exports_with_dynamic_batch_and_anchors():
    sampler = OHEMSampler(2.5, thresh=0.4)
    b, n = Dim("B"), Dim("N")
    ep = export(sampler, _ohem_inputs(0, 3, 50), dynamic_shapes=({0: b, 1: n}, {0: b, 1: n}, {0: b, 1: n}))
    for seed, (B, N) in enumerate([(3, 50), (5, 77), (2, 9)]):
        inputs = _ohem_inputs(seed, B, N)
        assert torch.equal(ep.module()(*inputs), sampler(*inputs))


def test_naive_sampler_compiles_and_exports():
    sampler = NaiveSampler()
    matches = _matches(torch.Generator().manual_seed(0), 3, 40, 4, 0.3)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(sampler, fullgraph=True)(matches), sampler(matches))
    ep = export(sampler, (matches,), dynamic_shapes=({0: Dim("B"), 1: Dim("N")},))
    other = _matches(torch.Generator().manual_seed(1), 5, 17, 4, 0.3)
    assert torch.equal(ep.module()(other), sampler(other))


def test_quota_op_compiles_fullgraph_and_equals_eager():
    """Priorities drawn outside: the compiled operator is a pure function, equal to eager."""
    torch._dynamo.reset()

    def select(matches, ious, keys):
        return QuotaSamplerOp(matches, ious, keys, 16, 0.6, 0.3, 0.0, 0.5, 0.5, True)

    compiled = torch.compile(select, fullgraph=True)
    for seed, (B, N) in enumerate([(3, 60), (2, 90)]):
        g = torch.Generator().manual_seed(seed)
        args = (_matches(g, B, N, 4, 0.1), _ious(g, B, N, 4), torch.rand(B, N, generator=g))
        assert torch.equal(compiled(*args), select(*args))


def test_quota_sampler_compiles_fullgraph():
    """The draw compiles too: inductor's own RNG (reproducible under torch.manual_seed), or
    eager's exact draws with ``fallback_random``."""
    import torch._inductor.config as inductor_config

    matches, ious = _quota_inputs(B=2, N=300)
    sampler = QuotaSampler(32, 0.6, 0.3)
    torch._dynamo.reset()
    compiled = torch.compile(sampler, fullgraph=True, dynamic=True)
    torch.manual_seed(0)
    first = compiled(matches, ious)
    torch.manual_seed(0)
    assert torch.equal(compiled(matches, ious), first)
    keys_free = reference_quota(matches, ious, torch.zeros(2, 300), 32, 0.6, 0.3)  # counts only
    assert torch.equal((first == POS).sum(1), (keys_free == POS).sum(1))
    assert torch.equal((first == NEG).sum(1), (keys_free == NEG).sum(1))
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(sampler, fullgraph=True)
        torch.manual_seed(1)
        got = compiled(matches, ious)
    torch.manual_seed(1)
    assert torch.equal(got, sampler(matches, ious))
    torch._dynamo.reset()


def test_quota_sampler_exports_with_dynamic_batch_and_anchors():
    """The exported graph is ``aten.rand`` + ``detblocks.quota_sample``: it draws from torch's
    default generator at run time, so under the same seed it equals eager."""
    sampler = QuotaSampler(16, 0.6, 0.3, pos_ratio=0.25)
    b, n = Dim("B"), Dim("N")
    ep = export(sampler, _quota_inputs(B=2, N=100), dynamic_shapes=({0: b, 1: n}, {0: b, 1: n}))
    targets = {str(node.target) for node in ep.graph.nodes if node.op == "call_function"}
    assert "detblocks.quota_sample.default" in targets and "aten.rand.default" in targets
    for seed, (B, N) in enumerate([(2, 100), (4, 333)]):
        matches, ious = _quota_inputs(seed, B, N)
        torch.manual_seed(seed)
        got = ep.module()(matches, ious)
        torch.manual_seed(seed)
        assert torch.equal(got, sampler(matches, ious))


def test_samplers_give_the_same_samples_with_the_iou_row_maxima_recorded_by_box_iou():
    """box_iou records the best IoU of each anchor for the samplers; a copy of the matrix
    (nothing recorded) must give the same samples."""
    from detblocks.bbox import _recorded_best_iou, box_iou

    g = torch.Generator().manual_seed(5)
    a = torch.rand(2, 30000, 4, generator=g) * 100
    a[..., 2:] = a[..., :2] + torch.rand(2, 30000, 2, generator=g) * 20 + 1
    b = a[:, ::1500].clone()
    b[:, 15:] = -1
    ious = box_iou(a, b)
    assert _recorded_best_iou(ious) is not None
    matches = torch.where(ious.amax(-1) > 0.6, ious.argmax(-1), NO_MATCH)
    logits = torch.randn(2, 30000, 4, generator=g)
    assert torch.equal(
        ohem_sample(matches, logits, ious, 3.0), ohem_sample(matches, logits, ious.clone(), 3.0)
    )
    q = [
        quota_sample(matches, x, 256, 0.6, 0.3, generator=torch.Generator().manual_seed(1))
        for x in (ious, ious.clone())
    ]
    assert torch.equal(q[0], q[1]) and int((q[0] == 1).sum()) > 0
