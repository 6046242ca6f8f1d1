"""Pruning: set weights to zero and keep them there.

Unstructured (magnitude) pruning ranks weights by magnitude and keeps the largest, through the masks
``W = W_orig ⊙ M`` of ``kdlite.masks`` (re-exported here: ``apply_masks``, ``remove_masks``, ``sparsity``,
``prunable_layers``): one-shot, layer-wise or global (:func:`magnitude_prune`), iterative with retraining
(:func:`iterative_prune`, :func:`gradual_schedule`), and the lottery ticket's :func:`rewind`. Semi-structured 2:4
pruning (:func:`prune_2_4`) keeps the 2 largest of every 4 consecutive weights of a row, with the same masks.

Structured (channel) pruning, which makes the layers physically smaller, is :func:`channel_prune` (in
``kdlite.structured``, re-exported here).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import _checks as checks
from ._checks import fraction, integer
from .masks import (
    PRUNABLE,
    WeightMask,
    apply_masks,
    copy_model,
    layer_mask,
    mask_of,
    masked_like,
    prunable_layers,
    remove_masks,
    semi_structured_mask,
    sparsity,
)
from .structured import channel_prune
from .train import evaluate, fit

__all__ = [
    "PRUNABLE",
    "WeightMask",
    "apply_masks",
    "channel_prune",
    "copy_model",
    "gradual_schedule",
    "iterative_prune",
    "layer_mask",
    "masked_like",
    "magnitude_prune",
    "prunable_layers",
    "prune_2_4",
    "remove_masks",
    "rewind",
    "semi_structured_mask",
    "sensitivity_scan",
    "sparse_storage_bytes",
    "sparsity",
]

def _check_amounts(amounts) -> list[float]:
    listed = None if isinstance(amounts, (str, bytes, torch.Tensor)) or not isinstance(amounts, Iterable) else \
        list(amounts)
    if not listed:
        raise ValueError(f"amounts must be a non-empty sequence of target sparsities, e.g. [0.5, 0.8]; got "
                         f"{type(amounts).__name__} {amounts!r:.40}")
    return [fraction(a, f"amounts[{i}]") for i, a in enumerate(listed)]


def _layers_or_error(model: nn.Module, modules=None, kinds: tuple[type, ...] = PRUNABLE) -> dict[str, nn.Module]:
    """``prunable_layers``: the listed ``modules``, else every layer of ``kinds``; none is an error (pruning would
    silently do nothing)."""
    layers = {name: layer for name, layer in prunable_layers(model, modules).items()
              if modules is not None or isinstance(layer, kinds)}
    if not layers:
        raise ValueError(
            f"model ({type(model).__name__}) has no {' or '.join(k.__name__ for k in kinds)} layers; those are what "
            f"kdlite.prune prunes (recurrent and attention layers are not supported)"
        )
    dense = [name for name, m in model.named_modules() if isinstance(m, (nn.MultiheadAttention, nn.RNNBase))]
    if modules is None and dense:
        warnings.warn(f"kdlite.prune leaves {', '.join(map(repr, dense[:3]))} dense: the in_proj_weight of an "
                      f"nn.MultiheadAttention (its out_proj is pruned) and a recurrent layer's weights are not Linear "
                      f"or Conv layers; sparsity() counts only the pruned layers", stacklevel=checks.user_stacklevel())
    return layers


def _ranked_masks(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Masks that drop the ``k`` lowest of the concatenated ``scores`` (stable order breaks ties)."""
    flat = torch.cat([s.flatten() for s in scores])
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    return [m.view_as(s) for m, s in zip(keep.split([s.numel() for s in scores]), scores, strict=True)]


@torch.no_grad()
def magnitude_prune(
    model: nn.Module,
    amount: float,
    scope: str = "global",
    modules: Iterable[str | nn.Module] | None = None,
) -> dict[str, torch.Tensor]:
    """Zero the fraction ``amount`` of the smallest-magnitude weights of the Linear and Conv layers.

    ``scope="global"`` ranks |w| over all layers together and prunes exactly ``round(amount · n)`` of the
    ``n`` weights; ``scope="layer"`` prunes ``round(amount · n_l)`` in each layer ``l``. Biases and
    normalisation layers are untouched. Weights already pruned count as magnitude 0 and stay pruned, so
    ``amount`` is the target sparsity: calling it again with a larger amount prunes further, as iterative
    pruning does, and a smaller one raises ValueError (weights are never revived).

    The pruned weights stay exactly zero through further training (``W = W_orig ⊙ M``, see
    ``kdlite.masks``) and through ``state_dict`` save and load. Returns the masks (layer name -> boolean tensor,
    ``True`` = kept; copies).
    """
    amount = fraction(amount, "amount")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer'; got {scope!r}")
    layers = _layers_or_error(model, modules)
    names = list(layers)
    scores = []
    for name, layer in layers.items():
        mask = mask_of(layer)
        score = layer.weight.detach().abs().float()
        if not torch.isfinite(score).all():  # a NaN has no magnitude to rank: it would be kept, and spread
            raise ValueError(f"layer {name!r} has {int((~torch.isfinite(score)).sum())} NaN or inf weight(s); "
                             f"expected finite weights (train the model without the NaN first)")
        scores.append(score if mask is None else score.masked_fill(~mask.mask, -1.0))  # pruned ones go first
    groups = [list(range(len(names)))] if scope == "global" else [[i] for i in range(len(names))]
    masks: dict[str, torch.Tensor] = {}
    for group in groups:
        group_scores = [scores[i] for i in group]
        n = sum(s.numel() for s in group_scores)
        k = round(amount * n)
        already = sum(int((s < 0).sum()) for s in group_scores)
        if k == n:
            where = "the model's" if scope == "global" else f"layer {names[group[0]]!r}'s"
            raise ValueError(
                f"amount={amount} would prune all {n} of {where} weights; expected an amount that keeps at least "
                f"one (below {1 - 0.5 / n:.6g})"
            )
        if k < already:
            where = "the model" if scope == "global" else f"layer {names[group[0]]!r}"
            raise ValueError(
                f"amount={amount} is below the sparsity {already / n:.4f} {where} already has; pruning never "
                "revives weights (call remove_masks or start from a dense model)"
            )
        for i, mask in zip(group, _ranked_masks(group_scores, k), strict=True):
            masks[names[i]] = mask
    apply_masks(model, masks)
    return {name: mask.clone() for name, mask in masks.items()}


@torch.no_grad()
def prune_2_4(model: nn.Module, modules: Iterable[str | nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """2:4 semi-structured pruning: in every group of 4 consecutive input weights of every ``nn.Linear`` (or of the
    listed ``modules``, which may be convolutions), zero the 2 smallest in magnitude (:func:`semi_structured_mask`):
    half of the weights, in the pattern sparse tensor cores run fast.

    As :func:`magnitude_prune`, through the masks ``W = W_orig ⊙ M`` that keep pruned weights zero through training
    and ``state_dict``; weights already pruned stay pruned (their group then keeps fewer than 2). Returns the masks
    (layer name -> boolean tensor, ``True`` = kept; copies).
    """
    masks: dict[str, torch.Tensor] = {}
    for name, layer in _layers_or_error(model, modules, kinds=(nn.Linear,)).items():
        try:
            mask = semi_structured_mask(layer.weight, 2, 4)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        old = mask_of(layer)
        masks[name] = mask if old is None else mask & old.mask
    apply_masks(model, masks)
    return {name: mask.clone() for name, mask in masks.items()}


def gradual_schedule(initial: float, final: float, steps: int) -> list[float]:
    """Zhu & Gupta (2017)'s gradual pruning schedule: the target sparsity at pruning step ``t = 0, 1, ..., n``

        s_t = s_f + (s_i - s_f) (1 - t / n)^3

    (``n = steps``; ``steps + 1`` values from ``initial`` to ``final``). It prunes fast while the network
    has many redundant weights and slowly near the end.
    """
    fraction(initial, "initial")
    fraction(final, "final")
    if initial > final:
        raise ValueError(f"initial must be <= final; got initial={initial}, final={final}")
    steps = integer(steps, "steps", 1)
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(steps + 1)]


def _plain_key(key: str) -> str:
    """``fc.parametrizations.weight.original`` -> ``fc.weight``."""
    return key.replace(".parametrizations.weight.original", ".weight")


@torch.no_grad()
def rewind(
    model: nn.Module,
    initial_state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """The lottery ticket's rewind (Frankle & Carbin 2019): reset every weight, bias and buffer to its value
    in ``initial_state`` (a ``state_dict`` taken before training, dense or pruned) while keeping the masks, so
    the surviving weights restart from their initial values: ``W = W_0 ⊙ M``.

    With ``masks`` (from :func:`magnitude_prune`), those masks are applied afterwards, e.g. to a freshly
    initialised model for the random-reinitialisation control. Returns ``model``.
    """
    state, initial_state = checks.module(model).state_dict(), checks.state_dict(initial_state, "initial_state", model)
    for key in state:
        if key.endswith(".parametrizations.weight.0.mask"):
            continue  # keep the masks
        source = _plain_key(key) if _plain_key(key) in initial_state else key
        if source not in initial_state:
            nor = f" (nor {key!r})" if _plain_key(key) != key else ""
            raise ValueError(f"initial_state has no entry {_plain_key(key)!r}{nor}; "
                             f"its entries include {list(initial_state)[:4]}; expected a state_dict of this model, "
                             f"taken before or after pruning")
        state[key] = checks.like(initial_state[source], state[key], f"initial_state[{source!r}]")
    model.load_state_dict(state)
    if masks is not None:
        apply_masks(model, masks)
    return model


def iterative_prune(
    model: nn.Module,
    train,
    amounts: Sequence[float],
    epochs_per_round: int,
    *,
    scope: str = "global",
    modules: Iterable[str | nn.Module] | None = None,
    rewind_to: Mapping[str, torch.Tensor] | None = None,
    val=None,
    **fit_kwargs,
) -> list[dict]:
    """Prune, fine-tune, repeat: for each target sparsity ``s`` in ``amounts`` (e.g.
    :func:`gradual_schedule`), ``magnitude_prune(model, s)`` then
    ``kdlite.fit(model, train, epochs_per_round, val=val, **fit_kwargs)``.

    With ``rewind_to`` (a ``state_dict`` saved at initialisation) the surviving weights are rewound before
    each retraining: iterative magnitude pruning as in the lottery ticket hypothesis. Returns one record per
    round: ``{"round", "amount", "sparsity", "val_accuracy" (when val is given), "history"}``.
    """
    amounts = _check_amounts(amounts)
    epochs_per_round = integer(epochs_per_round, "epochs_per_round", 0)
    rewind_to = None if rewind_to is None else checks.state_dict(rewind_to, "rewind_to", model)
    desc = fit_kwargs.pop("desc", None)
    records = []
    for i, amount in enumerate(amounts):
        magnitude_prune(model, amount, scope=scope, modules=modules)
        if rewind_to is not None:
            rewind(model, rewind_to)
        round_desc = desc or f"round {i + 1}/{len(amounts)}"
        history = fit(model, train, epochs_per_round, val=val, desc=round_desc, **fit_kwargs)
        record = {"round": i + 1, "amount": amount, "sparsity": sparsity(model)["overall"]}
        record["history"] = history
        if val is not None:
            record["val_accuracy"] = evaluate(model, val)["accuracy"]
        records.append(record)
    return records


def sensitivity_scan(
    model: nn.Module,
    data,
    amounts: Sequence[float],
    modules: Iterable[str | nn.Module] | None = None,
) -> dict[str, list[float]]:
    """Prune one layer at a time (``scope="layer"``) at each amount and measure accuracy on ``data``, with no
    retraining: layer name -> accuracies in the order of ``amounts``. ``model`` itself is not changed (each
    measurement prunes a copy). Layers whose accuracy drops first deserve a smaller share of the pruning.
    """
    amounts = _check_amounts(amounts)
    result = {}
    for name in prunable_layers(model, modules):
        accs = []
        for amount in amounts:
            pruned = copy_model(model)
            magnitude_prune(pruned, amount, scope="layer", modules=[name])
            accs.append(evaluate(pruned, data)["accuracy"])
        result[name] = accs
    return result


def sparse_storage_bytes(
    obj: nn.Module | torch.Tensor,
    format: str = "bitmask",
    value_bytes: int | None = None,
    index_bytes: int = 4,
) -> int:
    """Bytes to store a tensor, or a model's state, when zeros are not stored.

    For a tensor with ``numel`` elements, ``nnz`` of them non-zero, ``b_v`` bytes a value (default: its own
    element size) and ``b_i`` bytes an index (default 4, int32):

        dense   = numel · b_v
        bitmask = ceil(numel / 8) + nnz · b_v          (one bit per position, then the non-zero values)
        csr     = nnz · (b_v + b_i) + (rows + 1) · b_i  (values, column indices, row pointers)

    ``b_i`` must be able to hold the largest column index and row pointer (``nnz``): else a ValueError.

    with ``rows = shape[0]`` (a conv weight is seen as ``out_channels × (in · kh · kw)``). For a model, the
    prunable (Linear, Conv) weights are stored in ``format`` and every other tensor of the state (biases,
    BatchNorm) dense; masks and the pre-mask weights are not counted.
    """
    if format not in ("dense", "bitmask", "csr"):
        raise ValueError(f"format must be 'dense', 'bitmask' or 'csr'; got {format!r}")
    for name, v in (("value_bytes", value_bytes), ("index_bytes", index_bytes)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int (bytes per stored number); got {v!r}")
    if isinstance(obj, nn.Module):
        layers = prunable_layers(obj)
        skip = {f"{name}.{suffix}" for name in layers for suffix in ("weight", "weight_orig", "weight_mask")}
        total = sum(sparse_storage_bytes(m.weight, format, value_bytes, index_bytes) for m in layers.values())
        others = (t for k, t in obj.state_dict().items() if ".parametrizations." not in k and k not in skip)
        return total + sum(t.numel() * t.element_size() for t in others)
    if not isinstance(obj, torch.Tensor):
        raise TypeError(f"obj must be a torch.nn.Module or a torch.Tensor; got {type(obj).__name__}")
    b_v = obj.element_size() if value_bytes is None else value_bytes
    numel, nnz = obj.numel(), int((obj != 0).sum())
    rows = obj.shape[0] if obj.dim() > 0 else 1
    if format == "dense":
        return numel * b_v
    if format == "bitmask":
        return math.ceil(numel / 8) + nnz * b_v
    _check_index_bytes(index_bytes, max(numel // max(rows, 1) - 1, nnz))  # the largest column or row pointer
    return nnz * (b_v + index_bytes) + (rows + 1) * index_bytes


def _check_index_bytes(b: int, largest: int) -> None:
    """``b`` bytes can hold an index as large as ``largest``."""
    if 256**b <= largest:
        raise ValueError(f"index_bytes={b} stores indices up to {256**b - 1}; this CSR needs {largest} (column "
                         f"indices and row pointers); expected index_bytes >= {math.ceil(math.log2(largest + 1) / 8)}")
