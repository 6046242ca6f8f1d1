"""Tests of kdlite.prune (and kdlite.structured): every claim checked against an independent computation."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import TensorDataset

from kdlite.masks import layer_mask
from kdlite.measure import count_flops, count_params
from kdlite.models import CNN, MLP, ResNet
from kdlite.prune import (
    apply_masks,
    channel_prune,
    gradual_schedule,
    iterative_prune,
    magnitude_prune,
    remove_masks,
    rewind,
    sensitivity_scan,
    sparse_storage_bytes,
    sparsity,
)
from kdlite.train import fit


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(20, [16, 12], 5)


def _data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Linear/Conv weights by layer name, float64 copies."""
    return {n: m.weight.detach().double().clone() for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


# ----------------------------------------------------------------------------------------------------
# magnitude pruning


@pytest.mark.parametrize("amount", [0.0, 0.37, 0.9])
def test_global_prune_is_exact_and_removes_the_smallest(amount):
    model = _mlp()
    before = _weights(model)
    masks = magnitude_prune(model, amount)
    n = sum(w.numel() for w in before.values())
    # exact count, counted by hand over the weights the layers now use
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Linear))
    assert zeros == round(amount * n)
    assert sparsity(model)["overall"] == pytest.approx(round(amount * n) / n, abs=0)
    # the pruned ones are the round(amount*n) smallest |w| of the original weights, found by sorting
    flat = torch.cat([w.abs().flatten() for w in before.values()])
    cutoff = torch.sort(flat).values
    pruned = torch.cat([before[k].abs()[~masks[k]] for k in before])
    kept = torch.cat([before[k].abs()[masks[k]] for k in before])
    assert len(pruned) == round(amount * n)
    if len(pruned):
        assert pruned.max() <= kept.min()
        assert torch.equal(torch.sort(pruned).values, cutoff[: len(pruned)])


def test_layer_prune_is_exact_per_layer_and_smallest_in_each():
    model = _mlp()
    before = _weights(model)
    masks = magnitude_prune(model, 0.55, scope="layer")
    s = sparsity(model)
    for name, w in before.items():
        k = round(0.55 * w.numel())
        assert int((~masks[name]).sum()) == k
        assert s[name] == k / w.numel()
        assert w.abs()[~masks[name]].max() <= w.abs()[masks[name]].min()
        smallest = torch.sort(w.abs().flatten()).values[:k]
        assert torch.equal(torch.sort(w.abs()[~masks[name]].flatten()).values, smallest)


def test_biases_and_batchnorm_untouched_and_only_chosen_modules():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(4, 8))
    for p in model.parameters():  # BN weights start at 1 and biases at 0: make them distinct
        nn.init.normal_(p)
    before = copy.deepcopy(model.state_dict())
    magnitude_prune(model, 0.6, modules=["features.0.0", model.classifier])
    after = model.state_dict()
    for key, value in before.items():
        if key in ("features.0.0.weight", "classifier.weight"):
            continue
        assert torch.equal(after[key], value), key
    s = sparsity(model)
    assert s["features.1.0"] == 0.0 and s["features.0.0"] > 0 and s["classifier"] > 0
    n = model.features[0][0].weight.numel() + model.classifier.weight.numel()
    assert s["features.0.0"] * 36 + s["classifier"] * 80 == pytest.approx(round(0.6 * n))


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_amount_raises(amount):
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(_mlp(), amount)
    with pytest.raises(ValueError, match="amount"):
        channel_prune(_mlp(), amount, torch.randn(2, 20))


def test_bad_scope_modules_and_lower_amount_raise():
    model = _mlp()
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="only Linear and Conv"):
        magnitude_prune(model, 0.5, modules=["net.2"])  # a ReLU
    with pytest.raises(ValueError, match="not a submodule"):
        magnitude_prune(model, 0.5, modules=["net.99"])
    magnitude_prune(model, 0.5)
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(model, 0.3)


def test_repruning_keeps_old_masks_and_reaches_the_new_target():
    model = _mlp()
    first = magnitude_prune(model, 0.5)
    second = magnitude_prune(model, 0.8)
    n = sum(m.numel() for m in first.values())
    assert sum(int((~m).sum()) for m in second.values()) == round(0.8 * n)
    for k in first:  # nothing pruned in round 1 came back
        assert not (second[k] & ~first[k]).any()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masks_survive_training_with_momentum_and_weight_decay(optimizer):
    model = _mlp()
    masks = magnitude_prune(model, 0.7)
    before = _weights(model)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2) if optimizer == "sgd"
           else None)  # None: fit's default AdamW with weight decay and a one-cycle schedule
    fit(model, _data(), 3, optimizer=opt, progress=False, device="cpu")
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach()
            assert (w[~masks[name]] == 0).all()
            assert not torch.equal(w.double()[masks[name]], before[name][masks[name]])  # it did train
    assert sparsity(model)["overall"] == pytest.approx(sum(int((~m).sum()) for m in masks.values())
                                                       / sum(m.numel() for m in masks.values()))


def test_optimizer_made_before_pruning_still_trains_the_pruned_model():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    fit(model, _data(), 1, optimizer=opt, progress=False, device="cpu")  # momentum buffers are non-zero now
    masks = magnitude_prune(model, 0.5)
    fit(model, _data(), 2, optimizer=opt, progress=False, device="cpu")
    assert all((model.get_submodule(k).weight[~m] == 0).all() for k, m in masks.items())


def test_state_dict_save_and_load():
    model = _mlp()
    masks = magnitude_prune(model, 0.6)
    fit(model, _data(), 1, progress=False, device="cpu")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    x = torch.randn(7, 20)
    # into a fresh model with the pruned structure (pruned with other masks): masks and weights come back
    fresh = _mlp(seed=1)
    magnitude_prune(fresh, 0.2, scope="layer")
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh(x), model(x))
    assert all((fresh.get_submodule(k).weight[~m] == 0).all() for k, m in masks.items())
    # made permanent: loads into a plain model
    plain = _mlp(seed=2)
    plain.load_state_dict(remove_masks(copy.deepcopy(model)).state_dict())
    assert torch.equal(plain(x), model(x))


def test_remove_masks_leaves_plain_weights_and_does_not_touch_a_deepcopy_original():
    model = _mlp()
    magnitude_prune(model, 0.5)
    x = torch.randn(3, 20)
    expected = model(x)
    twin = copy.deepcopy(model)
    remove_masks(twin)
    assert torch.equal(model(x), expected)  # the original still works after its copy was unmasked
    remove_masks(model)
    assert torch.equal(model(x), expected)
    assert set(model.state_dict()) == set(_mlp().state_dict())
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Flatten, nn.Sequential, MLP) for m in model.modules())
    assert sparsity(model)["overall"] == pytest.approx(0.5, abs=1e-3)


def test_sparsity_and_remove_masks_understand_torch_prune():
    model = _mlp()
    torch_prune.l1_unstructured(model.net[1], "weight", amount=0.25)
    assert sparsity(model)["net.1"] == 80 / 320
    remove_masks(model)
    assert "net.1.weight_mask" not in model.state_dict() and (model.net[1].weight == 0).sum() == 80


# ----------------------------------------------------------------------------------------------------
# schedules, iterative pruning, sensitivity, lottery ticket


def test_gradual_schedule_values():
    # s_t = s_f + (s_i - s_f)(1 - t/n)^3 with s_i = 0.1, s_f = 0.9, n = 4, written out
    expected = [0.1, 0.9 - 0.8 * 27 / 64, 0.9 - 0.8 * 8 / 64, 0.9 - 0.8 * 1 / 64, 0.9]
    assert gradual_schedule(0.1, 0.9, 4) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="steps"):
        gradual_schedule(0.0, 0.9, 0)
    with pytest.raises(ValueError, match="initial"):
        gradual_schedule(0.5, 0.2, 3)
    with pytest.raises(ValueError, match="final"):
        gradual_schedule(0.0, 1.0, 3)


def test_iterative_prune_reaches_each_target():
    model = _mlp()
    val = _data(32, seed=1)
    records = iterative_prune(model, _data(), [0.3, 0.6], 1, val=val, progress=False, device="cpu")
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert [r["sparsity"] for r in records] == [round(0.3 * n) / n, round(0.6 * n) / n]
    assert [r["round"] for r in records] == [1, 2] and all(0 <= r["val_accuracy"] <= 1 for r in records)
    with pytest.raises(ValueError, match="amounts"):
        iterative_prune(model, _data(), [0.7, 1.2], 1)


def test_sensitivity_scan_restores_the_model():
    model = _mlp()
    state = copy.deepcopy(model.state_dict())
    data = _data(40, seed=3)
    scan = sensitivity_scan(model, data, [0.0, 0.5, 0.95])
    assert set(scan) == {"net.1", "net.3", "net.5"} and all(len(v) == 3 for v in scan.values())
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # amount 0 is the dense model's accuracy, computed here by hand
    dense_acc = (model(data.tensors[0]).argmax(1) == data.tensors[1]).double().mean().item()
    assert all(v[0] == pytest.approx(dense_acc) for v in scan.values())


def test_rewind_resets_survivors_to_init_and_keeps_masks():
    model = _mlp()
    init = copy.deepcopy(model.state_dict())
    fit(model, _data(), 2, progress=False, device="cpu")
    masks = magnitude_prune(model, 0.8)
    rewind(model, init)
    for name, m in masks.items():
        w = model.get_submodule(name).weight
        assert torch.equal(w[m], init[f"{name}.weight"][m]) and (w[~m] == 0).all()
        assert torch.equal(model.get_submodule(name).bias, init[f"{name}.bias"])
    # the random-reinitialisation control: another init, the same masks
    other = rewind(_mlp(seed=5), _mlp(seed=5).state_dict(), masks=masks)
    assert sparsity(other)["overall"] == sparsity(model)["overall"]
    with pytest.raises(ValueError, match="initial_state"):
        rewind(model, {})


def test_lottery_rounds_with_the_output_layer_at_half_the_rate():
    """Frankle & Carbin's rates: hidden layers lose p of their weights per round, the output layer p / 2. Two
    layer-wise calls with ``modules`` do it; each layer's zeros are its own smallest magnitudes, counted by hand
    in float64, previously pruned weights stay pruned, and rewinding between rounds keeps every mask."""
    model = _mlp()
    init = copy.deepcopy(model.state_dict())
    hidden, output = ["net.1", "net.3"], ["net.5"]
    pruned_before = {}
    for r in (1, 2, 3):
        fit(model, _data(seed=r), 1, progress=False, device="cpu")
        scores = {n: w.abs() for n, w in _weights(model).items()}  # pruned weights already read as 0
        masks = {**magnitude_prune(model, 1 - 0.8**r, scope="layer", modules=hidden),
                 **magnitude_prune(model, 1 - 0.9**r, scope="layer", modules=output)}
        rewind(model, init)
        s = sparsity(model)
        for name, rate in [(n, 0.8) for n in hidden] + [(n, 0.9) for n in output]:
            w = model.get_submodule(name).weight
            k = round((1 - rate**r) * w.numel())
            assert int((~masks[name]).sum()) == k and s[name] == k / w.numel()
            assert scores[name][~masks[name]].max() <= scores[name][masks[name]].min()
            assert torch.equal(w[masks[name]], init[f"{name}.weight"][masks[name]])
            if name in pruned_before:
                assert not (masks[name] & pruned_before[name]).any()
            pruned_before[name] = ~masks[name]
    assert s["net.5"] < s["net.1"]


def test_apply_masks_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        apply_masks(_mlp(), {"net.1": torch.ones(3, 3, dtype=torch.bool)})


# ----------------------------------------------------------------------------------------------------
# channel pruning


def _silence(model: nn.Module, bn_or_linear: nn.Module, conv: nn.Module, channels: list[int]) -> None:
    """Make ``channels`` the least important (tiny filters) and dead (BN/bias output 0 -> ReLU 0)."""
    with torch.no_grad():
        conv.weight[channels] *= 1e-3
        bn_or_linear.weight[channels] = 0
        bn_or_linear.bias[channels] = 0


def test_channel_prune_cnn_matches_a_narrower_cnn():
    torch.manual_seed(0)
    model = CNN(3, 10, widths=(8, 16))
    x = torch.randn(2, 3, 12, 12)
    state = copy.deepcopy(model.state_dict())
    pruned = channel_prune(model, 0.5, x)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # original untouched
    narrow = CNN(3, 10, widths=(4, 8))  # what 50% of the channels must look like
    assert count_params(pruned) == count_params(narrow) < count_params(model)
    assert count_flops(pruned, x) == count_flops(narrow, x) < count_flops(model, x)
    assert pruned(x).shape == model(x).shape
    # the kept filters of the first conv are the 4 with the largest L1 norm
    l1 = model.features[0][0].weight.detach().abs().sum(dim=(1, 2, 3))
    keep = sorted(torch.argsort(l1, descending=True)[:4].tolist())
    assert torch.equal(pruned.features[0][0].weight, model.features[0][0].weight[keep])
    assert torch.equal(pruned.features[0][1].running_var, model.features[0][1].running_var[keep])


def test_channel_prune_cnn_amount_zero_is_identical():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(4, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(channel_prune(model, 0.0, x)(x), model(x))


def test_channel_prune_removing_dead_channels_keeps_outputs():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(4, 8))
    for i, dead in [(0, [1, 3]), (1, [0, 2]), (3, [1, 4, 5, 7]), (4, [0, 2, 5, 6])]:
        _silence(model, model.features[i][1], model.features[i][0], dead)
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    pruned = channel_prune(model, 0.5, x, importance="l2")
    assert [pruned.features[i][0].out_channels for i in (0, 1, 3, 4)] == [2, 2, 4, 4]
    assert pruned.classifier.in_features == 4
    # the removed channels were dead (ReLU(0) = 0 into the next layer), so the outputs agree
    assert torch.allclose(pruned(x), model(x), atol=1e-6)


def test_channel_prune_mlp_hidden_units():
    model = _mlp()  # 20 -> 16 -> 12 -> 5
    dead = [0, 5, 9, 13]
    _silence(model, model.net[1], model.net[1], dead)
    x = torch.randn(4, 20)
    pruned = channel_prune(model, 0.25, x)  # removes round(0.25 * 16) = 4 and round(0.25 * 12) = 3 units
    assert [pruned.net[1].out_features, pruned.net[3].in_features, pruned.net[3].out_features] == [12, 12, 9]
    assert (pruned.net[5].in_features, pruned.net[5].out_features) == (9, 5)
    alive = [i for i in range(16) if i not in dead]
    assert torch.equal(pruned.net[1].weight, model.net[1].weight[alive])
    assert torch.equal(pruned.net[3].weight[:, :], pruned.net[3].weight) and pruned(x).shape == (4, 5)


def test_channel_prune_resnet_prunes_inner_channels_and_warns_about_ties():
    torch.manual_seed(0)
    model = ResNet(8, width=8)
    block = model.layer2[0]
    _silence(model, block.bn1, block.conv1, list(range(8)))
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.warns(UserWarning, match="residual") as record:
        pruned = channel_prune(model, 0.5, x)
    message = str(record[0].message)
    assert "layer1.0.conv2" in message and "layer2.0.shortcut.0" in message and "conv1" in message
    for name in ("layer1.0", "layer2.0", "layer3.0"):
        old, new = model.get_submodule(name), pruned.get_submodule(name)
        c = old.conv1.out_channels
        assert new.conv1.out_channels == new.bn1.num_features == new.conv2.in_channels == c - round(c / 2)
        assert new.conv2.out_channels == old.conv2.out_channels  # tied: left alone
    assert pruned.conv1.out_channels == model.conv1.out_channels
    assert count_params(pruned) < count_params(model) and count_flops(pruned, x) < count_flops(model, x)
    assert pruned(x).shape == model(x).shape
    assert torch.allclose(pruned.layer2[0](torch.ones(1, 8, 8, 8)), model.layer2[0](torch.ones(1, 8, 8, 8)))


def test_channel_prune_keeps_one_channel_and_leaves_the_original_masked():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(2, 2))
    magnitude_prune(model, 0.5)
    x = torch.randn(2, 1, 8, 8)
    pruned = channel_prune(model, 0.99, x)
    assert all(pruned.features[i][0].out_channels == 1 for i in (0, 1, 3, 4))
    assert sparsity(model)["overall"] == pytest.approx(0.5, abs=0.02)  # the original keeps its masks


@pytest.mark.parametrize("kind", ["kdlite", "torch"])
def test_channel_prune_keeps_magnitude_masks_through_fine_tuning(kind):
    """A magnitude-pruned model, channel-pruned: its surviving zeros are masked, so training keeps them at 0."""
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(8, 8))
    if kind == "kdlite":
        magnitude_prune(model, 0.7)
    else:
        for layer in (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
            torch_prune.l1_unstructured(layer, "weight", 0.7)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    convs = lambda m: [layer for layer in m.modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]  # noqa: E731
    first = convs(model)[0]
    kept = layer_mask(first).nonzero()[0].tolist()
    with torch.no_grad():  # a kept weight that is exactly 0 stays trainable: the mask is cut, not rebuilt from zeros
        (first.parametrizations.weight.original if kind == "kdlite" else first.weight_orig)[tuple(kept)] = 0.0
    for old, new in zip(convs(model), convs(channel_prune(model, 0.0, x[:2])), strict=True):
        assert torch.equal(layer_mask(new), layer_mask(old))
    small = channel_prune(model, 0.25, x[:2])
    layers = {name: m for name, m in small.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    zeros = {name: (m.weight == 0).clone() for name, m in layers.items()}
    assert sum(int(z.sum()) for z in zeros.values()) > 0
    fit(small, TensorDataset(x, y), 2, device="cpu", progress=False)
    for name, m in layers.items():
        assert torch.all(m.weight[zeros[name]] == 0), name  # no pruned weight came back
        assert torch.any(m.weight[~zeros[name]] != 0)


def test_channel_prune_unsupported_layers_raise_with_their_name():
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(),
                              nn.LazyLinear(4))
    x = torch.randn(1, 3, 8, 8)
    depthwise(x)
    with pytest.raises(ValueError, match=r"'2'.*groups=8"):
        channel_prune(depthwise, 0.5, x)
    layernorm = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'1'.*LayerNorm"):
        channel_prune(layernorm, 0.5, torch.randn(2, 4))
    with pytest.raises(ValueError, match="importance"):
        channel_prune(_mlp(), 0.5, torch.randn(2, 20), importance="taylor")


# ----------------------------------------------------------------------------------------------------
# storage


def test_sparse_storage_bytes_by_hand():
    w = torch.zeros(4, 5)
    w[0, 1], w[1, 0], w[1, 4], w[2, 2], w[3, 3], w[3, 4] = 1, 2, 3, 4, 5, 6  # 6 non-zeros of 20, float32
    assert sparse_storage_bytes(w, "dense") == 20 * 4
    assert sparse_storage_bytes(w, "bitmask") == math.ceil(20 / 8) + 6 * 4  # 3 + 24
    assert sparse_storage_bytes(w, "csr") == 6 * (4 + 4) + (4 + 1) * 4  # 48 + 20
    assert sparse_storage_bytes(w, "csr", value_bytes=1, index_bytes=2) == 6 * 3 + 5 * 2
    with pytest.raises(ValueError, match="format"):
        sparse_storage_bytes(w, "coo")
    with pytest.raises(TypeError, match="obj"):
        sparse_storage_bytes([1, 2])


def test_csr_indices_must_fit_their_bytes():
    w = torch.zeros(2, 300)
    w[0, 299] = 1.0  # column index 299 needs two bytes
    assert sparse_storage_bytes(w, "csr", index_bytes=2) == 1 * (4 + 2) + 3 * 2
    with pytest.raises(ValueError, match=r"index_bytes=1 stores indices up to 255; this CSR needs 299 .* >= 2"):
        sparse_storage_bytes(w, "csr", index_bytes=1)
    dense = torch.ones(1, 200)  # 200 non-zeros: the row pointer reaches 200, column indices 199: one byte is enough
    assert sparse_storage_bytes(dense, "csr", index_bytes=1) == 200 * 5 + 2


def test_sparse_storage_bytes_of_a_model_by_hand():
    model = _mlp()
    masks = magnitude_prune(model, 0.75, scope="layer")
    nnz = {k: int(m.sum()) for k, m in masks.items()}
    rows = {"net.1": 16, "net.3": 12, "net.5": 5}
    biases = (16 + 12 + 5) * 4
    bitmask = sum(math.ceil(m.numel() / 8) + nnz[k] * 4 for k, m in masks.items()) + biases
    csr = sum(nnz[k] * 8 + (rows[k] + 1) * 4 for k in masks) + biases
    assert sparse_storage_bytes(model, "bitmask") == bitmask
    assert sparse_storage_bytes(model, "csr") == csr
    assert sparse_storage_bytes(model, "dense") == 4 * count_params(model)


def test_no_warning_for_models_without_residuals():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_prune(CNN(1, 10, widths=(4, 4)), 0.5, torch.randn(1, 1, 8, 8))


def test_pruning_names_models_and_amounts_it_cannot_handle():
    with pytest.raises(ValueError, match="LSTM.*no Linear or Conv"):
        magnitude_prune(nn.LSTM(4, 4), 0.5)
    assert sparsity(nn.LSTM(4, 4)) == {"overall": 0.0}  # measuring: nothing prunable, nothing to report
    mlp = MLP(8, 4, 2)  # 32 + 8 = 40 prunable weights
    with pytest.raises(ValueError, match="amount=0.99 would prune all 40"):
        magnitude_prune(mlp, 0.99)
    assert sparsity(mlp)["overall"] == 0.0  # refused before anything was pruned
    with pytest.raises(ValueError, match="value_bytes must be a positive int"):
        sparse_storage_bytes(torch.ones(3), value_bytes=-1)
    cnn = CNN(1, 10, widths=(4, 8))
    with pytest.raises(ValueError, match=r"example_input of shape \(2, 3, 8, 8\) does not fit the model"):
        channel_prune(cnn, 0.5, torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        channel_prune(cnn, 0.5, None)


def test_apply_masks_refuses_a_mask_that_is_not_zeros_and_ones():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"masks\[''\] must be boolean .* only 0s and 1s; got values such as \[0\.3"):
        apply_masks(layer, {"": torch.full((2, 3), 0.3)})
    assert not torch_prune.is_pruned(layer) and not hasattr(layer, "parametrizations")  # nothing attached
    apply_masks(layer, {"": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])})  # 0/1 floats are a mask
    assert torch.equal(layer.weight != 0, torch.tensor([[True, False, True], [False, False, True]]))


def test_kdlite_masks_refuse_to_stack_on_torch_pruning():
    model = _mlp()
    torch_prune.l1_unstructured(model.net[1], "weight", 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer\(s\) 'net.1' are pruned with torch.nn.utils.prune; .*remove_masks"):
        magnitude_prune(model, 0.7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing changed
    remove_masks(model)
    magnitude_prune(model, 0.7)
    assert sparsity(model)["overall"] == pytest.approx(0.7, abs=0.01)


def test_channel_prune_points_a_mean_pool_to_adaptive_avg_pool():
    class MeanPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match=r"does not support the operation 'mean' .*use F.adaptive_avg_pool2d\(x, 1\)"):
        channel_prune(MeanPool(), 0.5, torch.randn(2, 1, 8, 8))


def test_a_pruned_state_dict_loads_as_the_masks_docstring_says():
    from kdlite.models import MLP
    from kdlite.prune import magnitude_prune, remove_masks, sparsity

    pruned, x = MLP(8, [16], 4), torch.randn(5, 8)
    magnitude_prune(pruned, 0.5)
    fresh = MLP(8, [16], 4)
    magnitude_prune(fresh, 0.1)  # any amount: the loaded masks replace its own
    fresh.load_state_dict(pruned.state_dict())
    assert torch.equal(fresh(x), pruned(x)) and sparsity(fresh)["overall"] == sparsity(pruned)["overall"]
    plain = MLP(8, [16], 4)
    plain.load_state_dict(remove_masks(pruned).state_dict())
    assert torch.equal(plain(x), pruned(x))


def test_apply_masks_takes_layers_as_keys_as_well_as_names():
    from kdlite.prune import apply_masks

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    mask = torch.tensor([[True, False, True, False]] * 3)
    apply_masks(model, {model[0]: mask, "2": torch.ones(2, 3, dtype=torch.bool)})
    assert torch.equal(model[0].weight != 0, mask) and (model[2].weight != 0).all()


def test_channel_prune_sees_through_arithmetic_with_a_number():
    """x * 2 + 1 treats every channel alike: not a residual connection (which ties channels, and stays)."""
    import warnings

    from kdlite.prune import channel_prune

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x) * 2 + 1))

    model, x = Scaled(), torch.randn(5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruned = channel_prune(model, 0.5, x)
    keep = torch.topk(model.a.weight.abs().sum(1), 8).indices.sort().values  # the L1-largest rows, as documented
    expected = model.b.weight[:, keep] @ torch.relu(2 * (x @ model.a.weight[keep].T + model.a.bias[keep]) + 1).T
    assert pruned.a.out_features == 8 and torch.allclose(pruned(x), expected.T + model.b.bias, atol=1e-6)
