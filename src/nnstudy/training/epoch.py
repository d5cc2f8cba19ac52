"""One training epoch (no host sync: its sums stay on the device) and one evaluation pass (one sync)."""
from __future__ import annotations

import math

import torch

from .build import Built


def train_epoch(run: Built, optimizer: torch.optim.Optimizer, frozen_modules, batch_size: int,
                gen: torch.Generator, callbacks=()) -> tuple[torch.Tensor, int]:
    """One pass over the training split in train mode (frozen modules in eval mode): (the
    summed loss and count of correct predictions, on the device; samples). Nothing in it waits
    for the GPU: the caller reads the sums."""
    model = run.model
    model.train()
    for m in frozen_modules:
        m.eval()
    running = torch.zeros(2, dtype=torch.float64, device=run.device)
    n_seen = 0
    for x, y in run.data.batches("train", batch_size, gen):
        with run.autocast():
            logits = model(run.inputs(x))
            loss = run.loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in callbacks:
            cb.after_backward()
        optimizer.step()
        running += torch.stack([loss.detach().double() * len(y), (run.predict(logits) == y).sum().double()])
        n_seen += len(y)
    return running, n_seen


# On the CPU a conv net's activations for a large evaluation batch overflow the caches: 1,000
# CIFAR-10 images at once took 1.4-1.9x as long as 128 at a time (docs/performance.md). In eval
# mode a sample's logits do not depend on the others in its batch (checked bit for bit in
# tests/test_train.py), so the split changes no number; the loss is still taken per batch.
CPU_CONV_CHUNK = 128


@torch.inference_mode()
def evaluate(run: Built, which: str, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the split in eval mode."""
    run.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    n = 0
    chunked = run.device.type == "cpu" and run.channels_last  # channels_last: the model has convolutions
    for x, y in run.data.batches(which, batch_size):
        with run.autocast():
            if chunked and len(x) > CPU_CONV_CHUNK:
                logits = torch.cat([run.model(run.inputs(c)) for c in x.split(CPU_CONV_CHUNK)])
            else:
                logits = run.model(run.inputs(x))
            loss = run.loss_fn(logits, y)
        total += torch.stack([loss.double() * len(y), (run.predict(logits) == y).sum().double()])
        n += len(y)
    loss, correct = total.tolist()
    return (loss / n, correct / n) if n else (math.nan, math.nan)
