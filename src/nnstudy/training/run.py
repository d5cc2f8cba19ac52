"""One seeded training run: a pure function of a resolved spec (and the content of any plugin
it uses), recorded as Parquet.

`run(spec, out)` writes into `out`:
  metrics.parquet, gradients.parquet  (schemas.METRICS / schemas.GRADIENTS)
  model.pt   final weights            best.pt  weights of the epoch of best validation accuracy
  run.json   spec, id, provenance, status, SHA-256 of each file above (written last: its
             presence means "done")
  checkpoint.pt (+ .prev.pt)          every epoch; a killed run resumes from it (see checkpoint)
  attempts.jsonl                      one line per start of the run, appended when it starts
One process trains into a run directory at a time (a lock on `out/.lock`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from .. import schemas
from ..spec import SpecError, resolve, run_id
from . import checkpoint, provenance, transfer
from .build import Built, build, pick_device
from .callbacks import for_run, one_blas_thread
from .checkpoint import RunState
from .epoch import epoch_sums, evaluate, train_epoch
from .optim import lr_at, make_optimizer


def run(spec: dict, out: str | Path, threads: int | None = None, device: str | None = None,
        progress: bool | None = None, replace: bool = False, after=None) -> dict:
    """Train the run described by `spec` into `out` (resuming from a checkpoint there) and
    return its manifest (run.json). A finished run in `out` is returned as it is; a finished
    run of another spec there is an error, or with `replace` trained over. `after(built)` is
    called once the run has finished here, with its model (final weights) and data in memory."""
    resolved = resolve(spec)
    rid, out = run_id(resolved), Path(out)
    if (out / "run.json").exists():
        manifest = json.loads((out / "run.json").read_text())
        if manifest["id"] == rid:
            return manifest
        if not replace:
            raise SpecError(f"{out} holds run {manifest['id']}, not {rid}: choose another --out")
        for name in ("run.json", "best.pt"):  # run.json first: the folder no longer looks done
            (out / name).unlink(missing_ok=True)
    if threads:
        torch.set_num_threads(threads)
    deterministic(resolved["train"]["deterministic"])
    dev = pick_device(device)

    def log(msg: str) -> None:
        print(f"nnstudy[{rid}]: {msg}", file=sys.stderr, flush=True)

    r = build(resolved, dev)  # before the first log line: a bad spec or data gives one line only
    log(f"training on the CPU ({torch.get_num_threads()} threads)" if dev.type == "cpu"
        else f"training on {dev} ({torch.cuda.get_device_name(dev)})")
    optimizer = make_optimizer([p for p in r.model.parameters() if p.requires_grad], resolved["optim"])
    callbacks = for_run(r, optimizer)
    if resolved["train"]["compile"]:
        r.model.compile(dynamic=False)  # in place: the weights keep their names in checkpoints
    gen = torch.Generator().manual_seed(resolved["seed"])  # data order and augmentation
    lock = claim(out)  # noqa: F841 (held until this function returns)
    state = RunState.restore(out, rid, r.model, optimizer, gen, dev, log)
    pending = out / "best.next.pt"  # killed between its checkpoint and the rename, or before both
    if pending.exists() and state.best_sha256 == sha256(pending):
        os.replace(pending, out / "best.pt")
    pending.unlink(missing_ok=True)
    attempt(out, rid, state.epoch)
    epochs = resolved["train"]["epochs"] if not (state.diverged or state.stopped_epoch) else state.epoch
    bar = tqdm(total=epochs, initial=state.epoch, desc=rid, unit="epoch", leave=False, file=sys.stderr,
               disable=None if progress is None else not progress)
    t_segment = time.perf_counter() - state.elapsed
    frozen_modules = transfer.frozen_modules(r.model, r.frozen)
    with one_blas_thread():  # the gradient statistics' BLAS beside torch's threads (training.callbacks)
        for epoch in range(state.epoch + 1, epochs + 1):
            one_epoch(r, state, optimizer, frozen_modules, callbacks, gen, epoch, t_segment, out)
            state.save(out, rid, r.model, optimizer, gen, dev)
            if (out / "best.next.pt").exists():
                os.replace(out / "best.next.pt", out / "best.pt")
            bar.update(1)
            bar.set_postfix(loss=f"{state.metrics[-1]['loss']:.3f}")
            if state.diverged:
                log(f"loss is not finite at epoch {epoch}: stopped, marked diverged")
                break
            if state.stopped_epoch:
                log(f"early stopping at epoch {epoch}: no validation improvement for "
                    f"{resolved['train']['early_stopping']['patience']} evaluations")
                break
    bar.close()
    manifest = finish(r, state, out)
    log(f"{manifest['status']} after {state.epoch} epochs: {out}")
    if after is not None:
        r.dir = out
        after(r)
    return manifest


def deterministic(on: bool) -> None:
    """PyTorch's deterministic algorithms, set for every run (the switch is process-wide). cuBLAS
    needs a fixed workspace for them, set before CUDA starts (it reads the variable once). An
    operation without a deterministic CUDA kernel (e.g. adaptive average pooling's backward)
    warns instead of stopping the run."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set only when it changes: the call imports torch's compiler stack (1.5 s of a job's start-up).
    if torch.are_deterministic_algorithms_enabled() != on or (on and not torch.is_deterministic_algorithms_warn_only_enabled()):
        torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.benchmark = False


def one_epoch(r: Built, state: RunState, optimizer, frozen_modules, callbacks, gen, epoch: int,
              t_segment: float, out: Path) -> None:
    """Train one epoch, evaluate every split (on eval epochs), record metrics, gradient rows and
    the best-validation weights into `state`."""
    tr = r.spec["train"]
    t0 = time.perf_counter()
    r.test_logits = None  # the weights change
    lr = lr_at(r.spec["schedule"], r.spec["optim"]["lr"], epoch, tr["epochs"])
    for group in optimizer.param_groups:
        group["lr"] = lr
    per_step, sizes = train_epoch(r, optimizer, frozen_modules, tr["batch_size"], gen, callbacks)
    n_seen = sum(sizes)
    run_loss, run_acc = (v / n_seen for v in epoch_sums(per_step, sizes))
    state.samples += n_seen
    diverged = not math.isfinite(run_loss)
    evaluated = epoch % tr["eval_every"] == 0 or epoch == tr["epochs"] or diverged
    results = {which: evaluate(r, which, tr["eval_batch_size"]) if evaluated else (math.nan, math.nan)
               for which in schemas.SPLITS if which != "val" or len(r.data.val_idx)}
    epoch_time = time.perf_counter() - t0
    for which, (loss_v, acc_v) in results.items():
        state.metrics.append(dict(
            run=r.id, epoch=epoch, split=which, loss=loss_v, accuracy=acc_v,
            running_loss=run_loss if which == "train" else math.nan,
            running_accuracy=run_acc if which == "train" else math.nan,
            lr=lr, samples_seen=state.samples, epoch_time=epoch_time,
            wall_time=time.perf_counter() - t_segment, diverged=diverged,
        ))
    for cb in callbacks:
        state.gradients.extend(cb.end_epoch(r.id, epoch))
    if "val" in results and evaluated and results["val"][1] > state.best_val:
        state.best_val = results["val"][1]
        # best.pt takes it once the checkpoint recording its checksum is saved (run loop).
        state.best_sha256 = checkpoint.save_weights(r.model.state_dict(), out / "best.next.pt")
    if evaluated and "val" in results and tr["early_stopping"]:
        patience(state, tr["early_stopping"], results["val"], epoch)
    state.epoch, state.elapsed, state.diverged = epoch, time.perf_counter() - t_segment, diverged


def patience(state: RunState, es: dict, val: tuple[float, float], epoch: int) -> None:
    """Early stopping: count evaluated epochs without an improvement of more than min_delta of
    the validation metric; after `patience` of them the run stops at this epoch."""
    value = val[0] if es["metric"] == "loss" else val[1]
    gain = (value - state.patience_best) * (-1 if es["metric"] == "loss" else 1) \
        if state.patience_best is not None else math.inf
    if gain > es["min_delta"]:
        state.patience_best, state.patience_wait = value, 0
    else:
        state.patience_wait += 1
        if state.patience_wait >= es["patience"]:
            state.stopped_epoch = epoch


def claim(out: Path):
    """Lock the run directory for this process (released when the returned file is closed, at
    the latest when the process ends) and remove temporary files that killed writers left."""
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / ".lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpecError(f"--out {out}: another nnstudy process is training into it; wait for it or "
                        "choose another --out") from None
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return handle


def attempt(out: Path, rid: str, from_epoch: int) -> None:
    """Append this start of the run to attempts.jsonl, before any work, so every resumption is
    on record even if this attempt is killed before its first checkpoint."""
    line = {"run": rid, "from_epoch": from_epoch, "started": provenance.now(), "pid": os.getpid(),
            **{k: v for k, v in provenance.machine(torch.device("cpu")).items() if k in ("host", "slurm_job_id")}}
    with (out / "attempts.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def resumptions(out: Path, rid: str) -> list[int]:
    """The epoch each start after the first resumed from."""
    starts = []
    for line in (out / "attempts.jsonl").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # one small write each, so never expected; a damaged line is not a start
            continue
        if entry["run"] == rid:
            starts.append(entry["from_epoch"])
    return starts[1:]


def finish(r: Built, state: RunState, out: Path) -> dict:
    """Write the run's Parquet files, final weights and, last, run.json with their checksums.
    The checkpoint stays until the workflow has recorded the run as done (checkpoint.release)."""
    metrics = pd.DataFrame(state.metrics).assign(stopped_epoch=state.stopped_epoch)
    schemas.write(metrics.reindex(columns=schemas.METRICS.names), schemas.METRICS, out / "metrics.parquet")
    schemas.write(pd.DataFrame(state.gradients, columns=schemas.GRADIENTS.names), schemas.GRADIENTS,
                  out / "gradients.parquet")
    files = {"model.pt": checkpoint.save_weights(r.model.state_dict(), out / "model.pt"),
             "metrics.parquet": sha256(out / "metrics.parquet"), "gradients.parquet": sha256(out / "gradients.parquet")}
    if state.best_sha256 and (out / "best.pt").exists():
        files["best.pt"] = sha256(out / "best.pt")
    sizes = {name: (out / name).stat().st_size for name in files}
    manifest = {
        "id": r.id, "status": "diverged" if state.diverged else "completed", "spec": r.spec,
        "files": files, "bytes": sizes,
        "epochs_completed": state.epoch, "stopped_epoch": state.stopped_epoch, "resumed_from": resumptions(out, r.id),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "git": provenance.git(), "versions": provenance.versions(), **provenance.machine(r.device),
        "started": state.started, "ended": provenance.now(), "train_seconds": state.elapsed,
    }
    schemas.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", out / "run.json")
    return manifest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
