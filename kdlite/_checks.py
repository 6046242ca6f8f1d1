"""Argument checks, one line each at the top of a public function, so that its body can be its formula.

Every check raises an error that names the argument, what was given and what was expected. NumPy scalars count
as the Python numbers they stand for (``numpy.int64(3)`` is an int, ``numpy.float32(0.5)`` a real number).
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

INTERNAL = (str(Path(__file__).parent) + os.sep, str(Path(torch.__file__).parent / "utils" / "_contextlib.py"))


def integer(value, name: str, minimum: int = 0, maximum: int | None = None, what: str | None = None) -> int:
    """``value`` as an ``int`` in [minimum, maximum]; ``what`` replaces "a positive int" in the message."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        words = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {what or words}; got {value!r:.80}")
    return int(value)


def fraction(value, name: str, what: str = "of weights to prune") -> float:
    """``value`` as a ``float`` in [0, 1): the fraction of something to remove."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1  # NaN fails
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction {what}); got {value!r:.80}")
    return float(value)


def module(value, name: str = "model") -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(value).__name__}")
    return value


def finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or inf (one device sync: for one-off calls, not for every training step)."""
    if not bool(torch.isfinite(x).all()):
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite; got {nan} NaN and {inf} inf values (shape {tuple(x.shape)})")


def number(value, name: str) -> float:
    """``value`` as a finite ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r:.80}")
    return float(value)


def flag(value, name: str) -> bool:
    """``value`` as a ``bool``: True or False (or 1, 0, a NumPy bool); a string such as "no" is truthy, so it fails."""
    if type(value).__name__ not in ("bool", "bool_") and not (isinstance(value, numbers.Integral) and value in (0, 1)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def path(value, name: str, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a pathlib.Path, {what}; got {type(value).__name__}")
    return Path(value)


def layers_of(model, kinds: tuple[type, ...], who: str, what: str) -> nn.Module:
    """``model``, a module with at least one layer of ``kinds`` (``what`` names them), for ``who``."""
    if not any(isinstance(m, kinds) for m in module(model).modules()):
        raise ValueError(f"{who} acts on {what} layers; {type(model).__name__} has none")
    return model


def state_dict(value, name: str, model: nn.Module) -> Mapping:
    """``value`` as a state_dict (names to tensors) that is a copy, not a view of ``model``'s own tensors."""
    if isinstance(value, nn.Module) or not isinstance(value, Mapping):
        fix = f" (pass its {name}.state_dict())" if isinstance(value, nn.Module) else ""
        raise TypeError(f"{name} must be a state_dict, e.g. copy.deepcopy(model.state_dict()) taken before "
                        f"training; got {type(value).__name__}{fix}")
    live = {t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()}
    shared = [k for k, t in value.items() if isinstance(t, torch.Tensor) and t.numel() and
              t.untyped_storage().data_ptr() in live]
    if shared:
        raise ValueError(f"{name} shares memory with the model's own tensors ({shared[0]!r}, ...), so it changes as "
                         f"they train: take it as copy.deepcopy(model.state_dict()) (model.state_dict() is a view)")
    return value


def like(value, expected: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` as a tensor of ``expected``'s shape (a state_dict's entry for the model's own)."""
    if not isinstance(value, torch.Tensor) or value.shape != expected.shape:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} has {got}; the model's has shape {tuple(expected.shape)} (a state_dict of "
                         f"another architecture?)")
    return value


def batch_logits(logits, n: int, who: str) -> None:
    """``logits`` is what a classifier returns for ``n`` inputs: a tensor (n, C)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != n:
        got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else f"a {type(logits).__name__}"
        raise ValueError(f"{who} need a model returning logits (N, C) for N = {n} inputs; it returned {got}")


def generator(value) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(value).__name__}")
    return value


def file_name(name, example: str) -> str:
    """A plain file name (no folders, no extension needed), so that files stay in their folder."""
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"name must be a plain file name (non-empty, no folders) such as {example!r}; got {name!r}")
    return name


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
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}; got {temperature!r}. Below it the "
                         f"softmax is an argmax to float precision, and logits / T overflow to inf (then NaN) for "
                         f"large logits.")
    if temperature > high:
        raise ValueError(f"temperature must be at most {high:g} in a distillation loss; got {temperature!r}. In "
                         f"float32 the loss's rounding error grows like T^2, and at such temperatures it swamps the "
                         f"loss, which can come out negative or NaN. For the high-temperature limit, match centred "
                         f"logits with an MSE instead (chapter 2).")
    return float(temperature)


def weight(name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]; got {value!r:.80}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value!r:.80}")
    return float(value)


def float_tensor(name: str, x, min_dim: int = 1) -> None:
    """``x`` is a floating tensor of at least ``min_dim`` dimensions with no NaN or inf."""
    tensor(x, name)
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s); got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected a batch of at least one example")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN or inf value(s); expected finite values")


def binary_mask(mask, name: str) -> torch.Tensor:
    """``mask`` as a boolean tensor; a float or int mask must hold only 0s and 1s (a 0.3 would otherwise keep)."""
    if mask is None or isinstance(mask, (str, bytes)):
        raise TypeError(f"{name} must be a boolean tensor (True keeps a weight); got {type(mask).__name__}")
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        odd = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(f"{name} must be boolean (True keeps a weight) or hold only 0s and 1s; got values such as "
                         f"{odd}")
    return mask.bool()


def id_range(ids: torch.Tensor, n: int, name: str, bound: str) -> None:
    """Every id of ``ids`` is in ``0 .. n − 1`` (``bound``: how the message names n, e.g. "vocab_size")."""
    if ids.numel() and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{name} must hold ids from 0 to {bound} − 1 = {n - 1}; got ids from {ids.min().item()} to "
                         f"{ids.max().item()}")


def not_probabilities(logits: torch.Tensor, name: str) -> None:
    """Warn when ``logits`` look like probabilities (rows in [0, 1] summing to 1): a softmax of them is not theirs."""
    p = logits.detach().float()  # on its own device (no copy for float32): float64 would fail on MPS
    tol = max(1e-4, torch.finfo(logits.dtype).eps)  # bf16 and float16 probabilities sum to 1 only within their eps
    if len(p) and bool(((p >= 0) & (p <= 1)).all()) and bool(((p.sum(-1) - 1).abs() < tol).all()):
        warnings.warn(f"{name} look like probabilities (every row in [0, 1], summing to 1); expected logits, which "
                      f"this function turns into probabilities with a softmax: pass the model's outputs before the "
                      f"softmax (or their log: softmax(log p) = p)", stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside kdlite (and torch's no_grad wrapper): the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def logit_pair(student_logits, teacher_logits) -> None:
    float_tensor("student_logits", student_logits)
    float_tensor("teacher_logits", teacher_logits)
    not_probabilities(student_logits, "student_logits")
    not_probabilities(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        classes = " (different class counts)" if student_logits.shape[:-1] == teacher_logits.shape[:-1] else ""
        raise ValueError(f"student_logits and teacher_logits must have the same shape (batch, classes); got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}{classes}")


def targets(targets, logits: torch.Tensor) -> None:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices; got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices; got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])} (one class index per row of the "
                         f"logits); got {tuple(targets.shape)}")
    c = logits.shape[-1]
    if ((targets < 0) | (targets >= c)).any():  # one device sync, not two
        lo, hi = targets.min().item(), targets.max().item()
        raise ValueError(f"targets must be in [0, {c - 1}] (C = {c}); got values in [{lo}, {hi}]")


def kd_args(student_logits, teacher_logits, t, labels=None) -> float:
    """The checks of ``kd_loss`` (and, with ``labels``, ``distillation_loss``); returns the temperature ``t``."""
    logit_pair(student_logits, teacher_logits)
    if student_logits.shape[-1] < 2:
        raise ValueError(f"the logits have one class (shape {tuple(student_logits.shape)}): the loss and its gradient "
                         f"would be 0; expected at least 2 classes (a binary model's logit z is the pair (0, z))")
    if labels is not None:
        targets(labels, student_logits)
    return temperature(t, MAX_TEMPERATURE)


def same_batch(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> None:
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"student_feat and teacher_feat must have the same batch size; got shapes "
                         f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")


# --- training data and models, for ``fit`` and ``evaluate``


def all_labels(data, logits: torch.Tensor, where: str = "the training data") -> None:
    """Every label of a loader that holds its tensors (a DeviceLoader), checked once: else torch's IndexError."""
    tensors = getattr(data, "tensors", None)
    if not tensors or len(tensors) < 2 or tensors[1].dim() != 1 or logits.dim() != 2:
        return
    y, c = tensors[1], logits.shape[-1]
    bad = (y < 0) | (y >= c)
    if not y.is_floating_point() and bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"labels of {where}: sample {i} has label {int(y[i])}; expected class indices in "
                         f"[0, {c - 1}] (the model outputs {c} classes)")


def trained_by(optimizer, model) -> nn.Module:
    """``model``, checked; and ``fit``'s own ``optimizer``, if given, must hold some of its trainable parameters:
    one built over another model's (the teacher's, or the model's before a ``copy.deepcopy``) trains nothing."""
    model = module(model)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None; got {type(optimizer).__name__}")
    mine = {id(p) for p in model.parameters() if p.requires_grad}
    held = {id(p) for g in getattr(optimizer, "param_groups", ()) for p in g["params"]}
    if optimizer is not None and mine and not mine & held:
        raise ValueError(f"optimizer holds none of the {type(model).__name__}'s trainable parameters (it holds "
                         f"{len(held)} others), so fit would train nothing: build it over model.parameters() of "
                         f"this model (after any copy.deepcopy), or leave optimizer=None for fit's default")
    return model


# --- quantization, for ``kdlite.quant``


def bits(value, name: str = "bits") -> int:
    return integer(value, name, 2, 16, what="an int from 2 to 16")


def tensor(x, name: str, floating: bool = True, nonempty: bool = False, where: str = "") -> torch.Tensor:
    """``x`` is a tensor (of a floating dtype, non-empty, when asked); ``where`` prefixes the message."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}{name} must be a torch.Tensor; got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{where}{name} must be a floating-point tensor; got dtype {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{where}{name} must not be empty; got shape {tuple(x.shape)}")
    return x


def real(value, name: str, low: float, high: float, low_open: bool = True) -> float:
    """``value`` as a float in (low, high] (or [low, high] with ``low_open=False``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not ((low < value) if low_open else (low <= value)) or not value <= high:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}] (a number); got {value!r:.80}")
    return float(value)


def student_and_teacher(student, teacher, shared) -> None:
    """Two separate modules that share no parameter or buffer (``shared(student, teacher)``: the names of those
    they do share)."""
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise TypeError(f"student and teacher must be nn.Modules; got {type(student).__name__}, "
                        f"{type(teacher).__name__}")
    if student is teacher:
        raise ValueError("student and teacher are the same module; distil into a separate (copied) model")
    if shared := shared(student, teacher):
        raise ValueError(f"student and teacher share {len(shared)} parameter(s) or buffer(s) (e.g. the teacher's "
                         f"{shared[0]!r}): training the student would change the teacher (a shared BatchNorm's "
                         f"running statistics move even when frozen); give the student its own copy (copy.deepcopy)")


def extra_losses(pairs) -> list:
    """``(weight, fn)`` pairs: a weight is a finite number (made a float) or a function of the epoch."""
    out = []
    for i, item in enumerate(pairs):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[1])):
            raise ValueError(f"extra_losses[{i}] must be a (weight, fn) pair with "
                             f"fn(student_logits, teacher_logits, batch) -> scalar; got {item!r}")
        w = item[0]
        if not callable(w) and (isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w)):
            raise ValueError(f"extra_losses[{i}] weight must be a finite number or a function of the epoch; got {w!r}")
        out.append((w if callable(w) else float(w), item[1]))
    return out


def epoch_weight(k: int, epoch: int, weight) -> float:
    """What a weight function returned must be a finite number; say which one, and at which epoch, did not."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"extra_losses[{k}] weight function returned {weight!r} at epoch {epoch}; expected a "
                         f"finite number")
    return float(weight)


def scalar_loss(k: int, term, finite: bool) -> torch.Tensor:
    """An extra loss must give a scalar tensor; say which one did not. ``finite`` (the first step only: it costs
    a device sync) also checks its value, before a NaN corrupts the weights; later NaNs surface as NaN student
    logits on the next step, or as ``fit``'s NaN-loss error."""
    if not isinstance(term, torch.Tensor) or term.numel() != 1:
        got = f"shape {tuple(term.shape)}" if isinstance(term, torch.Tensor) else type(term).__name__
        raise ValueError(f"extra_losses[{k}] must return a scalar tensor; got {got}")
    if finite and not torch.isfinite(term):
        raise ValueError(f"extra_losses[{k}] returned {term.item()} at this step; expected a finite loss")
    return term.reshape(())


# --- features and connectors, for ``kdlite.features``


def submodule_names(model: nn.Module, names) -> list[str]:
    """``names`` (one name or a list) as a list of names of ``model``'s submodules; an unknown name raises a
    ValueError listing the available names, closest first."""
    if not isinstance(names, (str, Sequence)):
        raise TypeError(f"names must be a submodule name or a list of names (see model.named_modules()); got "
                        f"{type(names).__name__}")
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names must name at least one submodule; got an empty list")
    available = [a for a, _ in model.named_modules() if a]  # "" is the model itself
    for name in names:
        if not isinstance(name, str) or name not in available:
            closest = difflib.get_close_matches(str(name), available, n=len(available), cutoff=0.0)
            shown = ", ".join(repr(a) for a in closest[:30]) + (", ..." if len(closest) > 30 else "")
            raise ValueError(f"no submodule named {name!r} in the model; available names, closest first: {shown}")
    return names


def shape(value, name: str) -> tuple[int, ...]:
    """A tensor shape: a sequence of positive ints (2.5 is no size: ``int()`` would make it 2)."""
    try:
        out = tuple(integer(d, name, minimum=-(2**63)) for d in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of ints such as tensor.shape; got {value!r:.80}") from None
    if any(d <= 0 for d in out):
        raise ValueError(f"{name} must have positive sizes; got {out}")
    return out


def connectable(s: tuple[int, ...], t: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Student and teacher feature shapes a connector can map: both (N, C), or both (N, C, H, W) of one H, W."""
    if len(s) != len(t):
        raise ValueError(f"student_shape {s} and teacher_shape {t} must have the same number of dimensions; expected "
                         f"both (N, C) or both (N, C, H, W)")
    if len(s) not in (2, 4):
        raise ValueError(f"connector supports (N, C) and (N, C, H, W) features; got student_shape {s}, "
                         f"teacher_shape {t}")
    if s[2:] != t[2:]:
        raise ValueError(f"student_shape {s} and teacher_shape {t} differ in spatial size ({s[2]}x{s[3]} vs "
                         f"{t[2]}x{t[3]}); a 1x1 connector maps channels only: tap layers of the same resolution, or "
                         f"resize one side (F.adaptive_avg_pool2d or F.interpolate) first")
    return s, t
