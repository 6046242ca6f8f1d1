"""Checks of the int8 converters' arguments, for ``kdlite.quant.int8``: each error names what the model is and what
was expected."""

from __future__ import annotations

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
