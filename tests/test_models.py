import pytest
import torch

from kdlite.measure import count_params
from kdlite.models import CNN, MLP, ResNet


def test_mlp_shapes_and_params():
    m = MLP(784, [1200, 1200], 10, dropout=0.5)
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)  # flattens its input
    assert count_params(m) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert any(isinstance(x, torch.nn.Dropout) for x in m.modules())
    assert count_params(MLP(784, 300, 10)) == 784 * 300 + 300 + 3010


def test_mlp_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        MLP(4, 4, 2, dropout=1.0)


@pytest.mark.parametrize("shape, channels", [((1, 8, 8), 1), ((1, 28, 28), 1), ((3, 32, 32), 3)])
def test_cnn_any_image_size(shape, channels):
    m = CNN(channels, 7, widths=(8, 16, 32))
    assert m(torch.zeros(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("depth, n_blocks", [(8, 1), (20, 3), (32, 5)])
def test_resnet_depth(depth, n_blocks):
    m = ResNet(depth, width=8, num_classes=100)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert len(m.layer1) == len(m.layer2) == len(m.layer3) == n_blocks
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 3x3 convs plus the classifier make up the depth


def test_resnet20_size():
    assert 0.26e6 < count_params(ResNet(20)) < 0.28e6  # He et al.: 0.27M parameters


@pytest.mark.parametrize("depth", [7, 10, 21])
def test_resnet_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth)
