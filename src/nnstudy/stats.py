"""Statistics for multi-seed studies, right at n = 5 (see ../shared/docs/statistics.md).

Public API for users who analyse the Parquet themselves; the workflow uses exactly these:

    summarise(df, by, value, level=0.95)   one row per group: n, mean, std, t-interval, ...
    compare(a, b, paired=False, level=0.95)  Welch (or paired t) + exact permutation + effect sizes
    holm(pvalues)                            Holm step-down adjusted p-values, input order
    gap(runs_df, metric="accuracy")          per-run, per-epoch generalisation gap
    final(runs_df, rule="last")              each run's final epoch, chosen on validation only
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
# scipy.special, not scipy.stats: the same t distribution (stats.t.ppf is special.stdtrit) without
# scipy.stats' 1 s import in each selection and summary step.
from scipy import special

from .schemas import SUMMARY

SUMMARY_COLUMNS = [name for name, _ in SUMMARY]

COMPARISON_COLUMNS = ["paired", "n_a", "n_b", "n_pairs", "n_nan_a", "n_nan_b", "mean_a", "mean_b", "diff",
                      "diff_ci_low", "diff_ci_high", "test", "statistic", "df", "p_raw", "p_perm",
                      "hedges_g", "g_correction", "prob_improvement", "higher_is_better", "degenerate"]

# Relative spread below which a sample counts as constant (rounding noise, not variance).
DEGENERATE_RTOL = 1e-12


def t_quantile(q, df):
    """Student t's quantile function (scipy.stats.t.ppf computes exactly this)."""
    return special.stdtrit(df, q)


def two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic (scipy.stats' t-tests: 2 sf(|t|))."""
    return 2 * special.stdtr(df, -abs(t))


def trim_mean(x: np.ndarray, cut: float) -> float:
    """Mean of x without int(cut n) values at each end (scipy.stats.trim_mean, same partition)."""
    lo = int(cut * len(x))
    hi = len(x) - lo
    return np.partition(x, (lo, hi - 1))[lo:hi].mean()


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of x (1-D, finite). NaN bounds when len(x) < 2."""
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    half = t_quantile(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return (x.mean() - half, x.mean() + half)


def bootstrap_interval(x: np.ndarray, level: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, drawn with an explicit Generator."""
    if len(x) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    return tuple(np.quantile(means, [0.5 - level / 2, 0.5 + level / 2]))


def describe(values, level: float = 0.95, method: str = "t", resamples: int = 10_000, seed: int = 0,
             diverged=None) -> dict:
    """Summary of one group of per-seed values (NaN/inf values are counted, not used)."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    n = len(finite)
    if method == "t":
        lo, hi = t_interval(finite, level)
        how = "t"
    elif method == "bootstrap":
        lo, hi = bootstrap_interval(finite, level, resamples, seed)
        how = f"bootstrap-percentile(resamples={resamples},seed={seed})"
    else:
        raise ValueError(f"method: {method!r} is not allowed; allowed values: t, bootstrap")
    return {
        "n_seeds": n, "n_nan": int(len(v) - n),
        "n_diverged": int(np.sum(np.asarray(diverged, dtype=bool))) if diverged is not None else 0,
        "mean": finite.mean() if n else math.nan,
        "std": finite.std(ddof=1) if n > 1 else math.nan,
        "sem": finite.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan,
        "ci_low": lo, "ci_high": hi,
        "median": float(np.median(finite)) if n else math.nan,
        "iqm": float(trim_mean(finite, 0.25)) if n else math.nan,
        "min": finite.min() if n else math.nan, "max": finite.max() if n else math.nan,
        "ci_level": level, "ci_method": how,
    }


def summarise(df: pd.DataFrame, by: str | Sequence[str], value: str, level: float = 0.95, method: str = "t",
              resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per group of `by` (a column name or a list of them, as pandas' groupby takes)
    with SUMMARY_COLUMNS for column `value`: `describe` of every group.

    Each row of df is one seed's value; a `diverged` column, if present, is counted. Groups
    are never forward-filled: a run that stopped early just leaves later epochs with smaller n.
    The t method runs as whole-column operations (a study of 10,000 runs has ~10^6 groups);
    the bootstrap draws per group.
    """
    by = [by] if isinstance(by, str) else list(by)
    if method != "t":
        rows = []
        for key, group in df.groupby(by, sort=True, dropna=False, observed=True):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, key)),
                         **describe(group[value], level, method, resamples, seed,
                                    group["diverged"] if "diverged" in group else None)})
        return pd.DataFrame(rows, columns=by + SUMMARY_COLUMNS)
    v = df[value].to_numpy(float)
    work = df[by].reset_index(drop=True).assign(
        _v=np.where(np.isfinite(v), v, np.nan),
        _div=df["diverged"].to_numpy(bool) if "diverged" in df else False)
    groups = work.groupby(by, sort=True, dropna=False, observed=True)
    out = groups.agg(n_all=("_v", "size"), n_seeds=("_v", "count"), n_diverged=("_div", "sum"), mean=("_v", "mean"),
                     std=("_v", "std"), median=("_v", "median"), min=("_v", "min"), max=("_v", "max"))
    out = out.reset_index()
    n = out["n_seeds"].to_numpy()
    std = np.where(n > 1, out["std"].to_numpy(float), np.nan)
    sem = std / np.sqrt(np.maximum(n, 1))
    with np.errstate(invalid="ignore"):
        half = t_quantile(0.5 + level / 2, np.where(n > 1, n - 1, np.nan)) * sem
    mean = out["mean"].to_numpy(float)
    out = out.assign(n_nan=out["n_all"] - n, std=std, sem=sem, ci_low=mean - half, ci_high=mean + half,
                     iqm=_iqm(groups.ngroup().to_numpy(), work["_v"].to_numpy(), len(out)), ci_level=level, ci_method="t")
    for col in by:  # plain values, as the groups' keys are
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(out[col].cat.categories.dtype)
    return out[by + SUMMARY_COLUMNS].astype({"n_seeds": "int64", "n_nan": "int64", "n_diverged": "int64"})


def _iqm(group: np.ndarray, v: np.ndarray, groups: int) -> np.ndarray:
    """Interquartile mean per group of the finite values (scipy's trim_mean(x, 0.25): int(n/4)
    values cut from each end), for all groups at once."""
    ok = np.isfinite(v)
    group, v = group[ok], v[ok]
    order = np.lexsort((v, group))
    group, v = group[order], v[order]
    n = np.bincount(group, minlength=groups)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.arange(len(v)) - start[group]
    cut = n // 4
    keep = (rank >= cut[group]) & (rank < (n - cut)[group])
    kept = np.bincount(group[keep], minlength=groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept > 0, np.bincount(group[keep], weights=v[keep], minlength=groups) / kept, np.nan)


def _constant(x: np.ndarray) -> bool:
    return len(x) > 0 and np.ptp(x) <= DEGENERATE_RTOL * max(1.0, float(np.abs(x).max()))


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d with the pooled sd, times the exact small-sample correction
    J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), df = n_a + n_b - 2."""
    na, nb = len(a), len(b)
    dof = na + nb - 2
    if dof < 2:
        return math.nan
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / dof)
    if pooled == 0:
        return math.nan
    j = math.exp(special.gammaln(dof / 2) - special.gammaln((dof - 1) / 2)) / math.sqrt(dof / 2)
    return (a.mean() - b.mean()) / pooled * j


def prob_improvement(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> float:
    """P(A better than B) + P(A = B)/2 over all (a, b) pairs; ties count exactly one half."""
    if not len(a) or not len(b):
        return math.nan
    d = a[:, None] - b[None, :]
    if not higher_is_better:
        d = -d
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def _perm_p(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    """Exact two-sided permutation p of the difference of means (all partitions / sign flips)."""
    if paired:
        d = a - b
        observed = abs(d.mean())
        flips = np.array(list(itertools.product([1, -1], repeat=len(d))))
        null = np.abs((flips * d).mean(axis=1))
    else:
        pooled = np.concatenate([a, b])
        observed = abs(a.mean() - b.mean())
        total, na = pooled.sum(), len(a)
        sums = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(len(pooled)), na)])
        null = np.abs(sums / na - (total - sums) / len(b))
    # Relative tolerance so that equal statistics computed in another order count as ties.
    return float(np.mean(null >= observed * (1 - 1e-12) - 1e-15))


def compare(a, b, paired: bool = False, level: float = 0.95, higher_is_better: bool = True) -> pd.Series:
    """Compare two samples of per-seed values: A - B.

    Unpaired: Welch's t-test (two-sided, unequal variances) and the Welch interval of the
    difference of means. Paired (a, b: Series indexed by seed): join on seed, paired t-test.
    Both: exact permutation p as a cross-check, Hedges' g, probability of improvement.
    NaN/inf values are dropped (pairs with either side missing, when paired) and counted.
    If both samples are constant the t statistic is meaningless: p = NaN, degenerate = True.
    """
    if paired:
        if not (isinstance(a, pd.Series) and isinstance(b, pd.Series)):
            raise TypeError("paired comparison needs two Series indexed by seed")
        joined = pd.concat({"a": a, "b": b}, axis=1, join="inner")
        ok = np.isfinite(joined["a"].to_numpy(float)) & np.isfinite(joined["b"].to_numpy(float))
        n_nan_a = int((~np.isfinite(joined["a"].to_numpy(float))).sum())
        n_nan_b = int((~np.isfinite(joined["b"].to_numpy(float))).sum())
        x, y = joined["a"].to_numpy(float)[ok], joined["b"].to_numpy(float)[ok]
    else:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        n_nan_a, n_nan_b = int((~np.isfinite(x)).sum()), int((~np.isfinite(y)).sum())
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    out = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
    out.update(paired=paired, n_a=len(x), n_b=len(y), n_pairs=len(x) if paired else 0, n_nan_a=n_nan_a,
               n_nan_b=n_nan_b, test="paired_t" if paired else "welch", g_correction="exact_gamma_J",
               higher_is_better=higher_is_better, degenerate=False)
    if len(x):
        out["mean_a"] = x.mean()
    if len(y):
        out["mean_b"] = y.mean()
    if len(x) and len(y):
        out["diff"] = x.mean() - y.mean()
        out["prob_improvement"] = prob_improvement(x, y, higher_is_better)
    if len(x) < 2 or len(y) < 2:
        return pd.Series(out)
    q = 0.5 + level / 2
    if paired:
        d = x - y
        degenerate = _constant(d)
        if not degenerate:
            se = d.std(ddof=1) / math.sqrt(len(d))
            half = t_quantile(q, len(d) - 1) * se
            out.update(statistic=d.mean() / se, df=len(d) - 1, p_raw=two_sided_p(d.mean() / se, len(d) - 1),
                       diff_ci_low=d.mean() - half, diff_ci_high=d.mean() + half)
    else:
        degenerate = _constant(x) and _constant(y)
        if not degenerate:
            va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
            dof = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
            t = out["diff"] / math.sqrt(va + vb)
            half = t_quantile(q, dof) * math.sqrt(va + vb)
            out.update(statistic=t, df=dof, p_raw=two_sided_p(t, dof),
                       diff_ci_low=out["diff"] - half, diff_ci_high=out["diff"] + half)
    out["degenerate"] = degenerate
    if not degenerate:
        out["p_perm"] = _perm_p(x, y, paired)
        out["hedges_g"] = hedges_g(x, y)
    return pd.Series(out)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values in the input order; monotone in sorted order, capped
    at 1. NaN p-values stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    adj = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def gap(runs_df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Generalisation gap per run and epoch, from eval-mode train and validation metrics.

    accuracy: train - val; loss: val - train. Both are positive when the model overfits.
    Returns every id column of runs_df (all but split and the metric columns) plus `gap`.
    """
    metric_cols = {"loss", "accuracy", "running_loss", "running_accuracy", "lr", "samples_seen",
                   "epoch_time", "wall_time", "diverged"}
    keys = [c for c in runs_df.columns if c not in metric_cols and c != "split"]
    extra = ["diverged"] if "diverged" in runs_df else []
    train = runs_df.loc[runs_df["split"] == "train", keys + [metric] + extra].rename(columns={metric: "train"})
    val = runs_df.loc[runs_df["split"] == "val", keys + [metric]].rename(columns={metric: "val"})
    out = train.merge(val, on=keys, how="left")
    out["gap"] = out["train"] - out["val"] if metric == "accuracy" else out["val"] - out["train"]
    return out[keys + ["gap"] + extra].reset_index(drop=True)


def final(runs_df: pd.DataFrame, rule: str = "last", selection_metric: str = "accuracy") -> pd.DataFrame:
    """Each run's rows (all splits) at its final epoch: the last evaluated epoch, or the epoch
    with the best validation metric (ties: the earliest). Test is never looked at."""
    if rule not in ("last", "best_val"):
        raise ValueError(f"rule: {rule!r} is not allowed; allowed values: last, best_val")
    evaluated = runs_df[runs_df["split"] == ("val" if rule == "best_val" else "train")]
    if rule == "last":
        evaluated = evaluated[evaluated["loss"].notna() | evaluated["diverged"]]
        chosen = evaluated.groupby("run", observed=True)["epoch"].max()
    else:
        v = evaluated.dropna(subset=[selection_metric])
        v = v.sort_values(["run", "epoch"])
        best = v[selection_metric] if selection_metric == "accuracy" else -v[selection_metric]
        chosen = v.loc[best.groupby(v["run"], observed=True).idxmax(), ["run", "epoch"]].set_index("run")["epoch"]
    picked = runs_df.merge(chosen.rename("final_epoch").reset_index(), on="run")
    picked = picked[picked["epoch"] == picked["final_epoch"]].drop(columns="final_epoch")
    return picked.assign(epoch_rule=rule).reset_index(drop=True)
