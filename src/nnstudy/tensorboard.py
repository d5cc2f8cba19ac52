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
from pathlib import Path

import pandas as pd

from . import schemas

STATISTICS = ("mean", "ci_low", "ci_high")


def _part(name: str) -> str:
    """A label as one path part: characters outside letters, digits and _.,=- become '_'."""
    return re.sub(r"[^A-Za-z0-9_.,=-]", "_", str(name)) or "_"


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def write(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> None:
    """Event files of every run (the collected runs table) and of every variant's mean and
    interval (the curves summary), built beside `out` and renamed into place."""
    with schemas.atomic_dir(out) as tmp:
        for (exp, variant, seed), run in runs.groupby(["experiment", "variant", "seed"], sort=False, observed=True):
            with _writer(tmp / "runs" / _part(exp) / _part(variant) / f"seed{seed}") as w:
                for r in run.itertuples():
                    for metric in ("loss", "accuracy"):
                        value = getattr(r, metric)
                        if not math.isnan(value):
                            w.add_scalar(f"{r.split}/{metric}", value, r.epoch)
                    if r.split == "train":
                        w.add_scalar("lr", r.lr, r.epoch)
        for (exp, variant), var in curves.groupby(["experiment", "variant"], sort=False, observed=True):
            for stat in STATISTICS:
                with _writer(tmp / "variants" / _part(exp) / _part(variant) / stat) as w:
                    for r in var.itertuples():
                        value = getattr(r, stat)
                        if not math.isnan(value):
                            w.add_scalar(f"{r.split}/{r.metric}", value, r.epoch)
