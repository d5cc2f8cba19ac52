"""Report figures from the summary tables. Each panel function takes an Axes and returns it;
every figure states n and what its band or error bar is."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import grid_shape, transfers  # noqa: E402
from .schemas import HIGHER_IS_BETTER  # noqa: E402
from .study.plan import natural_key  # noqa: E402

MANY = 12      # more variants than this: thin lines (one collection) by variant order, no bands or legend
RANKED = 30    # more variants than this in a final-value figure: the best RANKED, ranked


def subplots(*args, **kwargs):
    """plt.subplots with the axes' titles at a fixed height: no figure here has tick labels
    above its axes, and matplotlib's search for them (per title, per draw) was 15% of the
    drawing time. The pixels are the same. (Axes read this setting when they are made.)"""
    with plt.rc_context({"axes.titley": 1.0}):
        return plt.subplots(*args, **kwargs)


def _n(df: pd.DataFrame) -> str:
    lo, hi = int(df["n_seeds"].min()), int(df["n_seeds"].max())
    return f"n = {hi}" if lo == hi else f"n = {lo}-{hi}"


def _variants(df: pd.DataFrame) -> list[str]:
    return sorted(df["variant"].unique(), key=natural_key)


def _by_variant(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(variant, its rows) in natural order, split in one pass (a study may have thousands)."""
    groups = dict(tuple(df.groupby("variant", observed=True, sort=False)))
    return [(v, groups[v]) for v in sorted(groups, key=natural_key)]


def _sorted_groups(df: pd.DataFrame, by: list[str], order: str) -> dict[tuple, pd.DataFrame]:
    """{group key: its rows sorted by `order`} in one sort and one pass (a figure of thousands of
    variants selected and sorted each variant's rows apart: 90% of its time)."""
    df = df.sort_values(order, kind="stable")
    return dict(tuple(df.groupby(by, observed=True, sort=False)))


def _colours(count: int) -> list:
    if count > MANY:
        return [plt.get_cmap("viridis")(i / max(count - 1, 1)) for i in range(count)]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(count)]


SPLIT_STYLES = {"train": "-", "val": "--", "test": ":"}


def curve_panel(ax, curves: pd.DataFrame, experiment: str, metric: str, splits: list[str] | None = None):
    """Mean learning curves with +-1 std bands over seeds: the study's `curve_splits` (train in
    eval mode solid, val dashed, test dotted), by default train and val, or train and test where
    the study has no validation split (labelled so); with more than MANY variants, thin mean
    lines coloured by variant order. Choices are made on validation only, whatever is shown."""
    d = curves[(curves["experiment"] == experiment) & (curves["metric"] == metric) & (curves["n_seeds"] > 0)]
    held_out = "val" if (d["split"] == "val").any() else "test"
    styles = {s: SPLIT_STYLES[s] for s in splits} if splits else {"train": "-", held_out: "--"}
    d = d[d["split"].isin(styles)]
    variants = _by_variant(d)
    many = len(variants) > MANY
    thin = {split: ([], []) for split in styles}  # split -> (lines, colours), drawn as one collection
    series = _sorted_groups(d, ["variant", "split"], "epoch")
    for (variant, _), colour in zip(variants, _colours(len(variants))):
        for split in styles:
            s = series.get((variant, split))
            if s is None:
                continue
            if many:
                thin[split][0].append(np.column_stack([s["epoch"].to_numpy(float), s["mean"].to_numpy(float)]))
                thin[split][1].append(colour)
                continue
            ax.plot(s["epoch"], s["mean"], styles[split], color=colour, label=f"{variant} ({split})")
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            color=colour, alpha=0.15, linewidth=0)
    for split, (lines, colours) in thin.items():
        if lines:
            ax.add_collection(LineCollection(lines, colors=colours, linestyles=styles[split], linewidths=0.6,
                                             alpha=0.6))
            ax.autoscale_view()
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    what = f"{len(variants)} variants, colour: variant order" if many else "band: mean ± 1 std"
    shown = [f"{'dashed' if styles[s] == '--' else 'dotted'}: {s}" for s in styles if s != "train"]
    what += "".join(f"; {x}" for x in shown) + (" (no validation split)" if held_out == "test" and not splits else "")
    ax.set_title(f"{experiment}: {metric} ({_n(d) if len(d) else 'n = 0'}; {what})", fontsize=9)
    if d["n_seeds"].nunique() > 1 and not many:
        n_panel(ax.twinx(), variants)
    return ax


def n_panel(ax, variants: list[tuple[str, pd.DataFrame]]):
    """How many runs each epoch's mean is over (runs stopped early drop out, never carried on)."""
    top = 0
    for (_, v), colour in zip(variants, _colours(len(variants))):
        s = v.groupby("epoch")["n_seeds"].max()
        ax.step(s.index, s.to_numpy(), where="mid", color=colour, alpha=0.5, linewidth=0.8)
        top = max(top, s.max())
    ax.set_ylabel("n (runs, thin steps)")
    ax.set_ylim(0, top + 0.5)
    return ax


def final_panel(ax, final: pd.DataFrame, metric: str, split: str, experiments: list[str] | None = None):
    """Final value per variant: mean with its t confidence interval as error bar. More than
    RANKED variants: the best RANKED by mean, ranked (the full table is final.parquet)."""
    d = final[(final["metric"] == metric) & (final["split"] == split)]
    rows = []
    for exp in experiments or dict.fromkeys(d["experiment"]):
        rows += [(f"{exp}/{variant}", v.iloc[0]) for variant, v in _by_variant(d[d["experiment"] == exp])]
    total = len(rows)
    if total > RANKED:
        rows = sorted([r for r in rows if pd.notna(r[1]["mean"])], key=lambda r: r[1]["mean"],
                      reverse=HIGHER_IS_BETTER.get(metric, True))[:RANKED]
    labels = [label for label, _ in rows]
    means = [r["mean"] for _, r in rows]
    lo = [r["mean"] - r["ci_low"] if pd.notna(r["ci_low"]) else 0 for _, r in rows]
    hi = [r["ci_high"] - r["mean"] if pd.notna(r["ci_high"]) else 0 for _, r in rows]
    ax.errorbar(range(len(labels)), means, yerr=[lo, hi], fmt="o", capsize=4)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    level = int(round(100 * d["ci_level"].iloc[0])) if len(d) else 95
    rule = d["epoch_rule"].iloc[0] if len(d) else ""
    ranked = f"the best {len(labels)} of {total} variants, ranked; " if total > RANKED else ""
    ax.set_ylabel(f"{split} {metric}")
    ax.set_title(f"final {split} {metric}\n({ranked}{rule} epoch; {_n(d) if len(d) else 'n = 0'}; "
                 f"bar: {level}% t-interval of the mean)", fontsize=9)
    return ax


def gradient_panel(ax, flow: pd.DataFrame, experiment: str, statistic: str):
    """A gradient statistic of each weight tensor vs layer index, first vs last window; with
    more than MANY variants, thin lines without error bars, coloured by variant order."""
    d = flow[(flow["experiment"] == experiment) & (flow["statistic"] == statistic) & (flow["kind"] == "weight")
             & flow["module"].isin(["Conv2d", "Linear"])]
    variants = _by_variant(d)
    many = len(variants) > MANY
    thin = {"first": ([], []), "last": ([], [])}  # window -> (lines, colours), drawn as one collection
    series = _sorted_groups(d, ["variant", "window"], "layer_index")
    for (variant, _), colour in zip(variants, _colours(len(variants))):
        for window, style in (("first", "o--"), ("last", "s-")):
            s = series.get((variant, window))
            if s is None:
                continue
            if many:
                thin[window][0].append(np.column_stack([s["layer_index"].to_numpy(float), s["mean"].to_numpy(float)]))
                thin[window][1].append(colour)
                continue
            ax.errorbar(s["layer_index"], s["mean"], yerr=s["std"].fillna(0), fmt=style, color=colour,
                        capsize=3, markersize=4, label=f"{variant}, epochs {s['epochs'].iloc[0]}")
    for window, (lines, colours) in thin.items():
        if lines:
            ax.add_collection(LineCollection(lines, colors=colours, linestyles="--" if window == "first" else "-",
                                             linewidths=0.6, alpha=0.6))
            ax.autoscale_view()
    if statistic != "grad_mean":
        ax.set_yscale("log")
    ax.set_xlabel("layer index (conv/linear weights, input to output)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(statistic.replace("grad_", "dL/dw ").replace("_", " "))
    what = f"{len(variants)} variants, colour: variant order" if many else "bar: ± 1 std over seeds"
    ax.set_title(f"{experiment}: {statistic} per layer ({_n(d) if len(d) else 'n = 0'}; {what})", fontsize=9)
    return ax


def _save(fig, path: Path) -> None:
    from .schemas import atomic

    try:
        # bbox_inches="tight" draws the figure twice (a dry run for the box): the same box is measured
        # without drawing, unless a layout engine must place the axes first.
        fig.set_dpi(110)
        bbox = ("tight" if fig.get_layout_engine() is not None else
                fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"]))
        with atomic(Path(path)) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches=bbox)
    finally:
        plt.close(fig)


def figure_curves(curves: pd.DataFrame, experiment: str, path: Path, splits: list[str] | None = None) -> None:
    fig, axes = subplots(1, 2, figsize=(11, 4))
    curve_panel(axes[0], curves, experiment, "accuracy", splits)
    curve_panel(axes[1], curves, experiment, "loss", splits)
    if len(curves.loc[curves["experiment"] == experiment, "variant"].unique()) <= MANY:
        fig.legend(*axes[0].get_legend_handles_labels(), fontsize=6, ncol=2, loc="upper left",
                   bbox_to_anchor=(1.0, 0.95))  # outside the data
    _save(fig, path)


def figure_final(final: pd.DataFrame, metric: str, split: str, path: Path, experiments=None) -> None:
    n = min(len(final[["experiment", "variant"]].drop_duplicates()), RANKED)
    fig, ax = subplots(figsize=(max(6, 0.45 * n), 4.5))
    final_panel(ax, final, metric, split, experiments)
    _save(fig, path)


def figure_transfer(final: pd.DataFrame, transfer: dict[str, str], path: Path) -> None:
    """Transfer vs joint training, test accuracy and gap: each transfer experiment's variants
    beside the same variants of the experiment it transfers from (`transfer`: target -> source)."""
    keep = []
    for target, source in transfer.items():
        variants = set(final.loc[final["experiment"] == target, "variant"])
        keep.append(final[(final["experiment"] == target) |
                          ((final["experiment"] == source) & final["variant"].isin(variants))])
    keep = pd.concat(keep)
    fig, axes = subplots(1, 2, figsize=(11, 4.5))
    final_panel(axes[0], keep, "accuracy", "test")
    final_panel(axes[1], keep, "gap_accuracy", "train-val")
    _save(fig, path)


def figure_gradients(flow: pd.DataFrame, experiment: str, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(11, 4))
    gradient_panel(axes[0], flow, experiment, "grad_mean")
    gradient_panel(axes[1], flow, experiment, "grad_std")
    if axes[1].get_legend_handles_labels()[0]:  # none when the runs recorded no gradients
        axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the data
    _save(fig, path)


def figure_grid(final: pd.DataFrame, name: str, experiment: dict, path: Path) -> None:
    """An experiment's final test accuracy in the shape of its grid (see grid_shape)."""
    from .study.plan import fmt, variant_label

    d = final[(final["experiment"] == name) & (final["metric"] == "accuracy") & (final["split"] == "test")]
    by_label = {v: r for v, r in d.set_index("variant").iterrows()}
    keys = list(experiment["grid"])
    level = int(round(100 * d["ci_level"].iloc[0])) if len(d) else 95
    if grid_shape(experiment) == "line":
        values = experiment["grid"][keys[0]]
        rows = [by_label.get(variant_label({keys[0]: v})) for v in values]
        pts = [(v, r) for v, r in zip(values, rows) if r is not None]
        fig, ax = subplots(figsize=(6, 4.2))
        x = [v for v, _ in pts]
        mean = [100 * r["mean"] for _, r in pts]
        err = [[100 * (r["mean"] - r["ci_low"]) if pd.notna(r["ci_low"]) else 0 for _, r in pts],
               [100 * (r["ci_high"] - r["mean"]) if pd.notna(r["ci_high"]) else 0 for _, r in pts]]
        ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=4)
        if x and min(x) > 0 and max(x) / min(x) >= 100:
            ax.set_xscale("log")
        ax.set(xlabel=keys[0], ylabel="test accuracy (%)")
        ax.set_title(f"{name}: final test accuracy against {keys[0]}\n({_n(d) if len(d) else 'n = 0'}; "
                     f"bar: {level}% t-interval of the mean)", fontsize=9)
        _save(fig, path)
        return
    rows_v, cols_v = experiment["grid"][keys[0]], experiment["grid"][keys[1]]
    grid = [[by_label.get(variant_label({keys[0]: a, keys[1]: b})) for b in cols_v] for a in rows_v]
    means = [[100 * r["mean"] if r is not None else float("nan") for r in row] for row in grid]
    fig, ax = subplots(figsize=(min(10, 2.5 + 0.7 * len(cols_v)), min(8, 2 + 0.5 * len(rows_v))))
    image = ax.imshow(means, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    if len(rows_v) * len(cols_v) <= 100:
        for (i, j), r in ((ij, grid[ij[0]][ij[1]]) for ij in ((i, j) for i in range(len(rows_v)) for j in range(len(cols_v)))):
            if r is not None:
                half = 100 * (r["ci_high"] - r["mean"]) if pd.notna(r["ci_high"]) else float("nan")
                ax.text(j, i, f"{100 * r['mean']:.1f}\n±{half:.1f}", ha="center", va="center", fontsize=6, color="white")
    step = lambda n: max(1, n // 20)  # noqa: E731 (at most ~20 tick labels per axis)
    ax.set_yticks(range(0, len(rows_v), step(len(rows_v))), [fmt(v) for v in rows_v][::step(len(rows_v))], fontsize=7)
    ax.set_xticks(range(0, len(cols_v), step(len(cols_v))), [fmt(v) for v in cols_v][::step(len(cols_v))], fontsize=7,
                  rotation=45)
    ax.set(ylabel=keys[0], xlabel=keys[1])
    ax.set_title(f"{name}: final test accuracy (%), mean ± half the {level}% t-interval\n"
                 f"({_n(d) if len(d) else 'n = 0'})", fontsize=9)
    _save(fig, path)


def draw_all(summary: dict, experiments: dict, out_dir: Path, curve_splits: list[str] | None = None) -> None:
    """Every figure of figures.figure_names(experiments) from the summary tables (name -> DataFrame)."""
    draw_outcomes(summary, experiments, out_dir, curve_splits)
    draw_gradients(summary["gradient_flow"], experiments, out_dir)


def draw_gradients(flow: pd.DataFrame, experiments: dict, out_dir: Path) -> None:
    """The figures of figures.gradient_figure_names(experiments) from the gradient_flow table."""
    for e in experiments:
        figure_gradients(flow, e, Path(out_dir) / f"gradient_flow_{e}.png")


def draw_outcomes(summary: dict, experiments: dict, out_dir: Path, curve_splits: list[str] | None = None) -> None:
    """The figures of figures.outcome_figure_names(experiments) from the summary tables."""
    out_dir = Path(out_dir)
    transfer = transfers(experiments)
    for e, x in experiments.items():
        figure_curves(summary["curves"], e, out_dir / f"curves_{e}.png", curve_splits)
        if grid_shape(x):
            figure_grid(summary["final"], e, x, out_dir / f"final_{e}.png")
    names = list(experiments)
    figure_final(summary["final"], "accuracy", "test", out_dir / "final_test_accuracy.png", names)
    figure_final(summary["final"], "gap_accuracy", "train-val", out_dir / "final_gap.png", names)
    if transfer:
        figure_transfer(summary["final"], transfer, out_dir / "transfer_vs_joint.png")
