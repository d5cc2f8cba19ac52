"""The configurable conv net (none of its conv blocks for an MLP) and its named presets, as the
registry declares them; the layers are built by nnstudy.models.nets.convnet.

Parameter names are readable and stable (features.conv1.weight, classifier.fc2.bias), so the
transfer options freeze/reinit can name groups by prefix: `features` = every conv layer,
`classifier` = every FC layer.
"""
from __future__ import annotations

from ..registry import MODELS, register_model

# name -> its torch.nn module
ACTIVATIONS = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}
POOLS = {"max": "MaxPool2d", "avg": "AvgPool2d"}
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


def _channels_as_lists(model: dict, where: str) -> None:
    for block in model["conv"]:
        if isinstance(block["channels"], int):
            block["channels"] = [block["channels"]]


@register_model("convnet", PARAMS, canonical=_channels_as_lists)
def convnet(input_shape, classes, **params):
    """Conv blocks (conv, [batch norm], activation, per block a pooling and [dropout]), then fully
    connected layers ([batch norm], activation, [dropout]) and the class layer."""
    from .nets.convnet import convnet as build  # torch: imported where a model is built, not where a study is planned

    return build(input_shape, classes, **params)


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
