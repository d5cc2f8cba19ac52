"""A study's collected runs -> the summary tables (schemas.SUMMARY_TABLES), via nnstudy.stats."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import schemas, stats
from .schemas import HIGHER_IS_BETTER
from .study import Study, fmt, load_selections, natural_key

LABEL = ["experiment", "variant"]
# The columns of a collected run table that the gap and final-metric steps read.
PER_EPOCH = ["run", "experiment", "variant", "seed", "epoch", "split", "loss", "accuracy", "diverged"]


def read_runs(path: Path) -> pd.DataFrame | None:
    """A collected dataset (runs/ or gradients/) with plain string labels; None if it is empty
    (a study whose runs record no gradient statistics)."""
    if not any(Path(path).rglob("*.parquet")):
        return None
    df = pd.read_parquet(path)
    df["experiment"] = df["experiment"].astype(str)
    return df


def _measured(long: pd.DataFrame) -> pd.DataFrame:
    """Drop values that were never measured (epochs between evaluations), keeping the NaN of
    a diverged run, which the summaries count in n_nan."""
    return long[long["value"].notna() | long["diverged"]]


def curves(runs: pd.DataFrame, gaps: pd.DataFrame, level: float) -> pd.DataFrame:
    long = runs.melt(id_vars=LABEL + ["run", "seed", "epoch", "split", "diverged"],
                     value_vars=["loss", "accuracy", "running_loss", "running_accuracy"], var_name="metric")
    long = long[(long["split"] == "train") | ~long["metric"].str.startswith("running")]
    gap_long = gaps.assign(split="train-val", metric="gap_" + gaps["metric"], value=gaps["gap"])
    long = pd.concat([_measured(long), _measured(gap_long[long.columns])], ignore_index=True)
    return stats.summarise(long, LABEL + ["split", "metric", "epoch"], "value", level)


def gaps(runs: pd.DataFrame) -> pd.DataFrame:
    out = [stats.gap(runs[PER_EPOCH], m).assign(metric=m) for m in ("accuracy", "loss")]
    return pd.concat(out, ignore_index=True)[schemas.GAP.names]


def final_values(runs: pd.DataFrame, rule: str, selection_metric: str) -> pd.DataFrame:
    """Each (label, seed)'s final value of every metric, long: split, metric, value."""
    fin = stats.final(runs[PER_EPOCH], rule, selection_metric)
    long = fin.melt(id_vars=["run", "experiment", "variant", "seed", "split", "diverged"],
                    value_vars=["loss", "accuracy"], var_name="metric")
    g = [stats.gap(fin.drop(columns="epoch_rule"), m).assign(metric=f"gap_{m}", split="train-val") for m in ("accuracy", "loss")]
    g = pd.concat(g, ignore_index=True).rename(columns={"gap": "value"})
    return pd.concat([long, g[long.columns]], ignore_index=True)


def final(values: pd.DataFrame, rule: str, level: float) -> pd.DataFrame:
    out = stats.summarise(values, LABEL + ["split", "metric"], "value", level)
    out.insert(4, "epoch_rule", rule)
    return out


def gradient_flow(grads: pd.DataFrame | None, window: int, level: float) -> pd.DataFrame:
    """Each run's gradient statistics pooled exactly over its first and last `window` epochs
    (from per-epoch means and stds weighted by element counts), then summarised over seeds."""
    if grads is None:  # train.gradients: false everywhere
        return pd.DataFrame(columns=schemas.GRADIENT_FLOW.names)
    last = grads.groupby("run")["epoch"].transform("max")
    parts = []
    for name, mask in (("first", grads["epoch"] <= window), ("last", grads["epoch"] > last - window)):
        g = grads[mask].copy()
        g["n"] = g["steps"] * g["numel"]
        g["s1"] = g["n"] * g["grad_mean"]
        g["s2"] = g["n"] * (g["grad_std"] ** 2 + g["grad_mean"] ** 2)
        g["sa"] = g["n"] * g["grad_abs_mean"]
        g["sn"] = g["steps"] * g["grad_norm"]
        keys = ["run", "experiment", "variant", "seed", "layer", "layer_index", "module", "kind"]
        p = g.groupby(keys, observed=True).agg(n=("n", "sum"), s1=("s1", "sum"), s2=("s2", "sum"), sa=("sa", "sum"),
                                               sn=("sn", "sum"), steps=("steps", "sum"),
                                               lo=("epoch", "min"), hi=("epoch", "max")).reset_index()
        mean = p["s1"] / p["n"]
        p["grad_mean"] = mean
        p["grad_std"] = np.sqrt(np.maximum(p["s2"] / p["n"] - mean ** 2, 0))
        p["grad_abs_mean"] = p["sa"] / p["n"]
        p["grad_norm"] = p["sn"] / p["steps"]
        p["window"] = name
        parts.append(p)
    pooled = pd.concat(parts, ignore_index=True)
    spans = pooled.groupby(LABEL + ["window"])[["lo", "hi"]].agg({"lo": "min", "hi": "max"})
    long = pooled.melt(id_vars=LABEL + ["window", "layer", "layer_index", "module", "kind", "seed"],
                       value_vars=["grad_mean", "grad_std", "grad_abs_mean", "grad_norm"], var_name="statistic")
    out = stats.summarise(long, LABEL + ["window", "layer", "layer_index", "module", "kind", "statistic"], "value", level)
    span = spans.loc[list(zip(out["experiment"], out["variant"], out["window"]))]
    out.insert(3, "epochs", [f"{lo}-{hi}" for lo, hi in zip(span["lo"], span["hi"])])
    return out


def expand_pairs(study: Study, selections: dict, labels: set[str], pairs: list) -> list[tuple[str, str]]:
    """'exp/variant' pairs with {selection} filled in and 'exp/*' expanded (except b)."""
    subst = {k: fmt(v) for k, v in selections.items()}
    out = []
    for a, b in pairs:
        a, b = a.format(**subst), b.format(**subst)
        if a.endswith("/*"):
            exp = a[:-2]
            out += [(x, b) for x in sorted(labels, key=natural_key) if x.startswith(exp + "/") and x != b]
        else:
            out.append((a, b))
    for a, b in out:
        for side in (a, b):
            if side not in labels:
                raise ValueError(f"comparison names {side!r}, which is not a variant of this study; "
                                 f"variants: {', '.join(sorted(labels))}")
    return out


def compare_pair(values: pd.DataFrame, a: str, b: str, metric: str, paired: bool, level: float) -> dict:
    """One comparison (before Holm's adjustment within its family): A - B of the per-seed final
    values (`values` with a label column "experiment/variant"), split test unless the metric is
    a gap. `nnstudy compare` and the declared families both use it."""
    split = "train-val" if metric.startswith("gap") else "test"
    v = values[(values["metric"] == metric) & (values["split"] == split)]
    sa = v[v["label"] == a].set_index("seed")["value"]
    sb = v[v["label"] == b].set_index("seed")["value"]
    res = stats.compare(sa if paired else sa.to_numpy(), sb if paired else sb.to_numpy(),
                        paired=paired, level=level, higher_is_better=HIGHER_IS_BETTER[metric])
    return {"variant_a": a, "variant_b": b, "metric": metric, "split": split, "ci_level": level, **res.to_dict()}


def comparisons(study: Study, selections: dict, values: pd.DataFrame) -> pd.DataFrame:
    c = study.config
    level, rule = c["ci_level"], c["final"]
    values = values.assign(label=values["experiment"] + "/" + values["variant"])
    labels = set(values["label"])
    chosen = {k: f"{k}={fmt(v)} (chosen on val {c['selection_metric']})" for k, v in selections.items()}
    rows = []
    for family, decl in c["comparisons"].items():
        for metric in decl["metrics"]:
            block = []
            for a, b in expand_pairs(study, selections, labels, decl["pairs"]):
                used = [chosen[n] for n in chosen if "{" + n + "}" in json.dumps(decl["pairs"])]
                block.append({"family": family, **compare_pair(values, a, b, metric, decl["paired"], level),
                              "epoch_rule": rule, "selected_on": "; ".join(used) or None})
            adj = stats.holm([r["p_raw"] for r in block])
            m = int(np.isfinite([r["p_raw"] for r in block]).sum())
            for r, p in zip(block, adj):
                r.update(p_adj=p, adj_method="holm", m=m, reject=bool(p < 1 - level) if math.isfinite(p) else False)
            rows += block
    return pd.DataFrame(rows, columns=schemas.COMPARISONS.names)


def selection_table(paths) -> pd.DataFrame:
    rows = []
    for p in paths:
        blob = json.loads(Path(p).read_text())
        for cand in blob["candidates"]:
            rows.append({"selection": blob["name"], "experiment": blob["experiment"], "key": blob["key"],
                         "value": fmt(cand["value"]), "chosen": cand["value"] == blob["value"],
                         "eligible": cand["eligible"], "mean": cand["mean"], "std": cand["std"],
                         "n": cand["n"], "n_nan": cand["n_nan"], "chosen_on": blob["chosen_on"]})
    return pd.DataFrame(rows, columns=schemas.SELECTIONS.names)


def summarise_study(study: Study, selection_paths, runs_dir: Path, gradients_dir: Path, out: dict) -> None:
    """Write every summary table; `out` maps table name (schemas.SUMMARY_TABLES) -> path."""
    c = study.config
    selections = load_selections(selection_paths)
    runs = read_runs(runs_dir)
    gap_runs = gaps(runs)
    values = final_values(runs, c["final"], c["selection_metric"])
    tables = {
        "curves": curves(runs, gap_runs, c["ci_level"]),
        "final": final(values, c["final"], c["ci_level"]),
        "gap": gap_runs,
        "gradient_flow": gradient_flow(read_runs(gradients_dir), c["gradient_window"], c["ci_level"]),
        "comparisons": comparisons(study, selections, values),
        "selections": selection_table(selection_paths),
    }
    for name, table in tables.items():
        schemas.write(table, schemas.SUMMARY_TABLES[name], Path(out[name]))
