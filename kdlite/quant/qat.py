"""Simulated quantization of a whole model: BatchNorm folding, QAT layers, and post-training quantization.

``prepare_qat`` swaps every Conv2d and Linear for a layer that fake-quantizes its weight (symmetric, per channel)
and its input (unsigned, an ``ActQuant``), after folding BatchNorm into the convolutions; training it is QAT.
``quantize_ptq`` does the same with ranges from calibration and no training.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks as checks
from ..masks import copy_model, layer_mask, masked_like, remove_masks
from ._checks import range_method, renamed
from .affine import RANGES, fake_quantize, qparams
from .calibration import ActQuant, CalibrationData, calibrate


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d equal to ``bn(conv(x))`` in eval mode: with γ̃ = γ / sqrt(σ² + ε),
    W' = γ̃ · W (per output channel) and b' = γ̃ · (b − μ) + β. A pruned conv's W is W_orig ⊙ M; the folded conv
    keeps the mask M."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(
            f"expected (nn.Conv2d, nn.BatchNorm2d); got ({type(conv).__name__}, {type(bn).__name__})"
        )
    if bn.num_features != conv.out_channels or bn.running_mean is None:
        raise ValueError(
            f"bn must track running stats over conv's {conv.out_channels} output channels; got "
            f"num_features={bn.num_features}, track_running_stats={bn.track_running_stats}"
        )
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
    g = gamma / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = remove_masks(copy_model(conv))  # a pruned conv: fold W ⊙ M, then mask again (below)
    folded.weight.copy_(conv.weight * g.reshape(-1, 1, 1, 1))
    folded.bias = nn.Parameter(g * (bias - bn.running_mean) + beta)
    return masked_like(folded, conv)


def _fold_children(module: nn.Module) -> None:
    """Fold in place every conv followed by its BatchNorm: consecutive pairs inside an ``nn.Sequential``, and
    attributes named ``conv<k>`` / ``bn<k>`` (the book's ResNet); the BatchNorm becomes ``nn.Identity``."""
    children = dict(module.named_children())
    pairs = (
        list(zip(children, list(children)[1:], strict=False))
        if isinstance(module, nn.Sequential)
        else [
            (name, "bn" + name[4:])
            for name in children
            if name.startswith("conv") and "bn" + name[4:] in children
        ]
    )
    for conv_name, bn_name in pairs:
        conv, bn = children[conv_name], children[bn_name]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fold_batchnorm(conv, bn))
            setattr(module, bn_name, nn.Identity())
    for child in module.children():
        _fold_children(child)


def fold_all_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (CNN, ResNet, ...) with every conv–BatchNorm pair folded into one conv: consecutive in
    an ``nn.Sequential``, or attributes ``conv<k>`` / ``bn<k>`` of one module. A BatchNorm2d it cannot pair (other
    names, another order) stays, with a warning: fold it by hand with :func:`fold_batchnorm`."""
    model = copy_model(checks.module(model))
    _fold_children(model)
    left = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        warnings.warn(f"BatchNorm2d {', '.join(map(repr, left[:3]))}{', ...' * (len(left) > 3)} not folded: no Conv2d "
                      f"right before it in an nn.Sequential, nor a conv<k> / bn<k> pair; it stays a float BatchNorm "
                      f"(fold it by hand with fold_batchnorm(conv, bn))", stacklevel=checks.user_stacklevel())
    return model


def _fake_quant_weight(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Symmetric min/max fake quantization of a weight, per output channel (axis 0) or per tensor."""
    axis = 0 if per_channel else None
    scale, zero_point = qparams(w, bits, True, axis, check=False)  # no checks: no device sync at every step
    return fake_quantize(w, scale, zero_point, bits, True, axis, check=False)


def _add_quantizers(layer: nn.Module, bits: int, act_bits: int | None, per_channel: bool) -> None:
    """What QuantConv2d and QuantLinear add to their float layer: the weight's bits and an input ActQuant."""
    layer.bits, layer.per_channel = checks.bits(bits), checks.flag(per_channel, "per_channel")
    layer.act = ActQuant(bits if act_bits is None else act_bits)


class QuantConv2d(nn.Conv2d):
    """Conv2d on a fake-quantized input (``self.act``) with fake-quantized, symmetric weights (``bits``)."""

    def __init__(self, *args, bits: int = 8, act_bits: int | None = None, per_channel: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        _add_quantizers(self, bits, act_bits, per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(
            self.act(x), _fake_quant_weight(self.weight, self.bits, self.per_channel), self.bias
        )

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **kwargs) -> QuantConv2d:
        """A QuantConv2d with ``conv``'s hyperparameters, weights, device, dtype and mode; ``kwargs``: ``bits``,
        ``act_bits``, ``per_channel``."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        q.load_state_dict(conv.state_dict(), strict=False)
        return q.train(conv.training)


class QuantLinear(nn.Linear):
    """Linear on a fake-quantized input (``self.act``) with fake-quantized, symmetric weights (``bits``)."""

    def __init__(self, *args, bits: int = 8, act_bits: int | None = None, per_channel: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        _add_quantizers(self, bits, act_bits, per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act(x), _fake_quant_weight(self.weight, self.bits, self.per_channel), self.bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, **kwargs) -> QuantLinear:
        """A QuantLinear with ``linear``'s sizes, weights, device, dtype and mode; ``kwargs``: ``bits``,
        ``act_bits``, ``per_channel``."""
        q = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **kwargs,
        )
        q.load_state_dict(linear.state_dict(), strict=False)
        return q.train(linear.training)


def _swap(module: nn.Module, **kwargs) -> None:
    """Swap every Conv2d and Linear below ``module`` for its Quant layer; a pruned one keeps its mask."""
    for name, child in module.named_children():
        plain = remove_masks(copy_model(child)) if layer_mask(child) is not None else child
        if type(plain) is nn.Conv2d:
            setattr(module, name, masked_like(QuantConv2d.from_float(plain, **kwargs), child))
        elif type(plain) is nn.Linear:
            setattr(module, name, masked_like(QuantLinear.from_float(plain, **kwargs), child))
        else:
            _swap(child, **kwargs)


def prepare_qat(
    model: nn.Module, bits: int = 8, act_bits: int | None = None, per_channel: bool = True
) -> nn.Module:
    """A copy of ``model`` ready for quantization-aware training with ``kdlite.fit``: BatchNorm folded into
    the convolutions, every Conv2d/Linear swapped for a :class:`QuantConv2d`/:class:`QuantLinear` whose
    weights (``bits``, symmetric, per channel unless ``per_channel=False``) and inputs (``act_bits``,
    default ``bits``) are fake-quantized. The activation ranges start from the first training batch. A pruned
    layer keeps its mask (``W = W_orig ⊙ M``, then fake-quantized), so QAT fine-tuning keeps the pruned weights at
    zero."""
    bits, act_bits = checks.bits(bits), None if act_bits is None else checks.bits(act_bits, "act_bits")
    per_channel = checks.flag(per_channel, "per_channel")
    model = _check_float(checks.layers_of(model, (nn.Conv2d, nn.Linear), "prepare_qat", "nn.Conv2d and nn.Linear"))
    holder = nn.Sequential(fold_all_batchnorm(model))  # so that a layer given alone is swapped too
    _swap(holder, bits=bits, act_bits=act_bits, per_channel=per_channel)
    return holder[0]


def _check_float(model: nn.Module) -> nn.Module:
    done = [repr(name) for name, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    if done:
        shown = ", ".join(done[:3]) + ", ..." * (len(done) > 3)
        raise ValueError(f"model is already fake-quantized (its layers {shown} "
                         f"come from prepare_qat or quantize_ptq) and would keep their own bits: pass the float "
                         f"model, or strip_qat(model) to get it back")
    return model


def strip_qat(model: nn.Module) -> nn.Module:
    """A copy of a QAT model (from :func:`prepare_qat` or :func:`quantize_ptq`) with a plain Conv2d or Linear in
    place of each QuantConv2d or QuantLinear, holding its trained float weights: the fake quantizers are gone, the
    folded BatchNorm stays folded, a pruned layer keeps its mask. What :func:`to_int8` converts a trained QAT model
    from; other layers are copied unchanged."""
    holder = nn.Sequential(copy_model(checks.module(model)))  # so that a Quant layer given alone is swapped too
    _unswap(holder)
    return holder[0]


def _unswap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (QuantConv2d, QuantLinear)):
            layer = remove_masks(copy_model(child))  # a plain weight: W_orig ⊙ M where it was pruned
            layer.__class__ = nn.Conv2d if isinstance(child, QuantConv2d) else nn.Linear  # its float forward
            for attr in ("act", "bits", "per_channel"):  # what _add_quantizers added
                delattr(layer, attr)
            setattr(module, name, masked_like(layer, child))
        else:
            _unswap(child)


def quantize_ptq(
    model: nn.Module,
    data: CalibrationData | None = None,
    bits: int = 8,
    act_bits: int | None = None,
    per_channel: bool = True,
    num_batches: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
    *,
    calibration_data: CalibrationData | None = None,
) -> nn.Module:
    """A copy of ``model`` quantized after training, at any 2..16 bits (simulated): ``prepare_qat``, then
    ``calibrate`` on ``num_batches`` batches of ``data`` with ``method`` and ``percentile``; in eval mode, no
    training. (``calibration_data=`` is the old name of ``data``.)"""
    data = renamed(data, calibration_data, "data", "calibration_data")
    range_method(method, percentile, RANGES)
    model = prepare_qat(model, bits, act_bits, per_channel)
    return calibrate(model, data, num_batches, method, percentile).eval()
