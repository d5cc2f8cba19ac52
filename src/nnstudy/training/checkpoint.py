"""A run's state between epochs: what it has recorded so far and everything needed to go on
bit-identically (weights, optimiser, every RNG), saved atomically after each epoch."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import schemas
from . import provenance


@dataclass
class RunState:
    epoch: int = 0                                  # epochs completed
    metrics: list = field(default_factory=list)     # rows of schemas.METRICS so far
    gradients: list = field(default_factory=list)   # rows of schemas.GRADIENTS so far
    elapsed: float = 0.0                            # training seconds over all segments
    samples: int = 0
    best_val: float = -math.inf
    resumed_from: list = field(default_factory=list)
    started: str = field(default_factory=provenance.now)
    diverged: bool = False
    stopped_epoch: int | None = None               # set when early stopping ends the run
    patience_best: float | None = None             # early stopping: best validation value so far
    patience_wait: int = 0                         # evaluated epochs since it last improved

    def save(self, path: Path, rid: str, model, optimizer, gen: torch.Generator, dev: torch.device) -> None:
        ckpt = {"run": rid, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(), "rng_data": gen.get_state(), "state": asdict(self)}
        if dev.type == "cuda":
            ckpt["rng_cuda"] = torch.cuda.get_rng_state(dev)
        save(ckpt, path)

    @classmethod
    def restore(cls, path: Path, rid: str, model, optimizer, gen: torch.Generator, dev: torch.device,
                log) -> "RunState":
        """The state in `path` (model, optimiser and RNGs restored), or a fresh one if there is
        no checkpoint or it belongs to another spec (a template whose selection changed)."""
        if not path.exists():
            return cls()
        ckpt = torch.load(path, map_location=dev, weights_only=True)
        if ckpt["run"] != rid:
            log(f"discarding the checkpoint of run {ckpt['run']} (the spec has changed)")
            return cls()
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if dev.type == "cuda" and "rng_cuda" in ckpt:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
        gen.set_state(ckpt["rng_data"])
        state = cls(**ckpt["state"])
        state.resumed_from.append(state.epoch)
        log(f"resumed from checkpoint after epoch {state.epoch}")
        return state


def save(obj, path: Path) -> None:
    with schemas.atomic(path) as tmp:
        torch.save(obj, tmp)
