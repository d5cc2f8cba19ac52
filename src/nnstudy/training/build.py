"""A run built from its resolved spec: its data with the seed's split, its model (initialised
by the seed, source weights loaded, layers frozen) and its loss. Training and `load_run` share it."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import models, registry
from ..data import device as data_mod
from ..spec import SpecError, run_id
from . import transfer


@dataclass
class Built:
    spec: dict
    id: str
    device: torch.device
    data: data_mod.Data
    model: nn.Module
    loss: registry.Entry
    frozen: set[str]
    channels_last: bool
    dir: Path | None = None  # the run's folder, once it has finished (load_run, run's `after`)
    # The last evaluation's test logits, while the weights are still those (epoch.test_logits):
    # cleared at each epoch's start and when analyses.keep loads the best weights.
    test_logits: torch.Tensor | None = None

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss.factory(logits, y)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return self.loss.extra["predict"](logits)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        """bfloat16 autocast for forward passes and losses where the spec asks for it."""
        if self.spec["train"]["precision"] == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def pick_device(requested: str | None = None) -> torch.device:
    import os

    name = requested or os.environ.get("NNSTUDY_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"--device {name}: not a device; cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"--device {name}: no CUDA GPU is available to this process; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SpecError(f"--device {name}: this process sees {torch.cuda.device_count()} GPU(s)")
    return device


def build(resolved: dict, device: torch.device, with_transfer: bool = True) -> Built:
    """Data, model and loss of a resolved spec on `device`. The model is initialised by the
    seed; with_transfer loads the transfer source and applies reinit/freeze."""
    seed = resolved["seed"]
    data = data_mod.build(resolved["data"], seed, device)
    if resolved["train"]["early_stopping"] and len(data.val_idx) == 0:
        raise SpecError("spec.train.early_stopping: needs a validation split (data.val_fraction > 0, "
                        "or data.split: halves)")
    loss = registry.LOSSES.get(resolved["loss"], "spec.loss")
    torch.manual_seed(seed)
    model = models.build(resolved["model"], data.input_shape, loss.extra["outputs"](data.classes)).to(device)
    channels_last = models.has_conv(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = transfer.apply(model, resolved["transfer"], device) if with_transfer else set()
    if with_transfer and not any(p.requires_grad for p in model.parameters()):
        raise SpecError("spec.transfer.freeze: every parameter is frozen; nothing would train")
    return Built(resolved, run_id(resolved), device, data, model, loss, frozen, channels_last)


def check_factories(resolved: dict, where: str) -> None:
    """Build the spec's data pools and model on the CPU (what a training job does first), so
    broken user code is reported at plan time, with `where` (the study key) in the message."""
    from ..data import DataError

    try:
        train, _ = data_mod.pools(resolved["data"])
        shape = tuple(train.x.shape[1:])
        if resolved["data"]["resize"] is not None:
            size = resolved["data"]["resize"]
            shape = (shape[0], *((size, size) if isinstance(size, int) else size))
        loss = registry.LOSSES.get(resolved["loss"], "spec.loss")
        models.build(resolved["model"], shape, loss.extra["outputs"](int(train.y.max()) + 1))
    except (SpecError, DataError, models.ModelError, registry.RegistryError) as e:
        raise SpecError(f"{where}: {e}") from None
