"""`nnstudy compare`: one pair of variants, compared exactly as the study's declared comparison
families compare theirs (aggregate.comparisons), from the collected runs of a finished study."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import aggregate
from .study import Study, natural_key


class CompareError(ValueError):
    """An unknown label, or a results folder that does not belong to the study."""


def final_values(study: Study, results: Path) -> pd.DataFrame:
    """Each run's final value of every metric, as the summarise step computes it."""
    if Path(results).name != study.name:
        raise CompareError(f"{results} is not the results folder of study {study.name!r} "
                           f"(results/{study.name}); give its study file with --configfile")
    runs_dir = Path(results) / "runs"
    runs = aggregate.read_runs(runs_dir) if runs_dir.is_dir() else None
    if runs is None:
        raise CompareError(f"{runs_dir} not found or empty: the study's runs have not been collected yet")
    c = study.config
    values = aggregate.final_values(runs, c["final"], c["selection_metric"])
    return values.assign(label=values["experiment"] + "/" + values["variant"])


def check_label(values: pd.DataFrame, label: str) -> None:
    """Stop with the labels a wrong one could have meant: its experiment's, or the experiments."""
    labels = set(values["label"])
    if label in labels:
        return
    experiment = label.split("/", 1)[0]
    mine = sorted((x.split("/", 1)[1] for x in labels if x.startswith(experiment + "/")), key=natural_key)
    if mine:
        raise CompareError(f"{label!r} is not a variant of this study; variants of {experiment}: {', '.join(mine)}")
    raise CompareError(f"{label!r} is not an experiment/variant label of this study; experiments: "
                       f"{', '.join(sorted(set(values['experiment'])))}")


def compare(study: Study, results: Path, a: str, b: str, metric: str = "accuracy", paired: bool = False) -> dict:
    values = final_values(study, results)
    check_label(values, a)
    check_label(values, b)
    row = aggregate.compare_pair(values, a, b, metric, paired, study.config["ci_level"])
    return {key: plain(value) for key, value in {**row, "epoch_rule": study.config["final"]}.items()}


def plain(value):
    """A JSON value: numpy scalars as Python ones, NaN as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def sentence(row: dict) -> str:
    """One line of words and numbers; accuracies (and their gaps) in percentage points."""
    a_exp, a_var = row["variant_a"].split("/", 1)
    b_exp, b_var = row["variant_b"].split("/", 1)
    who = f"{a_var} vs {b_var} ({a_exp})" if a_exp == b_exp else f"{row['variant_a']} vs {row['variant_b']}"
    scale, unit = (100, " points") if row["metric"].endswith("accuracy") else (1, "")
    num = lambda x, f="{:.4g}": "n/a" if x is None else f.format(x)  # noqa: E731
    test = "paired t" if row["paired"] else "Welch t"
    better = "P(A > B)" if row["higher_is_better"] else "P(A < B)"
    ci = [None if x is None else x * scale for x in (row["diff_ci_low"], row["diff_ci_high"])]
    parts = [f"{row['split']} {row['metric']} {num(None if row['diff'] is None else row['diff'] * scale, '{:+.2f}')}{unit}",
             f"{round(100 * row['ci_level'])}% CI [{num(ci[0], '{:.2f}')}, {num(ci[1], '{:.2f}')}]",
             f"{test} = {num(row['statistic'], '{:.2f}')} (df {num(row['df'], '{:.3g}')})",
             f"p = {num(row['p_raw'])}", f"permutation p = {num(row['p_perm'])}",
             f"Hedges' g = {num(row['hedges_g'], '{:.2f}')}", f"{better} = {num(row['prob_improvement'], '{:.2f}')}",
             f"n = {row['n_pairs']} pairs" if row["paired"] else f"n = {row['n_a']} vs {row['n_b']}"]
    note = "; both constant, no test" if row["degenerate"] else ""
    if row["n_nan_a"] or row["n_nan_b"]:
        note += f"; non-finite values left out: {row['n_nan_a']} of A, {row['n_nan_b']} of B"
    return f"{who}: " + ", ".join(parts) + f" (final epoch: {row['epoch_rule']}{note})"
