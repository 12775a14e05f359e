"""Small architectures usable as model specs (`slimdeploy.models:NAME`) for tests, demos and benchmarks."""
from __future__ import annotations

import torch.nn as nn


class BasicBlock(nn.Module):
    """CIFAR-style residual block: two 3×3 convs, identity or 1×1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (He et al. 2016, CIFAR variant), with a width multiplier."""

    def __init__(self, blocks_per_stage: int = 1, width: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        layers, cin = [], width
        for i, cout in enumerate(widths):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def cifar_resnet8() -> nn.Module:
    """ResNet-8, 3 channels in, 10 classes."""
    return CifarResNet(1, 16)


def cifar_resnet8_wide() -> nn.Module:
    """ResNet-8 at 4× width (64-128-256 channels): latency that scales with width on a CPU."""
    return CifarResNet(1, 64)


def cifar_resnet20() -> nn.Module:
    """ResNet-20, 3 channels in, 10 classes."""
    return CifarResNet(3, 16)
