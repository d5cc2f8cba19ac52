"""The layers of the configurable conv net (nnstudy.models.convnet declares it and its parameters)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..convnet import ACTIVATIONS as ACTIVATION_NAMES, POOLS as POOL_NAMES

ACTIVATIONS = {name: getattr(nn, cls) for name, cls in ACTIVATION_NAMES.items()}
POOLS = {name: getattr(nn, cls) for name, cls in POOL_NAMES.items()}


class Net(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, init: str, activation: str):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.init, self.activation = init, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def reinitialise(self, prefixes: tuple[str, ...]) -> None:
        """Re-initialise the layers under `prefixes` the way they were first initialised."""
        initialise(self, self.init, self.activation, prefixes)


def _features(conv: list, in_channels: int, act, batchnorm: bool, conv_dropout: float) -> nn.Sequential:
    feats: OrderedDict[str, nn.Module] = OrderedDict()
    channels, k = in_channels, 0
    for b, block in enumerate(conv, start=1):
        for out in block["channels"]:
            k += 1
            feats[f"conv{k}"] = nn.Conv2d(channels, out, block.get("kernel", 3), padding=block.get("padding", 1))
            if batchnorm:
                feats[f"bn{k}"] = nn.BatchNorm2d(out)
            feats[f"act{k}"] = act()
            channels = out
        if block.get("pool", "max") != "none":
            feats[f"pool{b}"] = POOLS[block.get("pool", "max")](2)
        if conv_dropout > 0:
            feats[f"drop{b}"] = nn.Dropout(conv_dropout)
    return nn.Sequential(feats)


def convnet(input_shape, classes, conv=(), hidden=(128, 64), activation="relu", dropout=0.0, conv_dropout=0.0,
            batchnorm=False, init="default") -> Net:
    """The model nnstudy.models.convnet declares, from its parameters."""
    conv = [{**b, "channels": [b["channels"]] if isinstance(b["channels"], int) else b["channels"]} for b in conv]
    act = ACTIVATIONS[activation]
    features = _features(conv, input_shape[0], act, batchnorm, conv_dropout)
    with torch.no_grad():
        width = features(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    head: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out in enumerate(hidden, start=1):
        head[f"fc{i}"] = nn.Linear(width, out)
        if batchnorm:
            head[f"bn_fc{i}"] = nn.BatchNorm1d(out)
        head[f"act_fc{i}"] = act()
        if dropout > 0:
            head[f"drop_fc{i}"] = nn.Dropout(dropout)
        width = out
    head[f"fc{len(hidden) + 1}"] = nn.Linear(width, classes)
    model = Net(features, nn.Sequential(head), init, activation)
    initialise(model, init, activation)
    return model


def initialise(model: nn.Module, how: str, activation: str, prefixes: tuple[str, ...] = ("",)) -> None:
    """(Re-)initialise the conv/linear/batch-norm layers whose names start with one of `prefixes`."""
    for name, m in model.named_modules():
        if not name or not name.startswith(prefixes):
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if how == "default":
                m.reset_parameters()
            elif how == "kaiming_normal":
                nonlin = activation if activation in ("relu", "leaky_relu") else "linear"
                nn.init.kaiming_normal_(m.weight, nonlinearity=nonlin)
                nn.init.zeros_(m.bias)
            else:
                nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain(activation))
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
            m.reset_running_stats()
