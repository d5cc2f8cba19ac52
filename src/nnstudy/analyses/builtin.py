"""nnstudy's own analyses (each registered once: name, parameters, docstring, schemas, summary,
drawing)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ..registry import register_analysis

i32, i64, f64, s = pa.int32(), pa.int64(), pa.float64(), pa.string()
LABELS = [("experiment", s), ("variant", s)]
SUMMARY = [("n_seeds", i64), ("mean", f64), ("std", f64), ("ci_low", f64), ("ci_high", f64)]


def first_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of each variant's first seed (for what seeds differ in beyond averaging)."""
    return rows[rows["seed"] == rows.groupby(["experiment", "variant"])["seed"].transform("min")]

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
    from .. import stats  # here: scipy.special is for the summary step, not every training job's start
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
                    color="white" if v > 0.5 else "black", in_layout=False)  # inside the axes: no layout to find
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
    from ..training.epoch import test_logits

    pred = run.predict(test_logits(run)).cpu()
    return confusion_counts(run.data.test_y.cpu().numpy(), pred.numpy(), run.data.classes)


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
    first = first_seed(rows)
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
    from .. import stats  # here: scipy.special is for the summary step, not every training job's start
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
    """One variant's seconds per epoch (the variants share the panel: overlay)."""
    e = tables["epochs"]
    n = int(e["n_seeds"].min()) if len(e) else 0
    line, = ax.plot(e["epoch"], e["mean"], label=f"{variant} (n = {n})")
    ax.fill_between(e["epoch"], e["ci_low"], e["ci_high"], alpha=0.2, color=line.get_color())
    ax.set(title="seconds per epoch: mean and 95% CI over seeds", xlabel="epoch", ylabel="s")
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
                   draw=draw_cost, report=report_cost, overlay=True)
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
    from .. import stats  # here: scipy.special is for the summary step, not every training job's start

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
    first = first_seed(train)
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


# -- filters ---------------------------------------------------------------------------------

FILTERS_RUN = pa.schema([("kind", s), ("image", i32), ("filter", i32), ("channel", i32), ("row", i32), ("col", i32),
                         ("value", f64)])
TILES = pa.schema([*LABELS, ("kind", s), ("image", i32), ("filter", i32), ("channel", i32), ("row", i32),
                   ("col", i32), ("value", f64)])


def _normalised(t):
    """Each tile (first dimension) scaled to [0, 1] on its own; a constant tile is 0.5."""
    flat = t.reshape(len(t), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((flat - lo) / span + np.where(hi > lo, 0.0, 0.5)).reshape(t.shape)


def _tiles(kind: str, values: np.ndarray, image: int = -1) -> pd.DataFrame:
    """Rows of (filter, channel, row, col, value) for an array (filters, channels, rows, cols)."""
    f, c, h, w = np.indices(values.shape).reshape(4, -1)
    return pd.DataFrame({"kind": kind, "image": image, "filter": f, "channel": c, "row": h, "col": w,
                         "value": values.reshape(-1).astype(float)})


def filter_mosaic(tiles: pd.DataFrame, per_row: int = 8) -> np.ndarray:
    """One image of the filters (RGB where they have 3 input channels, else the first channel),
    then one row per test image of its activation maps, `per_row` tiles a row, 1 px apart."""
    rows = []
    for _, part in tiles.groupby(["kind", "image"], sort=False):
        shape = (part["filter"].max() + 1, part["channel"].max() + 1, part["row"].max() + 1, part["col"].max() + 1)
        arr = np.zeros(shape)
        arr[part["filter"], part["channel"], part["row"], part["col"]] = part["value"]
        arr = arr[:per_row]
        tile = arr.transpose(0, 2, 3, 1) if shape[1] == 3 else np.repeat(arr[:, :1].transpose(0, 2, 3, 1), 3, axis=3)
        h, w = tile.shape[1:3]
        strip = np.ones((h, per_row * (w + 1), 3))
        for i, t in enumerate(tile):
            strip[:, i * (w + 1):i * (w + 1) + w] = t
        rows.append(strip)
    width = max(strip.shape[1] for strip in rows)
    padded = [np.pad(strip, ((0, 1), (0, width - strip.shape[1]), (0, 0)), constant_values=1) for strip in rows]
    return np.concatenate(padded)


def summarise_filters(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Filters differ from seed to seed (nothing to average): each variant's first seed."""
    first = first_seed(rows)
    return {"tiles": first.drop(columns="seed").reset_index(drop=True)}


def draw_filters(ax, tables: dict[str, pd.DataFrame], variant: str):
    ax.imshow(filter_mosaic(tables["tiles"]), interpolation="nearest")
    ax.set_axis_off()
    images = tables["tiles"].loc[tables["tiles"]["kind"] == "activation", "image"].nunique()
    ax.set_title(f"{variant}: first conv layer's filters (top row),\nits maps of {images} test images (first seed)",
                 fontsize=7)
    return ax


def report_filters(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    t = tables["tiles"]
    f = t[t["kind"] == "filter"]
    return {"first conv layer": f.groupby("variant", sort=False).agg(
        filters=("filter", "nunique"), channels=("channel", "nunique"), size=("row", "nunique")).reset_index()}


@register_analysis("filters", {"images": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3,
                                          "description": "Test images whose activation maps are shown."}},
                   schema=FILTERS_RUN, tables={"tiles": TILES}, summarise=summarise_filters, draw=draw_filters,
                   report=report_filters, first_seed=True)
def filters(run, images: int = 3):
    """The first conv layer's filters (each normalised on its own) and its activation maps
    (each map normalised on its own) for the first `images` test images."""
    import torch

    from .. import models

    order = models.forward_order(run.model, run.data.input_shape)
    convs = [(order[n], n, m) for n, m in run.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("filters: the model has no conv layer")
    _, _, conv = min(convs, key=lambda c: c[0])
    maps = []
    hook = conv.register_forward_hook(lambda _m, _i, out: maps.append(out.detach().float().cpu()))
    try:
        x, _ = next(run.data.batches("test", images))
        with torch.inference_mode(), run.autocast():
            run.model(run.inputs(x))
    finally:
        hook.remove()
    weights = conv.weight.detach().float().cpu().numpy()
    parts = [_tiles("filter", _normalised(weights))]
    for i, m in enumerate(maps[0].numpy()):
        parts.append(_tiles("activation", _normalised(m)[:, None], image=i))
    return pd.concat(parts, ignore_index=True).astype({"image": "int32", "filter": "int32", "channel": "int32",
                                                       "row": "int32", "col": "int32"})


# -- predictions -----------------------------------------------------------------------------

IMAGE = [("channels", i32), ("height", i32), ("width", i32), ("pixels", pa.binary())]
PREDICTIONS_RUN = pa.schema([("kind", s), ("index", i64), ("true", i32), ("pred", i32), ("confidence", f64), *IMAGE])
FIXED = pa.schema([*LABELS, ("index", i64), ("true", i32), ("n_seeds", i64), ("correct", i64), ("pred", i32),
                   ("confidence_mean", f64), *IMAGE])
WRONG = pa.schema([*LABELS, ("index", i64), ("true", i32), ("pred", i32), ("confidence", f64), *IMAGE])


def _pixels(run, idx) -> list[tuple[int, int, int, bytes]]:
    """The test images at `idx` as uint8 (C, H, W) bytes; empty for feature data."""
    import torch

    x = run.data.test_x[idx].cpu()
    if not run.data.images:
        return [(0, 0, 0, b"")] * len(idx)
    if x.is_floating_point():  # a pool kept normalised (Data.normalise): back to pixels
        if run.data.mean is not None:
            x = x * run.data.std.cpu() + run.data.mean.cpu()
        x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return [(img.shape[0], img.shape[1], img.shape[2], img.tobytes()) for img in x.numpy()]


def summarise_predictions(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """The fixed images: how many seeds classify each correctly, their most frequent prediction
    and mean confidence; the misclassified images of each variant's first seed."""
    by = ["experiment", "variant", "index"]
    fixed = rows[rows["kind"] == "fixed"].assign(ok=lambda d: d["true"] == d["pred"])
    top = fixed.groupby([*by, "pred"], sort=False).size().rename("votes").reset_index()
    top = top.sort_values("votes", ascending=False, kind="stable").drop_duplicates(by)[[*by, "pred"]]
    agg = fixed.groupby(by, sort=False).agg(true=("true", "first"), n_seeds=("seed", "nunique"), correct=("ok", "sum"),
                                            confidence_mean=("confidence", "mean"), channels=("channels", "first"),
                                            height=("height", "first"), width=("width", "first"),
                                            pixels=("pixels", "first")).reset_index()
    agg = agg.merge(top, on=by).astype({"correct": "int64"})
    wrong = rows[rows["kind"] == "wrong"]
    wrong = first_seed(wrong)
    return {"fixed": agg[[n for n in FIXED.names]], "wrong": wrong[[n for n in WRONG.names]].reset_index(drop=True)}


def _image(row) -> np.ndarray:
    img = np.frombuffer(row["pixels"], np.uint8).reshape(row["channels"], row["height"], row["width"])
    return np.repeat(img, 3, 0).transpose(1, 2, 0) if img.shape[0] == 1 else img.transpose(1, 2, 0)


def draw_predictions(ax, tables: dict[str, pd.DataFrame], variant: str, per_row: int = 10):
    """Top row: the fixed test images, each with true → most frequent predicted class and how many
    seeds get it right;
    below: the first seed's misclassified images with true -> predicted and the confidence."""
    tiles = [(r, f"{r['true']}→{r['pred']} {r['correct']}/{r['n_seeds']}") for _, r in tables["fixed"].iterrows()]
    tiles += [(r, f"{r['true']}→{r['pred']} {r['confidence']:.2f}") for _, r in tables["wrong"].iterrows()]
    tiles = [(r, t) for r, t in tiles if r["channels"]]
    if not tiles:
        ax.set_axis_off()
        return ax
    h, w = tiles[0][0]["height"], tiles[0][0]["width"]
    fixed = len(tables["fixed"])
    rows = 1 + -(-(len(tiles) - fixed) // per_row)
    mosaic = np.full((rows * (h + 8), per_row * (w + 2), 3), 255, np.uint8)
    for i, (r, text) in enumerate(tiles):
        row, col = (0, i) if i < fixed else (1 + (i - fixed) // per_row, (i - fixed) % per_row)
        y, x = row * (h + 8) + 8, col * (w + 2)
        mosaic[y:y + h, x:x + w] = _image(r)
        ax.text(x + w / 2, y - 1, text, ha="center", va="bottom", fontsize=4)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{variant}: fixed test images (true→predicted, seeds right/n), then misclassified (first seed)",
                 fontsize=6)
    return ax


def report_predictions(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    f = tables["fixed"]
    table = f.assign(text=[f"{c}/{n}" for c, n in zip(f["correct"], f["n_seeds"])]).pivot(
        index="variant", columns="index", values="text").reindex(list(dict.fromkeys(f["variant"])))
    table.columns = [f"image {i} (class {t})" for i, t in zip(table.columns, f.drop_duplicates("index")
                                                               .set_index("index").loc[table.columns, "true"])]
    return {"fixed test images: seeds that classify each correctly": table.reset_index()}


@register_analysis("predictions", {"fixed": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10,
                                             "description": "Test images (evenly spaced) shown for every variant."},
                                   "wrong": {"type": "integer", "minimum": 0, "maximum": 100, "default": 20,
                                             "description": "Misclassified test images shown (first seed)."}},
                   schema=PREDICTIONS_RUN, tables={"fixed": FIXED, "wrong": WRONG}, summarise=summarise_predictions,
                   draw=draw_predictions, report=report_predictions, columns=2)
def predictions(run, fixed: int = 10, wrong: int = 20):
    """`fixed` test images, evenly spaced through the test set, with each run's prediction and
    confidence (per variant: how many seeds get each right), and the first `wrong` misclassified
    test images of each run."""
    import torch

    from ..training.epoch import test_logits

    logits = test_logits(run).float()
    pred = run.predict(logits)
    p = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(1).max(1).values
    conf = (torch.where(pred == 1, p, 1 - p) if logits.shape[1] == 1 else p).cpu()
    pred, true = pred.cpu(), run.data.test_y.cpu()
    spread = np.unique(np.linspace(0, len(true) - 1, min(fixed, len(true))).round().astype(int))
    chosen = [("fixed", int(i)) for i in spread]  # evenly spaced: every class of a test set sorted by class
    chosen += [("wrong", int(i)) for i in torch.nonzero(pred != true).flatten()[:wrong]]
    idx = [i for _, i in chosen]
    images = _pixels(run, idx)
    return pd.DataFrame({"kind": [k for k, _ in chosen], "index": idx, "true": true[idx].numpy(),
                         "pred": pred[idx].numpy(), "confidence": conf[idx].double().numpy(),
                         "channels": [c for c, _, _, _ in images], "height": [h for _, h, _, _ in images],
                         "width": [w for _, _, w, _ in images], "pixels": [b for _, _, _, b in images]}).astype(
        {"index": "int64", "true": "int32", "pred": "int32", "channels": "int32", "height": "int32", "width": "int32"})


# -- tsne ------------------------------------------------------------------------------------

TSNE_RUN = pa.schema([("index", i64), ("label", i32), ("x", f64), ("y", f64)])
EMBEDDING = pa.schema([*LABELS, ("index", i64), ("label", i32), ("x", f64), ("y", f64)])


def summarise_tsne(rows: pd.DataFrame, level: float) -> dict[str, pd.DataFrame]:
    """Embeddings of different runs are not aligned (nothing to average): each variant's first seed."""
    first = first_seed(rows)
    return {"points": first.drop(columns="seed").reset_index(drop=True)}


def draw_tsne(ax, tables: dict[str, pd.DataFrame], variant: str):
    p = tables["points"]
    ax.scatter(p["x"], p["y"], c=p["label"], cmap="tab10", s=4, vmin=0, vmax=9)
    ax.set(title=f"{variant}: t-SNE of {len(p)} test images\n(first seed), coloured by class", xticks=[], yticks=[])
    ax.title.set_fontsize(7)
    return ax


def report_tsne(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    p = tables["points"]
    return {"t-SNE points": p.groupby("variant", sort=False).agg(points=("index", "size"),
                                                                 classes=("label", "nunique")).reset_index()}


def _activations(run, layer: str | None, x):
    """The output of module `layer` (by name), or with None the input of the last linear layer."""
    import torch

    modules = dict(run.model.named_modules())
    if layer is not None and layer not in modules:
        raise ValueError(f"tsne: layer {layer!r} is not a module of the model; modules: "
                         f"{', '.join(n for n in modules if n)}")
    seen = []
    if layer is None:
        last = [m for m in modules.values() if isinstance(m, torch.nn.Linear)][-1]
        hook = last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    else:
        hook = modules[layer].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.inference_mode(), run.autocast():
            run.model(run.inputs(x))
    finally:
        hook.remove()
    return seen[0].flatten(1).float().cpu().numpy()


@register_analysis("tsne", {"layer": {"type": ["string", "null"], "default": None,
                                      "description": "A module's name (its output); null: the last linear layer's input."},
                            "samples": {"type": "integer", "minimum": 10, "maximum": 10000, "default": 500,
                                        "description": "Test images embedded (a stratified subset)."},
                            "seed": {"type": "integer", "minimum": 0, "default": 0,
                                     "description": "Seed of the subset and of t-SNE (the same for every run)."}},
                   schema=TSNE_RUN, tables={"points": EMBEDDING}, summarise=summarise_tsne, draw=draw_tsne,
                   report=report_tsne, first_seed=True)
def tsne(run, layer: str | None = None, samples: int = 500, seed: int = 0):
    """t-SNE (scikit-learn) of a layer's activations on a stratified, seeded subset of the test
    images, coloured by class."""
    import torch
    from sklearn.manifold import TSNE

    from ..data.pool import stratified_take

    y = run.data.test_y.cpu()
    idx = stratified_take(y, min(samples, len(y)), torch.Generator().manual_seed(seed))
    feats = _activations(run, layer, run.data.prepare(run.data.test_x[idx.to(run.data.test_x.device)]))
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(idx) - 1) / 3), init="pca", random_state=seed).fit_transform(
        feats.astype(np.float64))
    return pd.DataFrame({"index": idx.numpy().astype("int64"), "label": y[idx].numpy().astype("int32"),
                         "x": xy[:, 0], "y": xy[:, 1]})
