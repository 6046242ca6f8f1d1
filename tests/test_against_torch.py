"""kdlite's formulas against torch's (and scikit-learn's) own implementations of the same operations.

Each of these is also checked elsewhere against a float64 or autograd computation; here the reference is the
library a practitioner would otherwise use, so that a reader can trust that kdlite computes the same thing.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlite.losses import kd_loss
from kdlite.measure import count_flops
from kdlite.models import CNN, MLP
from kdlite.quant import fake_quantize, fold_batchnorm, kmeans_quantize, qrange


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 20.0])
def test_kd_loss_is_torchs_batchmean_kl_times_t_squared(T):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    torch.testing.assert_close(kd_loss(s, t, T), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_per_tensor_is_torchs(bits, symmetric):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(bits)) * 2
    qmin, qmax = qrange(bits, symmetric)
    scale, zero = 2.0**-3, 0 if symmetric else (qmin + qmax + 1) // 2  # a power of two: x / s is exact in both
    ours = fake_quantize(x, scale, zero, bits=bits, symmetric=symmetric)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_per_channel_is_torchs(bits):
    x = torch.randn(6, 50, generator=torch.Generator().manual_seed(bits))
    qmin, qmax = qrange(bits, symmetric=True)
    scale = 2.0 ** -torch.arange(1, 7, dtype=torch.float32)  # one power of two per channel
    zero = torch.zeros(6, dtype=torch.int32)
    ours = fake_quantize(x, scale, zero, bits=bits, symmetric=True, axis=0)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zero, 0, qmin, qmax)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_fake_quantize_with_any_scale_agrees_with_torch_but_for_ties():
    """torch multiplies by 1/s where kdlite divides by s: the two may round a value that lies within one float
    ulp of a rounding boundary differently, and nothing else."""
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    scale, zero = 0.0173, 128
    ours = fake_quantize(x, scale, zero, bits=8)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)
    differ = (ours - ref).abs() > 1e-6
    assert differ.float().mean() < 1e-3
    assert ((ours - ref).abs()[differ] <= scale * 1.0001).all()  # one step at most


def test_fold_batchnorm_is_torchs_fuse_conv_bn_eval():
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    conv.eval(), bn.eval()
    ours, ref = fold_batchnorm(conv, bn), fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_quantize_is_sklearns_lloyd_with_the_same_start(bits):
    from sklearn.cluster import KMeans

    w = torch.randn(2000, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    centroids, labels = kmeans_quantize(w, bits, iters=100)
    start = torch.linspace(w.min().item(), w.max().item(), 2**bits, dtype=torch.float64)
    km = KMeans(n_clusters=2**bits, init=start.reshape(-1, 1).numpy(), n_init=1, max_iter=100, tol=0,
                algorithm="lloyd").fit(w.reshape(-1, 1).numpy())
    ref = torch.from_numpy(km.cluster_centers_.reshape(-1))
    order = ref.argsort()
    torch.testing.assert_close(centroids, ref[order], rtol=1e-9, atol=1e-12)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    assert torch.equal(labels, rank[torch.from_numpy(km.labels_).long()])


@pytest.mark.parametrize("model, x, macs", [
    (MLP(20, [30], 5), torch.zeros(4, 20), 4 * (20 * 30 + 30 * 5)),
    (CNN(3, 10, widths=(4, 8, 16)), torch.zeros(2, 3, 8, 8), None),
])
def test_count_flops_is_flop_counter_mode(model, x, macs):
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert count_flops(model, x) == counter.get_total_flops()
    if macs is not None:
        assert count_flops(model, x) == 2 * macs  # two FLOPs per multiply-add
