"""Any torchvision classification model by name, randomly initialised or with its ImageNet weights.

Pretrained weights come through torchvision's weights API, so they live where torchvision keeps
them: torch.hub's cache, <torch.hub.get_dir()>/checkpoints/<file name of the weights' URL>
($TORCH_HOME/hub/checkpoints when TORCH_HOME is set). A cached file is loaded without a download;
a missing one is downloaded once, or, offline, gives a message saying where to put it.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from . import ModelError
from ..registry import register_model

# Per socket operation, not for the whole download: an unreachable server fails within seconds,
# a slow but live download goes on.
DOWNLOAD_TIMEOUT_S = 10

if TYPE_CHECKING:
    from torch import nn

PARAMS = {
    "arch": {"description": "A torchvision classification model, as torchvision.models.list_models("
                            "module=torchvision.models) names them: resnet18, vgg16, mobilenet_v3_small, ...",
             "type": "string", "default": "resnet18"},
    "pretrained": {"description": "imagenet: start from the arch's DEFAULT ImageNet weights (torch.hub's cache, "
                                  "else downloaded); null: random initialisation.",
                   "enum": [None, "imagenet"], "default": None},
}


@register_model("torchvision", PARAMS)
def torchvision_model(input_shape, classes, arch="resnet18", pretrained=None) -> nn.Module:
    """A torchvision classification model (torchvision.models.get_model), randomly initialised or with
    its ImageNet weights; its last Linear layer is replaced by a fresh one with the study's classes."""
    import torchvision  # here, not at the top: importing it costs about 1.5 s

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise ModelError(f"spec.model.arch: {arch!r} is not a torchvision classification model; "
                         f"choose one of: {', '.join(names)}")
    if input_shape[0] != 3:
        raise ModelError(f"spec.model.name: torchvision models take 3-channel images, these have "
                         f"{input_shape[0]}; use RGB data or another model")
    if pretrained == "imagenet":
        model = _pretrained(arch)
    else:
        model = torchvision.models.get_model(arch)
    _drop_auxiliary_heads(model)
    _replace_head(model, classes, arch)
    return model


def weights_file(arch: str) -> Path:
    """Where torch.hub caches the DEFAULT ImageNet weights of `arch` (whether or not they are there)."""
    import torch
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _pretrained(arch: str) -> nn.Module:
    import torchvision

    # torchvision's builder loads the cached file, or downloads it first; going through the builder
    # keeps what it sets with the weights (e.g. googlenet's transform_input).
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = weights_file(arch)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torchvision.models.get_model(arch, weights=weights, progress=False)
    except Exception as e:
        if cached.is_file():  # cached or downloaded: the failure is not the download's
            raise
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise ModelError(f"spec.model.pretrained: ImageNet weights for {arch} are not in the cache ({cached}) and "
                         f"could not be downloaded: {reason}; put {cached.name} in {cached.parent} or set "
                         f"TORCH_HOME to a folder whose hub/checkpoints holds it") from None


@contextmanager
def _socket_timeout(seconds: float):
    # urllib (under torch.hub's download) waits on a silent server for ever without a default timeout.
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _drop_auxiliary_heads(model: nn.Module) -> None:
    # googlenet and inception_v3 return (logits, auxiliary logits) while training; the engine wants logits.
    # This is what their builders do for pretrained models built without aux_logits.
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)


def _replace_head(model: nn.Module, classes: int, arch: str) -> None:
    # The last Linear is the class layer in every torchvision classifier that has one (resnet's fc,
    # vgg's classifier.6, vit's heads.head, ...); squeezenet's is a conv.
    from torch import nn

    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"spec.model.arch: {arch} has no Linear class layer to replace by one with "
                         f"{classes} outputs; choose another arch")
    old = model.get_submodule(linears[-1])
    model.set_submodule(linears[-1], nn.Linear(old.in_features, classes))
