"""ResNet for 32x32 images (the CIFAR variant: a 3x3 stem and no max-pool, so small images keep
their resolution into the first stage).

Parameter names are readable and stable, so transfer options can name groups by prefix:
`stem` (the first conv and its batch norm), `stages` (every residual block; `stages.2` one stage,
`stages.2.0` one block) and `head` (the class layer).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    # No conv bias: the batch norm that follows has its own.
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; ReLU after adding the shortcut (identity, or a strided 1x1 conv
    and batch norm where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2, self.bn2 = _conv_bn(c_out, c_out, 3, 1)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            conv, bn = _conv_bn(c_in, c_out, 1, stride)
            self.shortcut = nn.Sequential(OrderedDict(conv=conv, bn=bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, classes: int, blocks: list[int], width: int):
        super().__init__()
        conv, bn = _conv_bn(in_channels, width, 3, 1)
        self.stem = nn.Sequential(OrderedDict(conv=conv, bn=bn, relu=nn.ReLU(inplace=True)))
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*(BasicBlock(c_in if b == 0 else c_out, c_out, stride if b == 0 else 1)
                                          for b in range(n))))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))

    def reinitialise(self, prefixes: tuple[str, ...]) -> None:
        """Re-initialise the layers under `prefixes` the way they were first initialised."""
        initialise(self, prefixes)


def initialise(model: nn.Module, prefixes: tuple[str, ...] | None = None) -> None:
    """Kaiming-normal convs (fan_out, as He et al. and torchvision do), batch norm weight 1 and bias 0,
    PyTorch's default for the head; only the modules under `prefixes` where given."""
    for name, m in model.named_modules():
        if prefixes is not None and not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.Linear)):
            m.reset_parameters()


def resnet(input_shape, classes, blocks=(2, 2, 2, 2), width=64) -> ResNet:
    """The model nnstudy.models.resnet declares, from its parameters."""
    model = ResNet(input_shape[0], classes, list(blocks), width)
    initialise(model)
    return model
