"""The configurable conv net (none of its conv blocks for an MLP) and its named presets.

Parameter names are readable and stable (features.conv1.weight, classifier.fc2.bias), so the
transfer options freeze/reinit can name groups by prefix: `features` = every conv layer,
`classifier` = every FC layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..registry import register_model, MODELS

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
INITS = ("default", "kaiming_normal", "xavier")

PARAMS = {
    "conv": {
        "description": "Conv blocks (empty = an MLP).",
        "type": "array", "default": [],
        "items": {
            "type": "object", "additionalProperties": False, "required": ["channels"],
            "properties": {
                "channels": {
                    "description": "Output channels of the block's convs (one int or a list, one per conv).",
                    "oneOf": [{"type": "integer", "minimum": 1},
                              {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}}]},
                "kernel": {"type": "integer", "minimum": 1, "default": 3},
                "padding": {"type": "integer", "minimum": 0, "default": 1},
                "pool": {"enum": [*POOLS, "none"], "default": "max"},
            }}},
    "hidden": {"description": "Widths of the hidden fully connected layers.",
               "type": "array", "items": {"type": "integer", "minimum": 1}, "default": [128, 64]},
    "activation": {"enum": list(ACTIVATIONS), "default": "relu"},
    "dropout": {"description": "Dropout rate after each hidden fully connected layer.",
                "type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0},
    "conv_dropout": {"description": "Dropout rate after each conv block.",
                     "type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0},
    "batchnorm": {"description": "Batch norm after every conv and hidden fully connected layer.",
                  "type": "boolean", "default": False},
    "init": {"enum": list(INITS), "default": "default"},
}


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


def _channels_as_lists(model: dict, where: str) -> None:
    for block in model["conv"]:
        if isinstance(block["channels"], int):
            block["channels"] = [block["channels"]]


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


@register_model("convnet", PARAMS, canonical=_channels_as_lists)
def convnet(input_shape, classes, conv=(), hidden=(128, 64), activation="relu", dropout=0.0, conv_dropout=0.0,
            batchnorm=False, init="default") -> Net:
    """Conv blocks (conv, [batch norm], activation, per block a pooling and [dropout]), then fully
    connected layers ([batch norm], activation, [dropout]) and the class layer."""
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


# Named architectures. Widths are output channels / units; the class layer is implicit.
PRESETS = {
    "baseline": ("Study baseline: three conv blocks (conv 3x3, activation, max-pool), FC 256.",
                 {"conv": [{"channels": 32}, {"channels": 64}, {"channels": 128}], "hidden": [256]}),
    "small_cnn": ("Two conv blocks (32, 64), FC 128.",
                  {"conv": [{"channels": 32}, {"channels": 64}], "hidden": [128]}),
    "deep_cnn": ("Three conv blocks (32, 32, 64), FC 256.",
                 {"conv": [{"channels": 32}, {"channels": 32}, {"channels": 64}], "hidden": [256]}),
    "avgpool_cnn": ("Two conv blocks of 5x5 convs (64, 128) with average pooling, FC 128.",
                    {"conv": [{"channels": 64, "kernel": 5, "padding": 2, "pool": "avg"},
                              {"channels": 128, "kernel": 5, "padding": 2, "pool": "avg"}], "hidden": [128]}),
    "wide_cnn": ("Conv blocks 32-64, 128-128, 256-256 and FC 1024-512.",
                 {"conv": [{"channels": [32, 64]}, {"channels": [128, 128]}, {"channels": [256, 256]}],
                  "hidden": [1024, 512]}),
    "mlp4": ("An MLP with hidden layers 1024-512-256-128.", {"conv": [], "hidden": [1024, 512, 256, 128]}),
}
for _name, (_doc, _values) in PRESETS.items():
    MODELS.alias(_name, "convnet", _values, _doc)
