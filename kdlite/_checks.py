"""Argument checks, one line each at the top of a public function, so that its body can be its formula.

Every check raises an error that names the argument, what was given and what was expected. NumPy scalars count
as the Python numbers they stand for (``numpy.int64(3)`` is an int, ``numpy.float32(0.5)`` a real number).
"""

from __future__ import annotations

import contextlib
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


# --- tensors and temperatures, for the losses and ``kdlite.distill``

MAX_TEMPERATURE = 1e4  # the losses' limit: beyond it float32 cannot compute T^2 · KL (see kd_loss)
MIN_TEMPERATURE = 1e-4  # below it s / T overflows float32 for logits of a few thousand; softmax is an argmax anyway


def temperature(temperature, high: float = math.inf) -> float:
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a positive finite number; got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number (T > 0); got {temperature!r}")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be at least {MIN_TEMPERATURE:g}; got {temperature!r}. Below it the softmax is an "
            f"argmax to float precision, and logits / T overflow to inf (then NaN) for large logits."
        )
    if temperature > high:
        raise ValueError(
            f"temperature must be at most {high:g} in a distillation loss; got {temperature!r}. In float32 the "
            f"loss's rounding error grows like T^2, and at such temperatures it swamps the loss, which can come "
            f"out negative or NaN. For the high-temperature limit, match centred logits with an MSE instead "
            f"(chapter 2)."
        )
    return float(temperature)


def weight(name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value!r}")
    return float(value)


def float_tensor(name: str, x, min_dim: int = 1) -> None:
    """``x`` is a floating tensor of at least ``min_dim`` dimensions with no NaN or inf."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (raw logits/features); got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s); got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected a batch of at least one example")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN or inf value(s); expected finite values")


def logit_pair(student_logits, teacher_logits) -> None:
    float_tensor("student_logits", student_logits)
    float_tensor("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape (batch, classes); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
            + (" (different class counts)" if student_logits.shape[:-1] == teacher_logits.shape[:-1] else "")
        )


def targets(targets, logits: torch.Tensor) -> None:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices; got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices; got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {tuple(logits.shape[:-1])} (one class index per row of the logits); "
            f"got {tuple(targets.shape)}"
        )
    num_classes = logits.shape[-1]
    if ((targets < 0) | (targets >= num_classes)).any():  # one device sync, not two
        lo, hi = targets.min().item(), targets.max().item()
        raise ValueError(
            f"targets must be in [0, {num_classes - 1}] (C = {num_classes}); got values in [{lo}, {hi}]"
        )


def kd_args(student_logits, teacher_logits, t, labels=None) -> float:
    """The checks of ``kd_loss`` (and, with ``labels``, ``distillation_loss``); returns the temperature ``t``."""
    logit_pair(student_logits, teacher_logits)
    if labels is not None:
        targets(labels, student_logits)
    return temperature(t, MAX_TEMPERATURE)


def alpha(alpha) -> float:
    return weight("alpha", alpha, 0.0, 1.0)


def same_batch(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> None:
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(
            f"student_feat and teacher_feat must have the same batch size; got shapes "
            f"{tuple(student_feat.shape)} "
            f"and {tuple(teacher_feat.shape)}"
        )


# --- training data and models, for ``fit`` and ``evaluate``


def all_labels(data, logits: torch.Tensor) -> None:
    """Every label of a loader that holds its data as tensors (a DeviceLoader), checked once against the number of
    classes the model outputs: a bad label in a later batch would otherwise reach torch's IndexError."""
    tensors = getattr(data, "tensors", None)
    if not tensors or len(tensors) < 2 or tensors[1].dim() != 1 or logits.dim() != 2:
        return
    y, c = tensors[1], logits.shape[-1]
    bad = (y < 0) | (y >= c)
    if not y.is_floating_point() and bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"labels of the training data: sample {i} has label {int(y[i])}; expected class indices in "
                         f"[0, {c - 1}] (the model outputs {c} classes)")


def labelled(step, model: nn.Module, batch, i: int, epoch: int):
    """``step(model, batch)``, with torch's "Target 7 is out of bounds" said in kdlite's words."""
    try:
        return step(model, batch)
    except IndexError as e:
        if "out of bounds" not in str(e):
            raise
        raise ValueError(f"labels of the training data (batch {i} of epoch {epoch}): {e} Expected class indices in "
                         f"[0, C - 1] for a model with C outputs.") from None


def logits(value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the model must return a tensor of logits; it returned a {type(value).__name__} (for a "
                        f"model that returns (logits, features), pass a step= that picks the logits)")


@contextlib.contextmanager
def named_dtype_mismatch(model: nn.Module, x: torch.Tensor, what: str):
    """torch's "mat1 and mat2 must have the same dtype" (and kin), said as what it means for the reader."""
    try:
        yield
    except RuntimeError as e:
        weight = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        about_dtypes = "dtype" in str(e) or "scalar type" in str(e)
        if weight is None or not about_dtypes or x.dtype == weight:
            raise
        fix = f"model.to({x.dtype}) or x.to({weight})" if x.is_floating_point() else f"x.to({weight})"
        raise ValueError(f"the model's weights are {weight} but the {what} inputs are {x.dtype}; expected inputs of "
                         f"the model's floating dtype ({fix})") from None
