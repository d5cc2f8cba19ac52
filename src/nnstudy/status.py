"""Where a study stands, read from its files only, so it works while Snakemake runs: per
experiment and variant, how many runs are planned, finished, diverged, running, failed or
pending, the epoch each running run is at, and an estimate of the time left.

A run's state, from what the training job writes (run.json last, a checkpoint after each epoch,
its log from the first line):
  finished / diverged   run.json with status completed / diverged
  failed                its lines of its latest start in its job's log (logs/<study>/train/<job>.log,
                        from "nnstudy: run <key>: starting" on) hold an error, and no checkpoint was
                        written after it
  running               a checkpoint (its epoch; "?" while it is being replaced), or started in the
                        log without an error (the run is in its first epoch)
  pending               nothing yet
"""
from __future__ import annotations

import json
import math
import pickle
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .study import Study, load_selections, materialise, needs

STATES = ("finished", "diverged", "running", "failed", "pending")
# What a failed training job leaves in its log: a traceback, an exception's name, nnstudy's error line.
FAILED = re.compile(r"Traceback|Error|nnstudy: error")
STARTED = re.compile(r"nnstudy: run (\S+): starting")  # `nnstudy train` starts each run of a job so
ESTIMATE = ("median seconds per epoch of the variant, else of the study, "
            "x epochs left of running and pending runs / cores")


@dataclass
class Run:
    key: str
    state: str
    epochs: int | None                  # planned epochs (None: chosen inside the workflow)
    epoch: int | str | None = None      # epochs a running run has completed; "?" while unreadable
    epoch_times: list = field(default_factory=list)  # seconds of each epoch recorded so far

    @property
    def epochs_left(self) -> int | None:
        if self.state not in ("running", "pending"):
            return 0
        if self.epochs is None:
            return None
        return self.epochs - (self.epoch if isinstance(self.epoch, int) else 0)


def run_state(study: Study, key: str) -> Run:
    """One trained run's state from its files (see the module docstring)."""
    out = Path(study.run_dir(key))
    log = Path(f"logs/{study.name}/train/{study.job_of[key]}.log")
    epochs = study.trained[key].spec.get("train", {}).get("epochs")
    epochs = epochs if isinstance(epochs, int) else None
    status = _manifest_status(out / "run.json")
    if status is not None:
        return Run(key, "diverged" if status == "diverged" else "finished", epochs,
                   epoch_times=_parquet_times(out / "metrics.parquet"))
    ckpt = out / "checkpoint.pt"
    lines, logged = _latest_attempt(log, key)
    if lines is not None and FAILED.search(lines) and not _newer(ckpt, logged):
        return Run(key, "failed", epochs)
    if ckpt.exists():
        epoch, times = _checkpoint(ckpt)
        return Run(key, "running", epochs, epoch, times)
    return Run(key, "running", epochs, 0) if lines is not None else Run(key, "pending", epochs)


def _manifest_status(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["status"]
    except FileNotFoundError:
        return None


def _latest_attempt(log: Path, key: str) -> tuple[str | None, float]:
    """The run's lines of its job's log from its latest start up to the next run's start (None
    if it never started there), and when the log was last written. Every attempt of a job
    appends to the log."""
    try:
        logged, text = log.stat().st_mtime, log.read_text(errors="replace")
    except FileNotFoundError:
        return None, 0.0
    starts = [m for m in STARTED.finditer(text) if m[1] == key]
    if not starts:
        return None, logged
    rest = text[starts[-1].end():]
    following = STARTED.search(rest)
    return (rest[:following.start()] if following else rest), logged


def _newer(path: Path, than: float) -> bool:
    """Whether `path` was written after `than` (a checkpoint after an error: a new attempt)."""
    try:
        return path.stat().st_mtime > than
    except FileNotFoundError:
        return False


def _parquet_times(path: Path) -> list:
    try:
        m = pd.read_parquet(path, columns=["epoch", "epoch_time"])
    except (OSError, ValueError):  # a finished run whose metrics were removed still counts
        return []
    return m.drop_duplicates("epoch")["epoch_time"].dropna().tolist()  # one row per split


def _checkpoint(path: Path) -> tuple[int | str, list]:
    """Epochs completed and epoch times of a running run's checkpoint; ("?", []) while the run
    replaces it or finishes (it is removed once run.json is written)."""
    import torch  # only here: everything else status reads is JSON and Parquet

    from .training.checkpoint import RunState

    try:
        state = RunState.from_dict(torch.load(path, map_location="cpu", weights_only=True)["state"])
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError):
        return "?", []
    times = {row["epoch"]: row["epoch_time"] for row in state.metrics}  # one row per split
    return state.epoch, [t for t in times.values() if math.isfinite(t)]


def variant_label(study: Study, row, selections: dict) -> str:
    """The variant's label as the report shows it: selected values filled in once chosen."""
    if needs(row.values) - set(selections):
        return row.variant
    return study.label(row.experiment, materialise(row.values, selections))


def _median(runs) -> float | None:
    times = [t for r in runs for t in r.epoch_times]
    return statistics.median(times) if times else None


def status(study: Study, cores: int = 1) -> dict:
    """The study's state as one JSON-ready object: per variant, the total, and every run."""
    runs = {key: run_state(study, key) for key in study.trained}
    groups, rows = _groups(study, runs)
    study_rate = _median(runs.values())
    rates = {label: _median(members) or study_rate for label, members in groups.items()}
    variants = [{"experiment": e, "variant": v, **_counts(members), "seconds_per_epoch": _median(members),
                 "running_at": [{"key": r.key, "epoch": r.epoch, "epochs": r.epochs} for r in members if r.state == "running"]}
                for (e, v), members in groups.items()]
    rate_of = {}
    for label, members in groups.items():
        for r in members:
            rate_of.setdefault(r.key, rates[label])  # a shared run: its first variant's rate
    total = {**_counts(runs.values()), "seconds_per_epoch": study_rate,
             "seconds_left": _seconds_left(runs.values(), rate_of, cores), "cores": cores, "estimate": ESTIMATE}
    return {"study": study.name, "variants": variants, "total": total, "runs": rows}


def _groups(study: Study, runs: dict) -> tuple[dict, list]:
    """(experiment, variant) -> its runs (a run two experiments share is in both), and one
    JSON row per row of the run table that has a run of its own."""
    selections = load_selections(sorted(Path(study.root, "selections").glob("*.json")))
    groups, rows = {}, []
    for row in study.rows:
        if not row.key:  # a borrowed row is another row's run, not a run of its own
            continue
        run, label = runs[row.key], (row.experiment, variant_label(study, row, selections))
        groups.setdefault(label, []).append(run)
        rows.append({"key": row.key, "experiment": label[0], "variant": label[1], "seed": row.seed,
                     "state": run.state, "epoch": run.epoch, "epochs": run.epochs})
    return groups, rows


def _seconds_left(runs, rate_of: dict, cores: int) -> float | None:
    total = 0.0
    for r in runs:
        left = r.epochs_left
        if left == 0:
            continue
        if left is None or rate_of[r.key] is None:
            return None
        total += left * rate_of[r.key]
    return total / cores


def _counts(runs) -> dict:
    runs = list(runs)
    left = [r.epochs_left for r in runs]
    return {"planned": len(runs), **{s: sum(r.state == s for r in runs) for s in STATES},
            "epochs_left": None if None in left else sum(left)}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no epoch time recorded yet)"
    s = round(seconds)
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def text(report: dict) -> str:
    """Plain text: a header, one line per experiment/variant, a total line with the estimate."""
    width = max([len("total")] + [len(f"{v['experiment']}/{v['variant']}") for v in report["variants"]])
    head = f"{'study ' + report['study']:<{width}}  " + "".join(f"{s:>9}" for s in ("planned",) + STATES)
    lines = [head]
    for v in report["variants"]:
        at = ", ".join(f"{r['epoch']}/{r['epochs'] if r['epochs'] is not None else '?'}" for r in v["running_at"])
        lines.append(f"{v['experiment'] + '/' + v['variant']:<{width}}  " + _count_cells(v)
                     + (f"  running at epoch {at}" if at else ""))
    t = report["total"]
    cores = f"{t['cores']} core" + ("s" if t["cores"] != 1 else "")
    if sum(v["planned"] for v in report["variants"]) > t["planned"]:
        lines.append("(a run that two experiments share counts in the line of each, once in the total)")
    lines.append(f"{'total':<{width}}  " + _count_cells(t) + f"  time left: {duration(t['seconds_left'])} "
                 f"on {cores} ({ESTIMATE})")
    return "\n".join(lines)


def _count_cells(c: dict) -> str:
    return "".join(f"{c[s]:>9}" for s in ("planned",) + STATES)
