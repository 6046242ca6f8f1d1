"""Structured pruning: remove whole channels, so layers become physically smaller and dense kernels faster.

Removing output channel ``c`` of a layer (row ``c`` of a Linear weight, filter ``c`` of a Conv weight) also
removes entry ``c`` of the BatchNorm after it and input channel ``c`` of the next layer. Which layers are
"after" is read from the model's ``torch.fx`` graph: from each Conv/Linear we follow the data through
channel-wise operations (activations, pooling, dropout, flatten) to the next Conv/Linear layers.
Two cases stop the walk and leave the layer's channels alone:

* the output reaches a residual addition (or a concatenation, a product): those channels are *tied* to the
  other branch and would have to be pruned together with it; ``channel_prune`` does not do that and warns;
* the output is the model's output (the classifier), whose size must not change.

Any other operation on the way (a grouped or depthwise convolution, LayerNorm, an unknown module or function)
raises an error that names it. That includes a global average pool written as ``x.mean((2, 3))``, whose reduced
dimensions the graph does not tell apart from a mean over the channels: write it as ``nn.AdaptiveAvgPool2d(1)`` or
``F.adaptive_avg_pool2d(x, 1)`` then ``flatten``, as the book's models do.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._checks import finite, float_tensor, fraction, module, real
from .device import eval_mode
from .masks import PRUNABLE, apply_masks, copy_model, layer_mask, remove_masks

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CHANNELWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Identity,
)  # fmt: skip
CHANNELWISE_FUNCTIONS = {
    torch.relu, F.relu, torch.sigmoid, torch.tanh, F.gelu, F.silu, torch.flatten,
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout,
}  # fmt: skip
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "flatten", "view", "reshape", "contiguous"}
MERGES = {operator.add, operator.iadd, operator.mul, torch.add, torch.mul, torch.cat, "add", "add_", "mul"}


def channel_importance(weight: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Importance of each output channel ``c``: the L_p norm of its weights, ``||W[c]||_p`` (p = 1 is
    Li et al. 2017's filter-pruning criterion)."""
    float_tensor("weight", weight, min_dim=2)
    real(p, "p", 0, math.inf)
    return weight.detach().flatten(1).norm(p=p, dim=1)


def _supported(module: nn.Module) -> bool:
    if isinstance(module, PRUNABLE):
        return getattr(module, "groups", 1) == 1
    return isinstance(module, NORMS + CHANNELWISE)


def _follow(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[list[str], list[str], str | None]:
    """From a layer's output, walk through channel-wise operations: returns the BatchNorms and the next layers
    (their names) that see these channels, and why the channels cannot be pruned (``None`` if they can)."""
    norms, consumers, frontier, seen = [], [], list(node.users), set()
    while frontier:
        user = frontier.pop()
        if user in seen:
            continue
        seen.add(user)
        target = user.target
        if user.op == "output":
            return norms, consumers, "output"
        if user.op == "call_module" and isinstance(modules[target], PRUNABLE):
            consumers.append(target)
        elif user.op == "call_module" and isinstance(modules[target], NORMS):
            norms.append(target)
            frontier += user.users
        elif user.op == "call_module" or target in CHANNELWISE_FUNCTIONS or target in CHANNELWISE_METHODS:
            frontier += user.users
        elif target in MERGES and target is not torch.cat and len(user.all_input_nodes) < 2:
            frontier += user.users  # x * 2, x + 1: a number, the same for every channel
        elif target in MERGES:
            return norms, consumers, f"tied at {user.name}"
        elif target not in ("size", "dim"):
            hint = "; a global average pool: use F.adaptive_avg_pool2d(x, 1)" if target in ("mean", torch.mean) else ""
            raise ValueError(f"channel_prune does not support the operation {user.name!r} ({target}){hint}")
    return norms, consumers, None


def _keep_channels(weight: torch.Tensor, amount: float, importance: Callable[[torch.Tensor], torch.Tensor]):
    """Indices (ascending) of the ``max(1, C - round(amount · C))`` most important output channels."""
    scores = _check_scores(importance(weight), weight.shape[0])
    n_keep = max(1, weight.shape[0] - round(amount * weight.shape[0]))
    return torch.argsort(scores, descending=True, stable=True)[:n_keep].sort().values


def _check_scores(scores, channels: int) -> torch.Tensor:
    """What ``channel_prune``'s ``importance`` function returned: one finite score per output channel."""
    if not isinstance(scores, torch.Tensor) or scores.shape != (channels,):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else f"a {type(scores).__name__}"
        raise ValueError(f"importance must return a tensor of one score per output channel ({channels},); got {got}")
    finite(scores, "the scores importance returned")
    return scores


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Replace a parameter or buffer by a smaller tensor, keeping its kind."""
    old = getattr(module, name)
    if old is None:
        return
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.clone())


@torch.no_grad()
def _shrink_outputs(layer: nn.Module, keep: torch.Tensor) -> None:
    _set(layer, "weight", layer.weight[keep])
    _set(layer, "bias", None if layer.bias is None else layer.bias[keep])
    if isinstance(layer, nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


@torch.no_grad()
def _shrink_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(norm, name)
        _set(norm, name, None if value is None else value[keep])
    norm.num_features = len(keep)


@torch.no_grad()
def _shrink_inputs(layer: nn.Module, keep: torch.Tensor, channels: int, name: str) -> None:
    """Keep input channels ``keep`` of ``channels``; a Linear after a flatten has ``channels · k`` inputs,
    k per channel in channel-major order (the order ``torch.flatten`` of an N×C×H×W tensor gives)."""
    fan_in = layer.weight.shape[1]
    if fan_in % channels:
        raise ValueError(f"layer {name!r} has {fan_in} inputs, not a multiple of the {channels} channels")
    k = fan_in // channels
    columns = (keep[:, None] * k + torch.arange(k, device=keep.device)).flatten()
    _set(layer, "weight", layer.weight[:, columns])
    if isinstance(layer, nn.Linear):
        layer.in_features = len(columns)
    else:
        layer.in_channels = len(columns)


def channel_prune(
    model: nn.Module,
    amount: float,
    example_input: torch.Tensor,
    importance: str | Callable[[torch.Tensor], torch.Tensor] = "l1",
) -> nn.Module:
    """A copy of ``model``, physically smaller: in every prunable Conv/Linear layer, the fraction ``amount``
    of output channels with the lowest importance is removed (``round(amount · C)`` of ``C``, keeping at
    least one), together with the matching BatchNorm entries and input channels of the next layer. ``model``
    is not changed. A layer pruned with :func:`magnitude_prune` (or ``torch.nn.utils.prune``) keeps its mask in the
    copy, cut like its weight, so that fine-tuning the copy keeps the pruned weights at zero (the masks are in the
    copy's ``state_dict`` and size; ``remove_masks`` makes the copy plain once it is fine-tuned).

    ``importance``: ``"l1"`` or ``"l2"`` (the norm ``||W[c]||_p`` of each filter, from the unpruned
    weights), or a function ``weight -> one score per output channel``. The output shape on
    ``example_input`` is unchanged.

    Which layers shrink (see the module docstring): in the book's CNN and MLP every layer but the
    classifier; in the ResNet only the inner channels of each BasicBlock (``conv1``/``bn1`` outputs,
    ``conv2`` inputs). The stem, ``conv2``/``bn2`` and the shortcuts feed residual additions, so their
    channels are tied and are left alone, with a warning that lists them. Grouped/depthwise convolutions and
    unknown modules raise ValueError naming the layer.
    """
    amount, model = fraction(amount, "amount", "of channels to remove"), module(model)
    if isinstance(importance, str):
        if importance not in ("l1", "l2"):
            raise ValueError(f"importance must be 'l1', 'l2' or a function of the weight; got {importance!r}")
        p = 1.0 if importance == "l1" else 2.0
        importance = lambda w: channel_importance(w, p)  # noqa: E731
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor the model accepts (e.g. one batch); got "
                        f"{type(example_input).__name__}")
    try:
        with torch.no_grad():
            expected = _eval_output(model, example_input).shape
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError) as err:  # ValueError: BatchNorm2d's "expected 4D input (got 3D input)"
        raise ValueError(f"example_input of shape {tuple(example_input.shape)} does not fit the model: "
                         f"{str(err).splitlines()[0]}") from None
    masked = [name for name, layer in model.named_modules() if layer_mask(layer) is not None]
    pruned = remove_masks(copy_model(model))
    try:
        graph = fx.symbolic_trace(pruned).graph
    except Exception as err:  # tracing fails on data-dependent control flow
        raise ValueError(f"channel_prune needs a model torch.fx can trace; tracing failed: {err}") from err
    modules = dict(pruned.named_modules())
    for node in graph.nodes:
        if node.op == "call_module" and not _supported(modules[node.target]):
            m = modules[node.target]
            detail = f" with groups={m.groups}" if isinstance(m, PRUNABLE) else ""
            raise ValueError(f"channel_prune does not support layer {node.target!r} "
                             f"({type(m).__name__}{detail})")

    plans, tied = [], []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], PRUNABLE):
            norms, consumers, stop = _follow(node, modules)
            if stop is None:
                keep = _keep_channels(modules[node.target].weight, amount, importance)
                plans.append((node.target, norms, consumers, keep))
            elif stop != "output":
                tied.append(node.target)
    _shrink(modules, plans)
    if masked:  # a twin whose masked layers hold their masks as weights, cut the same way; pruned weights stay 0
        twin = remove_masks(copy_model(model))
        for name in masked:
            _set(twin.get_submodule(name), "weight", layer_mask(model.get_submodule(name)).float())
        _shrink(dict(twin.named_modules()), plans)
        apply_masks(pruned, {name: twin.get_submodule(name).weight.bool() for name in masked})
    if not plans:
        warnings.warn(f"channel_prune found no layer of {type(model).__name__} whose output channels it can "
                      f"remove (the classifier's outputs, and channels tied by residual additions, stay): the copy "
                      f"is unchanged", stacklevel=2)
    if tied:
        warnings.warn(f"channel_prune left {len(tied)} layers unpruned because a residual connection ties "
                      f"their channels to another branch: {', '.join(tied)}", stacklevel=2)

    with torch.no_grad():
        got = _eval_output(pruned, example_input).shape
    if got != expected:
        raise RuntimeError(f"channel_prune changed the output shape {tuple(expected)} to {tuple(got)}")
    return pruned


def _shrink(modules: dict[str, nn.Module], plans: list) -> None:
    """Remove the channels of each plan ``(layer, its BatchNorms, the layers it feeds, channels kept)``: the layer's
    outputs, the BatchNorms' entries and the next layers' inputs (all keep-sets chosen from the unpruned weights)."""
    for name, norms, consumers, keep in plans:
        layer = modules[name]
        channels = layer.weight.shape[0]
        for norm in norms:
            if modules[norm].num_features != channels:
                raise ValueError(f"BatchNorm {norm!r} has {modules[norm].num_features} features, but layer "
                                 f"{name!r} before it has {channels} channels")
            _shrink_norm(modules[norm], keep)
        for consumer in consumers:
            _shrink_inputs(modules[consumer], keep, channels, consumer)
        _shrink_outputs(layer, keep)


def _eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode, the mode restored afterwards."""
    with eval_mode(model):
        return model(x)
