"""Per-step callbacks of the training loop. A callback has `after_backward()` (called after each
backward pass, before the optimiser step) and `end_epoch(run, epoch) -> rows` (its records of
the epoch). Gradient statistics is one: accumulated on the device, synced once per epoch."""
from __future__ import annotations

import math

import torch
from torch import nn


class GradientStats:
    """Exact per-tensor mean/std of dL/dw over all elements of all steps of an epoch.

    After each backward, four float64 sums per trainable tensor go into one device buffer:
    sum g, sum g^2, sum |g| and the step's L2 norm. No per-step host sync (`.item()`): the
    buffer is read once in `end_epoch`. The variance comes from the float64 sums.
    """

    def __init__(self, model: nn.Module, order: dict[str, int]):
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        modules = dict(model.named_modules())
        self.meta = []
        for name, p in self.params:
            owner, _, kind = name.rpartition(".")
            self.meta.append((name, order[owner], type(modules[owner]).__name__, kind, p.numel()))
        device = self.params[0][1].device
        self.sums = torch.zeros(len(self.params), 4, dtype=torch.float64, device=device)
        self.steps = 0

    @torch.no_grad()
    def after_backward(self) -> None:
        grads = [p.grad.detach().double() for _, p in self.params]
        l2 = torch.stack(torch._foreach_norm(grads, 2))
        l1 = torch.stack(torch._foreach_norm(grads, 1))
        total = torch.stack([g.sum() for g in grads])
        self.sums += torch.stack([total, l2 * l2, l1, l2], dim=1)
        self.steps += 1

    @torch.no_grad()
    def end_epoch(self, run: str, epoch: int) -> list[dict]:
        """One row per tensor (the GRADIENTS schema) for this epoch; then reset."""
        sums = self.sums.tolist()  # the one sync of the epoch
        weight_norms = torch.stack(torch._foreach_norm([p.detach().double() for _, p in self.params])).tolist()
        rows = []
        for (name, index, module, kind, numel), (s, ss, sa, norm), wn in zip(self.meta, sums, weight_norms):
            n = self.steps * numel
            mean = s / n if n else math.nan
            var = max(ss / n - mean * mean, 0.0) if n else math.nan
            rows.append(dict(
                run=run, epoch=epoch, layer=name, layer_index=index, module=module, kind=kind,
                numel=numel, steps=self.steps, grad_mean=mean, grad_std=math.sqrt(var),
                grad_abs_mean=sa / n if n else math.nan,
                grad_norm=norm / self.steps if self.steps else math.nan, weight_norm=wn,
            ))
        self.sums.zero_()
        self.steps = 0
        return rows
