"""kdlite.quant's per-group weight quantization and GPTQ, against loops and a GPTQ written out here with the explicit
inverse-Hessian updates of Frantar et al. (not the Cholesky form the library uses)."""

import copy

import pytest
import torch
from torch import nn

from kdlite import quant as Q
from kdlite.models import GPT, MLP
from kdlite.prune import magnitude_prune


def weight(out=6, inp=16, seed=0, dtype=torch.float32):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def rtn64(values, bits):
    """Symmetric round-to-nearest of a list of floats with one scale, in Python floats (round: half to even)."""
    qmax = 2 ** (bits - 1) - 1
    s = max(abs(v) for v in values) / qmax
    return [s * min(max(round(v / s), -qmax - 1), qmax) for v in values] if s > 0 else [0.0] * len(values)


@pytest.mark.parametrize("bits, group_size", [(2, 4), (3, 8), (4, 16), (4, None), (8, 2)])
def test_group_quantize_matches_a_loop_over_groups(bits, group_size):
    w = weight(dtype=torch.float64)
    got = Q.group_quantize(w, bits, group_size)
    assert got.shape == w.shape and got.dtype == w.dtype
    g = group_size or w.shape[1]
    for i in range(w.shape[0]):
        for start in range(0, w.shape[1], g):
            expected = rtn64(w[i, start : start + g].tolist(), bits)
            torch.testing.assert_close(got[i, start : start + g], torch.tensor(expected, dtype=torch.float64))
            assert len(set(got[i, start : start + g].tolist())) <= 2**bits - 1  # symmetric: ±qmax, no −2^(b−1)


def test_group_quantize_error_shrinks_with_bits_and_smaller_groups():
    w = weight(64, 128, seed=1) * torch.logspace(-1, 1, 128)  # columns of different ranges: groups help
    error = lambda bits, g: (Q.group_quantize(w, bits, g) - w).pow(2).mean().item()  # noqa: E731
    by_bits = [error(b, 32) for b in (2, 3, 4, 6, 8)]
    by_group = [error(4, g) for g in (None, 64, 32, 16, 8)]
    assert all(a > b for a, b in zip(by_bits, by_bits[1:], strict=False)), by_bits
    assert all(a > b for a, b in zip(by_group, by_group[1:], strict=False)), by_group


def test_weights_on_the_grid_come_back_exactly():
    g = torch.Generator().manual_seed(2)
    bits, qmax = 4, 7
    q = torch.randint(-qmax, qmax + 1, (5, 4, 8), generator=g).float()
    q[:, :, 0] = qmax * torch.sign(torch.randn(5, 4, generator=g))  # each group reaches ±qmax: its scale is s
    scales = 2.0 ** torch.randint(-6, 2, (5, 4, 1), generator=g).float()  # powers of two: exact in float
    w = (q * scales).reshape(5, 32)
    assert torch.equal(Q.group_quantize(w, bits, 8), w)
    assert torch.equal(Q.group_quantize(torch.zeros(3, 8), bits, 4), torch.zeros(3, 8))  # zero groups stay zero


def test_group_quantize_errors():
    with pytest.raises(ValueError, match="group_size=5 does not divide the row length 16"):
        Q.group_quantize(weight(), 4, 5)
    with pytest.raises(ValueError, match="2-D"):
        Q.group_quantize(torch.randn(2, 3, 4), 4, 2)
    with pytest.raises(ValueError, match="bits"):
        Q.group_quantize(weight(), 1, 4)
    with pytest.raises(ValueError, match="group_size"):
        Q.group_quantize(weight(), 4, 0)
    with pytest.raises(ValueError, match="NaN"):
        Q.group_quantize(weight().index_fill(1, torch.tensor([3]), float("nan")), 4, 4)


def test_group_quantize_model_is_a_copy_with_every_linear_quantized():
    torch.manual_seed(0)
    model = GPT(16, 8, 1, 2, 16)
    state = copy.deepcopy(model.state_dict())
    quantized = Q.group_quantize_model(model, 3, 8)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])  # the original is unchanged
    linears = {name: m for name, m in quantized.named_modules() if isinstance(m, nn.Linear)}
    assert len(linears) == 5  # qkv, proj, two MLP layers, head
    for name, layer in linears.items():
        original = dict(model.named_modules())[name]
        assert torch.equal(layer.weight, Q.group_quantize(original.weight, 3, 8))
        if layer.bias is not None:
            assert torch.equal(layer.bias, original.bias)
    assert torch.equal(quantized.tok_emb.weight, model.tok_emb.weight)  # embeddings stay in float
    with pytest.raises(ValueError, match=r"layer 'blocks.0.attn.qkv': group_size=3 does not divide"):
        Q.group_quantize_model(model, 4, 3)


def test_per_row_fallback_gives_one_scale_per_row_where_the_groups_do_not_fit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))  # rows of 12 and of 8
    assert Q.per_row_layers(model, 8) == ["0"]
    assert Q.per_row_layers(model, 4) == [] and Q.per_row_layers(model, None) == []
    quantized = Q.group_quantize_model(model, 4, 8, per_row_fallback=True)
    torch.testing.assert_close(quantized[0].weight, Q.group_quantize(model[0].weight, 4, None), rtol=0, atol=0)
    torch.testing.assert_close(quantized[2].weight, Q.group_quantize(model[2].weight, 4, 8), rtol=0, atol=0)
    # one scale per row in the layer that fell back: at most 2^4 - 1 distinct values in each row of 12
    assert all(len(row.unique()) <= 15 for row in quantized[0].weight)
    with pytest.raises(ValueError, match=r"layer '0': group_size=8 does not divide"):
        Q.group_quantize_model(model, 4, 8)
    with pytest.raises(ValueError, match="group_size"):
        Q.per_row_layers(model, 0)


def test_a_pruned_model_stays_pruned():
    torch.manual_seed(0)
    model = MLP(16, [32], 4)
    masks = magnitude_prune(model, 0.5)
    quantized = Q.group_quantize_model(model, 4, 8)
    for name, mask in masks.items():
        layer = dict(quantized.named_modules())[name]
        assert (layer.weight[~mask] == 0).all()
        torch.testing.assert_close(layer.weight, Q.group_quantize(dict(model.named_modules())[name].weight, 4, 8))


# --- GPTQ --------------------------------------------------------------------------------------------------


def gptq_reference(w, x, bits, group_size, damp):
    """Frantar et al.'s update with the explicit inverse Hessian, in float64: quantize column j, spread its error
    with row j of H⁻¹, then remove j from H⁻¹ by Gaussian elimination (eq. 3 of the paper, and OBS's update)."""
    w, x = w.double().clone(), x.double()
    h = 2 * x.T @ x
    dead = h.diagonal() == 0
    h = h + torch.diag(dead.double() + damp * h.diagonal().mean())
    w[:, dead] = 0
    h_inv = torch.linalg.inv(h)
    qmax, n = 2 ** (bits - 1) - 1, w.shape[1]
    g = group_size or n
    q = torch.zeros_like(w)
    for j in range(n):
        if j % g == 0:
            scale = (w[:, j : j + g].abs().amax(1) / qmax).clamp_min(torch.finfo(torch.float64).eps)
        q[:, j] = scale * torch.clamp(torch.round(w[:, j] / scale), -qmax - 1, qmax)
        error = (w[:, j] - q[:, j]) / h_inv[j, j]
        w[:, j:] -= error[:, None] * h_inv[j, j:]
        h_inv = h_inv - h_inv[:, j : j + 1] @ h_inv[j : j + 1, :] / h_inv[j, j]
    return q


def correlated_inputs(n=256, features=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g) / features**0.5 + torch.eye(features)
    return torch.randn(n, features, generator=g) @ mix * torch.linspace(0.2, 3, features)


@pytest.mark.parametrize("bits, group_size", [(3, None), (4, 8), (2, 16)])
def test_gptq_matches_the_explicit_inverse_hessian_algorithm(bits, group_size):
    w, x = weight(8, 32, seed=3, dtype=torch.float64), correlated_inputs(seed=4).double()
    x[:, 5] = 0  # an input that is always zero: its weights are set to 0
    got = Q.gptq_quantize(w, x, bits, group_size, damp=0.01)
    assert got.dtype == torch.float64 and got.shape == w.shape
    torch.testing.assert_close(got, gptq_reference(w, x, bits, group_size, 0.01), rtol=1e-9, atol=1e-12)
    assert (got[:, 5] == 0).all()


@pytest.mark.parametrize("bits, group_size", [(3, None), (4, 8), (3, 16)])
def test_gptq_lies_on_each_groups_grid_and_beats_round_to_nearest(bits, group_size):
    w, x = weight(16, 32, seed=5), correlated_inputs(seed=6)
    got = Q.gptq_quantize(w, x, bits, group_size)
    assert got.dtype == torch.float32
    qmax, g = 2 ** (bits - 1) - 1, group_size or 32
    for group in got.reshape(16, -1, g).reshape(-1, g):  # on a symmetric grid s · k, |k| ≤ qmax, per group
        s = group.abs().max() / qmax
        k = group / s
        torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-4)
        assert k.abs().max() <= qmax + 1e-4
    rtn = Q.group_quantize(w, bits, group_size)
    error = lambda v: (x @ w.T - x @ v.T).pow(2).sum().item()  # noqa: E731
    assert error(got) < error(rtn), (error(got), error(rtn))  # here 15-20% smaller


def test_gptq_errors():
    w, x = weight(4, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"x must be the layer's inputs \(N, 8\)"):
        Q.gptq_quantize(w, torch.randn(10, 7), 4)
    with pytest.raises(ValueError, match="group_size=3 does not divide the row length 8"):
        Q.gptq_quantize(w, x, 4, 3)
    with pytest.raises(ValueError, match="damp"):
        Q.gptq_quantize(w, x, 4, damp=0.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        Q.gptq_quantize(w, x.tolist(), 4)
    assert Q.gptq_quantize(w, x.reshape(2, 5, 8), 4).shape == (4, 8)  # leading dimensions of x are examples


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_small_half_precision_weights_keep_their_dtype_and_values(dtype):
    w = weight(4, 16, seed=7) * 1e-3  # scales far below bf16's eps: computed in float32, then cast back
    for got in (Q.group_quantize(w.to(dtype), 8, 8), Q.gptq_quantize(w.to(dtype), torch.randn(32, 16).to(dtype), 8, 8)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), w, rtol=0, atol=2e-5)
