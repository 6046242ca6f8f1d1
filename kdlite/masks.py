"""Masks: pruned weights that stay zero, ``W = W_orig ⊙ M``.

Unstructured (magnitude) pruning keeps a binary mask ``M`` per layer and computes the weight the layer uses
as ``W = W_orig ⊙ M``. The product is a ``torch.nn.utils.parametrize`` parametrization holding ``M`` as a
buffer, so a pruned weight is exactly zero at every forward pass and in every optimizer step, whatever the
optimizer does to ``W_orig`` (momentum, weight decay), and the mask is saved and loaded with the
``state_dict`` (``<layer>.parametrizations.weight.original`` and ``<layer>.parametrizations.weight.0.mask``).
So a pruned model's ``state_dict`` loads into a model pruned the same way (prune a fresh one by any amount first:
the loaded masks replace its own); saved after :func:`remove_masks`, it loads into a plain model.

``torch.nn.utils.prune`` does the same with a forward pre-hook that writes
``weight = weight_orig * weight_mask`` before each forward pass; :func:`sparsity` and :func:`remove_masks`
understand both. :func:`semi_structured_mask` is the N:M (2:4) mask: n kept in every m consecutive weights of a row.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ._checks import binary_mask, float_tensor, integer, module

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layers pruning acts on, everywhere in kdlite


class WeightMask(nn.Module):
    """The parametrization ``W = W_orig ⊙ M``; the boolean mask ``M`` is a buffer (in the state_dict)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def semi_structured_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """The N:M sparsity mask of ``weight`` (out, in): in every group of ``m`` consecutive weights of a row (along
    the input dimension), keep the ``n`` largest in magnitude (True) and drop the other ``m − n``::

        M_ij = 1  ⇔  |W_ij| is among the n largest of |W_ik|, k in the group of j: m·⌊j/m⌋ ≤ k < m·(⌊j/m⌋ + 1)

    2:4 (the default) is the pattern NVIDIA's sparse tensor cores (Ampere and newer) run at up to twice the dense
    speed. Ties keep the first weights of the group. A conv weight's rows are its flattened (in · kh · kw) inputs;
    the row length must be divisible by ``m``. Returns a boolean tensor of ``weight``'s shape.
    """
    float_tensor("weight", weight, min_dim=2)
    m = integer(m, "m", 1)
    n = integer(n, "n", 1, m, what=f"an int from 1 to m = {m}")
    groups = weight.detach().reshape(weight.shape[0], -1)
    if groups.shape[1] % m:
        raise ValueError(f"the rows of weight (shape {tuple(weight.shape)}) have {groups.shape[1]} inputs, which is "
                         f"not divisible by m={m}; expected a row length that is a multiple of {m}")
    groups = groups.reshape(-1, m).abs()
    largest = groups.argsort(dim=1, descending=True, stable=True)[:, :n]  # ties: the first weights of the group
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(1, largest, True).reshape(weight.shape)


def prunable_layers(
    model: nn.Module, modules: Iterable[str | nn.Module] | None = None, *, name: str = "modules"
) -> dict[str, nn.Module]:
    """The layers whose weights pruning acts on, by name: every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of
    ``model``, or only ``modules`` (names or module objects of ``model``; each must be Linear or Conv). ``name``:
    the argument ``modules`` came in as, for the messages."""
    everything = dict(module(model).named_modules())
    layers = {name: m for name, m in everything.items() if isinstance(m, PRUNABLE)}
    if modules is None:
        return layers
    if isinstance(modules, (str, nn.Module)):
        modules = [modules]
    names_of = {id(m): name for name, m in everything.items()}
    chosen = {}
    for m in modules:
        key = m if isinstance(m, str) else names_of.get(id(m))
        if key not in everything:
            raise ValueError(f"{name}: {m!r} is not a submodule of the model; its prunable layers are "
                             f"{', '.join(map(repr, layers)) or 'none'}")
        if key not in layers:
            kind = type(everything[key]).__name__
            raise ValueError(f"{name}: {key!r} is a {kind}; only Linear and Conv1d/2d/3d can be pruned")
        chosen[key] = layers[key]
    if not chosen:
        raise ValueError(f"{name} is empty: give at least one layer to prune")
    return chosen


def mask_of(layer: nn.Module) -> WeightMask | None:
    """The layer's :class:`WeightMask`, if it has one."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, WeightMask)), None)


def layer_mask(layer: nn.Module) -> torch.Tensor | None:
    """The boolean mask ``M`` of a pruned layer (kdlite's :class:`WeightMask` or ``torch.nn.utils.prune``'s
    ``weight_mask``), or None if the layer is not pruned."""
    mask = mask_of(layer)
    if mask is not None:
        return mask.mask
    return layer.weight_mask.bool() if isinstance(getattr(layer, "weight_orig", None), nn.Parameter) else None


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Prune ``model`` with the given masks (layer name, or the layer itself, -> boolean tensor of the weight's
    shape, ``True`` keeps): attaches ``W = W_orig ⊙ M`` to each layer, or replaces the mask it already has.
    Returns ``model``."""
    layers = prunable_layers(model, list(_check_mapping(masks)), name="masks")
    _check_not_torch_pruned(layers)  # before any layer changes
    name_of = {id(m): name for name, m in model.named_modules()}
    for key, given in masks.items():
        name = key if isinstance(key, str) else name_of[id(key)]
        layer, mask = layers[name], binary_mask(given, f"masks[{name!r}]")
        weight = layer.weight
        if mask.shape != weight.shape:
            raise ValueError(
                f"masks[{name!r}] has shape {tuple(mask.shape)}; the weight has {tuple(weight.shape)}"
            )
        mask = mask.to(device=weight.device, dtype=torch.bool)
        existing = mask_of(layer)
        if existing is not None:
            existing.mask.copy_(mask)
        else:
            parametrize.register_parametrization(layer, "weight", WeightMask(mask))
    return model


def _check_mapping(masks) -> Mapping:
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict of layer names to boolean masks; got {type(masks).__name__}")
    return masks


def _check_not_torch_pruned(layers: Mapping[str, nn.Module]) -> None:
    torch_pruned = [name for name, layer in layers.items() if layer_mask(layer) is not None and not mask_of(layer)]
    if torch_pruned:
        raise ValueError(f"layer(s) {', '.join(map(repr, torch_pruned))} are pruned with torch.nn.utils.prune; "
                         f"kdlite's masks do not stack on torch's: call kdlite.prune.remove_masks(model) first")


def masked_like(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` (a layer replacing ``old``) pruned with ``old``'s mask if ``old`` was pruned, so that fine-tuning
    keeps the same weights at zero; returns ``new``."""
    mask = layer_mask(old)
    return new if mask is None else apply_masks(new, {"": mask})


def sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero weights among the prunable (Linear and Conv) weights: ``"overall"`` and one
    entry per layer name. Works for unpruned models and for those pruned with ``torch.nn.utils.prune``; a model
    without such layers (an int8 model, an LSTM) has nothing to measure and gets ``{"overall": 0.0}``."""
    result, zeros, total = {}, 0, 0
    for name, layer in prunable_layers(model).items():
        w = layer.weight
        z = int((w == 0).sum())
        result[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return {"overall": zeros / total if total else 0.0, **result}


def _bake_mask(layer: nn.Module) -> None:
    """``W_orig <- W_orig ⊙ M`` and make it the layer's plain ``weight`` again (the same Parameter object)."""
    only_masks = list(layer.parametrizations) == ["weight"] and all(
        isinstance(p, WeightMask) for p in layer.parametrizations.weight
    )
    if not only_masks:  # other parametrizations too: let torch bake them all
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        return
    # What parametrize.remove_parametrizations does, except that it also deletes the ``weight`` property from
    # the layer's class, and a deepcopy of a masked model shares that class with the original (torch 2.x), so
    # removing the masks of a copy would break the original.
    original = layer.parametrizations.weight.original
    original.copy_(layer.weight)
    del layer.parametrizations
    layer.__class__ = type(layer).__bases__[0]
    layer.weight = original


@torch.no_grad()
def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also for a model pruned with ``torch.nn.utils.prune``: such a layer keeps its
    weight as ``W_orig ⊙ M`` computed with autograd history, which torch cannot deepcopy, so that product is first
    recomputed without history (the same values; torch recomputes it before every forward pass anyway)."""
    for m in model.modules():
        for name, _ in list(m.named_parameters(recurse=False)):
            base = name.removesuffix("_orig")
            if base != name and hasattr(m, base + "_mask"):  # torch.nn.utils.prune: W = W_orig ⊙ M
                setattr(m, base, getattr(m, name) * getattr(m, base + "_mask"))
    return copy.deepcopy(model)


@torch.no_grad()
def remove_masks(model: nn.Module) -> nn.Module:
    """Make pruning permanent: every masked layer gets a plain ``weight`` parameter equal to ``W_orig ⊙ M``;
    no parametrization, hook or mask buffer is left (also undoes ``torch.nn.utils.prune``).
    Returns ``model``."""
    for layer in prunable_layers(model).values():
        if mask_of(layer) is not None:
            _bake_mask(layer)
        if isinstance(getattr(layer, "weight_orig", None), nn.Parameter):  # torch.nn.utils.prune
            torch_prune.remove(layer, "weight")
    return model
