"""Report figures from the summary tables. Each panel function takes an Axes and returns it;
every figure states n and what its band or error bar is."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .aggregate import natural_key  # noqa: E402

SPLIT_STYLE = {"train": "-", "val": "--"}


def _n(df: pd.DataFrame) -> str:
    lo, hi = int(df["n_seeds"].min()), int(df["n_seeds"].max())
    return f"n = {hi}" if lo == hi else f"n = {lo}-{hi}"


def _variants(df: pd.DataFrame) -> list[str]:
    return sorted(df["variant"].unique(), key=natural_key)


def curve_panel(ax, curves: pd.DataFrame, experiment: str, metric: str):
    """Mean learning curves (train in eval mode and val) with +-1 std bands over seeds."""
    d = curves[(curves["experiment"] == experiment) & (curves["metric"] == metric) & curves["split"].isin(SPLIT_STYLE)]
    d = d[d["n_seeds"] > 0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(_variants(d)):
        for split, style in SPLIT_STYLE.items():
            s = d[(d["variant"] == variant) & (d["split"] == split)].sort_values("epoch")
            if s.empty:
                continue
            colour = colours[i % len(colours)]
            ax.plot(s["epoch"], s["mean"], style, color=colour, label=f"{variant} ({split})")
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{experiment}: {metric} ({_n(d) if len(d) else 'n = 0'}; band: mean ± 1 std)", fontsize=9)
    if d["n_seeds"].nunique() > 1:
        n_panel(ax.twinx(), d, colours)
    return ax


def n_panel(ax, d: pd.DataFrame, colours: list):
    """How many runs each epoch's mean is over (runs stopped early drop out, never carried on)."""
    for i, variant in enumerate(_variants(d)):
        s = d[d["variant"] == variant].groupby("epoch")["n_seeds"].max()
        ax.step(s.index, s.to_numpy(), where="mid", color=colours[i % len(colours)], alpha=0.5, linewidth=0.8)
    ax.set_ylabel("n (runs, thin steps)")
    ax.set_ylim(0, d["n_seeds"].max() + 0.5)
    return ax


def final_panel(ax, final: pd.DataFrame, metric: str, split: str, experiments: list[str] | None = None):
    """Final value per variant: mean with its t confidence interval as error bar."""
    d = final[(final["metric"] == metric) & (final["split"] == split)]
    labels, means, lo, hi = [], [], [], []
    for exp in experiments or dict.fromkeys(d["experiment"]):
        e = d[d["experiment"] == exp]
        for variant in _variants(e):
            r = e[e["variant"] == variant].iloc[0]
            labels.append(f"{exp}/{variant}")
            means.append(r["mean"])
            lo.append(r["mean"] - r["ci_low"] if pd.notna(r["ci_low"]) else 0)
            hi.append(r["ci_high"] - r["mean"] if pd.notna(r["ci_high"]) else 0)
    ax.errorbar(range(len(labels)), means, yerr=[lo, hi], fmt="o", capsize=4)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    level = int(round(100 * d["ci_level"].iloc[0])) if len(d) else 95
    rule = d["epoch_rule"].iloc[0] if len(d) else ""
    ax.set_ylabel(f"{split} {metric}")
    ax.set_title(f"final {split} {metric}\n({rule} epoch; {_n(d) if len(d) else 'n = 0'}; "
                 f"bar: {level}% t-interval of the mean)", fontsize=9)
    return ax


def gradient_panel(ax, flow: pd.DataFrame, experiment: str, statistic: str):
    """A gradient statistic of each weight tensor vs layer index, first vs last window."""
    d = flow[(flow["experiment"] == experiment) & (flow["statistic"] == statistic) & (flow["kind"] == "weight")
             & flow["module"].isin(["Conv2d", "Linear"])]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(_variants(d)):
        for window, style in (("first", "o--"), ("last", "s-")):
            s = d[(d["variant"] == variant) & (d["window"] == window)].sort_values("layer_index")
            if s.empty:
                continue
            ax.errorbar(s["layer_index"], s["mean"], yerr=s["std"].fillna(0), fmt=style, color=colours[i % len(colours)],
                        capsize=3, markersize=4, label=f"{variant}, epochs {s['epochs'].iloc[0]}")
    if statistic != "grad_mean":
        ax.set_yscale("log")
    ax.set_xlabel("layer index (conv/linear weights, input to output)")
    ax.set_ylabel(statistic.replace("grad_", "dL/dw ").replace("_", " "))
    ax.set_title(f"{experiment}: {statistic} per layer ({_n(d) if len(d) else 'n = 0'}; bar: ± 1 std over seeds)",
                 fontsize=9)
    return ax


def _save(fig, path: Path) -> None:
    from .schemas import atomic

    try:
        with atomic(Path(path)) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def figure_curves(curves: pd.DataFrame, experiment: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curve_panel(axes[0], curves, experiment, "accuracy")
    curve_panel(axes[1], curves, experiment, "loss")
    axes[0].legend(fontsize=6, ncol=2)
    _save(fig, path)


def figure_final(final: pd.DataFrame, metric: str, split: str, path: Path, experiments=None) -> None:
    n = final[["experiment", "variant"]].drop_duplicates()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(n)), 4.5))
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    final_panel(axes[0], keep, "accuracy", "test")
    final_panel(axes[1], keep, "gap_accuracy", "train-val")
    _save(fig, path)


def figure_gradients(flow: pd.DataFrame, experiment: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    gradient_panel(axes[0], flow, experiment, "grad_mean")
    gradient_panel(axes[1], flow, experiment, "grad_std")
    if axes[1].get_legend_handles_labels()[0]:  # none when the runs recorded no gradients
        axes[1].legend(fontsize=6)
    _save(fig, path)


def _transfer(experiments: dict) -> dict[str, str]:
    return {e: x["transfer_from"] for e, x in experiments.items() if "transfer_from" in x}


def figure_names(experiments: dict) -> list[str]:
    """The figure files of a study with these experiments (the study file's mapping)."""
    names = [f"curves_{e}.png" for e in experiments] + ["final_test_accuracy.png", "final_gap.png"]
    if _transfer(experiments):
        names.append("transfer_vs_joint.png")
    return names + [f"gradient_flow_{e}.png" for e in experiments]


def draw_all(summary: dict, experiments: dict, out_dir: Path) -> None:
    """Every figure of figure_names(experiments) from the summary tables (name -> DataFrame)."""
    out_dir = Path(out_dir)
    transfer = _transfer(experiments)
    experiments = list(experiments)
    for e in experiments:
        figure_curves(summary["curves"], e, out_dir / f"curves_{e}.png")
        figure_gradients(summary["gradient_flow"], e, out_dir / f"gradient_flow_{e}.png")
    figure_final(summary["final"], "accuracy", "test", out_dir / "final_test_accuracy.png", experiments)
    figure_final(summary["final"], "gap_accuracy", "train-val", out_dir / "final_gap.png", experiments)
    if transfer:
        figure_transfer(summary["final"], transfer, out_dir / "transfer_vs_joint.png")
