"""Models: every architecture is a registered factory (nnstudy.registry.MODELS); these helpers
work on any nn.Module, so users' own models get the same treatment as nnstudy's. Declaring the
models imports no torch (their layers are in nnstudy.models.nets): planning a study needs only
the declarations."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import registry

if TYPE_CHECKING:
    from torch import nn


class ModelError(ValueError):
    """A model factory failed, returned something that is not a model, or lacks what it needs
    (e.g. pretrained weights); the message says which and what to do."""


from . import convnet, resnet, attention, torchvision_models  # noqa: E402,F401 (registers them, in this order)


def build(model_spec: dict, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """A fresh model from the resolved `spec['model']`, initialised by the global torch RNG
    (seed it first). `classes` is the number of outputs the loss wants."""
    from torch import nn

    entry = registry.MODELS.get(model_spec["name"], "spec.model.name")
    params = {k: v for k, v in model_spec.items() if k != "name"}
    where = f"model {entry.name!r}" + (f" of plugin {entry.origin.rsplit('@', 1)[0]}" if entry.origin else "")
    try:
        model = entry.factory(tuple(input_shape), classes, **params)
    except registry.RegistryError:
        raise
    except Exception as e:
        if entry.origin is None and isinstance(e, (ModelError, OSError)):
            raise
        raise ModelError(f"spec.model: {where} failed to build: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"spec.model: {where} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def has_conv(model: nn.Module) -> bool:
    """Whether the model has 2-d convolutions (then it trains in channels_last)."""
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def reinitialise(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Re-initialise every module under `prefixes`: the model's own way if it has one
    (`model.reinitialise(prefixes)`), else each module's `reset_parameters()`."""
    from torch import nn

    if hasattr(model, "reinitialise"):
        model.reinitialise(prefixes)
        return
    for name, m in model.named_modules():
        if name and name.startswith(prefixes) and hasattr(m, "reset_parameters"):
            m.reset_parameters()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()


def forward_order(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Module name -> layer index for every module that owns parameters: the position of a
    conv/linear layer among conv/linear layers in forward order; any other module (batch norm,
    a user's module with its own parameters) gets the index of the layer before it, so models
    with and without batch norm line up by depth. Modules the forward pass never calls come last."""
    import torch
    from torch import nn

    order: list[str] = []
    owners = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    hooks = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name)) for name, m in owners.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    order = list(dict.fromkeys(order)) + [n for n in owners if n not in order]
    index, depth = {}, -1
    for name in order:
        if isinstance(owners[name], (nn.Conv2d, nn.Linear)):
            depth += 1
        index[name] = max(depth, 0)
    return index
