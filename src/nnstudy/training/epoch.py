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


@torch.inference_mode()
def evaluate(run: Built, which: str, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the split in eval mode."""
    run.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    n = 0
    for x, y in run.data.batches(which, batch_size):
        with run.autocast():
            logits = run.model(run.inputs(x))
            loss = run.loss_fn(logits, y)
        total += torch.stack([loss.double() * len(y), (run.predict(logits) == y).sum().double()])
        n += len(y)
    loss, correct = total.tolist()
    return (loss / n, correct / n) if n else (math.nan, math.nan)
