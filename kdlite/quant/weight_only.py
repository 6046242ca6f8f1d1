"""Weight-only quantization of linear layers, as for language models: one scale per group of weights, and GPTQ.

A weight ``W`` (out, in) is quantized symmetrically, with one scale per group of ``g`` consecutive weights of a row
(the same input features), and used dequantized::

    s = max_{j in group} |W_ij| / (2^(b−1) − 1),        Ŵ_ij = s · clamp(round(W_ij / s), −2^(b−1), 2^(b−1) − 1)

Smaller groups follow the weights' local range more closely, at the cost of one stored scale per group.
Round-to-nearest (:func:`group_quantize`) rounds every weight on its own; GPTQ (:func:`gptq_quantize`, Frantar et
al. 2023) rounds one input column at a time and moves each column's rounding error onto the columns not yet
rounded, where the layer's inputs let the other weights absorb it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks as checks
from ..masks import copy_model
from .affine import fake_quantize, qparams


def group_quantize(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Symmetric round-to-nearest quantization of a weight ``w`` (out, in) with one scale per group of
    ``group_size`` consecutive weights of each row (None: one group per row), returned dequantized: the same
    shape and dtype as ``w``, at most 2^b − 1 distinct values per group::

        s_g = max_{j in g} |w_j| / (2^(b−1) − 1),        ŵ_j = s_g · round(w_j / s_g)

    ``group_size`` must divide the row length ``in``. An all-zero group stays zero.
    """
    bits, g = checks.bits(bits), _group_size(checks.tensor(w, "w", nonempty=True), group_size)
    checks.finite(w, "w")
    compute = torch.promote_types(w.dtype, torch.float32)  # qparams' smallest scale is the dtype's eps: bf16's is 8e-3
    groups = w.detach().to(compute).reshape(-1, g)  # one row per group: each row of w is in / g consecutive groups
    scale, zero_point = qparams(groups, bits, symmetric=True, axis=0, check=False)
    quantized = fake_quantize(groups, scale, zero_point, bits, symmetric=True, axis=0, check=False)
    return quantized.reshape(w.shape).to(w.dtype)


@torch.no_grad()
def group_quantize_model(model: nn.Module, bits: int, group_size: int | None = None, *,
                         per_row_fallback: bool = False) -> nn.Module:
    """A copy of ``model`` with the weight of every ``nn.Linear`` replaced by :func:`group_quantize` of it (the
    head of a language model included); biases, embeddings and norms stay in float. A pruned layer
    (``W = W_orig ⊙ M``) gets ``W_orig = group_quantize(W)``, so it stays pruned and its scales come from the kept
    weights. A ``group_size`` that does not divide a layer's row length raises an error naming the layer, or, with
    ``per_row_fallback=True``, gives that layer one scale per row (:func:`per_row_layers` names those layers)."""
    bits, per_row_fallback = checks.bits(bits), checks.flag(per_row_fallback, "per_row_fallback")
    model = copy_model(checks.layers_of(model, (nn.Linear,), "group_quantize_model", "nn.Linear"))
    fallback = set(per_row_layers(model, group_size)) if per_row_fallback else set()
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            try:
                quantized = group_quantize(layer.weight, bits, None if name in fallback else group_size)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None
            masked = parametrize.is_parametrized(layer, "weight")
            (layer.parametrizations.weight.original if masked else layer.weight).copy_(quantized)
    return model


def per_row_layers(model: nn.Module, group_size: int | None) -> list[str]:
    """The names of the ``nn.Linear`` layers of ``model`` whose row length (``in_features``) ``group_size`` does not
    divide: those that ``group_quantize_model(..., per_row_fallback=True)`` quantizes with one scale per row."""
    g = None if group_size is None else checks.integer(group_size, "group_size", 1)
    return [name for name, layer in checks.module(model).named_modules()
            if isinstance(layer, nn.Linear) and g is not None and layer.in_features % g]


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None = None,
                  damp: float = 0.01) -> torch.Tensor:
    """GPTQ (Frantar et al. 2023) for one layer ``y = x Wᵀ``: ``w`` (out, in) quantized column by column (input
    feature ``j = 0, 1, ..., in − 1``) so that the outputs ``x Ŵᵀ`` on the layer's inputs ``x`` (N, in) stay close
    to ``x Wᵀ``. With the Hessian of that squared error ``H = 2 xᵀx`` (dampened by ``λ = damp · mean(diag H)`` on
    its diagonal) and ``U`` the upper Cholesky factor of ``H⁻¹ = Uᵀ U``, each column is rounded and its error spread
    over the columns to its right::

        ŵ_j = quant(w_j),        w_k ← w_k − (w_j − ŵ_j) / U_jj · U_jk     for every k > j

    ``quant`` is :func:`group_quantize`'s symmetric rounding; a group's scale is computed when its first column
    is reached, from the weights as updated so far (``group_size=None``: one scale per row, from ``w``). Inputs
    that are always zero (a zero diagonal of H) get zero weights. The simple, unblocked algorithm: one step per
    input column. Returns the dequantized weight, of ``w``'s shape and dtype; ``x`` may have leading dimensions
    (B, T, in).
    """
    bits, g = checks.bits(bits), _group_size(checks.tensor(w, "w", nonempty=True), group_size)
    damp = checks.real(damp, "damp", 0, 1)
    _check_inputs(checks.tensor(x, "x", nonempty=True), w)
    checks.finite(w, "w"), checks.finite(x, "x")
    compute = torch.promote_types(w.dtype, torch.float32)
    work = w.detach().to(compute).clone()  # the weights, updated as the columns to their left are rounded
    x = x.detach().to(compute).reshape(-1, w.shape[1])
    hessian = 2 * x.T @ x
    dead = hessian.diagonal() == 0  # an input that is always 0: its weights do not matter; set them to 0
    hessian += torch.diag(dead.to(compute) + damp * hessian.diagonal().mean())
    work[:, dead] = 0
    with _positive_definite(hessian, damp):
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)  # H⁻¹ = Uᵀ U
    q = torch.zeros_like(work)
    for j in range(work.shape[1]):
        if j % g == 0:
            scale, zero_point = qparams(work[:, j : j + g], bits, symmetric=True, axis=0, check=False)
        q[:, j] = fake_quantize(work[:, j], scale, zero_point, bits, symmetric=True, axis=0, check=False)
        error = (work[:, j] - q[:, j]) / u[j, j]
        work[:, j + 1 :] -= error[:, None] * u[j, j + 1 :]
    return q.to(w.dtype)


def _group_size(w: torch.Tensor, group_size) -> int:
    """The group size: ``group_size``, or the row length when None; it must divide the row length of 2-D ``w``."""
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight (out_features, in_features); got shape {tuple(w.shape)}")
    g = w.shape[1] if group_size is None else checks.integer(group_size, "group_size", 1)
    if w.shape[1] % g:
        raise ValueError(f"group_size={g} does not divide the row length {w.shape[1]} of w (in_features); expected "
                         f"a divisor of {w.shape[1]}, or None for one group per row")
    return g


@contextlib.contextmanager
def _positive_definite(hessian: torch.Tensor, damp: float) -> Iterator[None]:
    """Turn torch's Cholesky failure into an error that names ``damp``, the knob that fixes it."""
    try:
        yield
    except torch.linalg.LinAlgError:
        raise ValueError(f"gptq_quantize: the dampened Hessian H = 2 xᵀx + λI (λ = damp · mean(diag H)) or its "
                         f"inverse is not positive definite in {hessian.dtype}: x is (nearly) rank-deficient for "
                         f"{hessian.shape[0]} inputs; got damp={damp}, expected a larger one (at most 1; GPTQ uses "
                         f"0.01), or pass w in float64: H is computed in w's dtype (float32 at least)") from None


def _check_inputs(x: torch.Tensor, w: torch.Tensor) -> None:
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"x must be the layer's inputs (N, {w.shape[1]}), in_features = w.shape[1]; got shape "
                         f"{tuple(x.shape)} for w of shape {tuple(w.shape)}")
