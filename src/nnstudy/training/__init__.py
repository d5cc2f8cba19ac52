"""Training: build a run from its spec (build), train and evaluate epochs (epoch), save and
restore its state (checkpoint), per-step callbacks (callbacks), optimisers and schedules
(optim), losses, transfer, provenance; `run.run(spec, out)` ties them together. The package, optim
and losses import no torch until a run needs it: the registry's declarations load without it."""
