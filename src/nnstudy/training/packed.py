"""An elementwise optimiser over one flat buffer of all trainable parameters.

A small model's step is mostly per-tensor overhead, not arithmetic: torch's CPU Adam runs about
ten operations per parameter tensor (docs/performance.md). `Packed` makes every parameter a view
of one flat tensor and its gradient a view of another, so an optimiser whose update is the same
arithmetic for every element (sgd, rmsprop, adam, adamw: registered with `elementwise=True`)
updates them all with one tensor's operations. Each element sees the same operations in the same
order, so the weights are bit for bit those of the optimiser over the separate tensors (tested
in tests/test_packed.py). Gradients accumulate into the zeroed flat buffer instead of being set
to None, so a parameter that a step does not use gets a zero gradient and is still updated
(momentum, weight decay), as with torch's `zero_grad(set_to_none=False)`, where torch's optimiser
over the separate tensors would skip it; nnstudy's own models use every parameter every step.
Checkpoints keep the per-parameter layout of torch's optimisers: `state_dict` splits
the flat state per parameter and `load_state_dict` packs it back.

nnstudy's own optimisers over the flat parameter are `Functional`: the function torch's step
calls (torch.optim.adam.adam, ...) with the same arguments and state, without a
torch.optim.Optimizer, whose first use imports torch._dynamo (1.1-1.8 s of every training
process, docs/performance.md).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop
from torch.optim.sgd import sgd


def packable(params: list[torch.Tensor]) -> bool:
    """One dtype and device, dense tensors (contiguous or channels_last) of at least one dimension
    (a 0-dim parameter's state could not be told from the optimiser's step count)."""
    return bool(params) and all(
        p.dtype == params[0].dtype and p.device == params[0].device and p.layout == torch.strided and p.dim() >= 1
        and (p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)))
        for p in params)


class Flat(list):
    """The one flat parameter a Packed optimiser hands its factory."""


def torch_optimizer(cls: type, params, **hyper):
    """torch.optim's `cls` with `hyper` over `params`; over a Packed optimiser's flat parameter
    the same update as a `Functional` where UPDATES has it."""
    if isinstance(params, Flat) and cls in UPDATES and set(hyper) <= set(UPDATES[cls][1]):
        return Functional(cls, params[0], hyper)
    return cls(params, **hyper)


class Functional:
    """torch's optimiser `cls` over the one tensor `flat`, without torch.optim.Optimizer: the
    parameter group holds the class's defaults (its groups and state_dict are torch's), and a step
    calls the function that torch's step calls, with the same arguments and state (bit for bit:
    tests/test_packed.py)."""

    def __init__(self, cls: type, flat: nn.Parameter, hyper: dict):
        self.update, _, extra = UPDATES[cls]
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "params")}
        self.param_groups = [{"params": [flat], **defaults, **extra, **hyper}]
        self.flat = flat
        self.state: dict = {}

    @torch.no_grad()
    def step(self) -> None:
        self.update(self.param_groups[0], self.flat, self.state)

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {0: dict(self.state)} if self.state else {}, "param_groups": [{**group, "params": [0]}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's: the saved group's values replace this one's; state tensors take the
        parameter's dtype and device, the step count stays as saved."""
        (group,) = state_dict["param_groups"]
        self.param_groups = [{**group, "params": [self.flat]}]
        saved = state_dict["state"].get(0, {})
        self.state = {k: v if k == "step" or not torch.is_tensor(v) else v.to(dtype=self.flat.dtype, device=self.flat.device)
                      for k, v in saved.items()}


def _zeros(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _sgd(group: dict, p: torch.Tensor, state: dict) -> None:
    buffers = [state.get("momentum_buffer")] if group["momentum"] != 0 else []
    sgd([p], [p.grad], buffers, has_sparse_grad=False, foreach=group["foreach"], fused=group["fused"],
        weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
        dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"])
    if buffers:
        state["momentum_buffer"] = buffers[0]


def _rmsprop(group: dict, p: torch.Tensor, state: dict) -> None:
    if not state:
        state.update(step=torch.zeros(()), square_avg=_zeros(p))
        if group["momentum"] > 0:
            state["momentum_buffer"] = _zeros(p)
    rmsprop([p], [p.grad], [state["square_avg"]], [], [state["momentum_buffer"]] if group["momentum"] > 0 else [],
            [state["step"]], foreach=group["foreach"], maximize=group["maximize"],
            differentiable=group["differentiable"], capturable=group["capturable"], has_complex=False,
            lr=group["lr"], alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
            momentum=group["momentum"], centered=group["centered"])


def _adam(group: dict, p: torch.Tensor, state: dict) -> None:
    if not state:
        state.update(step=torch.tensor(0.0), exp_avg=_zeros(p), exp_avg_sq=_zeros(p))
    beta1, beta2 = group["betas"]
    adam([p], [p.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]], foreach=group["foreach"],
         capturable=group["capturable"], differentiable=group["differentiable"], fused=group["fused"],
         has_complex=False, decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
         beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
         maximize=group["maximize"])


# class -> (its step, the keyword arguments it may be given, group values its __init__ adds)
UPDATES = {
    torch.optim.SGD: (_sgd, ("lr", "momentum", "dampening", "weight_decay", "nesterov"), {}),
    torch.optim.RMSprop: (_rmsprop, ("lr", "alpha", "eps", "weight_decay", "momentum"), {}),
    torch.optim.Adam: (_adam, ("lr", "betas", "eps", "weight_decay"), {}),
    torch.optim.AdamW: (_adam, ("lr", "betas", "eps", "weight_decay"), {"decoupled_weight_decay": True}),
}


class Packed:
    """`factory(Flat([one flat parameter]))` over `params`, which become views of that parameter."""

    def __init__(self, params: list[nn.Parameter], factory: Callable[[list], torch.optim.Optimizer]):
        self.params = params
        self.offsets = [0]
        for p in params:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.flat = nn.Parameter(torch.empty(self.offsets[-1], dtype=params[0].dtype, device=params[0].device))
        self.flat.grad = torch.zeros_like(self.flat)
        with torch.no_grad():
            for i, p in enumerate(params):
                view = self.view(self.flat.detach(), i)
                view.copy_(p)
                p.data = view
                p.grad = self.view(self.flat.grad, i)
        self.optimizer = factory(Flat([self.flat]))

    @property
    def param_groups(self) -> list[dict]:
        """The optimiser's groups, looked up each time: load_state_dict replaces torch's list."""
        return self.optimizer.param_groups

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Parameter i's part of `flat`, in that parameter's shape and memory layout."""
        p = self.params[i]
        return flat[self.offsets[i]:self.offsets[i + 1]].as_strided(p.shape, p.stride())

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        """torch's layout for the separate parameters: state per parameter index 0..n-1."""
        packed = self.optimizer.state_dict()
        whole = packed["state"].get(0)
        state = {}
        if whole is not None:
            for i in range(len(self.params)):
                state[i] = {k: self.view(v, i) if self._elementwise(v) else
                            (v.clone() if torch.is_tensor(v) else v) for k, v in whole.items()}
        return {"state": state, "param_groups": [{**packed["param_groups"][0], "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict of the separate parameters (from `state_dict`, or from torch's
        optimiser over them)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("the optimiser state has other parameter groups than this model's parameters")
        per = [state_dict["state"].get(i) for i in groups[0]["params"]]
        state = {}
        if any(s is not None for s in per):
            if any(s is None for s in per):
                raise ValueError("the optimiser state covers only some of the parameters")
            whole = {}
            for key, first in per[0].items():
                if all(torch.is_tensor(s[key]) and s[key].shape == p.shape for s, p in zip(per, self.params)):
                    whole[key] = torch.empty_like(self.flat.detach(), dtype=first.dtype)
                    for i, s in enumerate(per):
                        self.view(whole[key], i).copy_(s[key])
                else:  # e.g. the step count, the same for every parameter; a copy: `per` may be live
                    whole[key] = first.clone() if torch.is_tensor(first) else first
            state = {0: whole}
        self.optimizer.load_state_dict({"state": state, "param_groups": [{**groups[0], "params": [0]}]})

    def _elementwise(self, value) -> bool:
        return torch.is_tensor(value) and value.shape == self.flat.shape
