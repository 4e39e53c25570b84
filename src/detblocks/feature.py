"""Feature blocks: multi-scale feature maps from a classification backbone.

* :class:`FeatureExtractor` returns chosen internal feature maps of a network.
* :class:`FeatureExpander` appends GluonCV's SSD-style extra layers
  (1x1 transition, 3x3 stride-2 conv) after the last of them.
* :class:`FPNFeatureExpander` builds GluonCV's top-down feature pyramid on them.

``network`` is a name of torchvision's model registry
(``torchvision.models.list_models()``), one of GluonCV's model names listed below,
or any ``nn.Module`` that ``torch.fx`` can trace. ``outputs`` are the network's
internal node or module names as torchvision's
``torchvision.models.feature_extraction.get_graph_node_names`` lists them
(``"layer3"`` is the output of the last node under ``layer3``); for a GluonCV
model name GluonCV's layer names work as well, so a GluonCV configuration ports
unchanged. Extraction uses ``torchvision.models.feature_extraction.create_feature_extractor``.

GluonCV model names
-------------------

==============================  =================  =============================================
GluonCV network                 torchvision        note
==============================  =================  =============================================
``resnet18_v1``                 ``resnet18``       torchvision's ResNet strides in the 3x3 conv
``resnet34_v1``                 ``resnet34``       of a bottleneck (GluonCV's v1b layout): same
``resnet50_v1``                 ``resnet50``       shapes as GluonCV's v1, weights not
``resnet101_v1``                ``resnet101``      interchangeable
``resnet152_v1``                ``resnet152``
``resnet18_v1b`` ... ``_v1b``   ``resnet18`` ...   the same network as torchvision's
``mobilenetv2_1.0``             ``mobilenet_v2``   torchvision's first block has no expansion conv
``vgg11`` ... ``vgg19_bn``      same name          ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` and
                                                   their ``_bn`` variants
``mobilenet1.0``, ``0.75`` ...  none               MobileNet v1 is not in torchvision: error
``vgg16_atrous_300`` ...        none               GluonCV's SSD VGG (dilated fc6/fc7, L2 norm,
                                                   ceil-mode pooling) is not in torchvision: error
==============================  =================  =============================================

GluonCV output names (a trailing ``_output`` is accepted and ignored)
---------------------------------------------------------------------

===============  ===============================================  ======================================
network          GluonCV output name                              torchvision node
===============  ===============================================  ======================================
resnet*_v1[b]    ``conv0_fwd``, ``batchnorm0_fwd``,               ``conv1``, ``bn1``,
                 ``relu0_fwd``, ``pool0_fwd``                     ``relu``, ``maxpool``
resnet*_v1       ``stage{K}_activation{J}``                       ``layer{K}.{J}`` (block J's output)
resnet*_v1b      ``layers{K}_relu{N}_fwd``                        ``layer{K}.{J}.relu`` (r = 0) or
                                                                  ``layer{K}.{J}.relu_{r}`` [1]_
mobilenetv2_1.0  ``features_relu60_relu6``                        ``features.0``
mobilenetv2_1.0  ``features_linearbottleneck{I}_relu6{j}_relu6``  ``features.{I+1}.conv.{j}`` [2]_
mobilenetv2_1.0  ``features_linearbottleneck{I}_batchnorm2_fwd``  ``features.{I+1}.conv.3`` [2]_
mobilenetv2_1.0  ``features_linearbottleneck{I}_elemwise_add0``   ``features.{I+1}`` (with a shortcut)
mobilenetv2_1.0  ``features_relu61_relu6``                        ``features.18``
vgg*             ``conv{n}_fwd``, ``batchnorm{n}_fwd``,           ``features.{i}``, the n-th Conv2d,
                 ``relu{n}_fwd``, ``pool{n}_fwd``                 BatchNorm2d, ReLU, MaxPool2d there
===============  ===============================================  ======================================

.. [1] ``J, r = divmod(N, R)`` with R = 2 relus per block (resnet18/34) or 3 (resnet50 and deeper).
.. [2] For I = 0 torchvision has no expansion conv: only ``relu61`` (-> ``features.1.conv.0``) and
   ``batchnorm2`` (-> ``features.1.conv.2``) exist.

Relu6 names ending in ``_fwd`` instead of ``_relu6`` are accepted too. The same
tables are the module constants :data:`GLUONCV_NETWORKS` and :data:`GLUONCV_OUTPUTS`;
:func:`gluoncv_output_names` lists every GluonCV name of one network.
The SSD configurations of GluonCV, for example, read ``stage3_activation1`` and
``stage4_activation1`` of ``resnet18_v1`` (= ``layer3``, ``layer4``) and
``stage3_activation5``, ``stage4_activation2`` of ``resnet50_v1``; its FPN
configurations ``stage1_activation2`` ... ``stage4_activation2`` (resnet50_v1) or
``layers1_relu8_fwd`` ... ``layers4_relu8_fwd`` (resnet50_v1b).

Metadata
--------

Every block has ``channels`` and ``strides``: one entry per output, found at
construction by a forward pass on the ``meta`` device (shapes only, no compute).
An ``H x W`` input gives maps of ``ceil(H / s) x ceil(W / s)`` for stride ``s``
with the ResNet and MobileNetV2 backbones and every layer added here (3x3
stride-2 pad-1 convs, P6, cropped upsampling). VGG's max-pools round down, so
its maps are ``floor(H / s)``. :meth:`FeatureExtractor.output_shapes` gives the
exact shapes for any input size. The global-pool output of
:class:`FeatureExpander` has stride ``None`` (it is ``1 x 1`` for any input).

Pretrained weights
------------------

``pretrained=True`` (or the name of a member of the model's torchvision weight
enum, e.g. ``"IMAGENET1K_V1"``) loads torchvision's weight file from the local
torch cache, ``<torch.hub.get_dir()>/checkpoints/<file name of the weight URL>``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``),
with ``torch.load(weights_only=True)``. Nothing is downloaded: a missing file
raises ``FileNotFoundError`` naming the expected path
(:func:`pretrained_weights_path` tells it in advance). Only the backbone is
pretrained; added layers are freshly initialised.

GluonCV's ``ctx`` and ``inputs`` arguments are not kept: move blocks with
``.to(device)``; the single input is the image batch ``x (B, C, H, W)``.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from detblocks._checks import check_bool, check_float, check_number, shape_str

__all__ = [
    "FeatureExtractor",
    "FeatureExpander",
    "FPNFeatureExpander",
    "GLUONCV_NETWORKS",
    "GLUONCV_OUTPUTS",
    "gluoncv_output_names",
    "pretrained_weights_path",
]

#: GluonCV model name -> torchvision model name.
GLUONCV_NETWORKS: dict[str, str] = {
    **{f"resnet{d}_v1": f"resnet{d}" for d in (18, 34, 50, 101, 152)},
    **{f"resnet{d}_v1b": f"resnet{d}" for d in (18, 34, 50, 101, 152)},
    "mobilenetv2_1.0": "mobilenet_v2",
    **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
}

#: (GluonCV networks, GluonCV output name pattern, torchvision node) rows of the output-name mapping.
GLUONCV_OUTPUTS: tuple[tuple[str, str, str], ...] = (
    (
        "resnet*_v1, resnet*_v1b",
        "conv0_fwd, batchnorm0_fwd, relu0_fwd, pool0_fwd",
        "conv1, bn1, relu, maxpool",
    ),
    ("resnet*_v1", "stage{K}_activation{J}", "layer{K}.{J}"),
    (
        "resnet*_v1b",
        "layers{K}_relu{N}_fwd",
        "layer{K}.{J}.relu (r = 0) / layer{K}.{J}.relu_{r}, J, r = divmod(N, R), R = 2 (18/34) or 3",
    ),
    ("mobilenetv2_1.0", "features_relu60_relu6", "features.0"),
    (
        "mobilenetv2_1.0",
        "features_linearbottleneck{I}_relu6{j}_relu6",
        "features.{I+1}.conv.{j} (I = 0: j = 1 only -> features.1.conv.0)",
    ),
    (
        "mobilenetv2_1.0",
        "features_linearbottleneck{I}_batchnorm2_fwd",
        "features.{I+1}.conv.3 (I = 0: conv.2)",
    ),
    (
        "mobilenetv2_1.0",
        "features_linearbottleneck{I}_elemwise_add0",
        "features.{I+1} (blocks with a shortcut)",
    ),
    ("mobilenetv2_1.0", "features_relu61_relu6", "features.18"),
    (
        "vgg*",
        "conv{n}_fwd, batchnorm{n}_fwd, relu{n}_fwd, pool{n}_fwd",
        "features.{i}: the n-th Conv2d / BatchNorm2d / ReLU / MaxPool2d of features",
    ),
)

# GluonCV names that have no torchvision counterpart, with the reason given in the error.
_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    (
        r"mobilenet(1\.0|0\.75|0\.5|0\.25)",
        "it is MobileNet v1, which torchvision does not provide; use 'mobilenetv2_1.0' "
        "(torchvision 'mobilenet_v2') or pass your own nn.Module",
    ),
    (
        r"mobilenetv2_(0\.75|0\.5|0\.25)",
        "GluonCV rounds the channels of its narrow MobileNetV2 differently from torchvision's "
        "mobilenet_v2(width_mult=...); use 'mobilenetv2_1.0' or torchvision 'mobilenet_v2' with width_mult",
    ),
    (
        r"vgg\d+_atrous.*",
        "GluonCV's SSD VGG (dilated fc6/fc7, L2-normalised conv4_3, ceil-mode pooling) is not in "
        "torchvision; use 'vgg16' (relu9_fwd = features.22 is conv4_3) or pass your own nn.Module",
    ),
    (
        r"resnet\d+_v(2|1[c-e]|1s)",
        "torchvision has only the v1/v1b ResNet layout; use 'resnet<depth>_v1' or 'resnet<depth>_v1b'",
    ),
)

# Side of the square meta-device input used to find channels and strides.
_PROBE_SIZE = 512
# Batch of the probe: 2, so that BatchNorm in training mode accepts 1x1 maps.
_PROBE_BATCH = 2


# ------------------------------------------------------------------ networks and names


def _summarize(names: Sequence[str], limit: int = 120) -> str:
    """Compact listing: runs of names that differ in their last number become ``a{0..5}b``."""
    groups: dict[tuple[str, str], list[int]] = {}
    order: list[tuple[str, str] | str] = []
    for n in names:
        m = re.search(r"(\d+)(?!.*\d)", n)
        if m is None:
            order.append(n)
            continue
        key = (n[: m.start()], n[m.end() :])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(m.group(1)))
    parts: list[str] = []
    for item in order:
        if isinstance(item, str):
            parts.append(item)
            continue
        nums = sorted(set(groups[item]))
        if len(nums) > 1 and nums == list(range(nums[0], nums[-1] + 1)):
            parts.append(f"{item[0]}{{{nums[0]}..{nums[-1]}}}{item[1]}")
        else:
            parts.extend(f"{item[0]}{k}{item[1]}" for k in nums)
    text = ", ".join(parts[:limit])
    return text + (f", ... ({len(parts) - limit} more)" if len(parts) > limit else "")


def _resnet_names(model: nn.Module, v1b: bool) -> dict[str, str]:
    table = {"conv0_fwd": "conv1", "batchnorm0_fwd": "bn1", "relu0_fwd": "relu", "pool0_fwd": "maxpool"}
    for k in range(1, 5):
        blocks = getattr(model, f"layer{k}")
        per_block = 3 if isinstance(blocks[0], torchvision.models.resnet.Bottleneck) else 2
        for j in range(len(blocks)):
            if v1b:
                for r in range(per_block):
                    table[f"layers{k}_relu{j * per_block + r}_fwd"] = f"layer{k}.{j}.relu" + (
                        f"_{r}" if r else ""
                    )
            else:
                table[f"stage{k}_activation{j}"] = f"layer{k}.{j}"
    return table


def _mobilenet_v2_names(model: nn.Module) -> dict[str, str]:
    table: dict[str, str] = {}
    features = model.features
    last = len(features) - 1
    table["features_relu60_relu6"] = "features.0"
    table["features_relu61_relu6"] = f"features.{last}"
    for i in range(last - 1):
        block = features[i + 1]
        prefix, node = f"features_linearbottleneck{i}_", f"features.{i + 1}"
        expand = len(block.conv) == 4  # torchvision's first block (t = 1) has no expansion conv
        for j in (0, 1) if expand else (1,):
            table[f"{prefix}relu6{j}_relu6"] = f"{node}.conv.{j if expand else 0}"
        table[f"{prefix}batchnorm2_fwd"] = f"{node}.conv.{3 if expand else 2}"
        if block.use_res_connect:
            table[f"{prefix}elemwise_add0"] = node
    return table


def _vgg_names(model: nn.Module) -> dict[str, str]:
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "batchnorm", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    counts = dict.fromkeys(kinds.values(), 0)
    table = {}
    for idx, layer in enumerate(model.features):
        kind = kinds.get(type(layer))
        if kind is not None:
            table[f"{kind}{counts[kind]}_fwd"] = f"features.{idx}"
            counts[kind] += 1
    return table


def _gluoncv_names(alias: str, model: nn.Module) -> dict[str, str]:
    """GluonCV output name -> torchvision node name, for a network built from a GluonCV name."""
    if alias.startswith("resnet"):
        return _resnet_names(model, v1b=alias.endswith("_v1b"))
    if alias.startswith("mobilenetv2"):
        return _mobilenet_v2_names(model)
    return _vgg_names(model)


def gluoncv_output_names(network: str, **kwargs: Any) -> dict[str, str]:
    """GluonCV output names of a GluonCV model name and the torchvision node each maps to.

    The network is built on the ``meta`` device (structure only, no weights), so
    this is cheap even for large models.

    Args:
        network: one of the GluonCV names of :data:`GLUONCV_NETWORKS`.
        **kwargs: passed to the torchvision model builder.

    Returns:
        ``{gluoncv_name: torchvision_node}`` in network order (the names of
        :data:`GLUONCV_OUTPUTS`, relu6 names in their ``_relu6`` form).

    Example:
        >>> from detblocks.feature import gluoncv_output_names
        >>> names = gluoncv_output_names("resnet50_v1")
        >>> names["stage3_activation5"], names["stage4_activation2"]
        ('layer3.5', 'layer4.2')
    """
    if not isinstance(network, str) or network.lower() not in GLUONCV_NETWORKS:
        raise ValueError(
            f"network must be one of the GluonCV names {list(GLUONCV_NETWORKS)}, got {network!r}"
        )
    alias = network.lower()
    with torch.device("meta"):
        model = torchvision.models.get_model(GLUONCV_NETWORKS[alias], weights=None, **kwargs)
    return _gluoncv_names(alias, model)


def _canonical(name: str) -> str:
    """GluonCV output name without the ``_output`` suffix, relu6 names in their ``_relu6`` form."""
    name = name.removesuffix("_output")
    return re.sub(r"^(features_(?:linearbottleneck\d+_)?relu6[01])_fwd$", r"\1_relu6", name)


def _family(alias: str) -> str:
    """Row label of :data:`GLUONCV_OUTPUTS` for a GluonCV network name."""
    if alias.startswith("resnet"):
        return "resnet*_v1b" if alias.endswith("_v1b") else "resnet*_v1"
    return "vgg*" if alias.startswith("vgg") else alias


def _gluoncv_hint(alias: str, table: dict[str, str]) -> str:
    listing = _summarize(list(table), limit=40)
    if "more)" not in listing:
        return f"GluonCV names: {listing}"
    rows = [f"{r[1]} -> {r[2]}" for r in GLUONCV_OUTPUTS if _family(alias) in r[0].split(", ")]
    return f"GluonCV names: {'; '.join(rows)} (see detblocks.feature.GLUONCV_OUTPUTS)"


def _resolve_weights(model_name: str, pretrained: object) -> Any:
    """The torchvision weight enum member that ``pretrained`` selects for ``model_name``."""
    try:
        enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision has no pretrained weights for network {model_name!r}") from None
    if pretrained is True:
        return enum.DEFAULT
    if isinstance(pretrained, enum):
        return pretrained
    if isinstance(pretrained, str):
        if pretrained == "DEFAULT":
            return enum.DEFAULT
        if pretrained in enum.__members__:
            return enum[pretrained]
        raise ValueError(
            f"pretrained must be True or one of {['DEFAULT', *enum.__members__]} for {model_name!r}, "
            f"got {pretrained!r}"
        )
    raise TypeError(
        f"pretrained must be a bool, a weight name or a {enum.__name__}, got {type(pretrained).__name__}"
    )


def _network_name(network: str) -> str:
    """GluonCV or torchvision model name -> torchvision model name (errors for unknown names)."""
    name = network.lower()
    if name in GLUONCV_NETWORKS:
        return GLUONCV_NETWORKS[name]
    for pattern, reason in _UNSUPPORTED:
        if re.fullmatch(pattern, name):
            raise ValueError(f"network {network!r} is not supported: {reason}")
    if name not in torchvision.models.list_models():
        raise ValueError(
            f"network {network!r} is neither a GluonCV name ({', '.join(GLUONCV_NETWORKS)}) nor a "
            "model of torchvision's registry (see torchvision.models.list_models())"
        )
    return name


def pretrained_weights_path(network: str, pretrained: bool | str | Any = True) -> str:
    """Where ``pretrained=...`` looks for the weight file of ``network``.

    The file is torchvision's own weight file, at
    ``<torch.hub.get_dir()>/checkpoints/<file name of the weight URL>``; put it
    there (for example by running ``torchvision.models.get_model(name,
    weights="DEFAULT")`` once on a machine with network access, or by copying it
    from the URL) to use ``pretrained=True`` offline.

    Args:
        network: GluonCV or torchvision model name.
        pretrained: ``True`` (torchvision's default weights), a member name of the
            model's weight enum (``"IMAGENET1K_V1"``) or the member itself.

    Returns:
        The absolute path of the expected file (it need not exist).

    Example:
        >>> from detblocks.feature import pretrained_weights_path
        >>> pretrained_weights_path("resnet18_v1").endswith("checkpoints/resnet18-f37072fd.pth")
        True
    """
    if not isinstance(network, str):
        raise TypeError(f"network must be a model name, got {type(network).__name__}")
    weights = _resolve_weights(_network_name(network), pretrained)
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return os.path.abspath(os.path.join(torch.hub.get_dir(), "checkpoints", filename))


def _build_network(
    network: object, pretrained: object, kwargs: dict[str, Any]
) -> tuple[nn.Module, str | None]:
    """The backbone module and, for a GluonCV name, that name (lower case)."""
    if isinstance(network, nn.Module):
        if kwargs:
            raise TypeError(f"model arguments {sorted(kwargs)} only apply when network is a model name")
        if pretrained is not False:
            raise ValueError(
                "pretrained only applies when network is a model name; load your module's weights first"
            )
        return network, None
    if not isinstance(network, str):
        raise TypeError(f"network must be a model name or an nn.Module, got {type(network).__name__}")
    if not isinstance(pretrained, bool) and not isinstance(pretrained, (str, torchvision.models.WeightsEnum)):
        raise TypeError(f"pretrained must be a bool or a weight name, got {type(pretrained).__name__}")
    name = _network_name(network)
    builder = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs.setdefault("weights_backbone", None)  # never fetch backbone weights behind the user's back
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained is not False:
        path = pretrained_weights_path(name, pretrained)
        if not os.path.isfile(path):
            weights = _resolve_weights(name, pretrained)
            raise FileNotFoundError(
                f"pretrained weights for {network!r} ({weights}) are not in the local torch cache: "
                f"expected the file {path}. detblocks never downloads; fetch {weights.url} into that "
                f"folder, or run torchvision.models.get_model({name!r}, weights={str(weights)!r}) once "
                "where there is network access (TORCH_HOME sets the cache root)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    alias = network.lower()
    return model, (alias if alias in GLUONCV_NETWORKS else None)


def _output_names(outputs: object) -> list[str]:
    names = [outputs] if isinstance(outputs, str) else outputs
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"outputs must be a layer name or a list of layer names, got {outputs!r}")
    if not names:
        raise ValueError("outputs must name at least one layer, got an empty list")
    return list(names)


def _node_exists(query: str, nodes: Sequence[str]) -> bool:
    # create_feature_extractor's rule: a query names a node or a module path prefix of one
    return any(n == query or n.startswith(query + ".") for n in nodes)


def _extract(
    model: nn.Module,
    nodes: list[str],
    requested: list[str],
    alias: str | None,
    gluon: dict[str, str],
    label: str,
) -> torch.fx.GraphModule:
    """``create_feature_extractor`` for ``nodes``, with errors that list the names that exist."""
    try:
        return create_feature_extractor(model, return_nodes={n: n for n in dict.fromkeys(nodes)})
    except ValueError as err:
        if isinstance(err, torch.fx.proxy.TraceError):
            raise TypeError(
                f"{label} cannot be traced by torch.fx, which feature extraction needs: {err}"
            ) from err
        missing_name = err  # most likely a name that is not in the graph: explained below
    except Exception as err:
        raise TypeError(
            f"{label} cannot be traced by torch.fx, which feature extraction needs: {err}"
        ) from err
    available = get_graph_node_names(model)[1]
    missing = [r for r, n in zip(requested, nodes) if not _node_exists(n, available)]
    if not missing:
        raise missing_name
    shallow = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in available if n != "x"))
    hint = f"{_gluoncv_hint(alias, gluon)}; " if alias else ""
    raise ValueError(
        f"outputs {missing} are not layers of {label}. {hint}torchvision node names include: "
        f"{_summarize(shallow)} (every node: torchvision.models.feature_extraction."
        "get_graph_node_names(model)[1])"
    )


def _first_in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return 3


def _meta_call(module: nn.Module, in_channels: int, height: int, width: int) -> Any:
    """``module`` run on a ``(2, in_channels, height, width)`` input on the meta device: shapes
    only, the module's own tensors are neither read nor changed."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    state = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
    dtype = next((v.dtype for v in tensors.values() if v.is_floating_point()), torch.float32)
    x = torch.empty(_PROBE_BATCH, in_channels, height, width, device="meta", dtype=dtype)
    with torch.no_grad():
        return torch.func.functional_call(module, state, (x,), strict=False)


def _check_input(x: Tensor) -> None:
    check_float("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {shape_str(x)}")


def _check_filters(num_filters: object) -> list[int]:
    if not isinstance(num_filters, (list, tuple)):
        raise TypeError(f"num_filters must be a list of ints, got {type(num_filters).__name__}")
    for f in num_filters:
        check_number("num_filters", f, low=1, integer=True)
    return [int(f) for f in num_filters]


def _he_normal_fan_out_(conv: nn.Conv2d) -> nn.Conv2d:
    # MXNet Xavier(rnd_type='gaussian', factor_type='out', magnitude=2): N(0, 2 / fan_out).
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _uniform_fan_in_(conv: nn.Conv2d) -> nn.Conv2d:
    # MXNet Xavier(rnd_type='uniform', factor_type='in', magnitude=1): U(-b, b), b = sqrt(1 / fan_in).
    fan_in = conv.weight.shape[1] * math.prod(conv.weight.shape[2:])
    nn.init.uniform_(conv.weight, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


# ------------------------------------------------------------------ blocks


class FeatureExtractor(nn.Module):
    """Internal feature maps of a network.

    Args:
        network: torchvision or GluonCV model name (see the module docs), or an
            ``nn.Module`` that ``torch.fx`` can trace.
        outputs: a layer name or a list of them: torchvision node/module names
            (``"layer3"``, ``"features.13.conv.0"``) or, for GluonCV model names,
            GluonCV's layer names (``"stage3_activation5"``).
        pretrained: ``False``; ``True`` for torchvision's default weights; or a
            member name of the model's weight enum (``"IMAGENET1K_V1"``). Read
            from the local torch cache only, see :func:`pretrained_weights_path`.
        **kwargs: passed to the torchvision model builder (e.g. ``norm_layer``).

    Attributes:
        body (torch.fx.GraphModule): the network cut after the last requested layer.
        return_nodes (list[str]): torchvision node name of each output.
        channels (list[int]): channel count of each output.
        strides (list[int]): stride of each output relative to the input.
        in_channels (int): image channels the network expects.

    Shape:
        x (Tensor[B, C, H, W]) -> list of Tensor[B, channels[i], H_i, W_i], one per
        entry of ``outputs``, in that order.

    Example:
        >>> import torch
        >>> from detblocks.feature import FeatureExtractor
        >>> fe = FeatureExtractor("resnet18_v1", ["stage3_activation1", "stage4_activation1"])
        >>> fe.return_nodes, fe.channels, fe.strides
        (['layer3.1', 'layer4.1'], [256, 512], [16, 32])
        >>> [tuple(f.shape) for f in fe(torch.zeros(1, 3, 64, 64))]
        [(1, 256, 4, 4), (1, 512, 2, 2)]
    """

    channels: list[int]
    strides: list[int]

    def __init__(
        self,
        network: str | nn.Module,
        outputs: str | Sequence[str],
        pretrained: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        names = _output_names(outputs)
        model, alias = _build_network(network, pretrained, dict(kwargs))
        gluon = _gluoncv_names(alias, model) if alias else {}
        nodes = [gluon.get(_canonical(n), n) for n in names]
        label = f"network {network!r}" if isinstance(network, str) else type(network).__name__
        self.body = _extract(model, nodes, names, alias, gluon, label)
        self.outputs = names
        self.return_nodes = nodes
        self.in_channels = _first_in_channels(model)
        try:
            probe = _meta_call(self.body, self.in_channels, _PROBE_SIZE, _PROBE_SIZE)
        except Exception as err:  # the shapes are metadata: report, don't guess
            raise ValueError(
                f"could not run {label} on a {self.in_channels}x{_PROBE_SIZE}x{_PROBE_SIZE} input on the "
                f"meta device to find its output shapes: {err}"
            ) from err
        for name, node in zip(names, nodes):
            if not isinstance(probe[node], Tensor) or probe[node].dim() != 4:
                got = (
                    tuple(probe[node].shape)
                    if isinstance(probe[node], Tensor)
                    else type(probe[node]).__name__
                )
                raise ValueError(f"output {name!r} is not a (B, C, H, W) feature map, got {got}")
        self.channels = [int(probe[n].shape[1]) for n in nodes]
        self.strides = [round(_PROBE_SIZE / probe[n].shape[2]) for n in nodes]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, C, H, W]) -> list of Tensor[B, channels[i], H_i, W_i]."""
        _check_input(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have C = {self.in_channels} (in_channels) channels, got shape {shape_str(x)}"
            )
        out = self.body(x)
        return [out[n] for n in self.return_nodes]

    def output_shapes(self, height: int, width: int, batch: int = 1) -> list[torch.Size]:
        """Exact output shapes for a ``(batch, in_channels, height, width)`` input, computed on the
        meta device (no real compute, parameters untouched).

        Example:
            >>> from detblocks.feature import FeatureExtractor
            >>> FeatureExtractor("vgg16", "relu9_fwd").output_shapes(300, 300)
            [torch.Size([1, 512, 37, 37])]
        """
        check_number("height", height, low=1, integer=True)
        check_number("width", width, low=1, integer=True)
        check_number("batch", batch, low=1, integer=True)
        outs = _meta_call(self, self.in_channels, height, width)
        return [torch.Size((batch, *o.shape[1:])) for o in outs]


class FeatureExpander(FeatureExtractor):
    """Feature maps of a network plus extra downsampling layers (GluonCV's SSD recipe).

    After the network's ``outputs``, each entry ``f`` of ``num_filters`` appends one
    map made from the previous one by ``[1x1 conv to max(min_depth, round(f *
    reduce_ratio)) channels, BN, ReLU]`` (only with ``use_1x1_transition``), then
    ``3x3 conv stride 2 pad 1 to f channels, BN, ReLU``. With ``use_bn=False`` the
    BNs are dropped and the convs get a bias. ``global_pool`` appends a global
    average pool of the last map. New convs are initialised He-normal on fan-out
    (MXNet's ``Xavier('gaussian', 'out', 2)``), biases zero; BatchNorm uses MXNet's
    ``eps=1e-3`` (GluonCV's symbolic BatchNorm also fixed gamma at 1; here gamma is
    learnable, starting at 1).

    Args:
        network, outputs, pretrained, **kwargs: as in :class:`FeatureExtractor`.
        num_filters: channels of each appended map.
        use_1x1_transition: put the 1x1 transition conv before each 3x3 conv.
        use_bn: BatchNorm after each new conv.
        reduce_ratio: channel ratio of the transition convs.
        min_depth: minimum channel count of the transition convs.
        global_pool: append a global average pool of the last map.

    Attributes:
        extras (nn.ModuleList): one ``nn.Sequential`` per entry of ``num_filters``.
        channels, strides: per output, as in :class:`FeatureExtractor`; the
            global-pool output has stride ``None``.

    Shape:
        x (Tensor[B, C, H, W]) -> list of ``len(outputs) + len(num_filters) (+ 1)`` maps;
        appended map k has ``num_filters[k]`` channels and twice the stride of the
        map before it (``ceil`` of half its size); the global pool is ``(B, C, 1, 1)``.

    Example:
        >>> import torch
        >>> from detblocks.feature import FeatureExpander
        >>> fx = FeatureExpander("resnet18_v1", ["stage3_activation1", "stage4_activation1"],
        ...                      num_filters=[64, 32], min_depth=16, global_pool=True).eval()
        >>> fx.channels, fx.strides
        ([256, 512, 64, 32, 32], [16, 32, 64, 128, None])
        >>> [tuple(f.shape[-2:]) for f in fx(torch.zeros(1, 3, 100, 100))]
        [(7, 7), (4, 4), (2, 2), (1, 1), (1, 1)]
    """

    strides: list[int | None]  # type: ignore[assignment]

    def __init__(
        self,
        network: str | nn.Module,
        outputs: str | Sequence[str],
        num_filters: Sequence[int],
        use_1x1_transition: bool = True,
        use_bn: bool = True,
        reduce_ratio: float = 1.0,
        min_depth: int = 128,
        global_pool: bool = False,
        pretrained: bool | str = False,
        **kwargs: Any,
    ) -> None:
        filters = _check_filters(num_filters)
        check_bool("use_1x1_transition", use_1x1_transition)
        check_bool("use_bn", use_bn)
        check_number("reduce_ratio", reduce_ratio, low=0.0, low_open=True)
        check_number("min_depth", min_depth, low=1, integer=True)
        check_bool("global_pool", global_pool)
        super().__init__(network, outputs, pretrained, **kwargs)
        self.global_pool = global_pool
        self.extras = nn.ModuleList()
        channels, stride = self.channels[-1], self.strides[-1]
        for f in filters:
            layers: list[nn.Module] = []
            if use_1x1_transition:
                num_trans = max(min_depth, int(round(f * reduce_ratio)))
                layers.append(_he_normal_fan_out_(nn.Conv2d(channels, num_trans, 1, bias=not use_bn)))
                if use_bn:
                    layers.append(nn.BatchNorm2d(num_trans, eps=1e-3))
                layers.append(nn.ReLU())
                channels = num_trans
            layers.append(
                _he_normal_fan_out_(nn.Conv2d(channels, f, 3, stride=2, padding=1, bias=not use_bn))
            )
            if use_bn:
                layers.append(nn.BatchNorm2d(f, eps=1e-3))
            layers.append(nn.ReLU())
            self.extras.append(nn.Sequential(*layers))
            channels, stride = f, stride * 2
            self.channels.append(f)
            self.strides.append(stride)
        if global_pool:
            self.channels.append(channels)
            self.strides.append(None)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, C, H, W]) -> list of feature maps (see the class docs)."""
        feats = super().forward(x)
        y = feats[-1]
        for block in self.extras:
            y = block(y)
            feats.append(y)
        if self.global_pool:
            feats.append(F.adaptive_avg_pool2d(y, 1))  # (B, C, 1, 1)
        return feats


def _upsample2x_like(y: Tensor, ref: Tensor) -> Tensor:
    """Nearest 2x upsampling of ``y (B, C, h, w)`` cropped to the size of ``ref (B, C', H, W)``,
    ``H <= 2h``, ``W <= 2w``: ``out[..., i, j] = y[..., i // 2, j // 2]``.

    Gathering rows and columns gives the cropped map directly, without building
    the full ``2h x 2w`` map, and needs no size comparison, so ``torch.export``
    keeps ``H`` and ``W`` symbolic.
    """
    rows = torch.arange(ref.shape[-2], device=y.device) // 2  # (H,)
    cols = torch.arange(ref.shape[-1], device=y.device) // 2  # (W,)
    return y.index_select(-2, rows).index_select(-1, cols)  # (B, C, H, W)


def _norm(
    norm_layer: Callable[..., nn.Module] | None, norm_kwargs: dict[str, Any], channels: int
) -> nn.Module:
    return nn.Identity() if norm_layer is None else norm_layer(channels, **norm_kwargs)


class FPNFeatureExpander(FeatureExtractor):
    """GluonCV's feature pyramid (FPN) on the network's ``outputs`` ``[C2, ..., C5]``
    (finest first).

    Top-down, from the coarsest map: lateral 1x1 conv (with ``use_1x1``); then for
    each finer map, nearest 2x upsampling of the running map (with
    ``use_upsample``), cropped to the lateral's size and added to the lateral
    (with ``use_elewadd``); every level is smoothed by a 3x3 conv. ``norm_layer``
    (if given) follows every new conv. ``use_p6`` adds P6: a 3x3 stride-2 conv on
    the coarsest lateral (``p6_conv=True``) or a stride-2 subsampling (1x1 max-pool)
    of the smoothed coarsest map before its norm (``p6_conv=False``). No
    activations. New convs: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (MXNet's
    ``Xavier('uniform', 'in', 1)``), biases zero.

    Args:
        network, outputs, pretrained, **kwargs: as in :class:`FeatureExtractor`.
        num_filters: channels per level in GluonCV's order: ``num_filters[0]`` is
            the coarsest level (P5 and P6). Must have one entry per output
            (GluonCV silently dropped the extra ones).
        use_1x1: lateral 1x1 convs.
        use_upsample: 2x nearest upsampling in the top-down path.
        use_elewadd: add the lateral to the upsampled map (without it, a level is
            the smoothed upsampled map alone, as in GluonCV).
        use_p6: append P6.
        p6_conv: P6 by conv (True) or by subsampling (False).
        no_bias: convs without bias.
        norm_layer: normalisation after each new conv, called as
            ``norm_layer(num_channels, **norm_kwargs)`` (e.g. ``nn.BatchNorm2d``;
            ``functools.partial(nn.GroupNorm, 32)`` for GroupNorm).
        norm_kwargs: extra arguments of ``norm_layer``.

    Attributes:
        lateral (nn.ModuleList): per level (finest first), 1x1 conv + norm or Identity.
        smooth (nn.ModuleList): per level, the 3x3 conv.
        smooth_norm (nn.ModuleList): per level, its norm or Identity.
        p6 (nn.Module | None): the P6 layer.
        channels, strides: per output, as in :class:`FeatureExtractor`.

    Shape:
        x (Tensor[B, C, H, W]) -> ``[P2, ..., P5]`` (+ ``[P6]``): ``P_i`` has the size of
        the i-th output of the network and ``num_filters[n - 1 - i]`` channels; P6 has
        half the size (``ceil``) of the coarsest map.

    Example:
        >>> import torch
        >>> from detblocks.feature import FPNFeatureExpander
        >>> fpn = FPNFeatureExpander("resnet18_v1", ["stage2_activation1", "stage3_activation1",
        ...                          "stage4_activation1"], num_filters=[32, 32, 32], use_p6=True)
        >>> fpn.channels, fpn.strides
        ([32, 32, 32, 32], [8, 16, 32, 64])
        >>> [tuple(f.shape[-2:]) for f in fpn(torch.zeros(1, 3, 100, 100))]
        [(13, 13), (7, 7), (4, 4), (2, 2)]
    """

    def __init__(
        self,
        network: str | nn.Module,
        outputs: str | Sequence[str],
        num_filters: Sequence[int],
        use_1x1: bool = True,
        use_upsample: bool = True,
        use_elewadd: bool = True,
        use_p6: bool = False,
        p6_conv: bool = True,
        no_bias: bool = True,
        pretrained: bool | str = False,
        norm_layer: Callable[..., nn.Module] | None = None,
        norm_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        filters = _check_filters(num_filters)
        for name, flag in (
            ("use_1x1", use_1x1),
            ("use_upsample", use_upsample),
            ("use_elewadd", use_elewadd),
            ("use_p6", use_p6),
            ("p6_conv", p6_conv),
            ("no_bias", no_bias),
        ):
            check_bool(name, flag)
        if norm_layer is not None and not callable(norm_layer):
            raise TypeError(f"norm_layer must be a norm class or factory, got {type(norm_layer).__name__}")
        if norm_kwargs is not None and not isinstance(norm_kwargs, dict):
            raise TypeError(f"norm_kwargs must be a dict, got {type(norm_kwargs).__name__}")
        norm_kwargs = dict(norm_kwargs or {})
        super().__init__(network, outputs, pretrained, **kwargs)
        n = len(self.channels)
        if len(filters) != n:
            raise ValueError(
                f"num_filters must have one entry per output ({n}), got {len(filters)}: {filters}"
            )
        self.use_upsample, self.use_elewadd = use_upsample, use_elewadd
        self.p6_conv = use_p6 and p6_conv
        self.p6_pool = use_p6 and not p6_conv
        in_ch, in_st = list(self.channels), list(self.strides)
        width = [filters[n - 1 - k] for k in range(n)]  # per level, finest first

        def conv(cin: int, cout: int, k: int, s: int = 1) -> nn.Conv2d:
            return _uniform_fan_in_(nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=not no_bias))

        # The running top-down map keeps the coarsest level's channel count: that of its
        # lateral conv (use_1x1) or of the network output itself.
        top_ch = width[-1] if use_1x1 else in_ch[-1]
        lateral: list[nn.Module] = [nn.Identity() for _ in range(n)]
        run_st = in_st[-1]
        strides = [run_st] * n
        for k in range(n - 1, -1, -1):
            if k < n - 1 and use_upsample:
                run_st = max(1, run_st // 2)
            if k < n - 1 and not use_elewadd:
                strides[k] = run_st  # the level is the upsampled running map alone
                continue
            lat_ch = width[k] if use_1x1 else in_ch[k]
            if use_1x1:
                lateral[k] = nn.Sequential(
                    conv(in_ch[k], width[k], 1), _norm(norm_layer, norm_kwargs, width[k])
                )
            if lat_ch != top_ch:
                raise ValueError(
                    f"the top-down path adds maps of {top_ch} and {lat_ch} channels at output "
                    f"{self.outputs[k]!r}: with use_1x1 all num_filters must be equal, without it all "
                    f"outputs must have the same channels (num_filters={filters}, channels={in_ch})"
                )
            if k < n - 1 and run_st != in_st[k]:
                raise ValueError(
                    f"the top-down map reaches output {self.outputs[k]!r} at stride {run_st}, but that "
                    f"output has stride {in_st[k]} (strides {in_st}); outputs must be finest first, each "
                    "with half the stride of the next (the same stride with use_upsample=False)"
                )
            run_st = in_st[k]
            strides[k] = run_st
        self.lateral = nn.ModuleList(lateral)
        self.smooth = nn.ModuleList(conv(top_ch, width[k], 3) for k in range(n))
        self.smooth_norm = nn.ModuleList(_norm(norm_layer, norm_kwargs, width[k]) for k in range(n))
        self.p6: nn.Module | None = None
        if self.p6_conv:
            self.p6 = nn.Sequential(
                conv(top_ch, width[-1], 3, s=2), _norm(norm_layer, norm_kwargs, width[-1])
            )
        elif self.p6_pool:
            self.p6 = nn.MaxPool2d(kernel_size=1, stride=2)
        self.channels = width + ([width[-1]] if use_p6 else [])
        self.strides = strides + ([in_st[-1] * 2] if use_p6 else [])

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, C, H, W]) -> ``[P2, ..., P5]`` (+ ``[P6]``)."""
        feats = super().forward(x)
        n = len(feats)
        y = self.lateral[n - 1](feats[n - 1])
        p6 = self.p6(y) if self.p6_conv else None
        levels: list[Tensor] = []
        for k in range(n - 1, -1, -1):
            if k < n - 1:
                if self.use_elewadd:
                    lat = self.lateral[k](feats[k])
                    if self.use_upsample:
                        y = _upsample2x_like(y, lat)
                    y = lat + y[:, :, : lat.shape[-2], : lat.shape[-1]]  # crop to the lateral's size
                elif self.use_upsample:
                    y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            out = self.smooth[k](y)
            if k == n - 1 and self.p6_pool:
                p6 = self.p6(out)
            levels.append(self.smooth_norm[k](out))
        levels.reverse()  # finest first
        if p6 is not None:
            levels.append(p6)
        return levels
