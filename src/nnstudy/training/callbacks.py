"""Per-step callbacks of the training loop. A callback has `after_backward()` (called after each
backward pass, before the optimiser step) and `end_epoch(run, epoch) -> rows` (its records of
the epoch). Gradient statistics is one: accumulated on the device, synced once per epoch."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import models
from .packed import Packed

ROW = 128  # the widest row whose sums sgemv adds up (GradientStats over the packed buffer, CPU)


def for_run(r, optimizer) -> list:
    """The per-step callbacks of built run `r` (training.build) with its optimiser: gradient
    statistics unless its spec turns them off, over the optimiser's packed gradients if any."""
    if not r.spec["train"]["gradients"]:
        return []
    flat_grad = optimizer.flat.grad if isinstance(optimizer, Packed) else None
    return [GradientStats(r.model, models.forward_order(r.model, r.data.input_shape), flat_grad)]


class GradientStats:
    """Per-tensor mean/std of dL/dw over all elements of all steps of an epoch, the mean |dL/dw|
    and the mean of the step's L2 norm.

    After each backward, few operations whatever the number of tensors (a small model's step is
    under 1 ms, so each pass over the gradients shows; docs/performance.md): the gradients go
    into float32 running sums (over the one buffer `flat_grad` where the optimiser packs them,
    training.packed, if any; on the CPU a few row totals per tensor, below), and each tensor's
    L2 norm and sum of |g| are kept.
    Nothing is reduced across steps before `end_epoch`, which sums in float64 and is the epoch's
    one host sync. The variance comes from those totals (the sum of g^2 is the sum of the
    squared L2 norms). On the CPU, over the packed buffer, BLAS reads each tensor's part three
    times, with no model-sized buffer of its own (with one, the MLP's step no longer fitted the
    core's 2 MB cache): `sgemv` adds the row sums of an (n/k, k) view to n/k float32 running
    sums, and `sasum` and `sdot` give the step's sum of |g| and of g^2 as plain floats. That is
    cheaper in a step than torch's add, abs and norms; training.run trains under
    `one_blas_thread`, so they run beside torch's threads on one. Elsewhere |g| is added to a
    second running sum, and `_foreach_norm` is one kernel for all tensors on a GPU.
    """

    def __init__(self, model: nn.Module, order: dict[str, int], flat_grad: torch.Tensor | None = None):
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        modules = dict(model.named_modules())
        self.meta = []
        for name, p in self.params:
            owner, _, kind = name.rpartition(".")
            self.meta.append((name, order[owner], type(modules[owner]).__name__, kind, p.numel()))
        self.device = self.params[0][1].device
        self.numels = [p.numel() for _, p in self.params]
        if flat_grad is not None and flat_grad.numel() != sum(self.numels):
            raise ValueError("flat_grad must hold the gradients of the model's trainable parameters, in their order")
        self.flat = flat_grad
        # CPU, packed float32: BLAS over NumPy views of each tensor's part of the buffer
        self.blas = flat_grad is not None and flat_grad.device.type == "cpu" and flat_grad.dtype == torch.float32
        if self.blas:
            from scipy.linalg import blas  # here: a GPU run's start-up does without it

            self.asum, self.dot, self.gemv = blas.sasum, blas.sdot, blas.sgemv
            self.views = [part.numpy() for part in flat_grad.split(self.numels)]
            widths = [math.gcd(n, ROW) for n in self.numels]  # k: a power of two dividing n
            self.sum_g = [torch.zeros(n // k, dtype=torch.float32) for n, k in zip(self.numels, widths)]
            self.rows = [(v.reshape(k, -1).T, np.ones(k, np.float32), s.numpy())  # (n/k, k), Fortran order: no copy
                         for v, k, s in zip(self.views, widths, self.sum_g)]
            self.sum_abs = []
        else:
            summed = [p for _, p in self.params] if flat_grad is None else [flat_grad]
            # float32 at least (a half-precision gradient is summed in float32)
            self.sum_g = [torch.zeros_like(t, dtype=torch.promote_types(t.dtype, torch.float32)) for t in summed]
            self.sum_abs = [torch.zeros_like(s) for s in self.sum_g]
        self.norms: list = []  # per step: each tensor's L2 norm (with blas: (sum |g|, sum g^2) of each), stacked at the end

    def after_backward(self) -> None:  # the gradients do not require grad: no autograd to switch off
        if self.blas:  # the packed buffer: every gradient is there (zero where a step left it unused)
            for rows, ones, sums in self.rows:  # sums += rows @ ones, in place
                self.gemv(1.0, rows, ones, 1.0, sums, overwrite_y=True)
            asum, dot = self.asum, self.dot
            self.norms.append([(asum(g), dot(g, g)) for g in self.views])
            return
        grads = [p.grad for _, p in self.params]
        if any(g is None for g in grads):  # a parameter this step did not use: dL/dw = 0
            grads = [torch.zeros_like(p) if g is None else g for g, (_, p) in zip(grads, self.params)]
        summed = grads if self.flat is None else [self.flat]
        torch._foreach_add_(self.sum_g, summed)
        torch._foreach_add_(self.sum_abs, torch._foreach_abs(summed))
        self.norms += torch._foreach_norm(grads, dtype=torch.float32)

    def per_tensor(self, sums: list[torch.Tensor]) -> torch.Tensor:
        """The float64 total of each parameter's elements of a running sum."""
        parts = sums[0].split(self.numels) if self.flat is not None and not self.blas else sums
        return torch.stack([part.double().sum() for part in parts])

    @torch.no_grad()
    def end_epoch(self, run: str, epoch: int) -> list[dict]:
        """One row per tensor (the GRADIENTS schema) for this epoch; then reset."""
        if self.blas:
            steps = len(self.norms)
            kept = torch.from_numpy(np.array(self.norms, dtype=np.float64).reshape(steps, len(self.params), 2))
            abs_sums, squares = kept[..., 0].sum(0), kept[..., 1]
            norms = squares.sqrt()
        else:
            steps = len(self.norms) // len(self.params)
            norms = (torch.stack(self.norms) if steps else torch.zeros(0, device=self.device)).double().view(steps, -1)
            abs_sums, squares = self.per_tensor(self.sum_abs), norms ** 2
        totals = torch.stack([self.per_tensor(self.sum_g), abs_sums, norms.sum(0), squares.sum(0)])
        sums = totals.T.tolist()  # the one sync of the epoch
        weight_norms = torch.stack(torch._foreach_norm([p.detach().double() for _, p in self.params])).tolist()
        rows = []
        for (name, index, module, kind, numel), (s, sa, norm, ss), wn in zip(self.meta, sums, weight_norms):
            n = steps * numel
            mean = s / n if n else math.nan
            var = max(ss / n - mean * mean, 0.0) if n else math.nan
            rows.append(dict(
                run=run, epoch=epoch, layer=name, layer_index=index, module=module, kind=kind,
                numel=numel, steps=steps, grad_mean=mean, grad_std=math.sqrt(var),
                grad_abs_mean=sa / n if n else math.nan,
                grad_norm=norm / steps if steps else math.nan, weight_norm=wn,
            ))
        torch._foreach_zero_(self.sum_g + self.sum_abs)
        self.norms = []
        return rows


def one_blas_thread():
    """A context in which scipy's BLAS (the CPU statistics' sasum/sdot) uses one thread: for a
    large tensor OpenBLAS starts threads of its own, and while they spin after a call torch's
    threads lose their cores (a CIFAR-10 CNN's step took 1.9x as long; docs/performance.md).
    Only around training: analyses after it use NumPy's BLAS as the analyse step does."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")
