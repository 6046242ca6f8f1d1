"""The book's teachers and students: an MLP, a small CNN, a CIFAR-style ResNet, and a small GPT language model
(:class:`GPT`, in ``kdlite.gpt``, re-exported here).

The three classifiers end in a plain ``nn.Linear`` and return logits. Their layers are ordinary ``nn.Sequential``
stacks with readable names (``features.0``, ``layer2.1.conv1``, ...) so later chapters can tap, prune and quantize
them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import integer
from .gpt import GPT  # noqa: F401  (kdlite.models.GPT)

WIDTHS = "a sequence of positive ints, one per stage (e.g. (32, 64, 128))"


class MLP(nn.Module):
    """A fully connected network: flatten, then ``Linear → ReLU (→ Dropout)`` per hidden layer, then ``Linear``.

    ``MLP(784, [1200, 1200], 10, dropout=0.5)`` is Hinton et al.'s MNIST teacher, ``MLP(784, [800, 800], 10)``
    their student, and ``MLP(784, [300, 100], 10)`` LeNet-300-100.
    """

    def __init__(self, in_features: int, hidden: int | Sequence[int], out_features: int, dropout: float = 0.0):
        super().__init__()
        hidden = list(hidden) if isinstance(hidden, Sequence) and not isinstance(hidden, str) else [hidden]
        in_features, out_features = integer(in_features, "in_features", 1), integer(out_features, "out_features", 1)
        hidden = [integer(h, "hidden", 1, what="a positive int or a list of them (the hidden widths)") for h in hidden]
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 convolution (no bias: the BatchNorm has one), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class CNN(nn.Module):
    """A small VGG-style CNN: per stage two ``conv_bn_relu`` blocks and a 2×2 max-pool (none after the last),
    then global average pooling and a linear classifier.

    ``CNN(1, 10)`` fits 8×8 digits and 28×28 MNIST; ``CNN(3, 10, widths=(64, 128, 256))`` CIFAR-10.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        if not isinstance(widths, Sequence) or isinstance(widths, str) or not widths:
            raise TypeError(f"widths must be {WIDTHS}; got {widths!r}")
        in_channels, num_classes = integer(in_channels, "in_channels", 1), integer(num_classes, "num_classes", 1)
        widths = [integer(w, "widths", 1, what=WIDTHS) for w in widths]
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [conv_bn_relu(c, w), conv_bn_relu(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity shortcut (a 1×1 conv-BN where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, §4.2): a 3×3 stem, three stages of ``n`` basic blocks with ``width``,
    ``2·width`` and ``4·width`` channels (stride 2 between stages), global average pooling, a linear classifier.

    ``depth = 6n + 2``: ``ResNet(20)`` is resnet20, ``ResNet(56)`` resnet56; ``ResNet(8, width=32)`` is close to
    the resnet8x4 students of the distillation literature.
    """

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, ...); got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(c, w, stride=1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
