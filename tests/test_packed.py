"""The fast paths of the training step: packed optimisers (training.packed) give torch's weights
and checkpoint layout bit for bit, gradient statistics over the packed buffer give the numbers
over the separate tensors, and the epoch's loss sum is the running total's."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nnstudy import models, registry, spec as spec_mod
from nnstudy.training.callbacks import GradientStats
from nnstudy.training.epoch import epoch_sums
from nnstudy.training.optim import make_optimizer
from nnstudy.training.packed import Packed, packable

OPTIMS = {
    "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    "plain sgd": {"name": "sgd", "lr": 0.1},
    "rmsprop": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.5},
    "adam": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
    "adamw": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
}


def conv_net() -> torch.nn.Module:
    """Conv, batch norm and linear layers; the conv weights channels_last, as the engine keeps them."""
    torch.manual_seed(0)
    spec = spec_mod.resolve({"model": {"conv": [{"channels": 4}], "hidden": [16], "batchnorm": True}})["model"]
    return models.build(spec, (3, 8, 8), 5).to(memory_format=torch.channels_last)


def torch_optimizer(params, o: dict) -> torch.optim.Optimizer:
    """The registered optimiser over the separate parameters, as it was before packing."""
    entry = registry.OPTIMIZERS.get(o["name"])
    return entry.factory(params, o["lr"], o["weight_decay"], **{k: o[k] for k in entry.params})


def train(model, opt, steps: int, seed: int, callbacks=()) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 3, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 5, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for cb in callbacks:
            cb.after_backward()
        opt.step()


@pytest.mark.parametrize("name", OPTIMS)
def test_packed_optimiser_trains_torchs_weights_and_checkpoints_bit_for_bit(name):
    o = spec_mod.resolve({"optim": OPTIMS[name]})["optim"]
    packed_net, plain_net = conv_net(), conv_net()
    packed = make_optimizer(list(packed_net.parameters()), o)
    plain = torch_optimizer(list(plain_net.parameters()), o)
    assert isinstance(packed, Packed)
    train(packed_net, packed, 25, seed=1)
    train(plain_net, plain, 25, seed=1)
    for (n, a), b in zip(packed_net.named_parameters(), plain_net.parameters()):
        assert torch.equal(a, b), n
        assert a.stride() == b.stride(), n  # conv weights stay channels_last
    # The checkpoint layout is torch's: the same groups, per-parameter state equal bit for bit.
    mine, theirs = packed.state_dict(), plain.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert mine["state"].keys() == theirs["state"].keys()
    for i, state in theirs["state"].items():
        assert mine["state"][i].keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(mine["state"][i][key], value), (i, key)
    # A packed optimiser resumes from torch's state and continues as torch's does.
    resumed_net = conv_net()
    resumed_net.load_state_dict(plain_net.state_dict())
    resumed = make_optimizer(list(resumed_net.parameters()), o)
    resumed.load_state_dict(theirs)
    train(resumed_net, resumed, 10, seed=2)
    train(plain_net, plain, 10, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(resumed_net.parameters(), plain_net.parameters()))


def test_packed_state_of_other_parameters_is_refused():
    o = spec_mod.resolve({"optim": OPTIMS["adam"]})["optim"]
    net = conv_net()
    opt = make_optimizer(list(net.parameters()), o)
    state = opt.state_dict()
    state["param_groups"][0]["params"] = state["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="other parameter groups"):
        opt.load_state_dict(state)


def test_parameters_that_cannot_be_packed_keep_torchs_optimiser():
    o = spec_mod.resolve({"optim": OPTIMS["adam"]})["optim"]
    mixed = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    scalar = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.tensor(1.0))]
    strided = [torch.nn.Parameter(torch.zeros(4, 6)[:, ::2])]
    for params in (mixed, scalar, strided):
        assert not packable(params)
        assert isinstance(make_optimizer(params, o), torch.optim.Adam)


def test_a_parameter_a_step_does_not_use_gets_a_zero_gradient():
    # Documented in training/packed.py: packed, an unused parameter's gradient is zero, not None,
    # so weight decay still moves it (torch's optimiser over the separate tensors skips it).
    o = spec_mod.resolve({"optim": {"name": "sgd", "lr": 0.1, "weight_decay": 0.5}})["optim"]
    torch.manual_seed(0)
    used, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = unused.weight.detach().clone()
    opt = make_optimizer([*used.parameters(), *unused.parameters()], o)
    opt.zero_grad()
    used(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert torch.equal(unused.weight.grad, torch.zeros(2, 3))
    torch.testing.assert_close(unused.weight.detach(), before * (1 - 0.1 * 0.5))


def test_gradient_stats_over_the_packed_buffer_equal_those_over_the_tensors():
    o = spec_mod.resolve({"optim": OPTIMS["sgd"]})["optim"]
    net = conv_net()
    opt = make_optimizer(list(net.parameters()), o)
    order = models.forward_order(net, (3, 8, 8))
    over_flat, over_tensors = GradientStats(net, order, opt.flat.grad), GradientStats(net, order)
    train(net, opt, 20, seed=3, callbacks=[over_flat, over_tensors])
    # The sums differ in their last bits (BLAS sgemv, sasum and dot over the buffer, float32
    # running sums and torch's norm kernel over the tensors: both within 1e-6 of float64,
    # tests/test_train.py). A mean of g near 0 is compared on the scale of the mean |g|.
    for a, b in zip(over_flat.end_epoch("r", 1), over_tensors.end_epoch("r", 1)):
        assert a.keys() == b.keys() and a["steps"] == 20
        assert a["grad_mean"] == pytest.approx(b["grad_mean"], abs=1e-6 * b["grad_abs_mean"])
        for key, value in a.items():
            if key != "grad_mean":
                assert value == (pytest.approx(b[key], rel=1e-12 if key == "weight_norm" else 1e-6, abs=1e-18)
                                 if isinstance(value, float) else b[key]), key
    with pytest.raises(ValueError, match="flat_grad"):
        GradientStats(net, order, torch.zeros(3))


def test_epoch_sums_equal_a_float64_running_total():
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(937, generator=gen) * 3
    sizes = [64] * 936 + [32]
    correct = torch.randint(0, 65, (937,), generator=gen)
    running = torch.zeros(2, dtype=torch.float64)
    for loss, n, c in zip(losses, sizes, correct):
        running += torch.stack([loss.double() * n, c.double()])
    total, right = epoch_sums(torch.stack([losses.double(), correct.double()]), sizes)
    assert (total, right) == tuple(running.tolist())


def test_a_run_never_imports_torchs_compiler(tmp_path):
    """A packed optimiser calls torch's update function, not a torch.optim.Optimizer, whose first
    use imports torch._dynamo (1.1-1.8 s of every training process)."""
    spec = {"data": {"name": "xor", "samples": 64}, "model": {"hidden": [4]}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 2, "batch_size": 16}}
    code = (f"import json, sys; from nnstudy.training.run import run; run(json.loads({json.dumps(spec)!r}), {str(tmp_path / 'r')!r}); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
    assert (tmp_path / "r" / "run.json").exists()
