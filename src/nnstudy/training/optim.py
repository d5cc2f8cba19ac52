"""Optimisers and learning-rate schedules, registered by name.

An optimiser factory gets (parameters, lr, weight_decay, **its own parameters); one registered
with `elementwise=True` (the same arithmetic for every element, as torch's SGD, RMSprop, Adam and
AdamW) is given one flat parameter that all the model's trainable parameters are views of
(training.packed). A schedule gets
(base_lr, t, span, **its own parameters) and returns the LR of the t-th epoch (0-based) after
the warmup, of `span` such epochs; the linear warmup (schedule.warmup_epochs from
schedule.start_lr) is shared by every schedule and handwritten here: no torch scheduler."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..registry import OPTIMIZERS, SCHEDULES, register_optimizer, register_schedule

if TYPE_CHECKING:
    import torch

    from .packed import Packed

MOMENTUM = {"type": "number", "minimum": 0, "default": 0.0}


def torch_optimizer(name: str, params, **hyper):
    """torch.optim.<name> over `params`, stepped as training.packed does (the same arithmetic)."""
    import torch  # here: the declarations below load without torch (planning a study needs only them)

    from . import packed

    return packed.torch_optimizer(getattr(torch.optim, name), params, **hyper)


@register_optimizer("sgd", {"momentum": MOMENTUM, "nesterov": {"type": "boolean", "default": False}}, elementwise=True)
def sgd(params, lr, weight_decay, momentum=0.0, nesterov=False):
    """Stochastic gradient descent (torch.optim.SGD), optionally with (Nesterov) momentum."""
    return torch_optimizer("SGD", params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@register_optimizer("rmsprop", {"momentum": MOMENTUM,
                                "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.99}},
                    elementwise=True)
def rmsprop(params, lr, weight_decay, momentum=0.0, alpha=0.99):
    """RMSprop (torch.optim.RMSprop); alpha is the smoothing constant of the squared gradients."""
    return torch_optimizer("RMSprop", params, lr=lr, momentum=momentum, alpha=alpha, weight_decay=weight_decay)


BETAS = {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "minItems": 2,
         "maxItems": 2, "default": [0.9, 0.999]}


@register_optimizer("adam", {"betas": BETAS}, elementwise=True)
def adam(params, lr, weight_decay, betas=(0.9, 0.999)):
    """Adam (torch.optim.Adam); weight decay is added to the gradient (L2)."""
    return torch_optimizer("Adam", params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


@register_optimizer("adamw", {"betas": BETAS}, elementwise=True)
def adamw(params, lr, weight_decay, betas=(0.9, 0.999)):
    """AdamW (torch.optim.AdamW): decoupled weight decay."""
    return torch_optimizer("AdamW", params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def make_optimizer(params: list, o: dict) -> torch.optim.Optimizer | Packed:
    """The optimiser of the resolved `spec['optim']` over `params`: packed into one flat buffer
    where the optimiser is registered with `elementwise=True` and the parameters allow it
    (training.packed; the same weights, fewer operations per step)."""
    from .packed import Packed, packable

    entry = OPTIMIZERS.get(o["name"], "spec.optim.name")
    own = {k: o[k] for k in entry.params}
    if o["name"] == "sgd" and own["nesterov"] and own["momentum"] <= 0:
        from ..spec import SpecError

        raise SpecError("spec.optim.nesterov: Nesterov momentum needs optim.momentum > 0")

    def make(ps: list) -> torch.optim.Optimizer:
        return entry.factory(ps, o["lr"], o["weight_decay"], **own)

    return Packed(params, make) if entry.extra.get("elementwise") and packable(params) else make(params)


@register_schedule("constant", {})
def constant(base_lr, t, span):
    """The base LR throughout."""
    return base_lr


@register_schedule("warmup", {})
def warmup(base_lr, t, span):
    """Only the linear warmup (schedule.warmup_epochs >= 1), then the base LR."""
    return base_lr


GAMMA = {"type": "number", "exclusiveMinimum": 0, "default": 0.1}


@register_schedule("step", {"step_size": {"type": "integer", "minimum": 1, "default": 10}, "gamma": GAMMA})
def step(base_lr, t, span, step_size=10, gamma=0.1):
    """Multiply the LR by gamma every step_size epochs."""
    return base_lr * gamma ** (t // step_size)


@register_schedule("exponential", {"gamma": GAMMA})
def exponential(base_lr, t, span, gamma=0.1):
    """Multiply the LR by gamma every epoch."""
    return base_lr * gamma ** t


@register_schedule("cosine", {"min_lr": {"type": "number", "minimum": 0, "default": 0.0}})
def cosine(base_lr, t, span, min_lr=0.0):
    """Cosine decay from the base LR to min_lr over the epochs after the warmup."""
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / span)) / 2


def lr_at(schedule: dict, base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based `epoch`: optional linear warmup from start_lr over warmup_epochs
    (epoch 1 uses start_lr, epoch warmup_epochs + 1 the full base_lr), then the named schedule."""
    warm = schedule["warmup_epochs"]
    if epoch <= warm:
        return schedule["start_lr"] + (base_lr - schedule["start_lr"]) * (epoch - 1) / warm
    entry = SCHEDULES.get(schedule["name"], "spec.schedule.name")
    return entry.factory(base_lr, epoch - 1 - warm, max(epochs - warm, 1), **{k: schedule[k] for k in entry.params if k in schedule})
