"""Reading a network's intermediate features, and adapting one network's features to another's (chapter 4).

``FeatureTap`` records what named submodules output, through forward hooks, without changing the model;
``connector`` builds the small learnable map that FitNets puts between a student's layer and a teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import _checks as checks


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
        names = checks.submodule_names(checks.module(model), names)
        modules = dict(model.named_modules())
        self.model = model
        self.names = names
        self.modules = {name: modules[name] for name in names}
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def store(module: nn.Module, inputs, output) -> None:
            self.features[name] = output

        store.tap = self  # how tapped_modules recognises the hook
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


def tapped_modules(model: nn.Module) -> list[str]:
    """The names of ``model``'s submodules that an open :class:`FeatureTap` is recording (``""``: the model)."""
    return [name for name, m in checks.module(model).named_modules()
            if any(hasattr(h, "tap") for h in m._forward_hooks.values())]


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
    s, t = checks.shape(student_shape, "student_shape"), checks.shape(teacher_shape, "teacher_shape")
    s, t = checks.connectable(s, t)
    if len(s) == 2:
        return nn.Linear(s[1], t[1])
    return nn.Sequential(nn.Conv2d(s[1], t[1], kernel_size=1, bias=False), nn.BatchNorm2d(t[1]))
