"""ConvPredictor / FCPredictor: reference ops, lazy shapes, activations, init, errors, export."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from detblocks.predictor import ACTIVATIONS, ConvPredictor, FCPredictor

REFERENCE_ACT = {
    None: lambda t: t,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softrelu": lambda t: torch.log1p(torch.exp(t)),
    "softsign": lambda t: t / (1 + t.abs()),
}


def _randomize(layer: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


# ---------------------------------------------------------------- ConvPredictor


@pytest.mark.parametrize("activation", list(REFERENCE_ACT))
@pytest.mark.parametrize(
    "kernel,pad,stride,use_bias",
    [((3, 3), (1, 1), (1, 1), True), ((1, 1), (0, 0), (1, 1), False), ((3, 5), (0, 2), (2, 1), True)],
)
def test_conv_predictor_matches_conv2d(activation, kernel, pad, stride, use_bias):
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    head = ConvPredictor(5, kernel, pad, stride, activation=activation, use_bias=use_bias).double()
    head(x)  # infer in_channels
    _randomize(head.predictor)
    w, b = head.predictor.weight, head.predictor.bias
    assert (b is not None) == use_bias
    want = REFERENCE_ACT[activation](F.conv2d(x, w, b, stride=stride, padding=pad))
    torch.testing.assert_close(head(x), want)


def test_conv_predictor_dtypes(dtype, tol):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    head = ConvPredictor(3, in_channels=4, activation="sigmoid").double()
    want = head(x)
    got = copy.deepcopy(head).to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=tol[0] * 5, atol=tol[1] * 5)


@settings(max_examples=25, deadline=None)
@given(
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    ph=st.integers(0, 2),
    pw=st.integers(0, 2),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
)
def test_conv_predictor_output_shape(kh, kw, ph, pw, sh, sw, h, w):
    head = ConvPredictor(4, kernel=(kh, kw), pad=(ph, pw), stride=(sh, sw), in_channels=2)
    out = head(torch.zeros(3, 2, h, w))
    assert out.shape == (3, 4, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def test_conv_predictor_int_arguments_mean_square():
    a = ConvPredictor(4, kernel=3, pad=1, stride=2, in_channels=2)
    assert (
        a.predictor.kernel_size == (3, 3) and a.predictor.padding == (1, 1) and a.predictor.stride == (2, 2)
    )


def test_conv_predictor_lazy_in_channels():
    head = ConvPredictor(7)
    assert isinstance(head.predictor, nn.modules.lazy.LazyModuleMixin)
    out = head(torch.randn(2, 13, 5, 5))
    assert out.shape == (2, 7, 5, 5)
    assert isinstance(head.predictor, nn.Conv2d)
    assert not isinstance(head.predictor, nn.modules.lazy.LazyModuleMixin)
    assert head.predictor.in_channels == 13 and head.predictor.weight.shape == (7, 13, 3, 3)
    # after the first call the channel count is fixed
    with pytest.raises(ValueError, match=r"in_channels.*\(2, 12, 5, 5\)"):
        head(torch.randn(2, 12, 5, 5))


def test_conv_predictor_lazy_loads_state_dict():
    src = ConvPredictor(3, in_channels=5, activation="relu")
    _randomize(src)
    dst = ConvPredictor(3, activation="relu")
    dst.load_state_dict(src.state_dict())
    x = torch.randn(1, 5, 4, 4)
    torch.testing.assert_close(dst(x), src(x))


@pytest.mark.parametrize("lazy", [False, True])
def test_conv_predictor_init(lazy):
    cin, cout, k = 64, 48, 3
    torch.manual_seed(0)
    head = ConvPredictor(cout, in_channels=0 if lazy else cin)
    head(torch.zeros(1, cin, 4, 4))
    w, b = head.predictor.weight.detach(), head.predictor.bias.detach()
    bound = math.sqrt(4.0 / (cin * k * k + cout * k * k))
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.99 * bound  # uniform over the whole range
    assert abs(float(w.var()) - bound**2 / 3) < 0.05 * bound**2 / 3
    assert abs(float(w.mean())) < 0.02 * bound
    assert torch.count_nonzero(b) == 0


def test_fc_predictor_init():
    torch.manual_seed(0)
    head = FCPredictor(50, in_features=300)
    w = head.predictor.weight.detach()
    bound = math.sqrt(4.0 / (300 + 50))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert torch.count_nonzero(head.predictor.bias) == 0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_names(name):
    x = torch.linspace(-5, 5, 41, dtype=torch.float64).reshape(1, 1, 41, 1)
    head = ConvPredictor(1, kernel=1, pad=0, in_channels=1, activation=name).double()
    with torch.no_grad():
        head.predictor.weight.fill_(1.0)
    torch.testing.assert_close(head(x), REFERENCE_ACT[name](x))
    assert isinstance(ConvPredictor(1, activation=name.upper()).activation, ACTIVATIONS[name])


@pytest.mark.parametrize(
    "activation",
    [nn.ReLU(), nn.ReLU, nn.LeakyReLU(0.2), torch.relu, lambda t: t.clamp(0, 6)],
    ids=["module", "module-class", "leaky-module", "function", "lambda"],
)
def test_activation_modules_and_callables(activation):
    x = torch.randn(2, 3, 4, 4)
    head = ConvPredictor(2, in_channels=3, activation=activation)
    plain = ConvPredictor(2, in_channels=3)
    plain.load_state_dict(head.state_dict())
    y = plain(x)
    want = activation()(y) if isinstance(activation, type) else activation(y)
    torch.testing.assert_close(head(x), want)


# ---------------------------------------------------------------- FCPredictor


@pytest.mark.parametrize("activation", list(REFERENCE_ACT))
@pytest.mark.parametrize("use_bias", [True, False])
def test_fc_predictor_matches_linear(activation, use_bias):
    x = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    head = FCPredictor(6, activation=activation, use_bias=use_bias).double()
    head(x)
    _randomize(head.predictor)
    w, b = head.predictor.weight, head.predictor.bias
    assert w.shape == (6, 40) and (b is not None) == use_bias
    want = REFERENCE_ACT[activation](F.linear(x.reshape(3, -1), w, b))
    torch.testing.assert_close(head(x), want)


def test_fc_predictor_lazy_and_explicit():
    head = FCPredictor(4)
    assert head(torch.randn(2, 3, 5)).shape == (2, 4)
    assert isinstance(head.predictor, nn.Linear) and head.predictor.in_features == 15
    explicit = FCPredictor(4, in_features=15)
    assert explicit(torch.randn(7, 15)).shape == (7, 4)
    with pytest.raises(ValueError, match=r"in_features.*got 16"):
        explicit(torch.randn(7, 16))


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"num_channel": 0}, ValueError, "num_channel"),
        ({"num_channel": 2.5}, TypeError, "num_channel"),
        ({"num_channel": 4, "kernel": (3,)}, TypeError, "kernel"),
        ({"num_channel": 4, "kernel": 0}, ValueError, "kernel"),
        ({"num_channel": 4, "pad": (-1, 0)}, ValueError, "pad"),
        ({"num_channel": 4, "stride": (1, 0)}, ValueError, "stride"),
        ({"num_channel": 4, "stride": "2"}, TypeError, "stride"),
        ({"num_channel": 4, "use_bias": 1}, TypeError, "use_bias"),
        ({"num_channel": 4, "in_channels": -1}, ValueError, "in_channels"),
        ({"num_channel": 4, "activation": "gelu"}, ValueError, "softrelu"),
        ({"num_channel": 4, "activation": 3}, TypeError, "activation"),
        ({"num_channel": 4, "activation": int}, TypeError, "activation"),
    ],
)
def test_conv_predictor_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ConvPredictor(**kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"num_output": 0}, ValueError, "num_output"),
        ({"num_output": 3, "in_features": 1.0}, TypeError, "in_features"),
        ({"num_output": 3, "use_bias": None}, TypeError, "use_bias"),
        ({"num_output": 3, "activation": "swish"}, ValueError, "relu"),
    ],
)
def test_fc_predictor_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        FCPredictor(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\), got shape \(4, 5, 6\)"):
        ConvPredictor(2)(torch.zeros(4, 5, 6))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        ConvPredictor(2)(torch.zeros(1, 4, 5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, \*\), got shape \(5\)"):
        FCPredictor(2)(torch.zeros(5))


# ---------------------------------------------------------------- compile / export


def test_predictors_compile_and_export_after_first_call():
    conv = ConvPredictor(6, activation="relu").eval()
    fc = FCPredictor(3, activation="sigmoid").eval()
    x = torch.randn(2, 4, 8, 8)
    conv(x)
    fc(x)
    for head in (conv, fc):
        want = head(x)
        compiled = torch.compile(head, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), want)
        batch = torch.export.Dim("batch", min=1, max=64)
        ep = torch.export.export(head, (x,), dynamic_shapes={"x": {0: batch}})
        x5 = torch.randn(5, 4, 8, 8)
        torch.testing.assert_close(ep.module()(x5), head(x5))


def test_conv_predictor_dynamic_spatial_export():
    head = ConvPredictor(6, stride=2, in_channels=4).eval()
    x = torch.randn(2, 4, 16, 16)
    h, w = torch.export.Dim("h", min=4, max=256), torch.export.Dim("w", min=4, max=256)
    ep = torch.export.export(head, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b"), 2: h, 3: w}})
    x2 = torch.randn(3, 4, 21, 9)
    torch.testing.assert_close(ep.module()(x2), head(x2))
