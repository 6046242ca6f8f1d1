"""Quantization: affine integers, fake quantization, QAT, PTQ, k-means weight sharing; real int8 in ``int8``.

A real number x is stored as a b-bit integer q with a scale s > 0 and an integer zero point z:

    q = clamp(round(x / s) + z, q_min, q_max),        x̂ = s · (q − z).

Unsigned (asymmetric) codes use [q_min, q_max] = [0, 2^b − 1]; signed (symmetric, z = 0) codes use
[−2^(b−1), 2^(b−1) − 1]. Inside the representable range [s(q_min − z), s(q_max − z)] the round trip is off
by at most s/2 (plus float rounding: in float32 at 16 bits, the float's own precision is a visible
fraction of s). Integers are returned as ``torch.int32``, which holds every code from 2 to 16 bits, signed
or unsigned. Per-channel parameters (``axis`` given) are 1-D tensors, one entry per index of
``x.shape[axis]``.
"""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._checks import integer
from .int8 import CalibrationData, _check_finite, _inputs, to_int8

__all__ = [
    "ActQuant",
    "QuantConv2d",
    "QuantLinear",
    "SharedWeight",
    "StraightThrough",
    "calibrate",
    "dequantize",
    "fake_quantize",
    "fold_all_batchnorm",
    "fold_batchnorm",
    "kmeans_quantize",
    "prepare_qat",
    "qparams",
    "qrange",
    "scale_zero_point",
    "quantize",
    "quantize_ptq",
    "share_weights",
    "to_int8",
]


# --- checks
def _check_bits(bits) -> None:
    integer(bits, "bits", 2, 16, what="an int from 2 to 16")


def _check_float(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")


def _check_axis(axis, x: torch.Tensor) -> int | None:
    """``axis`` normalised to [0, ndim), or None."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"axis must be None or an int in [{-x.ndim}, {x.ndim}) for a tensor of shape "
            f"{tuple(x.shape)}; got {axis!r}"
        )
    return axis % x.ndim


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _param_tensor(value, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a tensor: a tensor is kept as it is; a number (or a list of them) becomes a CPU tensor."""
    if not isinstance(value, torch.Tensor):
        if value is None or isinstance(value, (bool, str, bytes)):
            raise TypeError(f"{name} must be a number or a tensor; got {type(value).__name__} {_short(value)}")
        try:
            value = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a number or a tensor; got {type(value).__name__} {_short(value)}"
            ) from None
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must hold real numbers; got a tensor of dtype {value.dtype}")
    return value


def _check_scale(scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``scale`` checked to be finite and > 0, then cast to ``dtype`` (None: kept) and checked again there."""
    if not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"scale must be finite and > 0; got {scale.detach().cpu().flatten()[:8].tolist()}")
    if dtype is None or dtype == scale.dtype:
        return scale
    cast = scale.to(dtype)
    if not bool(torch.isfinite(cast).all() and (cast > 0).all()):
        info, what = torch.finfo(dtype), "underflows to 0" if bool((cast == 0).any()) else "overflows to inf"
        raise ValueError(
            f"scale {scale.flatten()[:8].tolist()} {what} in {dtype}, the dtype it is used in (x's dtype; the "
            f"default dtype for integer q); use a scale in [{info.tiny * info.eps:.3g}, {info.max:.3g}] or a "
            f"wider floating dtype"
        )
    return cast


def _params(
    x: torch.Tensor, scale, zero_point, axis: int | None, bits: int | None = None, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check (scale, zero_point) and shape them to broadcast against ``x`` (per channel along ``axis``).

    A scale given as a number is used in ``x``'s floating dtype (the default dtype for integer ``x``); a scale
    given as a tensor keeps its own floating dtype.
    """
    if isinstance(scale, torch.Tensor):
        scale = _param_tensor(scale, "scale")
        scale = _check_scale(scale if scale.is_floating_point() else scale.float(), None)
    else:  # checked in float64 on the CPU, then in the dtype it is used in
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        scale = _check_scale(_param_tensor(scale, "scale", torch.float64), dtype)
    scale = scale.to(x.device)
    zero_point = _param_tensor(zero_point, "zero_point").to(x.device)
    channels = 1 if axis is None else x.shape[axis]
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if t.numel() not in (1, channels):
            expected = (
                "1 for a per-tensor call (axis=None; pass axis= for one per channel)"
                if axis is None
                else f"1 or {channels} (x of shape {tuple(x.shape)}, axis={axis})"
            )
            raise ValueError(f"{name} has {t.numel()} elements; expected {expected}")
    if not bool((zero_point == torch.round(zero_point)).all()):
        raise ValueError(f"zero_point must be integer-valued; got {zero_point.flatten()[:8].tolist()}")
    if bits is not None:
        qmin, qmax = qrange(bits, symmetric)
        if not bool(((zero_point >= qmin) & (zero_point <= qmax)).all()):
            raise ValueError(
                f"zero_point must lie in [{qmin}, {qmax}] for bits={bits}, symmetric={symmetric}; "
                f"got {zero_point.flatten()[:8].tolist()}"
            )
    return _per_channel(x, scale, zero_point, axis)


def _per_channel(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) reshaped to broadcast along ``axis`` of ``x`` (unchanged when ``axis`` is None)."""
    if axis is None:
        return scale, zero_point
    shape = [-1 if d == axis else 1 for d in range(x.ndim)]
    return scale.reshape(shape), zero_point.reshape(shape)


# --- the arithmetic
def qrange(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """(q_min, q_max): [−2^(b−1), 2^(b−1) − 1] signed (symmetric), [0, 2^b − 1] unsigned."""
    _check_bits(bits)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def scale_zero_point(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range [lo, hi] onto the integer grid.

    Asymmetric: the range is widened to contain 0, s = (hi − lo) / (q_max − q_min), z = round(q_min − lo / s).
    Symmetric: s = max(|lo|, |hi|) / (2^(b−1) − 1), z = 0: ±max land on ±(2^(b−1) − 1), the "restricted
    range"; the code −2^(b−1) stays legal in ``quantize`` but qparams never needs it, so −x quantizes to −q.
    A zero range gets the dtype's eps as its scale.
    """
    qmin, qmax = qrange(bits, symmetric)
    eps = torch.finfo(lo.dtype).eps
    if symmetric:
        scale = (torch.maximum(lo.abs(), hi.abs()) / qmax).clamp_min(eps)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(eps)
    zero_point = torch.round(qmin - lo / scale).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``x`` as a 2-D tensor with one row per channel (a single row when ``axis`` is None)."""
    return x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _minmax_range(rows, bits, symmetric, percentile):
    return rows.amin(1), rows.amax(1)


def _percentile_range(rows, bits, symmetric, percentile):
    """The (100 − p)-th and p-th percentiles of each row (nearest rank), which clip rare outliers."""
    ranked = rows.sort(1).values
    last = rows.shape[1] - 1
    return ranked[:, round((100 - percentile) / 100 * last)], ranked[:, round(percentile / 100 * last)]


def _histogram_range(rows, bits, symmetric, percentile, bins: int = 2048, steps: int = 100):
    """The clipping range that minimises the quantization MSE, searched on a histogram of each row.

    Candidates are the min/max range shrunk by f = 1/steps, 2/steps, ..., 1; a bin's error is counted at its
    centre, weighted by its count: MSE(f) ≈ Σ_bins n_i (c_i − x̂_f(c_i))². Ties go to the widest range.
    """
    los, his = [], []
    f = torch.linspace(1 / steps, 1, steps, device=rows.device, dtype=rows.dtype)
    for row in rows:
        lo, hi = row.min(), row.max()
        if lo == hi:
            los.append(lo), his.append(hi)
            continue
        counts = torch.histc(row, bins, lo.item(), hi.item())
        centres = lo + (hi - lo) * (torch.arange(bins, device=rows.device, dtype=rows.dtype) + 0.5) / bins
        lo_f, hi_f = f * lo.clamp(max=0), f * hi.clamp(min=0)
        s, z = scale_zero_point(lo_f, hi_f, bits, symmetric)
        qmin, qmax = qrange(bits, symmetric)
        s, z = s[:, None], z[:, None]
        err = ((torch.clamp(torch.round(centres / s) + z, qmin, qmax) - z) * s - centres).pow(2) @ counts
        best = steps - 1 - int(err.flip(0).argmin())
        los.append(lo_f[best]), his.append(hi_f[best])
    return torch.stack(los), torch.stack(his)


_RANGES = {"minmax": _minmax_range, "percentile": _percentile_range, "histogram": _histogram_range}


def _check_method(method, percentile) -> None:
    if method not in _RANGES:
        raise ValueError(f"method must be one of {sorted(_RANGES)}; got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 50 < percentile <= 100:
        raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")


def qparams(
    x: torch.Tensor,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) for ``x``: per tensor (0-d tensors) or per channel along ``axis`` (1-D tensors).

    The range [lo, hi] comes from ``method``: "minmax" (the observed min and max), "percentile" (the
    (100 − p)-th and p-th percentiles, p = ``percentile``) or "histogram" (the clip that minimises the
    quantization MSE on a 2048-bin histogram). Then, asymmetric: s = (hi − lo) / (2^b − 1) with lo ≤ 0 ≤ hi,
    z = round(−lo / s); symmetric: s = max(|lo|, |hi|) / (2^(b−1) − 1), z = 0. Scale has ``x``'s dtype,
    zero_point is int32.
    """
    _check_float(x, "x")
    _check_bits(bits)
    axis = _check_axis(axis, x)
    _check_method(method, percentile)
    if x.numel() == 0:
        raise ValueError(f"x must not be empty; got shape {tuple(x.shape)}")
    _check_finite(x, "x")
    return _qparams(x, bits, symmetric, axis, method, percentile)


def _qparams(
    x: torch.Tensor, bits: int, symmetric: bool, axis: int | None, method: str = "minmax", percentile: float = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`qparams` without the argument checks (no device sync): for the QAT weights at every step."""
    lo, hi = _RANGES[method](_rows(x.detach(), axis), bits, symmetric, percentile)
    scale, zero_point = scale_zero_point(lo, hi, bits, symmetric)
    return (scale[0], zero_point[0]) if axis is None else (scale, zero_point)


def _checked_args(
    x: torch.Tensor, scale, zero_point, bits: int, symmetric: bool, axis: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The argument checks of :func:`quantize` and :func:`fake_quantize`; (scale, zero_point) shaped for ``x``."""
    _check_float(x, "x")
    _check_bits(bits)
    return _params(x, scale, zero_point, _check_axis(axis, x), bits, symmetric)


def quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
) -> torch.Tensor:
    """q = clamp(round(x / s) + z, q_min, q_max) as an int32 tensor (``torch.round``: halves to even).

    ``x`` must be finite: an integer code has no NaN, so NaN or inf in ``x`` raises a ValueError."""
    scale, zero_point = _checked_args(x, scale, zero_point, bits, symmetric, axis)
    _check_finite(x, "x")
    return _codes(x.detach(), scale, zero_point, *qrange(bits, symmetric)).to(torch.int32)


def _codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """The integer codes clamp(round(x / s) + z, q_min, q_max), still in a floating dtype (NaN stays NaN)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def _values(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """The values s · (q − z) the codes stand for, in the scale's dtype."""
    return (q.to(scale.dtype) - zero_point.to(scale.dtype)) * scale


def dequantize(
    q: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    """x̂ = s · (q − z), in the scale's floating dtype."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor; got {type(q).__name__}")
    axis = _check_axis(axis, q)
    scale, zero_point = _params(q, scale, zero_point, axis)
    return _values(q, scale, zero_point)


class StraightThrough(torch.autograd.Function):
    """Forward: dequantize(quantize(x)), computed in float so that NaN stays NaN. Backward: the straight-through
    estimator, ∂x̂/∂x = 1 on [s(q_min − z), s(q_max − z)] and 0 outside it (the clamp's gradient; rounding
    counts as the identity). ``scale`` and ``zero_point`` come already shaped to broadcast against ``x``."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        ctx.save_for_backward((x >= scale * (qmin - zero_point)) & (x <= scale * (qmax - zero_point)))
        return _values(_codes(x, scale, zero_point, qmin, qmax), scale, zero_point).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
) -> torch.Tensor:
    """x̂ = s · (clamp(round(x / s) + z, q_min, q_max) − z) in float, differentiable by the straight-through
    estimator: the gradient passes unchanged where s(q_min − z) ≤ x ≤ s(q_max − z) and is zero elsewhere.

    NaN in ``x`` stays NaN and ±inf saturates, without a check: this runs at every QAT step, where a NaN loss
    is what ``kdlite.fit`` detects."""
    scale, zero_point = _checked_args(x, scale, zero_point, bits, symmetric, axis)
    return StraightThrough.apply(x, scale, zero_point, *qrange(bits, symmetric))


def _fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool, axis: int | None
) -> torch.Tensor:
    """:func:`fake_quantize` of a (scale, zero_point) made by ``scale_zero_point``, without the argument checks and
    their device syncs: the QAT layers call it at every training step."""
    scale, zero_point = _per_channel(x, scale, zero_point, axis)
    return StraightThrough.apply(x, scale, zero_point, *qrange(bits, symmetric))


# --- BatchNorm folding
@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d equal to ``bn(conv(x))`` in eval mode: with γ̃ = γ / sqrt(σ² + ε),
    W' = γ̃ · W (per output channel) and b' = γ̃ · (b − μ) + β."""
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
    folded = copy.deepcopy(conv)
    folded.weight.copy_(conv.weight * g.reshape(-1, 1, 1, 1))
    folded.bias = nn.Parameter(g * (bias - bn.running_mean) + beta)
    return folded


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
    """A copy of ``model`` (CNN, ResNet, ...) with every conv–BatchNorm pair folded into one conv."""
    model = copy.deepcopy(model)
    _fold_children(model)
    return model


# --- QAT and PTQ layers
class ActQuant(nn.Module):
    """Fake-quantizes activations (unsigned, per tensor) over a range [lo, hi] tracked by an observer.

    Training: exponential moving average of each batch's min and max (lo ← lo + m (min(x) − lo)).
    Calibration (``observing = True``, set by :func:`calibrate`): the running min and max over all batches,
    with quantization off so that later layers see float inputs. Eval: fake-quantizes with the stored range.
    """

    def __init__(self, bits: int = 8, momentum: float = 0.01):
        super().__init__()
        _check_bits(bits)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 < momentum <= 1:
            raise ValueError(f"momentum must be a number in (0, 1]; got {momentum!r}")
        self.bits, self.momentum, self.observing = bits, momentum, False
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))

    def reset(self) -> None:
        """Forget the observed range: the next batch (training) or calibration starts it afresh."""
        self.lo.fill_(float("inf")), self.hi.fill_(float("-inf"))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min().to(self.lo.dtype), x.max().to(self.hi.dtype)
        if self.observing:
            self.lo.copy_(torch.minimum(self.lo, lo)), self.hi.copy_(torch.maximum(self.hi, hi))
        else:
            fresh = torch.isinf(self.lo)
            self.lo.copy_(torch.where(fresh, lo, self.lo + self.momentum * (lo - self.lo)))
            self.hi.copy_(torch.where(fresh, hi, self.hi + self.momentum * (hi - self.hi)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.observing:
            self._observe(x)
        if self.observing:
            return x
        if not bool(torch.isfinite(self.lo) & torch.isfinite(self.hi)):  # the one device sync of a step
            raise self._range_error()
        return _fake_quantize(x, *scale_zero_point(self.lo, self.hi, self.bits, False), self.bits, False, None)

    def _range_error(self) -> Exception:
        lo, hi = self.lo.item(), self.hi.item()
        if lo == float("inf") and hi == float("-inf"):
            return RuntimeError("ActQuant has no range yet: run calibrate(model, data) or train the model first")
        return ValueError(
            f"ActQuant's range [lo, hi] = [{lo}, {hi}] is not finite: the inputs it observed (in training or "
            f"calibration) contained NaN or inf; call reset() and observe finite inputs"
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, lo={self.lo.item():.4g}, hi={self.hi.item():.4g}"


def _fake_quant_weight(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Symmetric min/max fake quantization of a weight, per output channel (axis 0) or per tensor."""
    axis = 0 if per_channel else None
    scale, zero_point = _qparams(w, bits, True, axis)  # no checks: no device sync at every step
    return _fake_quantize(w, scale, zero_point, bits, True, axis)


def _add_quantizers(layer: nn.Module, bits: int, act_bits: int | None, per_channel: bool) -> None:
    """What QuantConv2d and QuantLinear add to their float layer: the weight's bits and an input ActQuant."""
    _check_bits(bits)
    layer.bits, layer.per_channel = bits, per_channel
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
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            setattr(module, name, QuantConv2d.from_float(child, **kwargs))
        elif type(child) is nn.Linear:
            setattr(module, name, QuantLinear.from_float(child, **kwargs))
        else:
            _swap(child, **kwargs)


def prepare_qat(
    model: nn.Module, bits: int = 8, act_bits: int | None = None, per_channel: bool = True
) -> nn.Module:
    """A copy of ``model`` ready for quantization-aware training with ``kdlite.fit``: BatchNorm folded into
    the convolutions, every Conv2d/Linear swapped for a :class:`QuantConv2d`/:class:`QuantLinear` whose
    weights (``bits``, symmetric, per channel unless ``per_channel=False``) and inputs (``act_bits``,
    default ``bits``) are fake-quantized. The activation ranges start from the first training batch."""
    _check_bits(bits)
    if act_bits is not None:
        _check_bits(act_bits)
    model = fold_all_batchnorm(model)
    _swap(model, bits=bits, act_bits=act_bits, per_channel=per_channel)
    return model


def calibrate(
    model: nn.Module,
    data: CalibrationData,
    num_batches: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
) -> nn.Module:
    """Set the range [lo, hi] of every :class:`ActQuant` in ``model`` from its float inputs over the first
    ``num_batches`` batches of ``data`` (a tensor, a TensorDataset or an iterable of batches). In place.

    ``method`` as in :func:`qparams`: "minmax" (the running min and max), "percentile" (clip the rarest
    ``100 - percentile`` % at each end) or "histogram" (the clip with the least quantization MSE). The last two
    keep every observed input in memory until the ranges are set. NaN or inf in ``data``, or in the activations
    it produces, raises a ValueError.
    """
    return _calibrate(model, data, num_batches, method, percentile, "data")


@torch.no_grad()
def _calibrate(model: nn.Module, data, num_batches: int, method: str, percentile: float, name: str) -> nn.Module:
    """:func:`calibrate`, with ``name`` the argument ``data`` came in as (for the messages)."""
    _check_method(method, percentile)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    quants = [m for m in model.modules() if isinstance(m, ActQuant)]
    if not quants:
        raise ValueError("model has no ActQuant layers to calibrate; expected a model from prepare_qat")
    device = next(model.parameters()).device
    seen: dict[ActQuant, list[torch.Tensor]] = {q: [] for q in quants}
    hooks = [] if method == "minmax" else [
        q.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach().flatten())) for q in quants
    ]
    was_training = model.training
    model.eval()
    for q in quants:
        q.reset()
        q.observing = True
    try:
        for x in _inputs(data, num_batches, device, name):
            model(x)
    finally:
        for q in quants:
            q.observing = False
        for h in hooks:
            h.remove()
        model.train(was_training)
    _check_ranges(model)
    if method != "minmax":
        for q in quants:
            if seen[q]:  # an ActQuant that the forward pass skips keeps no range
                lo, hi = _RANGES[method](torch.cat(seen[q])[None].float(), q.bits, False, percentile)
                q.lo.fill_(lo.item()), q.hi.fill_(hi.item())
    return model


def _check_ranges(model: nn.Module) -> None:
    """Raise if calibration gave an ActQuant a NaN or infinite range (its inputs held NaN or inf)."""
    for name, q in model.named_modules():
        if isinstance(q, ActQuant) and not (q.lo.item() == float("inf") and q.hi.item() == float("-inf")):
            if not bool(torch.isfinite(q.lo) & torch.isfinite(q.hi)):
                raise ValueError(
                    f"calibration gave the ActQuant {name!r} the range [{q.lo.item()}, {q.hi.item()}]: the "
                    f"activations there contain NaN or inf although the calibration inputs are finite; check "
                    f"the model's weights"
                )


def quantize_ptq(
    model: nn.Module,
    calibration_data: CalibrationData,
    bits: int = 8,
    act_bits: int | None = None,
    per_channel: bool = True,
    num_batches: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
) -> nn.Module:
    """Simulated post-training quantization at any 2..16 bits: ``prepare_qat``, then ``calibrate`` on
    ``num_batches`` batches with ``method`` and ``percentile``; returned in eval mode, no training."""
    _check_method(method, percentile)
    model = prepare_qat(model, bits, act_bits, per_channel)
    return _calibrate(model, calibration_data, num_batches, method, percentile, "calibration_data").eval()


# --- k-means sharing
@torch.no_grad()
def kmeans_quantize(weight: torch.Tensor, bits: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Compression's weight sharing (Han et al. 2016): 1-D k-means with k = 2^b clusters.

    Centroids start evenly spaced between min(W) and max(W) (Han et al.'s linear initialisation); then Lloyd's
    iterations: label_i = argmin_k |w_i − c_k|, c_k = mean of its weights (an empty cluster keeps its
    centroid), until no label changes or ``iters`` rounds. Deterministic. Returns ``(centroids (2^b,),
    labels)`` with ``labels`` int64 of ``weight``'s shape: W ≈ centroids[labels].
    """
    _check_float(weight, "weight")
    _check_bits(bits)
    if weight.numel() == 0:
        raise ValueError("weight must not be empty")
    iters = integer(iters, "iters", 1)
    _check_finite(weight, "weight")
    w = weight.detach().reshape(-1).double()
    centroids = torch.linspace(w.min().item(), w.max().item(), 2**bits, dtype=torch.float64, device=w.device)
    labels = None
    for _ in range(iters):
        centroids = centroids.sort().values
        new = torch.bucketize(w, (centroids[1:] + centroids[:-1]) / 2)  # nearest centroid in 1-D
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=centroids.numel())
        sums = torch.bincount(labels, weights=w, minlength=centroids.numel())
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids.to(weight.dtype), labels.reshape(weight.shape)


class SharedWeight(nn.Module):
    """A parametrization W = centroids[labels]: training it fine-tunes the centroids, and autograd gives each
    centroid the sum of the gradients of the weights that share it, ∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂W_i."""

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())
        self.register_buffer("labels", labels.clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.labels]


def share_weights(model: nn.Module, bits: int, iters: int = 50) -> nn.Module:
    """A copy of ``model`` whose Conv2d and Linear weights are k-means shared (``kmeans_quantize`` per layer)
    through a :class:`SharedWeight` parametrization; ``kdlite.fit(model, ...)`` then fine-tunes the centroids.
    ``torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")`` bakes them in."""
    _check_bits(bits)
    model = copy.deepcopy(model)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _check_finite(m.weight, f"the weight of layer {name!r}")
            centroids, labels = kmeans_quantize(m.weight, bits, iters)
            parametrize.register_parametrization(m, "weight", SharedWeight(centroids, labels), unsafe=True)
            m.parametrizations.weight.original.requires_grad_(False)
    return model
