"""nnstudy: seeded neural-network studies with honest statistics.

For users' own code (a study's `plugins:`) and for reading runs back:

    nnstudy.register_model(name)     decorate a factory (input_shape, classes, **params) -> nn.Module
    nnstudy.register_dataset(name)   decorate a factory (**params) -> (train_x, train_y, test_x, test_y)
    nnstudy.register_optimizer, register_schedule, register_loss
    nnstudy.register_analysis(name, schema=, tables=, summarise=, draw=)   a per-run analysis (nnstudy.analyses)
    nnstudy.load_run(run_dir, weights="final"|"best")   spec, data and model of a finished run
"""
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for readers and type checkers; at run time __getattr__ below
    from .registry import (register_analysis, register_dataset, register_loss, register_model, register_optimizer,
                           register_schedule)

__version__ = "0.1.0"
__all__ = ["load_run", "register_analysis", "register_dataset", "register_loss", "register_model", "register_optimizer",
           "register_schedule"]


def __getattr__(name: str):
    """The register_* decorators, from nnstudy.registry on first use: a workflow job's client
    (`python -m nnstudy`, nnstudy.warm) starts without importing it (50 ms of each job)."""
    if name.startswith("register_") and name in __all__:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'nnstudy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_run(run_dir, weights: str = "final", device=None):
    """See nnstudy.runs.load_run (imported on use: it needs torch)."""
    from .runs import load_run as _load_run

    return _load_run(run_dir, weights, device)
