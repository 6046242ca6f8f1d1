"""Checks of ``kdlite.quant``'s own arguments: the quantization grid's axis, scale and zero point (for
``kdlite.quant.affine``), and the models the int8 converters take (for ``kdlite.quant.int8``). Each error names
the argument or the model, what was given and what was expected."""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import nn

from .. import _checks as checks
from ..device import runs_int8


def float32_model(value, who: str, token_ids: bool = True) -> nn.Module:
    """``value`` as a module whose floating-point parameters are all float32 (what the int8 converters accept),
    not already int8, and (``token_ids=False``, static quantization of float inputs) without an ``nn.Embedding``."""
    model = checks.module(value)
    if any(runs_int8(m) for m in model.modules()):
        raise ValueError(f"{who} quantizes a float32 model; model already runs int8 kernels (from to_int8 or "
                         f"dynamic_int8): pass the float model it came from")
    if not token_ids and any(isinstance(m, nn.Embedding) for m in model.modules()):
        raise ValueError(f"{who} (static quantization: float inputs at every layer) cannot take "
                         f"{type(model).__name__}, whose nn.Embedding looks up integer ids; use dynamic_int8(model), "
                         f"int8 for a language model's Linears")
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(f"{who} quantizes a float32 model; model's weights are {sorted(map(str, dtypes))} "
                         f"(convert a copy first: copy.deepcopy(model).float())")
    return model


def linears_to_swap(model: nn.Module) -> None:
    """``dynamic_int8`` swaps a model's ``nn.Linear`` layers (exactly that type): warn if there are none."""
    if not any(type(m) is nn.Linear for m in model.modules()):
        warnings.warn(f"dynamic_int8 found no nn.Linear in {type(model).__name__}: the copy stays float32 "
                      f"(dynamic_int8 quantizes nn.Linear layers only)", stacklevel=3)


def untraceable(model: nn.Module, error: Exception) -> ValueError:
    """The error for a model ``torch.fx`` cannot trace, with the tracer's own reason, cut to one line."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(
        f"to_int8 cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {reason[:200]}). It "
        f"supports models whose forward is a fixed graph of layers, such as the book's MLP, CNN and ResNet "
        f"(plain Conv/Linear/BatchNorm/ReLU graphs), not forwards that branch or loop on their input as "
        f"nn.LSTM's does"
    )


def grid_axis(axis, x: torch.Tensor) -> int | None:
    """``axis`` normalised to [0, ndim), or None."""
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, numbers.Integral)
                             or not -x.ndim <= axis < x.ndim):
        raise ValueError(f"axis must be None or an int in [{-x.ndim}, {x.ndim}) for a tensor of shape "
                         f"{tuple(x.shape)}; got {axis!r}")
    return None if axis is None else int(axis) % x.ndim


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _real_tensor(value, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a tensor: a tensor is kept as it is; a number (or a list of them) becomes a CPU tensor."""
    if not isinstance(value, torch.Tensor):
        wrong = TypeError(f"{name} must be a number or a tensor; got {type(value).__name__} {_short(value)}")
        if value is None or isinstance(value, (bool, str, bytes)):
            raise wrong
        try:
            value = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise wrong from None
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must hold real numbers; got a tensor of dtype {value.dtype}")
    return value


def _positive_scale(scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``scale`` checked to be finite and > 0, then cast to ``dtype`` (None: kept) and checked again there."""
    if not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"scale must be finite and > 0; got {scale.detach().cpu().flatten()[:8].tolist()}")
    cast = scale if dtype is None else scale.to(dtype)
    if not bool(torch.isfinite(cast).all() and (cast > 0).all()):
        info, what = torch.finfo(dtype), "underflows to 0" if bool((cast == 0).any()) else "overflows to inf"
        raise ValueError(f"scale {scale.flatten()[:8].tolist()} {what} in {dtype}, the dtype it is used in (x's "
                         f"dtype; the default dtype for integer q); use a scale in [{info.tiny * info.eps:.3g}, "
                         f"{info.max:.3g}] or a wider floating dtype")
    return cast


def given_qparams(x: torch.Tensor, scale, zero_point, axis: int | None, bits: int | None = None,
                  symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) as tensors on ``x``'s device, checked: finite scale > 0, integer zero points in the
    b-bit range, one value or one per channel along ``axis``. A scale given as a number is used in ``x``'s
    floating dtype (the default dtype for integer ``x``); a scale given as a tensor keeps its floating dtype."""
    if isinstance(scale, torch.Tensor):
        scale = _real_tensor(scale, "scale")
        scale = _positive_scale(scale if scale.is_floating_point() else scale.float(), None)
    else:  # checked in float64 on the CPU, then in the dtype it is used in
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        scale = _positive_scale(_real_tensor(scale, "scale", torch.float64), dtype)
    scale, zero_point = scale.to(x.device), _real_tensor(zero_point, "zero_point").to(x.device)
    channels = 1 if axis is None else x.shape[axis]
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if t.numel() not in (1, channels):
            expected = ("1 for a per-tensor call (axis=None; pass axis= for one per channel)" if axis is None
                        else f"1 or {channels} (x of shape {tuple(x.shape)}, axis={axis})")
            raise ValueError(f"{name} has {t.numel()} elements; expected {expected}")
    if not bool((zero_point == torch.round(zero_point)).all()):
        raise ValueError(f"zero_point must be integer-valued; got {zero_point.flatten()[:8].tolist()}")
    if symmetric and bool((zero_point != 0).any()):
        raise ValueError(f"zero_point must be 0 when symmetric=True (the grid is centred on 0); got "
                         f"{zero_point.flatten()[:8].tolist()}: pass symmetric=False for an asymmetric grid")
    if bits is not None:
        qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
        if not bool(((zero_point >= qmin) & (zero_point <= qmax)).all()):
            raise ValueError(f"zero_point must lie in [{qmin}, {qmax}] for bits={bits}, symmetric={symmetric}; "
                             f"got {zero_point.flatten()[:8].tolist()}")
    return scale, zero_point


def range_method(method, percentile, options) -> None:
    """A range estimator's name among ``options``, and its percentile in (50, 100]."""
    if method not in options:
        raise ValueError(f"method must be one of {sorted(options)}; got {method!r}")
    checks.real(percentile, "percentile", 50, 100)


def renamed(value, old_value, name: str, old_name: str):
    """An argument renamed by the API rule (one name for data): ``old_name=`` works, with a DeprecationWarning."""
    if (value is None) == (old_value is None):
        raise TypeError(f"give {name} (the data to calibrate on) once ({old_name} is its old name); got "
                        f"{'neither' if value is None else 'both'}")
    if old_value is not None:
        warnings.warn(f"{old_name}= is now called {name}=", DeprecationWarning, stacklevel=3)
    return old_value if value is None else value


# --- distillation, for ``kdlite.distill``
