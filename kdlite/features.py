"""Reading a network's intermediate features, and adapting one network's features to another's (chapter 4).

``FeatureTap`` records what named submodules output, through forward hooks, without changing the model;
``connector`` builds the small learnable map that FitNets puts between a student's layer and a teacher's.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn

from ._checks import integer


class FeatureTap:
    """Capture the outputs of the named submodules of ``model`` (names as in ``model.named_modules()``).

    A context manager: forward hooks are registered on entry and removed on exit. ``tap.features`` maps each
    name to that module's output in the LAST forward pass (a module called twice in one forward keeps its
    second output). The tensors are not detached, so a loss on the student's features back-propagates into the
    student.
    They stay readable after the ``with`` block::

        with FeatureTap(model, ["features.3", "features.7"]) as tap:
            logits = model(x)
        tap.features["features.3"]      # (N, C, H, W)

    An unknown name raises ``ValueError`` listing the available names, closest first.
    """

    def __init__(self, model: nn.Module, names: str | Sequence[str]):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if not isinstance(names, (str, Sequence)):
            raise TypeError(f"names must be a submodule name or a list of names (see model.named_modules()); got "
                            f"{type(names).__name__}")
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("names must name at least one submodule; got an empty list")
        modules = dict(model.named_modules())
        for name in names:
            if not isinstance(name, str) or name not in modules:
                raise ValueError(_unknown_name_message(name, list(modules)))
        self.model = model
        self.names = names
        self.modules = {name: modules[name] for name in names}
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def store(module: nn.Module, inputs, output) -> None:
            self.features[name] = output

        return store

    def __enter__(self) -> FeatureTap:
        if self._handles:
            raise RuntimeError("this FeatureTap is already active; create a new one to nest taps")
        self.features = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (``__exit__`` does this); the captured features stay."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __repr__(self) -> str:
        state = "active" if self._handles else "inactive"
        return f"FeatureTap({type(self.model).__name__}, {self.names}, {state})"


def _unknown_name_message(name, available: list[str]) -> str:
    available = [a for a in available if a]  # "" is the model itself
    closest = difflib.get_close_matches(str(name), available, n=len(available), cutoff=0.0)
    shown = ", ".join(repr(a) for a in closest[:30]) + (", ..." if len(closest) > 30 else "")
    return f"no submodule named {name!r} in the model; available names, closest first: {shown}"


def connector(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The smallest learnable adapter mapping student features of ``student_shape`` to ``teacher_shape``.

    Shapes are full tensor shapes with the batch first (``tensor.shape``); the batch size is ignored.

    - ``(N, C_s)`` -> ``(N, C_t)``: ``nn.Linear(C_s, C_t)``  (C_s · C_t + C_t parameters)
    - ``(N, C_s, H, W)`` -> ``(N, C_t, H, W)``: a 1x1 ``nn.Conv2d(C_s, C_t)`` without bias, then
      ``nn.BatchNorm2d(C_t)`` (C_s · C_t + 2 C_t parameters), as in FitNets' convolutional regressor reduced
      to 1x1 and the usual CIFAR recipes.

    Anything else (different spatial sizes, different ranks) raises ``ValueError``: resize or choose layers of
    matching resolution first. The adapter is trained with the student and is not part of the deployed
    student.
    """
    s, t = _as_shape("student_shape", student_shape), _as_shape("teacher_shape", teacher_shape)
    if len(s) != len(t):
        raise ValueError(
            f"student_shape {s} and teacher_shape {t} must have the same number of dimensions; expected both "
            f"(N, C) or both (N, C, H, W)"
        )
    if len(s) == 2:
        return nn.Linear(s[1], t[1])
    if len(s) == 4:
        if s[2:] != t[2:]:
            raise ValueError(
                f"student_shape {s} and teacher_shape {t} differ in spatial size "
                f"({s[2]}x{s[3]} vs {t[2]}x{t[3]}); "
                f"a 1x1 connector maps channels only: tap layers of the same resolution, or resize one side "
                f"(F.adaptive_avg_pool2d or F.interpolate) first"
            )
        return nn.Sequential(nn.Conv2d(s[1], t[1], kernel_size=1, bias=False), nn.BatchNorm2d(t[1]))
    raise ValueError(
        f"connector supports (N, C) and (N, C, H, W) features; got student_shape {s}, teacher_shape {t}"
    )


def _as_shape(name: str, shape) -> tuple[int, ...]:
    try:
        out = tuple(integer(d, name, minimum=-(2**63)) for d in shape)  # 2.5 is no size: int() would make it 2
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of ints such as tensor.shape; got {shape!r}") from None
    if any(d <= 0 for d in out):
        raise ValueError(f"{name} must have positive sizes; got {out}")
    return out
