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
    per_class = cell.pivot(index="variant", columns="class", values="text").reindex(list(dict.fromkeys(pc["variant"])))
    per_class = per_class.reset_index()
    per_class.columns = ["variant", *(f"class {c}" for c in per_class.columns[1:])]
    per_class.insert(1, "n", pc.groupby("variant", sort=False)["n_seeds"].min().reindex(per_class["variant"]).to_numpy())
    off = tables["cells"][tables["cells"]["true"] != tables["cells"]["pred"]]
    rank = {v: i for i, v in enumerate(dict.fromkeys(off["variant"]))}
    top = off.sort_values("rate_mean", ascending=False, kind="stable").groupby("variant", sort=False).head(3)
    top = top.sort_values("variant", key=lambda v: v.map(rank), kind="stable")
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


# -- summary ---------------------------------------------------------------------------------

SUMMARY_RUN = pa.schema([("layer", s), ("module", s), ("params", i64), ("trainable", i64)])
LAYERS = pa.schema([*LABELS, ("layer", s), ("module", s), ("params", i64), ("trainable", i64)])


def parameter_counts(model) -> pd.DataFrame:
    """Parameters of each module that owns some, in forward order, then a `total` row."""
    rows = [(name or "(model)", type(m).__name__, sum(p.numel() for p in m.parameters(recurse=False)),
             sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad))
            for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    df = pd.DataFrame(rows, columns=["layer", "module", "params", "trainable"])
    total = pd.DataFrame([("total", "", df["params"].sum(), df["trainable"].sum())], columns=df.columns)
    return pd.concat([df, total], ignore_index=True).astype({"params": "int64", "trainable": "int64"})


def summarise_summary(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Per variant its layers' parameter counts (the architecture: the same for every seed)."""
    first = rows[rows["seed"] == rows.groupby(["experiment", "variant"])["seed"].transform("min")]
    return {"layers": first[["experiment", "variant", "layer", "module", "params", "trainable"]].reset_index(drop=True)}


def draw_summary(ax, tables: dict[str, pd.DataFrame], variant: str):
    layers = tables["layers"][tables["layers"]["layer"] != "total"]
    ax.barh(layers["layer"], layers["params"], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xscale("log")
    total = tables["layers"].loc[tables["layers"]["layer"] == "total", "params"]
    ax.set(title=f"{variant}: {int(total.iloc[0]) if len(total) else 0:,} parameters", xlabel="parameters (log)")
    ax.title.set_fontsize(8)
    ax.tick_params(labelsize=6)
    return ax


def report_summary(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    layers = tables["layers"]
    order = [name for name in dict.fromkeys(layers["layer"]) if name != "total"] + ["total"]
    table = layers.pivot(index="layer", columns="variant", values="params").reindex(order)
    table = table.apply(lambda col: col.map(lambda v: "–" if pd.isna(v) else f"{int(v):,}"))
    table.columns.name = None
    return {"parameters per layer": table.reset_index()}


@register_analysis("summary", schema=SUMMARY_RUN, tables={"layers": LAYERS}, summarise=summarise_summary,
                   draw=draw_summary, report=report_summary)
def summary(run):
    """Parameters per layer (module owning parameters) and in total, trainable ones apart."""
    return parameter_counts(run.model)


# -- cost ------------------------------------------------------------------------------------

COST_RUN = pa.schema([("epoch", i32), ("epoch_time", f64), ("train_seconds", f64), ("test_accuracy", f64)])
EPOCHS = pa.schema([*LABELS, ("epoch", i32), *SUMMARY])
COST = pa.schema([*LABELS, ("what", s), ("unit", s), *SUMMARY])


def summarise_cost(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Per variant over seeds: seconds per epoch (each epoch), and per run its median epoch
    time, its training time and its final test accuracy, each with a t interval."""
    by = ["experiment", "variant"]
    keep = [*by, *(n for n, _ in SUMMARY)]
    epochs = stats.summarise(rows, [*by, "epoch"], "epoch_time", level)[[*by, "epoch", *keep[2:]]]
    per_run = rows.groupby([*by, "seed"], sort=False).agg(
        epoch_time=("epoch_time", "median"), train_seconds=("train_seconds", "first"),
        test_accuracy=("test_accuracy", "first")).reset_index()
    parts = [stats.summarise(per_run, by, col, level)[keep].assign(what=what, unit=unit)
             for col, what, unit in (("epoch_time", "median epoch time", "s"), ("train_seconds", "run time", "s"),
                                     ("test_accuracy", "final test accuracy", "fraction"))]
    return {"epochs": epochs, "cost": pd.concat(parts, ignore_index=True)}


def draw_cost(ax, tables: dict[str, pd.DataFrame], variant: str):
    e = tables["epochs"]
    ax.plot(e["epoch"], e["mean"], color="tab:blue")
    ax.fill_between(e["epoch"], e["ci_low"], e["ci_high"], alpha=0.25, color="tab:blue")
    n = int(e["n_seeds"].min()) if len(e) else 0
    ax.set(title=f"{variant}: seconds per epoch, mean and 95% CI, n = {n}", xlabel="epoch", ylabel="s")
    ax.title.set_fontsize(8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return ax


def report_cost(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Final test accuracy beside training time per variant (the optimiser-comparison table)."""
    c = tables["cost"]
    scale = {"s": 1, "fraction": 100}
    text = [f"{m * scale[u]:.2f} [{lo * scale[u]:.2f}, {hi * scale[u]:.2f}]"
            for m, lo, hi, u in zip(c["mean"], c["ci_low"], c["ci_high"], c["unit"])]
    label = [f"{w} ({'%' if u == 'fraction' else u})" for w, u in zip(c["what"], c["unit"])]
    table = c.assign(text=text, label=label).pivot(index="variant", columns="label", values="text")
    table = table.reindex(columns=list(dict.fromkeys(label))).reset_index()
    table.columns.name = None
    table.insert(1, "n", c.groupby("variant", sort=False)["n_seeds"].min().reindex(table["variant"]).to_numpy())
    return {"test accuracy beside training time (mean [95% CI])": table}


@register_analysis("cost", schema=COST_RUN, tables={"epochs": EPOCHS, "cost": COST}, summarise=summarise_cost,
                   draw=draw_cost, report=report_cost)
def cost(run):
    """Training time per epoch and per run beside the final test accuracy (from the run's
    metrics and run.json): per variant mean and t interval over seeds."""
    import json

    metrics = pd.read_parquet(run.dir / "metrics.parquet")
    train = metrics[metrics["split"] == "train"]
    test = metrics[(metrics["split"] == "test") & metrics["accuracy"].notna()]
    seconds = json.loads((run.dir / "run.json").read_text())["train_seconds"]
    return pd.DataFrame({"epoch": train["epoch"].astype("int32").to_numpy(), "epoch_time": train["epoch_time"].to_numpy(),
                         "train_seconds": seconds, "test_accuracy": test["accuracy"].iloc[-1] if len(test) else np.nan})


# -- gradient_trace --------------------------------------------------------------------------

TRACE_RUN = pa.schema([("epoch", i32), ("layer_index", i32), ("layer", s), ("grad_abs_mean", f64)])
TRACE = pa.schema([*LABELS, ("epoch", i32), ("layer_index", i32), ("layer", s), *SUMMARY])


def summarise_trace(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    by = ["experiment", "variant", "epoch", "layer_index", "layer"]
    return {"trace": stats.summarise(rows, by, "grad_abs_mean", level)[[*by, *(n for n, _ in SUMMARY)]]}


def draw_trace(ax, tables: dict[str, pd.DataFrame], variant: str):
    """Mean |dL/dw| of each layer's weights per epoch (log scale), deepest layer darkest."""
    import matplotlib

    t = tables["trace"]
    layers = sorted(t["layer_index"].unique())
    cmap = matplotlib.colormaps["viridis"]
    for i, idx in enumerate(layers):
        one = t[t["layer_index"] == idx]
        ax.plot(one["epoch"], one["mean"], color=cmap(i / max(len(layers) - 1, 1)), label=one["layer"].iloc[0])
    ax.set_yscale("log")
    n = int(t["n_seeds"].min()) if len(t) else 0
    ax.set(title=f"{variant}: mean |gradient| per layer, n = {n}", xlabel="epoch")
    ax.title.set_fontsize(8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(layers) <= 8:
        ax.legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def report_trace(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The first and last epoch's gradient magnitude per layer and their ratio (vanishing
    gradients: the first layers' magnitude far below the last's)."""
    t = tables["trace"]
    first, last = t[t["epoch"] == t["epoch"].min()], t[t["epoch"] == t["epoch"].max()]
    table = first.merge(last, on=["variant", "layer_index", "layer"], suffixes=(" first epoch", " last epoch"))
    return {"mean |gradient| of each layer's weights": table[["variant", "layer", "mean first epoch", "mean last epoch"]]}


@register_analysis("gradient_trace", schema=TRACE_RUN, tables={"trace": TRACE}, summarise=summarise_trace,
                   draw=draw_trace, report=report_trace)
def gradient_trace(run):
    """Per-layer gradient magnitude (mean |dL/dw| of each layer's weights) over all epochs, from
    the run's gradient statistics: the vanishing-gradient view of a deep sigmoid MLP."""
    g = pd.read_parquet(run.dir / "gradients.parquet")
    w = g[(g["kind"] == "weight") & ~g["module"].str.contains("Norm")]  # one line per conv/linear layer
    return pd.DataFrame({"epoch": w["epoch"].astype("int32").to_numpy(), "layer_index": w["layer_index"].astype("int32").to_numpy(),
                         "layer": w["layer"].to_numpy(), "grad_abs_mean": w["grad_abs_mean"].to_numpy()})


# -- boundary --------------------------------------------------------------------------------

BOUNDARY_RUN = pa.schema([("kind", s), ("x1", f64), ("x2", f64), ("label", i32)])
REGIONS = pa.schema([*LABELS, ("x1", f64), ("x2", f64), ("label", i32), ("agreement", f64), ("n_seeds", i64)])
POINTS = pa.schema([*LABELS, ("x1", f64), ("x2", f64), ("label", i32)])


def summarise_boundary(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Per variant and grid point the class most seeds predict and the share of seeds that do;
    the training points of the first seed."""
    by = ["experiment", "variant", "x1", "x2"]
    grid = rows[rows["kind"] == "grid"]
    votes = grid.groupby([*by, "label"], sort=False).size().rename("votes").reset_index()
    seeds = grid.groupby(by, sort=False)["seed"].nunique().rename("n_seeds").reset_index()
    top = votes.sort_values("votes", ascending=False, kind="stable").drop_duplicates(by).merge(seeds, on=by)
    regions = top.assign(agreement=top["votes"] / top["n_seeds"]).sort_values(by, kind="stable")
    train = rows[rows["kind"] == "train"]
    first = train[train["seed"] == train.groupby(["experiment", "variant"])["seed"].transform("min")]
    return {"regions": regions[[*by, "label", "agreement", "n_seeds"]].reset_index(drop=True),
            "points": first[["experiment", "variant", "x1", "x2", "label"]].reset_index(drop=True)}


def draw_boundary(ax, tables: dict[str, pd.DataFrame], variant: str):
    """Decision regions (the seeds' majority class, paler where they disagree) and the training
    points."""
    r, pts = tables["regions"], tables["points"]
    xs, ys = np.sort(r["x1"].unique()), np.sort(r["x2"].unique())
    grid = r.pivot(index="x2", columns="x1", values="label").reindex(index=ys, columns=xs).to_numpy(float)
    agree = r.pivot(index="x2", columns="x1", values="agreement").reindex(index=ys, columns=xs).to_numpy(float)
    ax.imshow(grid, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap="coolwarm", alpha=0.25 + 0.5 * agree,
              aspect="auto", interpolation="nearest")
    ax.scatter(pts["x1"], pts["x2"], c=pts["label"], cmap="coolwarm", edgecolors="black", s=12)
    n = int(r["n_seeds"].max()) if len(r) else 0
    ax.set(title=f"{variant}: decision regions, n = {n}", xlabel="x1", ylabel="x2")
    ax.title.set_fontsize(8)
    return ax


def report_boundary(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    r = tables["regions"]
    return {"seeds' agreement over the grid": r.groupby("variant", sort=False).agg(
        n=("n_seeds", "max"), mean_agreement=("agreement", "mean")).reset_index()}


@register_analysis("boundary", {"grid": {"type": "integer", "minimum": 2, "maximum": 1000, "default": 100,
                                         "description": "Grid points per axis."}},
                   schema=BOUNDARY_RUN, tables={"regions": REGIONS, "points": POINTS}, summarise=summarise_boundary,
                   draw=draw_boundary, report=report_boundary)
def boundary(run, grid: int = 100):
    """Decision regions of a classifier of 2-D points over a grid spanning its training points
    (half their range added on each side), with the training points."""
    import torch

    x = run.data.train_x[run.data.train_idx].float()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"boundary: needs 2-D points (a dataset of 2 features), got samples of shape {tuple(x.shape[1:])}")
    lo, hi = x.min(0).values, x.max(0).values
    pad = (hi - lo).clamp_min(1e-6) / 2
    a, b = (torch.linspace(float(lo[i] - pad[i]), float(hi[i] + pad[i]), grid) for i in range(2))
    points = torch.cartesian_prod(a, b).to(run.device)
    with torch.inference_mode(), run.autocast():
        pred = run.predict(run.model(points)).cpu()
    y = run.data.train_y[run.data.train_idx].cpu()
    return pd.DataFrame({"kind": ["grid"] * len(points) + ["train"] * len(x),
                         "x1": torch.cat([points[:, 0].cpu(), x[:, 0].cpu()]).double().numpy(),
                         "x2": torch.cat([points[:, 1].cpu(), x[:, 1].cpu()]).double().numpy(),
                         "label": torch.cat([pred, y]).int().numpy()})
