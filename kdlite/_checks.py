"""Argument checks, one line each at the top of a public function, so that its body can be its formula.

Every check raises an error that names the argument, what was given and what was expected. NumPy scalars count
as the Python numbers they stand for (``numpy.int64(3)`` is an int, ``numpy.float32(0.5)`` a real number).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn


def integer(value, name: str, minimum: int = 0, maximum: int | None = None, what: str | None = None) -> int:
    """``value`` as an ``int`` in [minimum, maximum]; ``what`` replaces "a positive int" in the message."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        words = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {what or words}; got {value!r}")
    return int(value)


def real(value, name: str, low: float = -math.inf, high: float = math.inf, what: str | None = None) -> float:
    """``value`` as a finite ``float`` in [low, high]; a 1-element tensor counts as its number."""
    if hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ValueError(f"{name} must be {what or f'a finite number in [{low:g}, {high:g}]'}; got {value!r}")
    return float(value)


def fraction(value, name: str, what: str = "of weights to prune") -> float:
    """``value`` as a ``float`` in [0, 1): the fraction of something to remove."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1  # NaN fails
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction {what}); got {value!r}")
    return float(value)


def module(value, name: str = "model") -> nn.Module:
    """``value`` if it is a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(value).__name__}")
    return value


def finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or inf (one device sync: for one-off calls, not for every training step)."""
    if not bool(torch.isfinite(x).all()):
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite; got {nan} NaN and {inf} inf values (shape {tuple(x.shape)})")
