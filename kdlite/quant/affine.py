"""The affine map between reals and b-bit integers, and its straight-through gradient.

    q = clamp(round(x / s) + z, q_min, q_max),        x̂ = s · (q − z).

Scale and zero point come from a range [lo, hi] (``scale_zero_point``), estimated from data by min/max, a
percentile or the histogram clip with the least error (``qparams``). ``fake_quantize`` is x̂ with the
straight-through estimator as its gradient (``StraightThrough``): what QAT trains through.
"""

from __future__ import annotations

import torch

from .. import _checks as checks
from ._checks import given_qparams, grid_axis, range_method


def per_channel(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) reshaped to broadcast along ``axis`` of ``x`` (unchanged when ``axis`` is None)."""
    if axis is None:
        return scale, zero_point
    shape = [-1 if d == axis else 1 for d in range(x.ndim)]
    return scale.reshape(shape), zero_point.reshape(shape)


def qrange(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """(q_min, q_max): [−2^(b−1), 2^(b−1) − 1] signed (symmetric), [0, 2^b − 1] unsigned."""
    bits, symmetric = checks.bits(bits), checks.flag(symmetric, "symmetric")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def scale_zero_point(
    lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range [lo, hi] (tensors, or numbers) onto the integer grid.

    Asymmetric: the range is widened to contain 0, s = (hi − lo) / (q_max − q_min), z = round(q_min − lo / s).
    Symmetric: s = max(|lo|, |hi|) / (2^(b−1) − 1), z = 0: ±max land on ±(2^(b−1) − 1), the "restricted
    range"; the code −2^(b−1) stays legal in ``quantize`` but qparams never needs it, so −x quantizes to −q.
    A zero range gets the dtype's eps as its scale.
    """
    lo, hi = (v if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for v in (lo, hi))
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


RANGES = {"minmax": _minmax_range, "percentile": _percentile_range, "histogram": _histogram_range}
"""The range estimators by name: ``RANGES[method](rows, bits, symmetric, percentile) -> (lo, hi)``, one per row."""


def qparams(
    x: torch.Tensor,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
    *,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) for ``x``: per tensor (0-d tensors) or per channel along ``axis`` (1-D tensors).

    The range [lo, hi] comes from ``method``: "minmax" (the observed min and max), "percentile" (the
    (100 − p)-th and p-th percentiles, p = ``percentile``) or "histogram" (the clip that minimises the
    quantization MSE on a 2048-bin histogram). Then, asymmetric: s = (hi − lo) / (2^b − 1) with lo ≤ 0 ≤ hi,
    z = round(−lo / s); symmetric: s = max(|lo|, |hi|) / (2^(b−1) − 1), z = 0. Scale has ``x``'s dtype,
    zero_point is int32. ``check=False`` skips the argument checks and their device syncs (the QAT layers, at
    every step, on their own weights).
    """
    if check:
        x, bits, axis = checks.tensor(x, "x", nonempty=True), checks.bits(bits), grid_axis(axis, x)
        symmetric = checks.flag(symmetric, "symmetric")
        range_method(method, percentile, RANGES), checks.finite(x, "x")
    lo, hi = RANGES[method](_rows(x.detach(), axis), bits, symmetric, percentile)
    scale, zero_point = scale_zero_point(lo, hi, bits, symmetric)
    return (scale[0], zero_point[0]) if axis is None else (scale, zero_point)


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
    x, bits, axis = checks.tensor(x, "x"), checks.bits(bits), grid_axis(axis, x)
    symmetric = checks.flag(symmetric, "symmetric")
    scale, zero_point = per_channel(x, *given_qparams(x, scale, zero_point, axis, bits, symmetric), axis)
    checks.finite(x, "x")
    qmin, qmax = qrange(bits, symmetric)
    return torch.clamp(torch.round(x.detach() / scale) + zero_point, qmin, qmax).to(torch.int32)


def dequantize(
    q: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    """x̂ = s · (q − z), in the scale's floating dtype."""
    q = checks.tensor(q, "q", floating=False)
    axis = grid_axis(axis, q)
    scale, zero_point = per_channel(q, *given_qparams(q, scale, zero_point, axis), axis)
    return (q.to(scale.dtype) - zero_point.to(scale.dtype)) * scale


class StraightThrough(torch.autograd.Function):
    """Forward: dequantize(quantize(x)), computed in float so that NaN stays NaN. Backward: the straight-through
    estimator, ∂x̂/∂x = 1 on [s(q_min − z), s(q_max − z)] and 0 outside it (the clamp's gradient; rounding
    counts as the identity). ``scale`` and ``zero_point`` come already shaped to broadcast against ``x``."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        ctx.save_for_backward((x >= scale * (qmin - zero_point)) & (x <= scale * (qmax - zero_point)))
        q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)  # quantize, in float: NaN stays NaN
        return ((q.to(scale.dtype) - zero_point.to(scale.dtype)) * scale).to(x.dtype)  # dequantize

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
    *,
    check: bool = True,
) -> torch.Tensor:
    """x̂ = s · (clamp(round(x / s) + z, q_min, q_max) − z) in float, differentiable by the straight-through
    estimator: the gradient passes unchanged where s(q_min − z) ≤ x ≤ s(q_max − z) and is zero elsewhere. It
    flows to ``x`` only: a ``scale`` that requires grad gets none (a learned step size, as in LSQ, is not this).

    NaN in ``x`` stays NaN and ±inf saturates, without a check: this runs at every QAT step, where a NaN loss
    is what ``kdlite.fit`` detects. ``check=False`` also skips the checks of the arguments (and their device
    syncs), for the QAT layers' (scale, zero_point) tensors made by ``qparams`` or ``scale_zero_point``."""
    if check:
        x, bits, axis = checks.tensor(x, "x"), checks.bits(bits), grid_axis(axis, x)
        symmetric = checks.flag(symmetric, "symmetric")
        scale, zero_point = given_qparams(x, scale, zero_point, axis, bits, symmetric)
    scale, zero_point = per_channel(x, scale, zero_point, axis)
    return StraightThrough.apply(x, scale, zero_point, *qrange(bits, symmetric))
