"""A run's state between epochs: what it has recorded so far and everything needed to go on
bit-identically (weights, optimiser, every RNG), saved atomically after each epoch.

A checkpoint file ends with the SHA-256 of its content, checked on every load: torch checks no
checksum of its own, and a damaged checkpoint must never be resumed from. The previous epoch's
checkpoint is kept beside it (checkpoint.prev.pt), so a damaged or half-replaced latest one costs
one epoch, not the run. The last checkpoint outlives the run until the workflow has recorded the
run as done (nnstudy.runs.release), so a run whose outputs were deleted as incomplete is finished
from it, never trained again.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .. import schemas
from ..runs import CHECKPOINTS as FILES
from . import provenance

TRAILER = b"nnstudy-sha256:"
HISTORY = ("metrics", "gradients")  # RunState fields holding rows of every epoch so far


class CorruptFile(ValueError):
    """A file whose content does not match its recorded checksum (or cannot be read)."""


@dataclass
class RunState:
    epoch: int = 0                                  # epochs completed
    metrics: list = field(default_factory=list)     # rows of schemas.METRICS so far
    gradients: list = field(default_factory=list)   # rows of schemas.GRADIENTS so far
    elapsed: float = 0.0                            # training seconds over all segments
    samples: int = 0
    best_val: float = -math.inf
    best_sha256: str | None = None                  # of best.pt, recorded in run.json
    started: str = field(default_factory=provenance.now)
    diverged: bool = False
    stopped_epoch: int | None = None               # set when early stopping ends the run
    patience_best: float | None = None             # early stopping: best validation value so far
    patience_wait: int = 0                         # evaluated epochs since it last improved

    def save(self, out: Path, rid: str, model, optimizer, gen: torch.Generator, dev: torch.device) -> None:
        ckpt = {"run": rid, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(), "rng_data": gen.get_state(),
                "state": self.as_dict()}
        if dev.type == "cuda":
            ckpt["rng_cuda"] = torch.cuda.get_rng_state(dev)
        latest, previous = (out / name for name in FILES)
        if latest.exists():
            os.replace(latest, previous)
        save_verified(ckpt, latest)

    def as_dict(self) -> dict:
        """The fields, each history as one JSON text: torch.save visits every object it pickles,
        so thousands of small rows made each save slow (a 2,000-epoch XOR run spent 95% of its
        time saving). Histories only grow, so each row is encoded once; JSON keeps floats exact."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        encoded = self.__dict__.setdefault("_encoded", {h: [] for h in HISTORY})
        for history in HISTORY:
            rows, done = state[history], encoded[history]
            done.extend(json.dumps(row) for row in rows[len(done):])
            state[history] = "[" + ",".join(done) + "]"
        return state

    @classmethod
    def from_dict(cls, state: dict) -> "RunState":
        """The RunState of a checkpoint's "state" entry."""
        return cls(**{**state, **{h: json.loads(state[h]) for h in HISTORY}})

    @classmethod
    def restore(cls, out: Path, rid: str, model, optimizer, gen: torch.Generator, dev: torch.device,
                log) -> "RunState":
        """The state of the newest good checkpoint in `out` (model, optimiser and RNGs restored),
        or a fresh one if there is none or it belongs to another spec (a template whose
        selection changed). A damaged checkpoint is set aside as <name>.bad, with a log line."""
        for name in FILES:
            path = out / name
            if not path.exists():
                continue
            try:
                ckpt = load_verified(path, dev)
            except CorruptFile as e:
                os.replace(path, path.with_name(path.name + ".bad"))
                log(f"set aside a damaged checkpoint ({e}); trying the previous one")
                continue
            if ckpt["run"] != rid:
                log(f"discarding the checkpoint of run {ckpt['run']} (the spec has changed)")
                for stale in (*FILES, "best.pt", "best.next.pt"):
                    (out / stale).unlink(missing_ok=True)
                return cls()
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng_cpu"])
            if dev.type == "cuda" and "rng_cuda" in ckpt:
                torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
            gen.set_state(ckpt["rng_data"])
            state = cls.from_dict(ckpt["state"])
            log(f"resumed from checkpoint after epoch {state.epoch}")
            return state
        return cls()


def save_verified(obj, path: Path) -> None:
    """torch.save `obj` with the SHA-256 of the bytes appended; atomic."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    with schemas.atomic(path) as tmp:
        tmp.write_bytes(payload + TRAILER + hashlib.sha256(payload).digest())


def load_verified(path: Path, dev: torch.device):
    """The object saved by save_verified; CorruptFile if the file was truncated or altered."""
    blob = path.read_bytes()
    cut = len(blob) - len(TRAILER) - 32
    payload, trailer, digest = blob[:cut], blob[cut:cut + len(TRAILER)], blob[cut + len(TRAILER):]
    if cut < 0 or trailer != TRAILER or hashlib.sha256(payload).digest() != digest:
        raise CorruptFile(f"{path}: checksum mismatch (truncated or altered)")
    return torch.load(io.BytesIO(payload), map_location=dev, weights_only=True)


def save_weights(state_dict: dict, path: Path) -> str:
    """Plain torch.save of weights (users torch.load them), atomic; returns the file's SHA-256."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    with schemas.atomic(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()
