"""Quantizing a pruned model (the Deep Compression order): the pruned weights stay zero and the kept ones are used.

A layer pruned by kdlite is a parametrized subclass (``W = W_orig ⊙ M``), one pruned by ``torch.nn.utils.prune``
keeps ``weight_orig`` and ``weight_mask``; a quantizer that writes into ``layer.weight``, copies its ``state_dict``
or looks for ``type(layer) is nn.Linear`` would silently lose the weights, the mask or the layer. Each reference
here is computed on a copy whose masks were made permanent first (``remove_masks``), the way one would by hand."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import TensorDataset

from kdlite.masks import copy_model, layer_mask, masked_like, remove_masks, sparsity
from kdlite.models import CNN, GPT, MLP
from kdlite.prune import magnitude_prune
from kdlite.quant import QuantConv2d, QuantLinear, dynamic_int8, fold_batchnorm, prepare_qat, quantize_ptq, to_int8


def pruned(model: nn.Module, how: str = "kdlite", amount: float = 0.5) -> nn.Module:
    """``model`` pruned by kdlite's masks or by ``torch.nn.utils.prune`` (after which ``weight`` is recomputed before
    every forward pass, with autograd history: the copy that every quantizer makes must cope with it)."""
    if how == "kdlite":
        magnitude_prune(model, amount)
        return model
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            torch_prune.l1_unstructured(m, "weight", amount)
    return model


HOW = pytest.mark.parametrize("how", ["kdlite", "torch"])


def test_copy_model_copies_a_model_pruned_by_torch():
    model = pruned(MLP(8, [6], 3), "torch")
    x = torch.randn(4, 8)
    model(x).sum().backward()  # the original still trains
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(model)  # torch's own limitation
    twin = copy_model(model)
    torch.testing.assert_close(twin(x), model(x))
    assert all(torch.equal(layer_mask(a), layer_mask(b)) for a, b in zip(twin.modules(), model.modules(), strict=True)
               if layer_mask(a) is not None)


def test_layer_mask_of_kdlite_and_torch_pruned_layers():
    a, b, c = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)
    magnitude_prune(a, 0.5)
    torch_prune.l1_unstructured(b, "weight", 0.5)
    assert layer_mask(a).dtype == torch.bool and torch.equal(layer_mask(a), a.weight != 0)
    assert layer_mask(b).dtype == torch.bool and torch.equal(layer_mask(b), b.weight_mask.bool())
    assert layer_mask(c) is None


def random_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) * 3 + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


@HOW
def test_fold_batchnorm_of_a_pruned_conv_equals_bn_of_conv_and_keeps_the_mask(how):
    torch.manual_seed(0)
    conv, bn = pruned(nn.Conv2d(3, 8, 3), how), random_bn(8, 1)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    conv, bn = conv.double(), bn.double()
    folded = fold_batchnorm(conv, bn)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(conv(x)), rtol=1e-10, atol=1e-10)
    assert torch.equal(layer_mask(folded), layer_mask(conv))  # still pruned, with the same mask
    assert layer_mask(conv) is not None and (conv.weight == 0).sum() > 0  # the original is untouched


@HOW
def test_prepare_qat_of_a_pruned_model_quantizes_every_layer_and_keeps_its_weights_and_masks(how):
    torch.manual_seed(0)
    model = pruned(MLP(20, [32, 16], 5), how)
    before = sparsity(model)["overall"]
    qat = prepare_qat(model, bits=4)
    reference = prepare_qat(remove_masks(copy_model(model)), bits=4)  # masks made permanent by hand
    layers = [m for m in qat.modules() if isinstance(m, nn.Linear)]
    assert layers and all(isinstance(m, QuantLinear) for m in layers)
    assert all(layer_mask(m) is not None for m in layers)  # fine-tuning keeps the pruned weights at zero
    x = torch.randn(64, 20)
    qat.train(), reference.train()
    torch.testing.assert_close(qat(x), reference(x))  # same weights, same fake quantization
    assert sparsity(qat)["overall"] == pytest.approx(before)


@HOW
def test_qat_fine_tuning_of_a_pruned_cnn_keeps_the_zeros(how):
    torch.manual_seed(0)
    model = pruned(CNN(1, 4, (4, 8)), how)
    qat = prepare_qat(model, bits=8)
    convs = [m for m in qat.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, QuantConv2d) and layer_mask(m) is not None for m in convs)
    zeros = {id(m): (m.weight == 0).clone() for m in convs}
    opt = torch.optim.SGD(qat.parameters(), lr=0.1)
    qat.train()
    for _ in range(3):
        opt.zero_grad()
        qat(torch.randn(8, 1, 8, 8)).pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(m.weight == 0, zeros[id(m)]) for m in convs)


@HOW
def test_quantize_ptq_of_a_pruned_model_calibrates(how):
    torch.manual_seed(0)
    model = pruned(MLP(20, [32], 5), how)
    data = TensorDataset(torch.randn(256, 20), torch.randint(5, (256,)))
    q = quantize_ptq(model, data, bits=8)
    reference = quantize_ptq(remove_masks(copy_model(model)), data, bits=8)
    x = torch.randn(16, 20)
    torch.testing.assert_close(q(x), reference(x))


@HOW
def test_to_int8_of_a_pruned_model_converts_every_layer(how):
    torch.manual_seed(0)
    model = pruned(MLP(20, [32], 5), how).eval()
    data = TensorDataset(torch.randn(256, 20), torch.randint(5, (256,)))
    int8 = to_int8(model, data)
    assert not [n for n, m in int8.named_modules() if isinstance(m, nn.Linear)]  # every Linear became int8
    reference = to_int8(remove_masks(copy_model(model)), data)
    x = torch.randn(16, 20)
    torch.testing.assert_close(int8(x), reference(x))
    assert all(layer_mask(m) is not None for m in model.modules() if isinstance(m, nn.Linear))  # still pruned


@HOW
def test_dynamic_int8_of_a_pruned_gpt(how):
    torch.manual_seed(0)
    model = pruned(GPT(11, 8, 1, 2, 16), how).eval()
    q = dynamic_int8(model)
    assert not [n for n, m in q.named_modules() if type(m) is nn.Linear or layer_mask(m) is not None]
    idx = torch.randint(11, (2, 8))
    torch.testing.assert_close(q(idx), dynamic_int8(remove_masks(copy_model(model)))(idx))


def test_masked_like_copies_a_mask_and_leaves_an_unpruned_layer_alone():
    old, new, plain = nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(6, 4)
    magnitude_prune(old, 0.5)
    assert torch.equal(layer_mask(masked_like(new, old)), layer_mask(old))
    assert torch.equal(new.weight != 0, layer_mask(old))  # the same weights are zero
    assert masked_like(plain, nn.Linear(6, 4)) is plain and layer_mask(plain) is None
