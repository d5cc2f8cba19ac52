"""nnstudy's own analyses (each registered once: name, parameters, docstring, schemas, summary,
drawing)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import stats
from ..registry import register_analysis

i32, i64, f64, s = pa.int32(), pa.int64(), pa.float64(), pa.string()
LABELS = [("experiment", s), ("variant", s)]
SUMMARY = [("n_seeds", i64), ("mean", f64), ("std", f64), ("ci_low", f64), ("ci_high", f64)]

# -- confusion ------------------------------------------------------------------------------

CONFUSION = pa.schema([("true", i32), ("pred", i32), ("count", i64)])
CELLS = pa.schema([*LABELS, ("true", i32), ("pred", i32), ("n_seeds", i64), ("count_mean", f64), ("count_std", f64),
                   ("rate_mean", f64), ("rate_std", f64)])
PER_CLASS = pa.schema([*LABELS, ("class", i32), *SUMMARY])


def confusion_counts(true: np.ndarray, pred: np.ndarray, classes: int) -> pd.DataFrame:
    """Every cell (true, pred) of the confusion matrix with its count, zeros included."""
    counts = np.bincount(np.asarray(true) * classes + np.asarray(pred), minlength=classes * classes)
    grid = np.arange(classes * classes)
    return pd.DataFrame({"true": grid // classes, "pred": grid % classes, "count": counts}).astype(
        {"true": "int32", "pred": "int32", "count": "int64"})


def summarise_confusion(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Per variant over seeds: every cell's count and row-normalised rate (mean, std), and each
    class's accuracy (the diagonal rate) with its t interval."""
    by = ["experiment", "variant"]
    rows = rows.assign(rate=rows["count"] / rows.groupby([*by, "seed", "true"])["count"].transform("sum"))
    cells = rows.groupby([*by, "true", "pred"], sort=False).agg(
        n_seeds=("seed", "nunique"), count_mean=("count", "mean"), count_std=("count", "std"),
        rate_mean=("rate", "mean"), rate_std=("rate", "std")).reset_index()
    diagonal = rows[rows["true"] == rows["pred"]].rename(columns={"true": "class"})
    per_class = stats.summarise(diagonal, [*by, "class"], "rate", level)
    return {"cells": cells, "per_class": per_class[[*by, "class", *(n for n, _ in SUMMARY)]]}


def draw_confusion(ax, tables: dict[str, pd.DataFrame], variant: str):
    """The seed-averaged row-normalised matrix; with 10 classes or fewer, each cell's mean %."""
    cells = tables["cells"]
    classes = int(cells["true"].max()) + 1
    matrix = np.zeros((classes, classes))
    matrix[cells["true"], cells["pred"]] = cells["rate_mean"]
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    if classes <= 10:
        for (t, p), v in np.ndenumerate(matrix):
            ax.text(p, t, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.5 else "black")
    n = int(cells["n_seeds"].max()) if len(cells) else 0
    ax.set(title=f"{variant}: % of each true class, mean of n = {n}", xlabel="predicted", ylabel="true")
    if classes <= 10:
        ax.set(xticks=range(classes), yticks=range(classes))
    ax.title.set_fontsize(8)
    return ax


def report_confusion(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """For the report: per-class test accuracy (% with its interval, n) per variant, and each
    variant's three most confused pairs (mean % of the true class predicted as the other)."""
    pc = tables["per_class"]
    cell = pc.assign(text=[f"{100 * m:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" for m, lo, hi
                           in zip(pc["mean"], pc["ci_low"], pc["ci_high"])])
    per_class = cell.pivot(index="variant", columns="class", values="text").reset_index()
    per_class.columns = ["variant", *(f"class {c}" for c in per_class.columns[1:])]
    per_class.insert(1, "n", pc.groupby("variant", sort=False)["n_seeds"].min().reindex(per_class["variant"]).to_numpy())
    off = tables["cells"][tables["cells"]["true"] != tables["cells"]["pred"]]
    top = off.sort_values("rate_mean", ascending=False, kind="stable").groupby("variant", sort=False).head(3)
    pairs = pd.DataFrame({"variant": top["variant"], "true → predicted": [f"{t} → {p}" for t, p in zip(top["true"], top["pred"])],
                          "% of the true class (mean ± std)": [f"{100 * m:.2f} ± {100 * sd:.2f}" for m, sd
                                                               in zip(top["rate_mean"], top["rate_std"].fillna(0))]})
    return {"per-class test accuracy, % [CI]": per_class, "most confused pairs": pairs}


@register_analysis("confusion", schema=CONFUSION, tables={"cells": CELLS, "per_class": PER_CLASS},
                   summarise=summarise_confusion, draw=draw_confusion, report=report_confusion)
def confusion(run):
    """Test-set confusion matrix (counts) of each run; per variant the mean and std of every
    cell, of the row-normalised matrix, and per-class accuracy with a t interval over seeds."""
    import torch

    true, pred = [], []
    with torch.inference_mode():
        for x, y in run.data.batches("test", run.spec["train"]["eval_batch_size"]):
            with run.autocast():
                pred.append(run.predict(run.model(run.inputs(x))).cpu())
            true.append(y.cpu())
    return confusion_counts(torch.cat(true).numpy(), torch.cat(pred).numpy(), run.data.classes)
