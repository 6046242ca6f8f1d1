"""Tests of kdlite.quant against computations written out here: float64 loops, brute force and autograd."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlite import quant as Q
from kdlite.measure import model_size_bytes
from kdlite.models import CNN, GPT, MLP, ResNet
from kdlite.prune import magnitude_prune, sparsity
from kdlite.train import evaluate, fit

BITS = range(2, 17)


def ranges(bits, symmetric):
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def randomise_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.3)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


# --- the arithmetic ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits,symmetric", list(itertools.product(BITS, (False, True))))
def test_integer_range_and_dtype(bits, symmetric):
    qmin, qmax = ranges(bits, symmetric)
    assert Q.qrange(bits, symmetric) == (qmin, qmax)
    x = torch.linspace(-3, 3, 1001, dtype=torch.float64)
    scale = 6 / 2**bits / 4  # a scale so small that both ends of x saturate
    q = Q.quantize(x, scale, 0 if symmetric else 2 ** (bits - 1), bits, symmetric)
    assert q.dtype == torch.int32
    assert q.min().item() == qmin and q.max().item() == qmax


def test_quantize_matches_a_float64_loop():
    x = torch.randn(200, dtype=torch.float64) * 3
    for bits, symmetric, scale, zp in [
        (4, False, 0.37, 7),
        (8, True, 0.021, 0),
        (3, False, 0.5, 0),
        (16, True, 1e-4, 0),
    ]:
        qmin, qmax = ranges(bits, symmetric)
        expected = [min(max(round(v / scale) + zp, qmin), qmax) for v in x.tolist()]  # round(): half to even
        assert Q.quantize(x, scale, zp, bits, symmetric).tolist() == expected
        q = torch.tensor(expected)
        assert torch.allclose(Q.dequantize(q, scale, zp), torch.tensor([scale * (v - zp) for v in expected]))


@pytest.mark.parametrize("bits,symmetric", list(itertools.product((2, 3, 4, 8, 12, 16), (False, True))))
def test_qparams_minmax_formula(bits, symmetric):
    x = torch.randn(300, dtype=torch.float64) + 0.5
    scale, zp = Q.qparams(x, bits, symmetric)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    if symmetric:
        assert math.isclose(scale.item(), max(-lo, hi) / (2 ** (bits - 1) - 1), rel_tol=1e-12)
        assert zp.item() == 0
    else:
        s = (hi - lo) / (2**bits - 1)
        assert math.isclose(scale.item(), s, rel_tol=1e-12)
        assert zp.item() == round(-lo / s)
    assert scale.dtype == torch.float64 and zp.dtype == torch.int32 and scale.ndim == 0


@pytest.mark.parametrize("bits,symmetric", list(itertools.product(BITS, (False, True))))
def test_round_trip_error_at_most_half_a_step(bits, symmetric):
    x = torch.randn(7, 500, dtype=torch.float64) * torch.logspace(-2, 2, 7, dtype=torch.float64)[:, None]
    for axis in (None, 0):
        scale, zp = Q.qparams(x, bits, symmetric, axis=axis)
        err = (Q.dequantize(Q.quantize(x, scale, zp, bits, symmetric, axis), scale, zp, axis) - x).abs()
        s = scale if axis is None else scale[:, None]
        assert (err <= s / 2 * (1 + 1e-9)).all()


def test_per_channel_shapes_and_channels_are_independent():
    x = torch.randn(4, 5, 6)
    for axis in (0, 1, 2, -1):
        n = x.shape[axis]
        scale, zp = Q.qparams(x, 4, axis=axis)
        assert scale.shape == (n,) and zp.shape == (n,)
        q = Q.quantize(x, scale, zp, 4, axis=axis)
        assert q.shape == x.shape and Q.dequantize(q, scale, zp, axis=axis).shape == x.shape
        for c in range(n):  # each channel alone, per tensor
            xc = x.select(axis, c)
            s, z = Q.qparams(xc, 4)
            assert torch.allclose(scale[c], s) and zp[c] == z
            assert torch.equal(q.select(axis, c), Q.quantize(xc, s, z, 4))


def test_per_channel_beats_per_tensor_when_channel_ranges_differ():
    w = torch.randn(16, 64) * torch.logspace(-3, 0, 16)[:, None]  # channel ranges over 3 decades
    err = {}
    for axis in (None, 0):
        s, z = Q.qparams(w, 4, symmetric=True, axis=axis)
        # error relative to each channel's own power: small channels collapse to zero per tensor
        err[axis] = ((Q.fake_quantize(w, s, z, 4, True, axis) - w).pow(2).mean(1) / w.pow(2).mean(1)).mean()
    assert err[None] > 0.5 and err[0] < 0.02


def test_percentile_range_is_a_nearest_rank_percentile():
    x = torch.randn(10001, dtype=torch.float64)
    x[0] = 1000.0  # one outlier
    s, z = Q.qparams(x, 8, method="percentile", percentile=99.9)
    lo = np.percentile(x.numpy(), 0.1, method="nearest")
    hi = np.percentile(x.numpy(), 99.9, method="nearest")
    assert math.isclose(s.item(), (hi - lo) / 255, rel_tol=1e-9)
    assert s.item() < Q.qparams(x, 8)[0].item() / 100


def test_histogram_range_lowers_the_error_with_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[:5] = torch.tensor([12.0, -9.0, 15.0, 10.0, -14.0])
    mse = {}
    for method in ("minmax", "histogram"):
        s, z = Q.qparams(x, 4, method=method)
        mse[method] = (Q.dequantize(Q.quantize(x, s, z, 4), s, z) - x).pow(2).mean().item()
    assert mse["histogram"] < mse["minmax"] / 2
    s, _ = Q.qparams(x.reshape(4, -1), 4, symmetric=True, axis=0, method="histogram")
    assert s.shape == (4,)


# --- fake quantization and the straight-through estimator -----------------------------------------------
@pytest.mark.parametrize("symmetric,axis", [(False, None), (True, None), (False, 1), (True, 0)])
def test_fake_quantize_forward_and_straight_through_gradient(symmetric, axis):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 4, 50, generator=g, dtype=torch.float64) * 2).requires_grad_()
    shape = {None: (), 0: (3,), 1: (4,)}[axis]
    scale = torch.rand(shape, generator=g, dtype=torch.float64) * 0.2 + 0.05
    zp = torch.zeros(shape, dtype=torch.int32) if symmetric else torch.randint(0, 16, shape, generator=g)
    y = Q.fake_quantize(x, scale, zp, 4, symmetric, axis)
    assert torch.equal(y, Q.dequantize(Q.quantize(x, scale, zp, 4, symmetric, axis), scale, zp, axis))
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    y.backward(upstream)
    # by hand: the representable range [s (q_min - z), s (q_max - z)], per element
    qmin, qmax = ranges(4, symmetric)
    view = [1, 1, 1] if axis is None else [-1 if d == axis else 1 for d in range(3)]
    s, z = scale.reshape(view), zp.reshape(view).double()
    inside = (x >= s * (qmin - z)) & (x <= s * (qmax - z))
    assert inside.any() and (~inside).any()
    assert torch.equal(x.grad, torch.where(inside, upstream, torch.zeros_like(upstream)))


def test_fake_quantize_keeps_dtype_and_is_idempotent():
    x = torch.randn(100)
    s, z = Q.qparams(x, 6)
    y = Q.fake_quantize(x, s, z, 6)
    assert y.dtype == x.dtype and len(y.unique()) <= 64
    assert torch.allclose(Q.fake_quantize(y, s, z, 6), y)


# --- BatchNorm folding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias,stride,groups", [(False, 1, 1), (True, 2, 1), (True, 1, 2)])
def test_fold_batchnorm_gives_the_same_outputs(bias, stride, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, groups=groups, bias=bias)
    bn = randomise_batchnorm(nn.Sequential(nn.BatchNorm2d(6)))[0]
    x = torch.randn(5, 4, 9, 9)
    folded = Q.fold_batchnorm(conv, bn)
    assert isinstance(folded, nn.Conv2d) and folded.bias is not None
    with torch.no_grad():
        assert (folded(x) - bn(conv(x))).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "model,shape", [(CNN(1, 10, widths=(8, 16)), (4, 1, 8, 8)), (ResNet(8, 4), (4, 3, 16, 16))]
)
def test_fold_all_batchnorm_on_the_books_models(model, shape):
    model = randomise_batchnorm(model)
    folded = Q.fold_all_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(shape)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-5


# --- QAT and PTQ -------------------------------------------------------------------------------------------
def test_quant_linear_computes_fake_quantized_input_times_fake_quantized_weight():
    torch.manual_seed(0)
    layer = Q.QuantLinear.from_float(nn.Linear(6, 3), bits=2)
    x = torch.randn(10, 6)
    layer.train()(x)  # the first batch sets the observed range
    lo, hi = x.min().item(), x.max().item()
    assert math.isclose(layer.act.lo.item(), lo, rel_tol=1e-6)
    assert math.isclose(layer.act.hi.item(), hi, rel_tol=1e-6)
    # by hand: weights symmetric per row on {-2, -1, 0, 1} * s_c, s_c = max|w_c|; inputs unsigned 2-bit
    w = layer.weight.detach()
    s_w = w.abs().amax(1, keepdim=True)
    wq = torch.clamp(torch.round(w / s_w), -2, 1) * s_w
    s = (max(hi, 0) - min(lo, 0)) / 3
    z = round(-min(lo, 0) / s)
    xq = (torch.clamp(torch.round(x / s) + z, 0, 3) - z) * s
    layer.eval()
    assert torch.allclose(layer(x), F.linear(xq, wq, layer.bias), atol=1e-5)
    assert all(len(row.unique()) <= 3 for row in wq)


def test_prepare_qat_swaps_layers_and_trains_with_fit():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(8, 16))
    qat = Q.prepare_qat(model, bits=4)
    n_conv = sum(type(m) is nn.Conv2d for m in model.modules())
    assert sum(isinstance(m, Q.QuantConv2d) for m in qat.modules()) == n_conv
    assert sum(isinstance(m, Q.QuantLinear) for m in qat.modules()) == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qat.modules())
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    before = qat.classifier.weight.detach().clone()
    history = fit(qat, data, epochs=1, progress=False, device="cpu")
    assert math.isfinite(history.last["train_loss"])
    assert not torch.equal(before, qat.classifier.weight)
    assert all(math.isfinite(m.lo.item()) for m in qat.modules() if isinstance(m, Q.ActQuant))


def test_ptq_error_shrinks_with_bits_and_calibration_sets_the_input_range():
    model = randomise_batchnorm(CNN(1, 10, widths=(8, 16)))
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
        errors = [(Q.quantize_ptq(model, x, bits=b)(x) - ref).abs().max().item() for b in (2, 4, 8, 16)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[2] < 0.05 * ref.abs().max().item() and errors[3] < 1e-3
    batches = [(x[:32], None), (x[32:], None)]
    ptq = Q.quantize_ptq(model, batches, bits=8, num_batches=2)
    first = ptq.features[0][0].act
    assert first.lo.item() == x.min().item() and first.hi.item() == x.max().item()
    assert not ptq.training


def test_calibrate_percentile_clips_an_outlier():
    torch.manual_seed(0)
    model = randomise_batchnorm(CNN(1, 10, widths=(8, 16)))
    x = torch.randn(64, 1, 8, 8)
    x[0, 0, 0, 0] = 1000.0  # one corrupt pixel
    flat = x.flatten().numpy().astype(np.float64)
    ranges_of = {}
    for method in ("minmax", "percentile", "histogram"):
        ptq = Q.quantize_ptq(model, x, bits=8, method=method, percentile=99.9)
        first = ptq.features[0][0].act  # its input is x itself
        ranges_of[method] = (first.lo.item(), first.hi.item())
        assert not ptq.training
    assert ranges_of["minmax"] == (flat.min(), 1000.0)
    lo, hi = np.percentile(flat, 0.1, method="nearest"), np.percentile(flat, 99.9, method="nearest")
    assert ranges_of["percentile"] == pytest.approx((lo, hi), rel=1e-6)
    with pytest.raises(ValueError, match="method"):
        Q.calibrate(Q.prepare_qat(model), x, method="entropy")
    with pytest.raises(ValueError, match="percentile"):
        Q.quantize_ptq(model, x, method="percentile", percentile=120)


def test_calibrate_histogram_lowers_the_quantization_error_of_heavy_tailed_inputs():
    torch.manual_seed(0)
    model = randomise_batchnorm(CNN(1, 10, widths=(8, 16)))
    x = torch.distributions.Laplace(0.0, 1.0).sample((64, 1, 8, 8))
    flat = x.flatten().double()

    def mse(lo, hi, bits=4):  # asymmetric quantization of x to [lo, hi] widened to contain 0, in float64
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = (hi - lo) / (2**bits - 1)
        z = round(-lo / s)
        q = torch.clamp(torch.round(flat / s) + z, 0, 2**bits - 1)
        return ((q - z) * s - flat).pow(2).mean().item()

    act = {m: Q.quantize_ptq(model, x, bits=4, method=m).features[0][0].act for m in ("minmax", "histogram")}
    (lo_m, hi_m), (lo_h, hi_h) = [(a.lo.item(), a.hi.item()) for a in act.values()]
    assert lo_h > lo_m and hi_h < hi_m  # the tails are clipped
    assert mse(lo_h, hi_h) < 0.8 * mse(lo_m, hi_m)


def test_act_quant_needs_a_range():
    with pytest.raises(RuntimeError, match="calibrate"):
        Q.ActQuant(8).eval()(torch.randn(3))
    with pytest.raises(ValueError, match="ActQuant"):
        Q.calibrate(CNN(1, 10, widths=(4, 8)), torch.randn(2, 1, 8, 8))


# --- k-means weight sharing --------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_is_lloyd_and_beats_uniform_quantization(bits):
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(bits))
    centroids, labels = Q.kmeans_quantize(w, bits)
    assert centroids.shape == (2**bits,) and labels.shape == w.shape
    shared = centroids[labels]
    assert len(shared.unique()) <= 2**bits
    # a fixed point of Lloyd's iterations, checked by brute force: each weight at its nearest centroid,
    # each used centroid the mean of its weights
    nearest = (w[..., None] - centroids).abs().argmin(-1)
    assert (centroids[nearest] - w).abs().allclose((shared - w).abs())
    for k in labels.unique():
        assert torch.allclose(centroids[k], w[labels == k].mean(), atol=1e-6)
    kmeans_mse = (shared - w).pow(2).mean()
    for symmetric in (False, True):
        s, z = Q.qparams(w, bits, symmetric)
        uniform_mse = (Q.dequantize(Q.quantize(w, s, z, bits, symmetric), s, z) - w).pow(2).mean()
        assert kmeans_mse <= uniform_mse
    again = Q.kmeans_quantize(w, bits)
    assert torch.equal(again[0], centroids) and torch.equal(again[1], labels)


def test_kmeans_starts_from_a_linear_initialisation():
    w = torch.tensor([0.0, 1.0, 2.0, 3.0])  # already on the linear grid min..max with 4 points
    centroids, labels = Q.kmeans_quantize(w, 2)
    assert torch.equal(centroids, w) and labels.tolist() == [0, 1, 2, 3]


def test_shared_weight_gradient_is_the_sum_over_each_cluster():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    model = Q.share_weights(nn.Sequential(layer), bits=2)
    shared = model[0]
    loss = shared(x).pow(2).sum()
    loss.backward()
    centroids, labels = shared.parametrizations.weight[0].centroids, shared.parametrizations.weight[0].labels
    # independent: a plain weight tensor with the same values, its gradient summed per label by a loop
    w = centroids.detach()[labels].clone().requires_grad_()
    F.linear(x, w, shared.bias.detach()).pow(2).sum().backward()
    expected = torch.zeros(4)
    for i, j in itertools.product(range(4), range(8)):
        expected[labels[i, j]] += w.grad[i, j]
    assert torch.allclose(centroids.grad, expected, atol=1e-5)


def test_share_weights_fine_tunes_centroids_with_fit():
    torch.manual_seed(0)
    model = Q.share_weights(MLP(16, 12, 3), bits=2)
    before = model.net[1].weight.detach().clone()
    data = torch.utils.data.TensorDataset(torch.randn(64, 16), torch.randint(0, 3, (64,)))
    fit(model, data, epochs=1, progress=False, device="cpu")
    after = model.net[1].weight.detach()
    assert len(after.unique()) <= 4 and not torch.equal(before, after)


# --- real int8 ---------------------------------------------------------------------------------------------
def test_to_int8_runs_quantized_kernels_close_to_float():
    torch.manual_seed(0)
    model = randomise_batchnorm(CNN(1, 10, widths=(16, 32)))
    x = torch.rand(128, 1, 8, 8)
    int8 = Q.to_int8(model, x, num_batches=1)
    kinds = {type(m).__module__ for m in int8.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds)
    with torch.no_grad():
        ref, out = model(x), int8(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9
    assert model_size_bytes(int8) < 0.3 * model_size_bytes(model)
    labels = ref.argmax(1)
    assert evaluate(int8, torch.utils.data.TensorDataset(x, labels), device="cpu")["accuracy"] > 0.9


def test_strip_qat_gives_plain_layers_with_the_trained_weights_and_to_int8_converts_a_qat_model():
    torch.manual_seed(0)
    model = randomise_batchnorm(CNN(1, 10, widths=(8, 16)))
    x, y = torch.rand(128, 1, 8, 8), torch.randint(0, 10, (128,))
    qat = Q.prepare_qat(model, bits=8)
    fit(qat, torch.utils.data.TensorDataset(x, y), 1, device="cpu", progress=False)
    plain = Q.strip_qat(qat)
    assert not any(isinstance(m, (Q.QuantConv2d, Q.QuantLinear, Q.ActQuant)) for m in plain.modules())
    assert any(isinstance(m, Q.QuantConv2d) for m in qat.modules())  # the QAT model is not changed
    layers = lambda m: [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]  # noqa: E731
    for q, p in zip(layers(qat), layers(plain), strict=True):
        assert type(p) in (nn.Conv2d, nn.Linear) and torch.equal(p.weight, q.weight)  # the trained float weights
    first = layers(plain)[0]  # computes the float formula, no fake quantizer left
    assert torch.equal(first(x), F.conv2d(x, first.weight, first.bias, padding=first.padding))
    qat.eval()
    int8 = Q.to_int8(qat, x, num_batches=1)  # was a torch.fx TypeError before strip_qat
    with torch.no_grad():
        ref, out = qat(x), int8(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    dyn = Q.dynamic_int8(Q.prepare_qat(MLP(64, 16, 10), bits=8).eval())
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in dyn.modules())
    assert type(Q.strip_qat(Q.QuantLinear(4, 3))) is nn.Linear  # a Quant layer given alone


def test_a_pruned_qat_model_keeps_its_zeros_through_strip_qat_and_to_int8():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(8, 16))
    magnitude_prune(model, 0.6)
    x = torch.rand(32, 1, 8, 8)
    for per_channel, bits in ((True, 8), (False, 4)):
        qat = Q.prepare_qat(model, bits=bits, per_channel=per_channel)
        fit(qat, torch.utils.data.TensorDataset(x, torch.randint(0, 10, (32,))), 1, device="cpu", progress=False)
        plain = Q.strip_qat(qat)
        kept = sparsity(plain)["overall"]
        assert kept == pytest.approx(sparsity(qat)["overall"]) and kept > 0.5
        int8 = Q.to_int8(qat.eval(), x, num_batches=1)
        assert int8(x).shape == (32, 10)


def test_dynamic_int8_warns_when_there_is_no_linear_to_quantize():
    with pytest.warns(UserWarning, match=r"dynamic_int8 found no nn.Linear in Sequential: the copy stays float32"):
        Q.dynamic_int8(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    bare = Q.dynamic_int8(nn.Linear(4, 3))  # a Linear given alone is quantized too
    assert type(bare).__module__.startswith("torch.ao.nn.quantized") and bare(torch.randn(2, 4)).shape == (2, 3)


def test_to_int8_points_a_language_model_to_dynamic_int8():
    gpt = GPT(10, 8, 1, 2, 16)
    with pytest.raises(ValueError, match=r"to_int8 .* cannot take GPT, whose nn.Embedding looks up integer ids; "
                                         r"use dynamic_int8\(model\)"):
        Q.to_int8(gpt, torch.randint(0, 10, (4, 8)))


def test_int8_converters_refuse_an_int8_model():
    x = torch.rand(16, 1, 8, 8)
    int8 = Q.to_int8(CNN(1, 10, widths=(4, 8)), x, num_batches=1)
    with pytest.raises(ValueError, match=r"to_int8 quantizes a float32 model; model already runs int8 kernels"):
        Q.to_int8(int8, x)
    fused_only = Q.to_int8(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()), x, 1)
    assert not any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in fused_only.modules())
    for convert in (lambda m: Q.to_int8(m, x), Q.dynamic_int8):  # its ConvReLU2d are torch.ao.nn.intrinsic's
        with pytest.raises(ValueError, match=r"quantizes a float32 model; model already runs int8 kernels"):
            convert(fused_only)
    with pytest.raises(ValueError, match=r"dynamic_int8 quantizes a float32 model; model already runs int8"):
        Q.dynamic_int8(Q.dynamic_int8(MLP(64, 16, 10)))


def test_dynamic_int8_quantizes_every_linear_of_a_copy_and_stays_close():
    torch.manual_seed(0)
    model = GPT(16, 8, 2, 2, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = Q.dynamic_int8(model)
    kinds = [type(m) for m in int8.modules()]
    assert not any(k is nn.Linear for k in kinds)  # every nn.Linear replaced ...
    assert sum(k.__module__.startswith("torch.ao.nn.quantized.dynamic") for k in kinds) == 9  # 4 per block + head
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # ... in a copy
    idx = torch.randint(16, (4, 8))
    with torch.no_grad():
        ref, out = model.eval()(idx), int8(idx)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert model_size_bytes(int8) < 0.5 * model_size_bytes(model)
    with pytest.raises(ValueError, match=r"dynamic_int8 quantizes a float32 model; .* \['torch.float16'\]"):
        Q.dynamic_int8(MLP(4, [8], 2).half())


# --- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 17, 0, 2.5, True, "8"])
def test_bits_outside_2_to_16(bits):
    x = torch.randn(5)
    calls = [
        lambda: Q.qparams(x, bits),
        lambda: Q.quantize(x, 0.1, 0, bits),
        lambda: Q.fake_quantize(x, 0.1, 0, bits),
        lambda: Q.kmeans_quantize(x, bits),
        lambda: Q.prepare_qat(MLP(5, 4, 2), bits),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"bits.*2 to 16.*got"):
            call()


@pytest.mark.parametrize("scale", [0.0, -0.1, float("nan"), float("inf"), torch.tensor([0.1, 0.0, 0.2])])
def test_scale_must_be_positive(scale):
    x = torch.randn(3, 4)
    axis = 0 if isinstance(scale, torch.Tensor) else None
    for call in (
        lambda: Q.quantize(x, scale, 0, 8, axis=axis),
        lambda: Q.fake_quantize(x, scale, 0, 8, axis=axis),
        lambda: Q.dequantize(torch.zeros(3, 4, dtype=torch.int32), scale, 0, axis=axis),
    ):
        with pytest.raises(ValueError, match=r"scale must be finite and > 0; got"):
            call()


@pytest.mark.parametrize("axis", [2, -3, 5, 1.0])
def test_axis_out_of_range(axis):
    x = torch.randn(3, 4)
    for call in (
        lambda: Q.qparams(x, axis=axis),
        lambda: Q.quantize(x, 0.1, 0, axis=axis),
        lambda: Q.dequantize(torch.zeros(3, 4, dtype=torch.int32), 0.1, 0, axis=axis),
        lambda: Q.fake_quantize(x, 0.1, 0, axis=axis),
    ):
        with pytest.raises(ValueError, match=r"axis must be None or an int in \[-2, 2\).*\(3, 4\); got"):
            call()


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_tensors_where_floats_are_expected(dtype):
    x = torch.ones(3, 4, dtype=dtype)
    for name, call in (
        ("x", lambda: Q.qparams(x)),
        ("x", lambda: Q.quantize(x, 0.1, 0)),
        ("x", lambda: Q.fake_quantize(x, 0.1, 0)),
        ("weight", lambda: Q.kmeans_quantize(x, 4)),
        (
            "calibration inputs",
            lambda: Q.to_int8(CNN(1, 10, widths=(4, 8)), torch.ones(2, 1, 8, 8, dtype=dtype)),
        ),
    ):
        with pytest.raises(ValueError, match=rf"{name} must be (a )?floating-point tensors?; got dtype"):
            call()


def test_other_bad_arguments():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="method must be one of"):
        Q.qparams(x, method="kl")
    with pytest.raises(ValueError, match="percentile must be in"):
        Q.qparams(x, method="percentile", percentile=30)
    with pytest.raises(ValueError, match=r"zero_point must lie in \[0, 15\]"):
        Q.quantize(x, 0.1, 16, bits=4)
    with pytest.raises(ValueError, match="zero_point must be integer-valued"):
        Q.quantize(x, 0.1, 2.5)
    for call in (lambda: Q.quantize(x, 0.1, 3, symmetric=True), lambda: Q.fake_quantize(x, 0.1, 3, symmetric=True),
                 lambda: Q.quantize(x, 0.1, torch.tensor([0, 0, 1, 0]), symmetric=True, axis=1)):
        with pytest.raises(ValueError, match=r"zero_point must be 0 when symmetric=True.*symmetric=False"):
            call()
    assert torch.equal(Q.quantize(x, 0.1, torch.zeros(4, dtype=torch.int32), symmetric=True, axis=1),
                       Q.quantize(x, 0.1, 0, symmetric=True))
    with pytest.raises(ValueError, match="scale has 3 elements; expected 1 or 4"):
        Q.quantize(x, torch.ones(3), 0, axis=1)
    with pytest.raises(ValueError, match="x must not be empty"):
        Q.qparams(torch.ones(0))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        Q.qparams([1.0, 2.0])
    with pytest.raises(TypeError, match="expected \\(nn.Conv2d, nn.BatchNorm2d\\)"):
        Q.fold_batchnorm(nn.Linear(2, 2), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="num_features=3"):
        Q.fold_batchnorm(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"^data \(the calibration data\) is empty"):
        Q.to_int8(CNN(1, 10, widths=(4, 8)), [])
    with pytest.raises(ValueError, match="num_batches must be a positive int"):
        Q.quantize_ptq(CNN(1, 10, widths=(4, 8)), torch.randn(2, 1, 8, 8), num_batches=0)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad,counts", [(NAN, "1 NaN and 0 inf"), (INF, "0 NaN and 1 inf"), (-INF, "0 NaN and 1 inf")])
def test_one_off_calls_reject_nan_and_inf(bad, counts):
    x = torch.tensor([1.0, bad, 2.0])
    calls = [lambda: Q.quantize(x, 0.1, 0), lambda: Q.kmeans_quantize(x, 2)]
    calls += [lambda m=m: Q.qparams(x, method=m) for m in ("minmax", "percentile", "histogram")]
    for call in calls:
        with pytest.raises(ValueError, match=rf"(x|weight) must be finite; got {counts} values"):
            call()
    model = MLP(4, 3, 2)
    with torch.no_grad():
        model.net[1].weight[0, 0] = bad
    with pytest.raises(ValueError, match=rf"weight of layer 'net.1' must be finite; got {counts}"):
        Q.share_weights(model, 2)


def test_fake_quantize_keeps_nan_as_nan_and_saturates_inf():
    x = torch.tensor([1.0, NAN, 2.04, INF, -INF], requires_grad=True)
    y = Q.fake_quantize(x, 0.1, 0, bits=8)  # unsigned: the codes 0..255 cover [0, 25.5]
    torch.testing.assert_close(y, torch.tensor([1.0, NAN, 2.0, 25.5, 0.0]), equal_nan=True)
    y.backward(torch.ones(5))
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]  # outside the representable range: no gradient


@pytest.mark.parametrize("value", ["0.1", None, True, object(), torch.tensor(True)])
def test_scale_and_zero_point_of_the_wrong_type(value):
    x, q = torch.randn(3), torch.zeros(3, dtype=torch.int32)
    for name, call in (
        ("scale", lambda: Q.quantize(x, value, 0)),
        ("scale", lambda: Q.fake_quantize(x, value, 0)),
        ("scale", lambda: Q.dequantize(q, value, 0)),
        ("zero_point", lambda: Q.quantize(x, 0.1, value)),
        ("zero_point", lambda: Q.dequantize(q, 0.1, value)),
    ):
        with pytest.raises(TypeError, match=rf"{name} must (be a number or a tensor|hold real numbers); got"):
            call()


def test_scale_counts_and_underflow_messages():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"scale has 5 elements; expected 1 for a per-tensor call \(axis=None"):
        Q.quantize(x, torch.full((5,), 0.1), 0)
    with pytest.raises(ValueError, match=r"zero_point has 2 elements; expected 1 or 3"):
        Q.fake_quantize(x, 0.1, torch.zeros(2), axis=0)
    half = x.half()
    with pytest.raises(ValueError, match=r"scale \[1e-08\] underflows to 0 in torch.float16"):
        Q.quantize(half, 1e-8, 0)
    with pytest.raises(ValueError, match=r"scale \[1e\+300\] overflows to inf in torch.float32"):
        Q.fake_quantize(x, 1e300, 0)
    # a python scale is used in x's dtype, a tensor scale in its own dtype: 1e-8 is fine in float32
    expected = [min(max(round(v / 1e-8), 0), 255) for v in x.flatten().tolist()]
    assert Q.quantize(x, 1e-8, 0).flatten().tolist() == expected
    assert Q.quantize(half, torch.tensor(0.5), 0).dtype == torch.int32


def test_act_quant_momentum_and_non_finite_ranges():
    for momentum in (0, 2, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=rf"momentum must be in \(0, 1\] \(a number\); got {momentum!r}"):
            Q.ActQuant(8, momentum=momentum)
    act = Q.ActQuant(8, momentum=1).train()
    with pytest.raises(ValueError, match=r"ActQuant's range \[lo, hi\] = \[nan, nan\] is not finite"):
        act(torch.tensor([1.0, NAN]))
    act.reset()
    assert torch.equal(act(torch.tensor([0.0, 2.55])), torch.tensor([0.0, 2.55]))  # momentum 1: the last batch


NAN_BATCH, INF_BATCHES = torch.full((2, 1, 8, 8), NAN), [torch.rand(2, 1, 8, 8), torch.full((2, 1, 8, 8), -INF)]


@pytest.mark.parametrize("data", [NAN_BATCH, INF_BATCHES])
def test_calibration_rejects_nan_and_inf_inputs(data):
    batch = 0 if isinstance(data, torch.Tensor) else 1
    for name, call in (
        ("data", lambda: Q.calibrate(Q.prepare_qat(CNN(1, 10, widths=(4, 8))), data)),
        ("data", lambda: Q.quantize_ptq(CNN(1, 10, widths=(4, 8)), data)),
        ("data", lambda: Q.to_int8(CNN(1, 10, widths=(4, 8)), data)),
    ):
        with pytest.raises(ValueError, match=rf"^{name} batch {batch}: calibration inputs must be finite; got \d+ NaN"):
            call()


def test_calibration_rejects_empty_batches_and_non_tensors():
    model = CNN(1, 10, widths=(4, 8))
    with pytest.raises(ValueError, match=r"^data batch 0: calibration inputs must not be empty; got shape"):
        Q.to_int8(model, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"^data batch 1: calibration inputs must not be empty"):
        Q.calibrate(Q.prepare_qat(model), [torch.rand(2, 1, 8, 8), torch.zeros(0, 1, 8, 8)])
    with pytest.raises(ValueError, match=r"^data \(the calibration data\) is empty: expected at least one batch"):
        Q.calibrate(Q.prepare_qat(model), torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8)))
    with pytest.raises(TypeError, match=r"^data batch 0: calibration inputs must be a torch.Tensor; got list"):
        Q.to_int8(model, [([1.0, 2.0], 0)])
    with pytest.raises(TypeError, match=r"^data \(the calibration data\) must be a TensorDataset.*got float"):
        Q.to_int8(model, 3.0)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module; got str"):
        Q.calibrate("model", torch.rand(2, 1, 8, 8))


def test_calibration_names_the_act_quant_whose_activations_are_not_finite():
    model = Q.prepare_qat(MLP(4, 3, 2))
    with torch.no_grad():
        model.net[1].weight[0, 0] = INF  # finite inputs, but the next layer's inputs are not
    with pytest.raises(ValueError, match=r"ActQuant 'net.3.act' the range \[.*\]: the activations there contain NaN"):
        Q.calibrate(model, torch.randn(8, 4))


def test_calibrate_skips_an_act_quant_the_forward_does_not_use():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    x = torch.randn(8, 4)
    model = Q.calibrate(Q.prepare_qat(Unused()), x, method="percentile", percentile=100)
    assert (model.used.act.lo.item(), model.used.act.hi.item()) == (x.min().item(), x.max().item())
    assert model.unused.act.lo.item() == INF


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.mark.parametrize("model,x", [(Branching(), torch.rand(2, 4)), (nn.LSTM(4, 3), torch.rand(2, 5, 4))])
def test_to_int8_on_a_model_fx_cannot_trace(model, x):
    name = type(model).__name__
    expected = rf"to_int8 cannot trace {name} with torch.fx \(TraceError: .*\)\. It supports"
    with pytest.raises(ValueError, match=expected) as e:
        Q.to_int8(model, x)
    assert "MLP, CNN and ResNet" in str(e.value) and e.value.__suppress_context__


def test_the_old_name_calibration_data_still_works_with_a_warning():
    model, x = CNN(1, 10, widths=(4, 8)), torch.rand(4, 1, 8, 8)
    with pytest.warns(DeprecationWarning, match="calibration_data= is now called data="):
        q = Q.quantize_ptq(model, calibration_data=x)
    assert torch.equal(q(x), Q.quantize_ptq(model, x)(x))
    with pytest.warns(DeprecationWarning, match="calibration_data= is now called data="):
        Q.to_int8(model, calibration_data=x)
    with pytest.raises(TypeError, match="give data .* once .*got both"):
        Q.to_int8(model, x, calibration_data=x)
    with pytest.raises(TypeError, match="give data .* once .*got neither"):
        Q.to_int8(model)


def test_share_weights_keeps_pruned_weights_at_zero_through_training():
    from kdlite.prune import magnitude_prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    magnitude_prune(model, 0.75)
    zeros = [m.weight == 0 for m in (model[0], model[2])]
    shared = Q.share_weights(model, 2)
    for m, z in zip((shared[0], shared[2]), zeros, strict=True):
        assert bool((m.weight[z] == 0).all()) and len(m.weight[~z].unique()) <= 4
        assert int((m.parametrizations.weight[-1].labels == -1).sum()) == int(z.sum())
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    before = shared[0].parametrizations.weight[-1].centroids.detach().clone()
    fit(shared, (x, y), 2, progress=False, device="cpu")
    assert not torch.equal(before, shared[0].parametrizations.weight[-1].centroids)  # the centroids trained
    for m, z in zip((shared[0], shared[2]), zeros, strict=True):
        assert bool((m.weight[z] == 0).all())  # and the pruned weights stayed pruned


def test_quantize_ptq_calibrates_a_language_model_on_token_ids():
    from kdlite.data import TextLoader

    torch.manual_seed(0)
    ids = torch.randint(11, (500,))
    model = GPT(11, 16, 1, 2, 16).eval()
    q = Q.quantize_ptq(model, TextLoader(ids, 16, 8, 4, device="cpu"), bits=8)
    assert all(isinstance(m, Q.QuantLinear) for m in q.modules() if isinstance(m, nn.Linear))
    x = ids[:32].view(2, 16)
    with torch.no_grad():  # 8-bit weights and activations: close to the float model
        assert (q(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()


def test_an_int8_model_saves_and_loads_as_its_docstring_says():
    import io

    from kdlite.models import CNN
    from kdlite.quant import to_int8

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    int8_model = to_int8(CNN(3, 10, [8, 16]), x)
    buffer = io.BytesIO()
    torch.save(int8_model.state_dict(), buffer)
    buffer.seek(0)
    other = to_int8(CNN(3, 10, [8, 16]), torch.rand(16, 3, 32, 32))  # other weights, other calibration data
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other(x), int8_model(x))
