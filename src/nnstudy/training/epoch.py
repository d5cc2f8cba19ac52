"""One training epoch and one evaluation pass; each syncs with the host once."""
from __future__ import annotations

import math

import torch

from .build import Built


def train_epoch(run: Built, optimizer: torch.optim.Optimizer, frozen_modules, batch_size: int,
                gen: torch.Generator, callbacks=()) -> tuple[float, float, int]:
    """(running mean loss, running accuracy, samples) of one pass over the training split, in
    train mode (frozen modules in eval mode)."""
    model = run.model
    model.train()
    for m in frozen_modules:
        m.eval()
    running = torch.zeros(2, dtype=torch.float64, device=run.device)
    n_seen = 0
    for x, y in run.data.batches("train", batch_size, gen):
        logits = model(run.inputs(x))
        loss = run.loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in callbacks:
            cb.after_backward()
        optimizer.step()
        running += torch.stack([loss.detach().double() * len(y), (run.predict(logits) == y).sum().double()])
        n_seen += len(y)
    loss_sum, correct = running.tolist()
    return loss_sum / n_seen, correct / n_seen, n_seen


@torch.inference_mode()
def evaluate(run: Built, which: str, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the split in eval mode."""
    run.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    n = 0
    for x, y in run.data.batches(which, batch_size):
        logits = run.model(run.inputs(x))
        total += torch.stack([run.loss_fn(logits, y).double() * len(y), (run.predict(logits) == y).sum().double()])
        n += len(y)
    loss, correct = total.tolist()
    return (loss / n, correct / n) if n else (math.nan, math.nan)
