"""One training epoch (no host sync: its sums stay on the device) and one evaluation pass (one sync)."""
from __future__ import annotations

import math

import torch

from .build import Built


def train_epoch(run: Built, optimizer, frozen_modules, batch_size: int, gen: torch.Generator,
                callbacks=()) -> tuple[torch.Tensor, list[int]]:
    """One pass over the training split in train mode (frozen modules in eval mode): (each step's
    mean loss and count of correct predictions, a (2, steps) float64 tensor on the device; each
    step's batch size). Nothing in it waits for the GPU: `epoch_sums` reads the tensor."""
    model = run.model
    model.train()
    for m in frozen_modules:
        m.eval()
    losses, correct, sizes = [], [], []
    for x, y in run.data.batches("train", batch_size, gen):
        with run.autocast():
            logits = model(run.inputs(x))
            loss = run.loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        for cb in callbacks:
            cb.after_backward()
        optimizer.step()
        # Kept per step and summed once per epoch: fewer operations per step than a running total.
        losses.append(loss.detach())
        correct.append((run.predict(logits) == y).sum())
        sizes.append(len(y))
    return torch.stack([torch.stack(losses).double(), torch.stack(correct).double()]), sizes


def epoch_sums(per_step: torch.Tensor, sizes: list[int]) -> tuple[float, float]:
    """(summed loss, correct predictions) of `train_epoch`'s output: one host sync. The loss is
    summed in float64 in step order, the same number a running total on the device gave."""
    losses, correct = per_step.tolist()
    total = 0.0
    for value, n in zip(losses, sizes):
        total += value * n
    return total, sum(correct)


# On the CPU a conv net's activations for a large evaluation batch overflow the caches: 1,000
# CIFAR-10 images at once took 1.4-1.9x as long as 128 at a time (docs/performance.md). In eval
# mode a sample's logits do not depend on the others in its batch, so the split changes no number
# beyond the last bits (none on an AMD EPYC; on an Intel Xeon, where oneDNN picks its convolution
# kernel by batch size, the loss to 1e-7: tests/test_train.py); the loss is still taken per batch.
CPU_CONV_CHUNK = 128


@torch.inference_mode()
def evaluate(run: Built, which: str, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the split in eval mode. The test split's logits stay on `run`
    (test_logits) for the analyses of these weights: the final epoch's spare them a pass."""
    run.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    n, kept = 0, []
    for x, y in run.data.batches(which, batch_size):
        with run.autocast():
            logits = _logits(run, x)
            loss = run.loss_fn(logits, y)
        total += torch.stack([loss.double() * len(y), (run.predict(logits) == y).sum().double()])
        n += len(y)
        if which == "test":
            kept.append(logits)
    if which == "test":
        run.test_logits = torch.cat(kept) if kept else None
    loss, correct = total.tolist()
    return (loss / n, correct / n) if n else (math.nan, math.nan)


@torch.inference_mode()
def test_logits(run: Built) -> torch.Tensor:
    """The test split's logits under the model's current weights, computed as `evaluate` does:
    those the final epoch's evaluation kept (a training job's analyses), or a pass now (kept
    nowhere: weights loaded or changed later must not meet stale logits)."""
    if run.test_logits is not None:
        return run.test_logits
    run.model.eval()
    logits = []
    for x, _ in run.data.batches("test", run.spec["train"]["eval_batch_size"]):
        with run.autocast():
            logits.append(_logits(run, x))
    return torch.cat(logits)


def _logits(run: Built, x: torch.Tensor) -> torch.Tensor:
    if run.device.type == "cpu" and run.channels_last and len(x) > CPU_CONV_CHUNK:  # channels_last: convolutions
        return torch.cat([run.model(run.inputs(c)) for c in x.split(CPU_CONV_CHUNK)])
    return run.model(run.inputs(x))
