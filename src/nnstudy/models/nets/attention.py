"""The block-attention CNN: stages of blocks, each mixing k parallel 3x3 convs with weights that a
small MLP predicts from the block's own input.

The k convs (c_in -> c_out each) are one conv with k * c_out outputs, reshaped to
(N, k, c_out, H, W): its weight is the k convs' weights stacked, so it has exactly their
parameters (k * c_out * c_in * 9) and their initialisation (the fan-in, c_in * 9, is the same),
in one kernel launch instead of k.

Parameter names are readable and stable, so transfer options can name groups by prefix:
`stages` (every block; `stages.1` one stage, `stages.1.0` one block, `stages.1.0.attention` its
MLP) and `head` (the class layer).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from .. import ModelError

NEGATIVE_SLOPE = 0.01

class AttentionBlock(nn.Module):
    """LeakyReLU(bn(sum_i a_i conv_i(x)) + shortcut(x)), a = softmax(MLP(average-pooled x))."""

    def __init__(self, c_in: int, c_out: int, k: int, reduction: int):
        super().__init__()
        self.k, self.c_out = k, c_out
        hidden = max(c_in // reduction, k)
        self.attention = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc1=nn.Linear(c_in, hidden),
            relu=nn.ReLU(inplace=True), fc2=nn.Linear(hidden, k)))
        # No conv bias: the batch norm that follows has its own.
        self.convs = nn.Conv2d(c_in, k * c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        if c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(OrderedDict(conv=nn.Conv2d(c_in, c_out, 1, bias=False),
                                                      bn=nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.attention(x), dim=1)
        outputs = self.convs(x).unflatten(1, (self.k, self.c_out))
        mixed = torch.einsum("nk,nkchw->nchw", a, outputs)
        return F.leaky_relu(self.bn(mixed) + self.shortcut(x), NEGATIVE_SLOPE)


class BlockAttentionNet(nn.Module):
    def __init__(self, in_channels: int, classes: int, channels: list[int], blocks: list[int], k: int,
                 reduction: int):
        super().__init__()
        stages, c_in = [], in_channels
        for c_out, n in zip(channels, blocks):
            stages.append(nn.Sequential(*(AttentionBlock(c_in if b == 0 else c_out, c_out, k, reduction)
                                          for b in range(n)), nn.MaxPool2d(2)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(x)), 1))

    def reinitialise(self, prefixes: tuple[str, ...]) -> None:
        """Re-initialise the layers under `prefixes` the way they were first initialised."""
        initialise(self, prefixes)


def initialise(model: nn.Module, prefixes: tuple[str, ...] | None = None) -> None:
    """Kaiming-normal conv and linear weights for the leaky ReLU, zero biases, batch norm weight 1 and
    bias 0; only the modules under `prefixes` where given."""
    for name, m in model.named_modules():
        if prefixes is not None and not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def block_attention(input_shape, classes, channels=(64, 128, 256), blocks=(4, 4, 3), k=4,
                    reduction=4) -> BlockAttentionNet:
    """The model nnstudy.models.attention declares, from its parameters."""
    if len(blocks) != len(channels):
        raise ModelError(f"spec.model.blocks: {len(blocks)} entries for {len(channels)} stages of "
                         f"spec.model.channels; give one block count per stage")
    if min(input_shape[1:]) < 2 ** len(channels):
        raise ModelError(f"spec.model.channels: {len(channels)} stages halve the {input_shape[1]}x{input_shape[2]} "
                         f"input {len(channels)} times, below one pixel; use fewer stages")
    model = BlockAttentionNet(input_shape[0], classes, list(channels), list(blocks), k, reduction)
    initialise(model)
    return model
