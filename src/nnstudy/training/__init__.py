"""Training: build a run from its spec (build), train and evaluate epochs (epoch), save and
restore its state (checkpoint), per-step callbacks (callbacks), optimisers and schedules
(optim), losses, transfer, provenance; `run(spec, out)` ties them together."""
from .run import run

__all__ = ["run"]
