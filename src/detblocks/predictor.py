"""Prediction heads: one convolution (:class:`ConvPredictor`) or one fully connected
layer (:class:`FCPredictor`), optionally followed by an activation.

Both keep GluonCV's constructor arguments. The layer itself is the attribute
``.predictor`` (an :class:`torch.nn.Conv2d` / :class:`torch.nn.Linear`), so its
``weight`` and ``bias`` can be read, set or loaded directly; the activation is
``.activation`` (``None`` when there is none).

With ``in_channels=0`` (``in_features=0``) the input size is inferred at the
first call, as in GluonCV: ``.predictor`` starts as a lazy layer and becomes a
plain ``Conv2d``/``Linear`` after that call. Run one batch through the module
before handing it to ``torch.compile``, ``torch.export`` or an optimizer.

Initialisation: weights Xavier-uniform with bound ``sqrt(4 / (fan_in + fan_out))``
(MXNet's ``Xavier(magnitude=2)``, which GluonCV gave its conv predictor), bias
zero. GluonCV's ``FCPredictor`` left the weights to the network's initializer;
here it uses the same rule as ``ConvPredictor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from detblocks._checks import check_bool, check_float, check_number, shape_str

__all__ = ["ConvPredictor", "FCPredictor", "ACTIVATIONS"]

#: GluonCV's activation names (MXNet ``act_type``) and the torch module each stands for.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softrelu": nn.Softplus,  # log(1 + exp(x))
    "softsign": nn.Softsign,
}

# MXNet Xavier(magnitude=2, factor_type='avg', rnd_type='uniform'): U(-b, b) with
# b = sqrt(magnitude / ((fan_in + fan_out) / 2)) = sqrt(4 / (fan_in + fan_out)).
_XAVIER_MAGNITUDE = 2.0


def _xavier_bound(weight: Tensor) -> float:
    """Bound of GluonCV's predictor init for a conv ``(O, I, kh, kw)`` or linear ``(O, I)`` weight."""
    receptive = math.prod(weight.shape[2:])  # 1 for a linear layer
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(_XAVIER_MAGNITUDE / ((fan_in + fan_out) / 2.0))


def _init_predictor(layer: nn.Conv2d | nn.Linear) -> None:
    with torch.no_grad():
        bound = _xavier_bound(layer.weight)
        layer.weight.uniform_(-bound, bound)
        if layer.bias is not None:
            layer.bias.zero_()


class _Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the predictor initialisation."""

    def reset_parameters(self) -> None:
        _init_predictor(self)


class _LazyConv2d(nn.LazyConv2d):
    """``nn.LazyConv2d`` that becomes a :class:`_Conv2d` at the first call."""

    cls_to_become = _Conv2d  # type: ignore[assignment]

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_channels != 0:
            _init_predictor(self)


class _Linear(nn.Linear):
    """``nn.Linear`` with the predictor initialisation."""

    def reset_parameters(self) -> None:
        _init_predictor(self)


class _LazyLinear(nn.LazyLinear):
    """``nn.LazyLinear`` that becomes a :class:`_Linear` at the first call."""

    cls_to_become = _Linear  # type: ignore[assignment]

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _init_predictor(self)


def _activation(activation: object) -> nn.Module | Callable[[Tensor], Tensor] | None:
    """GluonCV name, module instance, module class or callable -> what forward applies."""
    if activation is None:
        return None
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a torch module, got {activation!r}"
            )
        return ACTIVATIONS[key]()
    if isinstance(activation, type):
        if issubclass(activation, nn.Module):
            return activation()
        raise TypeError(
            f"activation must be a name, an nn.Module or a callable, got the class {activation.__name__}"
        )
    if isinstance(activation, nn.Module) or callable(activation):
        return activation  # type: ignore[return-value]
    raise TypeError(f"activation must be a name, an nn.Module or a callable, got {type(activation).__name__}")


def _pair(name: str, value: object, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= low``."""
    vals = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(vals, (tuple, list)) or len(vals) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {value!r}")
    for v in vals:
        check_number(name, v, low=low, integer=True)
    return int(vals[0]), int(vals[1])


class ConvPredictor(nn.Module):
    """Convolutional predictor: one convolution, then the optional activation.

    Used for class scores (one channel per class and anchor) or box offsets
    (four channels per anchor) on a feature map.

    Args:
        num_channel: number of output channels.
        kernel: kernel size ``(kh, kw)`` (or one int).
        pad: zero padding ``(ph, pw)`` (or one int).
        stride: stride ``(sh, sw)`` (or one int).
        activation: ``None``, one of GluonCV's names (``'relu'``, ``'sigmoid'``,
            ``'tanh'``, ``'softrelu'`` = softplus, ``'softsign'``), an ``nn.Module``
            (instance or class) or a callable on tensors.
        use_bias: whether the convolution has a bias.
        in_channels: number of input channels; ``0`` infers it at the first call.

    Attributes:
        predictor (nn.Conv2d): the convolution (set its ``weight``/``bias`` to load weights).
        activation (nn.Module | Callable | None): applied after the convolution.

    Shape:
        x (Tensor[B, C, H, W]) -> Tensor[B, num_channel, H', W'] with
        ``H' = (H + 2 * ph - kh) // sh + 1`` (same for W).

    Example:
        >>> import torch
        >>> from detblocks.predictor import ConvPredictor
        >>> head = ConvPredictor(num_channel=12)          # in_channels inferred
        >>> head(torch.zeros(2, 8, 5, 7)).shape
        torch.Size([2, 12, 5, 7])
        >>> head.predictor.weight.shape
        torch.Size([12, 8, 3, 3])
    """

    def __init__(
        self,
        num_channel: int,
        kernel: int | tuple[int, int] = (3, 3),
        pad: int | tuple[int, int] = (1, 1),
        stride: int | tuple[int, int] = (1, 1),
        activation: str | nn.Module | Callable[[Tensor], Tensor] | None = None,
        use_bias: bool = True,
        in_channels: int = 0,
    ) -> None:
        super().__init__()
        check_number("num_channel", num_channel, low=1, integer=True)
        kernel_ = _pair("kernel", kernel, 1)
        pad_ = _pair("pad", pad, 0)
        stride_ = _pair("stride", stride, 1)
        check_bool("use_bias", use_bias)
        check_number("in_channels", in_channels, low=0, integer=True)
        conv_kwargs = {"kernel_size": kernel_, "stride": stride_, "padding": pad_, "bias": use_bias}
        self.predictor: nn.Conv2d
        if in_channels == 0:
            self.predictor = _LazyConv2d(num_channel, **conv_kwargs)
        else:
            self.predictor = _Conv2d(in_channels, num_channel, **conv_kwargs)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C, H, W]) -> Tensor[B, num_channel, H', W']."""
        check_float("x", x)
        if x.dim() != 4:
            raise ValueError(f"x must be (B, C, H, W), got shape {shape_str(x)}")
        expected = self.predictor.in_channels
        if expected and x.shape[1] != expected:  # 0 while the lazy layer waits for its first call
            raise ValueError(f"x must have C = {expected} (in_channels) channels, got shape {shape_str(x)}")
        _check_param_dtype(x, self.predictor)
        y = self.predictor(x)
        return y if self.activation is None else self.activation(y)


def _check_param_dtype(x: Tensor, layer: nn.Module) -> None:
    """x must have the dtype of the layer's weight, unless autocast converts it."""
    dtype = layer.weight.dtype
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"x must have the dtype of the predictor's parameters ({dtype}), got {x.dtype}: "
            f"convert the module (.to({x.dtype})) or the input (.to({dtype}))"
        )


class FCPredictor(nn.Module):
    """Fully connected predictor: flattens everything after the batch axis, then one
    linear layer and the optional activation.

    Args:
        num_output: number of outputs.
        activation: as in :class:`ConvPredictor`.
        use_bias: whether the linear layer has a bias.
        in_features: flattened input size; ``0`` infers it at the first call.

    Attributes:
        predictor (nn.Linear): the linear layer (set its ``weight``/``bias`` to load weights).
        activation (nn.Module | Callable | None): applied after the linear layer.

    Shape:
        x (Tensor[B, *]) -> Tensor[B, num_output].

    Example:
        >>> import torch
        >>> from detblocks.predictor import FCPredictor
        >>> head = FCPredictor(num_output=7, activation="tanh")
        >>> head(torch.zeros(3, 8, 2, 2)).shape
        torch.Size([3, 7])
        >>> head.predictor.in_features
        32
    """

    def __init__(
        self,
        num_output: int,
        activation: str | nn.Module | Callable[[Tensor], Tensor] | None = None,
        use_bias: bool = True,
        in_features: int = 0,
    ) -> None:
        super().__init__()
        check_number("num_output", num_output, low=1, integer=True)
        check_bool("use_bias", use_bias)
        check_number("in_features", in_features, low=0, integer=True)
        self.predictor: nn.Linear
        if in_features == 0:
            self.predictor = _LazyLinear(num_output, bias=use_bias)
        else:
            self.predictor = _Linear(in_features, num_output, bias=use_bias)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, *]) -> Tensor[B, num_output]."""
        check_float("x", x)
        if x.dim() < 2:
            raise ValueError(
                f"x must have a batch axis and at least one more, (B, *), got shape {shape_str(x)}"
            )
        x = x.flatten(1)  # (B, F)
        expected = self.predictor.in_features
        if expected and x.shape[1] != expected:  # 0 while the lazy layer waits for its first call
            raise ValueError(
                f"x must flatten to {expected} (in_features) values per sample, got {x.shape[1]} "
                f"(flattened shape {shape_str(x)})"
            )
        _check_param_dtype(x, self.predictor)
        y = self.predictor(x)
        return y if self.activation is None else self.activation(y)
