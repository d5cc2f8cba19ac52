"""Per-step callbacks of the training loop. A callback has `after_backward()` (called after each
backward pass, before the optimiser step) and `end_epoch(run, epoch) -> rows` (its records of
the epoch). Gradient statistics is one: accumulated on the device, synced once per epoch."""
from __future__ import annotations

import math

import torch
from torch import nn


class GradientStats:
    """Per-tensor mean/std of dL/dw over all elements of all steps of an epoch, the mean |dL/dw|
    and the mean of the step's L2 norm.

    After each backward, four foreach operations whatever the number of tensors (a small model's
    step is under 1 ms, so each pass over the gradients shows; docs/performance.md): the
    gradients are added elementwise to two float32 running sums (g and |g|), and their L2 norms
    to a small float64 buffer of the norm and its square (the step's sum of g^2). Nothing else
    is reduced per step: the running sums are reduced per tensor in float64 once, in
    `end_epoch`, which is also the epoch's one host sync. The variance comes from those totals.
    """

    def __init__(self, model: nn.Module, order: dict[str, int]):
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        modules = dict(model.named_modules())
        self.meta = []
        for name, p in self.params:
            owner, _, kind = name.rpartition(".")
            self.meta.append((name, order[owner], type(modules[owner]).__name__, kind, p.numel()))
        device = self.params[0][1].device
        # float32 at least (a half-precision gradient is summed in float32)
        self.sum_g = [torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32)) for _, p in self.params]
        self.sum_abs = [torch.zeros_like(s) for s in self.sum_g]
        self.norms = torch.zeros(2, len(self.params), dtype=torch.float64, device=device)
        self.steps = 0

    @torch.no_grad()
    def after_backward(self) -> None:
        grads = [p.grad for _, p in self.params]
        if any(g is None for g in grads):  # a parameter this step did not use: dL/dw = 0
            grads = [torch.zeros_like(p) if g is None else g for g, (_, p) in zip(grads, self.params)]
        torch._foreach_add_(self.sum_g, grads)
        torch._foreach_add_(self.sum_abs, torch._foreach_abs(grads))
        l2 = torch.stack(torch._foreach_norm(grads)).double()
        self.norms += torch.stack([l2, l2 * l2])
        self.steps += 1

    @torch.no_grad()
    def end_epoch(self, run: str, epoch: int) -> list[dict]:
        """One row per tensor (the GRADIENTS schema) for this epoch; then reset."""
        totals = torch.stack([torch.stack([g.double().sum() for g in self.sum_g]),
                              torch.stack([a.double().sum() for a in self.sum_abs]), *self.norms])
        sums = totals.T.tolist()  # the one sync of the epoch
        weight_norms = torch.stack(torch._foreach_norm([p.detach().double() for _, p in self.params])).tolist()
        rows = []
        for (name, index, module, kind, numel), (s, sa, norm, ss), wn in zip(self.meta, sums, weight_norms):
            n = self.steps * numel
            mean = s / n if n else math.nan
            var = max(ss / n - mean * mean, 0.0) if n else math.nan
            rows.append(dict(
                run=run, epoch=epoch, layer=name, layer_index=index, module=module, kind=kind,
                numel=numel, steps=self.steps, grad_mean=mean, grad_std=math.sqrt(var),
                grad_abs_mean=sa / n if n else math.nan,
                grad_norm=norm / self.steps if self.steps else math.nan, weight_norm=wn,
            ))
        torch._foreach_zero_(self.sum_g + self.sum_abs)
        self.norms.zero_()
        self.steps = 0
        return rows
