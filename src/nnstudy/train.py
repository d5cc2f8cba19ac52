"""One seeded training run: a pure function of a resolved spec, recorded as Parquet.

`run(spec, out)` writes into `out`:
  metrics.parquet, gradients.parquet  (schemas.METRICS / schemas.GRADIENTS)
  model.pt   final weights            best.pt  weights of the best validation epoch
  run.json   spec, id, provenance, status (written last: its presence means "done")
  checkpoint.pt while running         (every epoch; a killed run resumes from it)
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data as data_mod
from . import models, schemas
from .spec import SpecError, resolve, run_id
from .telemetry import GradientStats

def manual_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from log-softmax and one-hot targets, without torch.nn losses."""
    log_probs = logits - logits.logsumexp(dim=1, keepdim=True)
    one_hot = torch.zeros_like(log_probs).scatter_(1, y[:, None], 1.0)
    return -(one_hot * log_probs).sum(dim=1).mean()


LOSSES = {"cross_entropy": F.cross_entropy, "manual_cross_entropy": manual_cross_entropy}


def lr_at(schedule: dict, base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based `epoch`: optional linear warmup from start_lr over warmup_epochs
    (epoch 1 uses start_lr, epoch warmup_epochs + 1 the full base_lr), then the named decay."""
    warm = schedule["warmup_epochs"]
    if epoch <= warm:
        return schedule["start_lr"] + (base_lr - schedule["start_lr"]) * (epoch - 1) / warm
    t, span = epoch - 1 - warm, max(epochs - warm, 1)
    name = schedule["name"]
    if name == "step":
        return base_lr * schedule["gamma"] ** (t // schedule["step_size"])
    if name == "exponential":
        return base_lr * schedule["gamma"] ** t
    if name == "cosine":
        return schedule["min_lr"] + (base_lr - schedule["min_lr"]) * (1 + math.cos(math.pi * t / span)) / 2
    return base_lr  # constant, warmup


def make_optimizer(params, o: dict) -> torch.optim.Optimizer:
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                               weight_decay=o["weight_decay"])
    if o["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
    return cls(params, lr=o["lr"], weight_decay=o["weight_decay"])


def pick_device(requested: str | None = None) -> torch.device:
    name = requested or os.environ.get("NNSTUDY_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _matching(model: torch.nn.Module, prefixes: list[str], key: str) -> set[str]:
    names = [n for n, _ in model.named_parameters()]
    hit = set()
    for prefix in prefixes:
        found = {n for n in names if n == prefix or n.startswith(prefix + ".")}
        if not found:
            groups = sorted({n.rsplit(".", 1)[0] for n in names} | {n.split(".")[0] for n in names})
            raise SpecError(f"spec.transfer.{key}: {prefix!r} matches no parameter; prefixes: {', '.join(groups)}")
        hit |= found
    return hit


def apply_transfer(model: models.Net, t: dict, activation: str, init: str, device: torch.device) -> set[str]:
    """Load source weights, re-initialise and freeze by prefix. Returns the frozen parameter names."""
    if t["source"] is None:
        if t["freeze"] or t["reinit"]:
            raise SpecError("spec.transfer: freeze/reinit need transfer.source (the weights to start from)")
        return set()
    src = Path(t["source"])
    if not src.exists():
        raise SpecError(f"spec.transfer.source: no weights file at {src}")
    model.load_state_dict(torch.load(src, map_location=device, weights_only=True))
    reinit = _matching(model, t["reinit"], "reinit")
    if reinit:
        models.initialise(model, init, activation, tuple(sorted({n.rsplit(".", 1)[0] for n in reinit})))
    frozen = _matching(model, t["freeze"], "freeze")
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def _git() -> dict:
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10)
            if commit.returncode == 0:
                dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10).stdout.strip() != ""
                return {"commit": commit.stdout.strip(), "dirty": dirty}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"commit": None, "dirty": None}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("torchvision", "nnstudy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _save(obj, path: Path) -> None:
    with schemas.atomic(path) as tmp:
        torch.save(obj, tmp)


@torch.no_grad()
def evaluate(model, data: data_mod.Data, which: str, loss_fn, batch_size: int, channels_last: bool):
    """(mean loss, accuracy) of the split in eval mode; one host sync."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=data.train_x.device)
    n = 0
    for x, y in data.batches(which, batch_size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        total += torch.stack([loss_fn(logits, y).double() * len(y), (logits.argmax(1) == y).sum().double()])
        n += len(y)
    loss, correct = total.tolist()
    return (loss / n, correct / n) if n else (math.nan, math.nan)


def run(spec: dict, out: str | Path, threads: int | None = None, device: str | None = None,
        progress: bool | None = None) -> dict:
    """Train the run described by `spec` into `out` (resuming from a checkpoint there) and
    return its manifest (run.json). A finished run in `out` is returned as it is."""
    resolved = resolve(spec)
    rid = run_id(resolved)
    out = Path(out)
    manifest_path = out / "run.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["id"] != rid:
            raise SpecError(f"{out} holds run {manifest['id']}, not {rid}: choose another --out")
        return manifest
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    log = lambda msg: print(f"nnstudy[{rid}]: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if dev.type == "cpu":
        log(f"training on the CPU ({torch.get_num_threads()} threads)")
    else:
        log(f"training on {dev} ({torch.cuda.get_device_name(dev)})")

    seed, tr = resolved["seed"], resolved["train"]
    data = data_mod.build(resolved["data"], seed, dev)
    torch.manual_seed(seed)
    model = models.build(resolved["model"], data.input_shape, data.classes).to(dev)
    channels_last = model.is_conv
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = apply_transfer(model, resolved["transfer"], resolved["model"]["activation"],
                            resolved["model"]["init"], dev)
    frozen_modules = [m for name, m in model.named_modules()
                      if name and any(True for _ in m.parameters(recurse=False))
                      and all(f"{name}.{n}" in frozen for n, _ in m.named_parameters(recurse=False))]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise SpecError("spec.transfer.freeze: every parameter is frozen; nothing would train")
    optimizer = make_optimizer(trainable, resolved["optim"])
    loss_fn = LOSSES[resolved["loss"]]
    grads = GradientStats(model, models.forward_order(model, data.input_shape)) if tr["gradients"] else None
    gen = torch.Generator().manual_seed(seed)  # data order and augmentation

    state = {"epoch": 0, "metrics": [], "gradients": [], "elapsed": 0.0, "samples": 0,
             "best_val": -math.inf, "resumed_from": [], "started": _now(), "diverged": False}
    ckpt_path = out / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, map_location=dev, weights_only=True) if ckpt_path.exists() else None
    if ckpt is not None and ckpt["run"] != rid:
        # A template run whose selection changed since it was interrupted: start afresh.
        log(f"discarding the checkpoint of run {ckpt['run']} (the spec has changed)")
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if dev.type == "cuda" and "rng_cuda" in ckpt:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
        gen.set_state(ckpt["rng_data"])
        state = ckpt["state"]
        state["resumed_from"].append(state["epoch"])
        log(f"resumed from checkpoint after epoch {state['epoch']}")

    epochs = tr["epochs"]
    bar = tqdm(total=epochs, initial=state["epoch"], desc=rid, unit="epoch", disable=None if progress is None else not progress,
               leave=False, file=sys.stderr)
    t_segment = time.perf_counter() - state["elapsed"]
    for epoch in range(state["epoch"] + 1, epochs + 1):
        t0 = time.perf_counter()
        lr = lr_at(resolved["schedule"], resolved["optim"]["lr"], epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        for m in frozen_modules:
            m.eval()  # a frozen batch-norm layer keeps its running statistics too
        running = torch.zeros(2, dtype=torch.float64, device=dev)
        n_seen = 0
        for x, y in data.batches("train", tr["batch_size"], gen):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grads:
                grads.after_backward()
            optimizer.step()
            running += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
            n_seen += len(y)
        run_loss, run_correct = running.tolist()
        run_loss, run_acc = run_loss / n_seen, run_correct / n_seen
        state["samples"] += n_seen
        diverged = not math.isfinite(run_loss)
        evaluated = epoch % tr["eval_every"] == 0 or epoch == epochs or diverged
        results = {}
        for which in schemas.SPLITS:
            if which == "val" and len(data.val_idx) == 0:
                continue
            results[which] = (evaluate(model, data, which, loss_fn, tr["eval_batch_size"], channels_last)
                              if evaluated else (math.nan, math.nan))
        epoch_time = time.perf_counter() - t0
        for which, (loss_v, acc_v) in results.items():
            state["metrics"].append(dict(
                run=rid, epoch=epoch, split=which, loss=loss_v, accuracy=acc_v,
                running_loss=run_loss if which == "train" else math.nan,
                running_accuracy=run_acc if which == "train" else math.nan,
                lr=lr, samples_seen=state["samples"], epoch_time=epoch_time,
                wall_time=time.perf_counter() - t_segment, diverged=diverged,
            ))
        if grads:
            state["gradients"].extend(grads.end_epoch(rid, epoch))
        if "val" in results and evaluated and results["val"][1] > state["best_val"]:
            state["best_val"] = results["val"][1]
            _save(model.state_dict(), out / "best.pt")
        state["epoch"], state["elapsed"], state["diverged"] = epoch, time.perf_counter() - t_segment, diverged
        ckpt = {"run": rid, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(), "rng_data": gen.get_state(), "state": state}
        if dev.type == "cuda":
            ckpt["rng_cuda"] = torch.cuda.get_rng_state(dev)
        _save(ckpt, ckpt_path)
        bar.update(1)
        bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{results['train'][1]:.3f}")
        if diverged:
            log(f"loss is not finite at epoch {epoch}: stopped, marked diverged")
            break
    bar.close()

    schemas.write(pd.DataFrame(state["metrics"], columns=schemas.METRICS.names), schemas.METRICS, out / "metrics.parquet")
    schemas.write(pd.DataFrame(state["gradients"], columns=schemas.GRADIENTS.names), schemas.GRADIENTS,
                  out / "gradients.parquet")
    _save(model.state_dict(), out / "model.pt")
    manifest = {
        "id": rid, "status": "diverged" if state["diverged"] else "completed", "spec": resolved,
        "epochs_completed": state["epoch"], "resumed_from": state["resumed_from"],
        "git": _git(), "versions": _versions(), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": state["started"], "ended": _now(), "train_seconds": state["elapsed"],
    }
    schemas.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", manifest_path)
    ckpt_path.unlink(missing_ok=True)
    log(f"{manifest['status']} after {state['epoch']} epochs: {out}")
    return manifest
