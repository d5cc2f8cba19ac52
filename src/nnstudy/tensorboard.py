"""TensorBoard event files of a study (the optional extra `nnstudy[tensorboard]`).

results/<study>/tensorboard/
  runs/<experiment>/<variant>/seed<k>/         one run: <split>/loss, <split>/accuracy, lr per epoch
  variants/<experiment>/<variant>/<statistic>/ the variant over seeds: mean, ci_low, ci_high each
                                               written as a run of its own, same tags
`tensorboard --logdir results/<study>/tensorboard` shows them; filter by `runs/` or `variants/`.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pandas as pd

from . import schemas

STATISTICS = ("mean", "ci_low", "ci_high")


def _part(name: str) -> str:
    """A label as one path part: characters outside letters, digits and _.,=- become '_'."""
    return re.sub(r"[^A-Za-z0-9_.,=-]", "_", str(name)) or "_"


def _events(folder: Path, scalars) -> None:
    """One event file in `folder` holding the (tag, step, value) scalars, written at once in
    TensorBoard's record format: torch's SummaryWriter would import torch (2 s) and start a
    writer thread for each of a study's hundreds of files."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder.mkdir(parents=True)
    now = time.time()
    with (folder / f"events.out.tfevents.{int(now):010d}.nnstudy").open("wb") as f:
        records = RecordWriter(f)
        records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for tag, step, value in scalars:
            if not math.isnan(value):
                summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
                records.write(Event(wall_time=now, step=int(step), summary=summary).SerializeToString())


def write(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> None:
    """Event files of every run (the collected runs table) and of every variant's mean and
    interval (the curves summary), built beside `out` and renamed into place."""
    with schemas.atomic_dir(out) as tmp:
        for (exp, variant, seed), run in runs.groupby(["experiment", "variant", "seed"], sort=False, observed=True):
            scalars = [(f"{r.split}/{metric}", r.epoch, getattr(r, metric))
                       for r in run.itertuples() for metric in ("loss", "accuracy")]
            scalars += [("lr", r.epoch, r.lr) for r in run.itertuples() if r.split == "train"]
            _events(tmp / "runs" / _part(exp) / _part(variant) / f"seed{seed}", scalars)
        for (exp, variant), var in curves.groupby(["experiment", "variant"], sort=False, observed=True):
            for stat in STATISTICS:
                _events(tmp / "variants" / _part(exp) / _part(variant) / stat,
                        [(f"{r.split}/{r.metric}", r.epoch, getattr(r, stat)) for r in var.itertuples()])
