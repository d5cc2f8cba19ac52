"""Models built from the resolved `spec['model']`: conv blocks (none for an MLP) then an FC head.

Parameter names are readable and stable (features.conv1.weight, classifier.fc2.bias), so the
transfer options freeze/reinit can name groups by prefix: `features` = every conv layer,
`classifier` = every FC layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Net(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    @property
    def is_conv(self) -> bool:
        return len(self.features) > 0


def build(spec: dict, input_shape: tuple[int, ...], classes: int) -> Net:
    """A fresh model; initialised by the global torch RNG (seed it first)."""
    act = ACTIVATIONS[spec["activation"]]
    feats: OrderedDict[str, nn.Module] = OrderedDict()
    channels = input_shape[0]
    k = 0
    for b, block in enumerate(spec["conv"], start=1):
        for out in block["channels"]:
            k += 1
            feats[f"conv{k}"] = nn.Conv2d(channels, out, block["kernel"], padding=block["padding"])
            if spec["batchnorm"]:
                feats[f"bn{k}"] = nn.BatchNorm2d(out)
            feats[f"act{k}"] = act()
            channels = out
        if block["pool"] != "none":
            feats[f"pool{b}"] = POOLS[block["pool"]](2)
        if spec["conv_dropout"] > 0:
            feats[f"drop{b}"] = nn.Dropout(spec["conv_dropout"])
    features = nn.Sequential(feats)
    with torch.no_grad():
        width = features(torch.zeros(1, *input_shape)).flatten(1).shape[1]

    head: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out in enumerate(spec["hidden"], start=1):
        head[f"fc{i}"] = nn.Linear(width, out)
        if spec["batchnorm"]:
            head[f"bn_fc{i}"] = nn.BatchNorm1d(out)
        head[f"act_fc{i}"] = act()
        if spec["dropout"] > 0:
            head[f"drop_fc{i}"] = nn.Dropout(spec["dropout"])
        width = out
    head[f"fc{len(spec['hidden']) + 1}"] = nn.Linear(width, classes)
    model = Net(features, nn.Sequential(head))
    initialise(model, spec["init"], spec["activation"])
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


def forward_order(model: Net, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Module name -> layer index for every module that owns parameters: the position of a
    conv/linear layer among conv/linear layers in forward order; a batch-norm layer gets the
    index of the layer it normalises, so models with and without batch norm line up by depth."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    modules = dict(model.named_modules())
    index, depth = {}, -1
    for name in order:
        if isinstance(modules[name], (nn.Conv2d, nn.Linear)):
            depth += 1
        index[name] = max(depth, 0)
    return index
