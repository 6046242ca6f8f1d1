"""Checks of the int8 converters' arguments, for ``kdlite.quant.int8``: each error names what the model is and what
was expected."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks as checks


def float32_model(value, who: str, token_ids: bool = True) -> nn.Module:
    """``value`` as a module whose floating-point parameters are all float32 (what the int8 converters accept),
    not already int8, and (``token_ids=False``, static quantization of float inputs) without an ``nn.Embedding``."""
    model = checks.module(value)
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        raise ValueError(f"{who} quantizes a float32 model; model already runs int8 kernels (from to_int8 or "
                         f"dynamic_int8): pass the float model it came from")
    if not token_ids and any(isinstance(m, nn.Embedding) for m in model.modules()):
        raise ValueError(f"{who} (static quantization of float inputs) cannot take {type(model).__name__}, whose "
                         f"nn.Embedding reads token ids; use dynamic_int8(model), int8 for a language model's Linears")
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(f"{who} quantizes a float32 model; model's weights are {sorted(map(str, dtypes))} "
                         f"(convert a copy first: copy.deepcopy(model).float())")
    return model


def untraceable(model: nn.Module, error: Exception) -> ValueError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(
        f"to_int8 cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {reason[:200]}). It "
        f"supports models whose forward is a fixed graph of layers, such as the book's MLP, CNN and ResNet "
        f"(plain Conv/Linear/BatchNorm/ReLU graphs), not forwards that branch or loop on their input as "
        f"nn.LSTM's does"
    )
