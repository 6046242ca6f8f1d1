"""kdlite.features: FeatureTap against a manual forward, connectors, and their errors."""

import pytest
import torch
from torch import nn

from kdlite.features import FeatureTap, connector, tapped_modules
from kdlite.measure import count_params
from kdlite.models import CNN, MLP, ResNet


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_feature_tap_equals_manual_forward_and_removes_hooks():
    torch.manual_seed(0)
    model = CNN(1, 10, widths=(4, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    names = ["features.0", "features.2", "features.4", "pool"]
    with FeatureTap(model, names) as tap:
        logits = model(x)
        assert not no_hooks_left(model)
    assert no_hooks_left(model)
    with torch.no_grad():  # the same forward, written out layer by layer
        h0 = model.features[0](x)
        h1 = model.features[1](h0)
        h2 = model.features[2](h1)
        h3 = model.features[3](h2)
        h4 = model.features[4](h3)  # features: cbr, cbr, maxpool, cbr, cbr
        pooled = model.pool(h4)
        manual_logits = model.classifier(torch.flatten(pooled, 1))
    assert list(tap.features) == names
    for name, ref in zip(names, (h0, h2, h4, pooled), strict=True):
        assert torch.equal(tap.features[name], ref)
    assert torch.equal(logits, manual_logits)
    # after exit the features stay, and a new forward is not captured
    model(torch.randn(3, 1, 8, 8))
    assert torch.equal(tap.features["pool"], pooled)


def test_feature_tap_keeps_last_forward_and_gradients():
    model = MLP(6, [5, 4], 3)
    with FeatureTap(model, "net.3") as tap:
        model(torch.randn(2, 6))
        x = torch.randn(7, 6)
        out = model(x)
    assert tap.features["net.3"].shape == (7, 4)
    assert torch.equal(tap.features["net.3"], model.net[:4](x))
    tap.features["net.3"].sum().backward()  # not detached: a feature loss trains the model
    assert model.net[1].weight.grad is not None
    assert out.shape == (7, 3)


def test_feature_tap_does_not_change_the_model():
    torch.manual_seed(1)
    model = ResNet(8, width=4, num_classes=5, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        with FeatureTap(model, ["layer1.0.conv1", "layer3"]) as tap:
            during = model(x)
    assert torch.equal(before, during)
    assert tap.features["layer3"].shape == (2, 16, 2, 2)
    assert no_hooks_left(model)


def test_hooks_removed_even_on_exception():
    model = MLP(4, 3, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureTap(model, ["net.1"]):
            raise RuntimeError("boom")
    assert no_hooks_left(model)


def test_unknown_name_lists_available_names_closest_first():
    model = CNN(1, 10, widths=(4, 8))
    with pytest.raises(ValueError, match="featurs.3") as err:
        FeatureTap(model, ["features.0", "featurs.3"])
    msg = str(err.value)
    assert "available names, closest first: 'features.3'" in msg
    assert "'classifier'" in msg and "'pool'" in msg
    assert no_hooks_left(model)


def test_connector_linear_for_vectors():
    c = connector((32, 8), (32, 20))
    assert isinstance(c, nn.Linear) and (c.in_features, c.out_features) == (8, 20)
    assert c(torch.randn(5, 8)).shape == (5, 20)
    assert count_params(c) == 8 * 20 + 20


def test_connector_1x1_conv_bn_for_maps():
    s, t = torch.randn(4, 6, 5, 5), torch.randn(4, 12, 5, 5)
    c = connector(s.shape, t.shape)
    assert isinstance(c, nn.Sequential) and len(c) == 2
    conv, bn = c
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (6, 12)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 12
    assert c(s).shape == t.shape
    assert count_params(c) == 6 * 12 + 2 * 12


def test_connector_errors():
    with pytest.raises(ValueError, match="spatial size.*8x8 vs 4x4"):
        connector((2, 6, 8, 8), (2, 12, 4, 4))
    with pytest.raises(ValueError, match="same number of dimensions"):
        connector((2, 6), (2, 12, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C\) and \(N, C, H, W\)"):
        connector((2, 6, 10), (2, 12, 10))
    with pytest.raises(ValueError, match="student_shape must be a sequence of ints"):
        connector("abc", (2, 3))


def test_feature_tap_names_must_be_strings():
    with pytest.raises(TypeError, match="names must be a submodule name or a list of names.*got int"):
        FeatureTap(MLP(4, 4, 2), 3)


def test_tapped_modules_names_the_modules_an_open_tap_records():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model.register_forward_hook(lambda m, i, o: None)  # not a tap
    assert tapped_modules(model) == []
    with FeatureTap(model, ["0", "2"]):
        assert tapped_modules(model) == ["0", "2"]
    assert tapped_modules(model) == []
