"""The affine map between reals and b-bit integers, and its straight-through gradient.

    q = clamp(round(x / s) + z, q_min, q_max),        x̂ = s · (q − z).

Scale and zero point come from a range [lo, hi] (``scale_zero_point``), estimated from data by min/max, a
percentile or the histogram clip with the least error (``qparams``). ``fake_quantize`` is x̂ with the
straight-through estimator as its gradient (``StraightThrough``): what QAT trains through.
"""

from __future__ import annotations

import numbers

import torch

from .._checks import finite, integer


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
    finite(x, "x")
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
    finite(x, "x")
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
