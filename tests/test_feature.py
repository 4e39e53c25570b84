"""FeatureExtractor / FeatureExpander / FPNFeatureExpander: names, metadata, recipes,
training behaviour, offline pretrained weights, export."""

from __future__ import annotations

import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from detblocks.feature import (
    GLUONCV_NETWORKS,
    FeatureExpander,
    FeatureExtractor,
    FPNFeatureExpander,
    gluoncv_output_names,
    pretrained_weights_path,
)

R18 = "resnet18_v1"
R18_STAGES = ["stage1_activation1", "stage2_activation1", "stage3_activation1", "stage4_activation1"]
SIZES = [(64, 64), (72, 40)]  # the second is not a multiple of 32


def _ceil_shape(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return tuple(math.ceil(s / stride) for s in hw)


def _floor_shape(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return tuple(s // stride for s in hw)


# ------------------------------------------------------------------ names and metadata


@pytest.mark.parametrize("alias", sorted(GLUONCV_NETWORKS))
def test_every_gluoncv_name_is_a_node(alias):
    """Every GluonCV output name of the alias maps to a node of the torchvision graph."""
    with torch.device("meta"):
        model = torchvision.models.get_model(GLUONCV_NETWORKS[alias])
    nodes = get_graph_node_names(model)[1]
    table = gluoncv_output_names(alias)
    assert len(table) >= 5
    for name, node in table.items():
        assert any(n == node or n.startswith(node + ".") for n in nodes), (name, node)


@pytest.fixture
def no_weight_init(monkeypatch):
    """Skip random weight initialisation (the bulk of building a large model): tests that
    only look at shapes don't need the values."""
    for name in dir(torch.nn.init):
        if name.endswith("_") and not name.startswith("_"):
            monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor.detach().zero_())


@pytest.mark.parametrize("alias", sorted(GLUONCV_NETWORKS))
def test_alias_metadata_matches_shapes(alias, no_weight_init):
    """channels/strides equal the maps produced at two input sizes (one not a multiple of 32):
    ceil(size / stride), except VGG whose max-pools floor; output_shapes agrees."""
    table = list(gluoncv_output_names(alias))
    names = table[:: max(1, len(table) // 5)] + table[-1:]  # stem to top
    fe = FeatureExtractor(alias, names).eval()
    assert len(fe.channels) == len(fe.strides) == len(names)
    rounding = _floor_shape if alias.startswith("vgg") else _ceil_shape
    for hw in SIZES:
        with torch.no_grad():
            outs = fe(torch.randn(1, 3, *hw))
        for name, out, c, s in zip(names, outs, fe.channels, fe.strides):
            assert out.shape[1] == c, name
            assert tuple(out.shape[-2:]) == rounding(hw, s), (name, s)
        assert [o.shape for o in outs] == fe.output_shapes(*hw)


@pytest.mark.parametrize(
    "alias,pairs",
    [
        (
            "resnet50_v1",
            [("stage3_activation5", "layer3", 1024, 16), ("stage4_activation2", "layer4", 2048, 32)]
            + [("pool0_fwd", "maxpool", 64, 4), ("stage2_activation1_output", "layer2.1", 512, 8)],
        ),
        (
            "resnet18_v1b",
            [("layers1_relu3_fwd", "layer1", 64, 4), ("layers3_relu2_fwd", "layer3.1.relu", 256, 16)],
        ),
        (
            "mobilenetv2_1.0",
            [
                ("features_linearbottleneck13_relu60_relu6", "features.14.conv.0", 576, 16),
                ("features_linearbottleneck13_relu60_fwd", "features.14.conv.0", 576, 16),
                ("features_linearbottleneck12_elemwise_add0", "features.13", 96, 16),
                ("features_linearbottleneck16_batchnorm2_fwd", "features.17", 320, 32),
                ("features_linearbottleneck0_relu61_relu6", "features.1.conv.0", 32, 2),
                ("features_relu61_relu6", "features.18", 1280, 32),
            ],
        ),
        ("vgg16", [("relu9_fwd", "features.22", 512, 8), ("pool4_fwd", "features.30", 512, 32)]),
        ("vgg11_bn", [("batchnorm5_fwd", "features.19", 512, 8), ("conv0_fwd", "features.0", 64, 1)]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gluoncv_names_map_to_torchvision_layers(alias, pairs):
    names = [p[0] for p in pairs] + [p[1] for p in pairs]
    fe = FeatureExtractor(alias, names).eval()
    assert fe.channels == [p[2] for p in pairs] * 2 and fe.strides == [p[3] for p in pairs] * 2
    with torch.no_grad():
        outs = fe(torch.randn(1, 3, 64, 64))
    for k in range(len(pairs)):
        torch.testing.assert_close(outs[k], outs[k + len(pairs)])


def test_torchvision_names_work_for_aliases_and_plain_names():
    a = FeatureExtractor("resnet18", ["layer2", "layer4.1.relu_1"])
    b = FeatureExtractor("ResNet18_v1", "layer2")
    assert a.channels == [128, 512] and a.strides == [8, 32]
    assert b.channels == [128] and b.strides == [8] and b.outputs == ["layer2"]
    # any registry model, with builder arguments passed through
    c = FeatureExtractor("mobilenet_v3_small", "features.12", width_mult=0.5)
    assert c.strides == [32]


def test_wrong_output_name_lists_the_names():
    with pytest.raises(ValueError, match=r"layer9.*layer4\.\{0\.\.1\}.*get_graph_node_names"):
        FeatureExtractor("resnet18", ["layer3", "layer9"])
    with pytest.raises(ValueError, match=r"stage3_activation6.*stage3_activation\{0\.\.5\}"):
        FeatureExtractor("resnet50_v1", "stage3_activation6")
    # torchvision's first MobileNetV2 block has no expansion conv: explained by the table row
    with pytest.raises(ValueError, match=r"relu6\{j\}_relu6 -> .*I = 0"):
        FeatureExtractor("mobilenetv2_1.0", "features_linearbottleneck0_relu60_relu6")


def test_unsupported_and_unknown_networks():
    with pytest.raises(ValueError, match="MobileNet v1"):
        FeatureExtractor("mobilenet1.0", "relu22_fwd")
    with pytest.raises(ValueError, match="SSD VGG"):
        FeatureExtractor("vgg16_atrous_300", "x")
    with pytest.raises(ValueError, match="v1b"):
        FeatureExtractor("resnet50_v1d", "layers3_relu17_fwd")
    with pytest.raises(ValueError, match=r"list_models\(\)"):
        FeatureExtractor("resnet51", "layer3")
    with pytest.raises(TypeError, match="network"):
        FeatureExtractor(3, "layer3")
    with pytest.raises(TypeError, match="outputs"):
        FeatureExtractor(R18, 3)
    with pytest.raises(ValueError, match="outputs"):
        FeatureExtractor(R18, [])
    with pytest.raises(ValueError, match=r"'fc' is not a \(B, C, H, W\) feature map"):
        FeatureExtractor("resnet18", "fc")


def test_bad_forward_input():
    fe = FeatureExtractor(R18, "stage2_activation1")
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\), got shape \(3, 32, 32\)"):
        fe(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        fe(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ------------------------------------------------------------------ user modules


class TinyNet(nn.Module):
    """A user backbone: one-channel input, three stride-2 stages."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_user_module_as_network():
    net = TinyNet()
    fe = FeatureExtractor(net, ["stage1", "stage2"])
    assert fe.in_channels == 1 and fe.channels == [16, 16] and fe.strides == [4, 8]
    x = torch.randn(2, 1, 30, 30)
    a, b = fe.eval()(x)
    net.eval()
    torch.testing.assert_close(b, net.stage2(net.stage1(net.stem(x))))
    assert a.shape == (2, 16, 8, 8)
    fx = FeatureExpander(net, "stage2", num_filters=[8, 8], min_depth=4).eval()
    assert fx.channels == [16, 8, 8] and fx.strides == [8, 16, 32]
    assert [tuple(o.shape[-2:]) for o in fx(x)] == [(4, 4), (2, 2), (1, 1)]
    fpn = FPNFeatureExpander(net, ["stem", "stage1", "stage2"], [8, 8, 8], use_p6=True).eval()
    assert fpn.channels == [8] * 4 and fpn.strides == [2, 4, 8, 16]
    assert [tuple(o.shape[-2:]) for o in fpn(x)] == [(15, 15), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ValueError, match=r"\['stage3'\].*stage1"):
        FeatureExtractor(net, "stage3")
    with pytest.raises(TypeError, match="model arguments"):
        FeatureExtractor(net, "stage1", num_classes=3)
    with pytest.raises(ValueError, match="pretrained"):
        FeatureExtractor(net, "stage1", pretrained=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_dtype_follows_the_module(dtype):
    fx = FPNFeatureExpander(TinyNet(), ["stage1", "stage2"], [8, 8], use_p6=True).to(dtype).eval()
    x = torch.randn(2, 1, 30, 30, dtype=dtype)
    with torch.no_grad():
        outs = fx(x)
    assert all(o.dtype == dtype for o in outs)
    assert [o.shape for o in outs] == fx.output_shapes(30, 30, batch=2)


def test_untraceable_module_is_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.conv(x)
            return -self.conv(x)

    with pytest.raises(TypeError, match="torch.fx"):
        FeatureExtractor(Branchy(), "conv")


# ------------------------------------------------------------------ FeatureExpander


@pytest.mark.parametrize("hw", [*SIZES, (512, 512), (321, 300)])
def test_expander_metadata_matches_shapes(hw):
    fx = FeatureExpander(R18, R18_STAGES[2:], [32, 32, 16, 16], min_depth=8, global_pool=True).eval()
    assert fx.channels == [256, 512, 32, 32, 16, 16, 16]
    assert fx.strides == [16, 32, 64, 128, 256, 512, None]
    with torch.no_grad():
        outs = fx(torch.zeros(1, 3, *hw))
    for out, c, s in zip(outs, fx.channels, fx.strides):
        assert out.shape[1] == c
        assert tuple(out.shape[-2:]) == ((1, 1) if s is None else _ceil_shape(hw, s))
    assert [o.shape for o in outs] == fx.output_shapes(*hw)


def test_expander_recipe():
    fx = FeatureExpander(R18, "stage4_activation1", [512, 100, 64], reduce_ratio=0.5, min_depth=128)
    trans = [blk[0] for blk in fx.extras]
    assert [t.out_channels for t in trans] == [256, 128, 128]  # max(min_depth, round(f * ratio))
    assert all(t.kernel_size == (1, 1) and t.bias is None for t in trans)
    for blk, f in zip(fx.extras, [512, 100, 64]):
        kinds = [type(m) for m in blk]
        assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        conv = blk[3]
        assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (f, (3, 3), (2, 2), (1, 1))
        assert conv.bias is None
    plain = FeatureExpander(R18, "stage4_activation1", [64, 32], use_1x1_transition=False, use_bn=False)
    for blk in plain.extras:
        assert [type(m) for m in blk] == [nn.Conv2d, nn.ReLU]
        assert blk[0].bias is not None and torch.count_nonzero(blk[0].bias) == 0
    assert plain.channels == [512, 64, 32]


def test_expander_values_follow_the_recipe():
    fx = FeatureExpander(R18, "stage4_activation1", [32, 16], min_depth=24).eval()
    for blk in fx.extras:  # non-trivial BN statistics
        for m in blk:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
    with torch.no_grad():
        outs = fx(torch.randn(2, 3, 96, 96))
    y = outs[0]
    for k, blk in enumerate(fx.extras):
        t, bn_t, conv, bn = blk[0], blk[1], blk[3], blk[4]

        def bn_eval(v, m):
            return F.batch_norm(v, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-3)

        y = F.relu(bn_eval(F.conv2d(y, t.weight), bn_t))
        y = F.relu(bn_eval(F.conv2d(y, conv.weight, stride=2, padding=1), bn))
        torch.testing.assert_close(outs[k + 1], y)


def test_expander_init_he_normal_fan_out():
    torch.manual_seed(0)
    fx = FeatureExpander(R18, "stage4_activation1", [512], use_1x1_transition=True)
    w1, w3 = fx.extras[0][0].weight.detach(), fx.extras[0][3].weight.detach()
    for w in (w1, w3):
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        assert abs(float(w.std()) / math.sqrt(2.0 / fan_out) - 1) < 0.02
        assert abs(float(w.mean())) < 0.01 * math.sqrt(2.0 / fan_out) * 10
    bn = fx.extras[0][1]
    assert bn.eps == 1e-3 and torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_expander_bad_arguments():
    with pytest.raises(TypeError, match="num_filters"):
        FeatureExpander(R18, "stage4_activation1", 256)
    with pytest.raises(ValueError, match="num_filters"):
        FeatureExpander(R18, "stage4_activation1", [256, 0])
    with pytest.raises(ValueError, match="reduce_ratio"):
        FeatureExpander(R18, "stage4_activation1", [256], reduce_ratio=0.0)
    with pytest.raises(ValueError, match="min_depth"):
        FeatureExpander(R18, "stage4_activation1", [256], min_depth=0)
    with pytest.raises(TypeError, match="use_bn"):
        FeatureExpander(R18, "stage4_activation1", [256], use_bn="yes")


# ------------------------------------------------------------------ FPNFeatureExpander


def _fpn_reference(fpn: FPNFeatureExpander, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """GluonCV's top-down pyramid written out with plain ops: F.interpolate then crop."""
    n = len(feats)
    y = fpn.lateral[n - 1](feats[-1])
    p6 = fpn.p6(y) if fpn.p6_conv else None
    outs = []
    for k in range(n - 1, -1, -1):
        if k < n - 1:
            lat = fpn.lateral[k](feats[k])
            up = F.interpolate(y, scale_factor=2, mode="nearest")
            y = lat + up[:, :, : lat.shape[2], : lat.shape[3]]
        out = fpn.smooth[k](y)
        if k == n - 1 and fpn.p6_pool:
            p6 = out[:, :, ::2, ::2]
        outs.insert(0, fpn.smooth_norm[k](out))
    return outs + ([p6] if p6 is not None else [])


@pytest.mark.parametrize("p6_conv", [True, False])
@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
def test_fpn_matches_reference(p6_conv, norm_layer):
    torch.manual_seed(0)
    fpn = FPNFeatureExpander(
        R18, R18_STAGES, [16] * 4, use_p6=True, p6_conv=p6_conv, no_bias=False, norm_layer=norm_layer
    ).eval()
    x = torch.randn(2, 3, 100, 76)
    with torch.no_grad():
        got = fpn(x)
        want = _fpn_reference(fpn, FeatureExtractor.forward(fpn, x))
    assert len(got) == 5
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize(
    "hw,p6_conv", [(hw, True) for hw in [*SIZES, (512, 512), (321, 300)]] + [(hw, False) for hw in SIZES]
)
def test_fpn_metadata_matches_shapes(hw, p6_conv):
    fpn = FPNFeatureExpander(R18, R18_STAGES, [8] * 4, use_p6=True, p6_conv=p6_conv).eval()
    assert fpn.channels == [8] * 5 and fpn.strides == [4, 8, 16, 32, 64]
    with torch.no_grad():
        outs = fpn(torch.zeros(1, 3, *hw))
    assert [tuple(o.shape[-2:]) for o in outs] == [_ceil_shape(hw, s) for s in fpn.strides]
    assert [o.shape for o in outs] == fpn.output_shapes(*hw)


def test_fpn_recipe_and_options():
    fpn = FPNFeatureExpander(R18, R18_STAGES[1:], [8, 8, 8])
    assert all(isinstance(m[0], nn.Conv2d) and m[0].kernel_size == (1, 1) for m in fpn.lateral)
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in fpn.smooth)  # no_bias=True
    assert fpn.p6 is None and len(fpn.channels) == 3
    # uniform init with bound 1/sqrt(fan_in) (MXNet Xavier uniform, 'in', magnitude 1)
    w = fpn.smooth[0].weight.detach()
    bound = 1 / math.sqrt(w.shape[1] * 9)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    # GroupNorm through a factory and norm_kwargs
    gn = FPNFeatureExpander(
        R18,
        R18_STAGES[1:],
        [8, 8, 8],
        norm_layer=lambda c, **kw: nn.GroupNorm(4, c, **kw),
        norm_kwargs={"eps": 1e-3},
    )
    assert isinstance(gn.smooth_norm[0], nn.GroupNorm) and gn.smooth_norm[0].eps == 1e-3
    assert isinstance(gn.lateral[0][1], nn.GroupNorm)
    # without 1x1 laterals the outputs must share channels; GluonCV adds them directly
    with pytest.raises(ValueError, match="channels"):
        FPNFeatureExpander(R18, R18_STAGES[2:], [8, 8], use_1x1=False)
    # no elementwise add: every level is the upsampled top map (uncropped), smoothed
    noadd = FPNFeatureExpander(R18, R18_STAGES[2:], [8, 8], use_elewadd=False).eval()
    with torch.no_grad():
        outs = noadd(torch.zeros(1, 3, 100, 100))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (4, 4)]
    assert noadd.strides == [16, 32]


def test_fpn_bad_arguments():
    with pytest.raises(ValueError, match="one entry per output"):
        FPNFeatureExpander(R18, R18_STAGES, [8, 8, 8])
    with pytest.raises(ValueError, match="num_filters must be equal"):
        FPNFeatureExpander(R18, R18_STAGES[2:], [16, 8])
    with pytest.raises(ValueError, match="finest first"):
        FPNFeatureExpander(R18, R18_STAGES[::-1][:2], [8, 8])
    with pytest.raises(TypeError, match="norm_kwargs"):
        FPNFeatureExpander(R18, R18_STAGES[2:], [8, 8], norm_layer=nn.BatchNorm2d, norm_kwargs=1e-3)
    with pytest.raises(TypeError, match="norm_layer"):
        FPNFeatureExpander(R18, R18_STAGES[2:], [8, 8], norm_layer="bn")


# ------------------------------------------------------------------ training behaviour


def _all_blocks():
    return [
        FeatureExpander(R18, R18_STAGES[2:], [16, 16], min_depth=8, global_pool=True),
        FPNFeatureExpander(R18, R18_STAGES, [8] * 4, use_p6=True, norm_layer=nn.BatchNorm2d),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["expander", "fpn"])
def test_gradients_reach_backbone_and_new_layers(index):
    block = _all_blocks()[index].train()
    outs = block(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    assert block.body.conv1.weight.grad is not None and block.body.conv1.weight.grad.abs().sum() > 0
    new = [m for name, m in block.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("body")]
    assert new
    for conv in new:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("index", [0, 1], ids=["expander", "fpn"])
def test_train_eval_switches_batchnorm(index):
    block = _all_blocks()[index]
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    new_bns = [
        m for n, m in block.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.startswith("body")
    ]
    assert new_bns and len(bns) > len(new_bns)
    x = torch.randn(2, 3, 64, 64) * 3 + 1

    def stats():
        return [m.running_mean.clone() for m in bns]

    before = stats()
    block.eval()
    with torch.no_grad():
        e1 = block(x)
        e2 = block(x[:1])
    assert all(torch.equal(a, b) for a, b in zip(before, stats())), "eval must not update running stats"
    for a, b in zip(e1, e2):  # eval: each image independent of the batch
        torch.testing.assert_close(a[:1], b, rtol=1e-4, atol=1e-4)
    block.train()
    with torch.no_grad():
        t = block(x)
    assert all(not torch.equal(a, b) for a, b in zip(before, stats())), "train must update running stats"
    assert any(not torch.allclose(a, b) for a, b in zip(e1, t)), "train uses batch statistics"
    assert all(m.training for m in bns)


# ------------------------------------------------------------------ pretrained weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh, empty torch cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path


def test_pretrained_from_local_cache(torch_home, monkeypatch):
    path = pretrained_weights_path(R18)
    assert path == os.path.join(str(torch_home), "hub", "checkpoints", "resnet18-f37072fd.pth")
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        FeatureExtractor(R18, "stage4_activation1", pretrained=True)

    torch.manual_seed(123)
    ref = torchvision.models.resnet18().eval()
    os.makedirs(os.path.dirname(path))
    torch.save(ref.state_dict(), path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    fe = FeatureExtractor(R18, ["stage3_activation1", "stage4_activation1"], pretrained=True).eval()
    assert calls and all(c.get("weights_only") is True for c in calls)
    torch.testing.assert_close(fe.body.get_submodule("layer4.1.conv2").weight, ref.layer4[1].conv2.weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        torch.testing.assert_close(fe(x)[1], want)
    # the expanders load the same backbone weights
    fx = FeatureExpander(R18, "stage4_activation1", [16], pretrained=True)
    torch.testing.assert_close(fx.body.conv1.weight, ref.conv1.weight)


def test_pretrained_weight_names(torch_home):
    assert pretrained_weights_path("resnet50_v1").endswith("resnet50-11ad3fa6.pth")  # DEFAULT = V2
    assert pretrained_weights_path("resnet50", "IMAGENET1K_V1").endswith("resnet50-0676ba61.pth")
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert pretrained_weights_path("resnet50", weights).endswith("resnet50-0676ba61.pth")
    with pytest.raises(ValueError, match="IMAGENET1K_V2"):
        pretrained_weights_path("resnet50", "IMAGENET22K")
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*never downloads"):
        FeatureExtractor("vgg16", "relu9_fwd", pretrained="IMAGENET1K_V1")
    with pytest.raises(TypeError, match="pretrained"):
        FeatureExtractor(R18, "stage4_activation1", pretrained=1.0)


# ------------------------------------------------------------------ compile / export


def test_blocks_compile_fullgraph():
    x = torch.randn(2, 3, 64, 64)
    for block in _all_blocks():  # each contains a FeatureExtractor
        block.eval()
        with torch.no_grad():
            want = block(x)
            got = torch.compile(block, fullgraph=True, backend="eager")(x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_blocks_export_dynamic_batch_and_size():
    # every map must stay larger than 1x1 over the dynamic range: PyTorch specialises size-1 dims
    x = torch.randn(2, 3, 160, 144)
    x2 = torch.randn(3, 3, 200, 150)
    dims = {0: torch.export.Dim("B", max=64), 2: torch.export.Dim("H", min=129, max=1024)}
    dims[3] = torch.export.Dim("W", min=129, max=1024)
    for block in _all_blocks():
        block.eval()
        ep = torch.export.export(block, (x,), dynamic_shapes={"x": dims})
        with torch.no_grad():
            for got, want in zip(ep.module()(x2), block(x2)):
                torch.testing.assert_close(got, want)


def test_fpn_onnx_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    block = FPNFeatureExpander(R18, R18_STAGES, [8] * 4, use_p6=True, p6_conv=False).eval()
    x = torch.randn(1, 3, 96, 96)
    dims = {"x": {0: torch.export.Dim("B", max=8), 2: torch.export.Dim("H", min=65, max=512)}}
    dims["x"][3] = torch.export.Dim("W", min=65, max=512)
    program = torch.onnx.export(block, (x,), dynamo=True, dynamic_shapes=dims, verbose=False)
    path = str(tmp_path / "fpn.onnx")
    program.save(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x2 = torch.randn(2, 3, 100, 76)
    outs = session.run(None, {session.get_inputs()[0].name: x2.cpu().numpy()})
    with torch.no_grad():
        want = block(x2)
    assert len(outs) == len(want) == 5
    for got, w in zip(outs, want):
        torch.testing.assert_close(torch.from_numpy(got), w.cpu(), rtol=1e-4, atol=1e-4)
