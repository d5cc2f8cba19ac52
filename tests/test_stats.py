"""Known-answer tests for nnstudy.stats (numbers from ../shared/docs/statistics.md and by hand)."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nnstudy import stats

X = [0.70, 0.72, 0.71, 0.69, 0.73]
Y = [0.74, 0.78, 0.73, 0.77, 0.72]


def test_summary_known_answer():
    s = stats.describe(X)
    assert s["n_seeds"] == 5 and s["n_nan"] == 0
    assert s["mean"] == pytest.approx(0.71, abs=1e-12)
    assert s["std"] == pytest.approx(0.015811388301, abs=1e-12)
    assert s["sem"] == pytest.approx(0.007071067812, abs=1e-12)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.690367568385, 0.729632431615), abs=1e-12)
    assert s["median"] == pytest.approx(0.71) and s["iqm"] == pytest.approx((0.70 + 0.71 + 0.72) / 3)
    assert (s["min"], s["max"], s["ci_method"], s["ci_level"]) == (0.69, 0.73, "t", 0.95)


def test_welch_known_answer():
    c = stats.compare(Y, X)
    assert c["statistic"] == pytest.approx(2.801397166943, abs=1e-11)
    assert c["df"] == pytest.approx(6.620258114978, abs=1e-11)
    assert c["p_raw"] == pytest.approx(0.028041482242, abs=1e-11)
    assert (c["diff_ci_low"], c["diff_ci_high"]) == pytest.approx((0.005547907364, 0.070452092636), abs=1e-11)
    assert c["diff"] == pytest.approx(0.038) and c["test"] == "welch" and (c["n_a"], c["n_b"]) == (5, 5)
    assert not c["degenerate"]


def test_holm_known_answer_and_against_statsmodels():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.uniform(0, 0.3, size=rng.integers(1, 9))
        assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)


def test_holm_caps_at_one_is_monotone_and_skips_nan():
    adj = stats.holm([0.5, np.nan, 0.4, 0.01])
    assert np.isnan(adj[1])
    assert adj[[3, 2, 0]] == pytest.approx([0.03, 0.8, 0.8])  # m = 3: NaN not counted
    assert stats.holm([0.6, 0.7])[0] == 1.0


def test_permutation_p_is_exact():
    c = stats.compare(Y, X)
    # 252 partitions of 10 values into 5 + 5; count by brute force here, independently.
    ref = sps.permutation_test((np.array(Y), np.array(X)), lambda a, b: a.mean() - b.mean(),
                               permutation_type="independent", n_resamples=np.inf).pvalue
    assert c["p_perm"] == pytest.approx(ref, abs=1e-12)
    assert c["p_perm"] * 252 == pytest.approx(round(c["p_perm"] * 252))


def test_hedges_g_and_probability_of_improvement():
    c = stats.compare(Y, X)
    pooled = math.sqrt((np.var(Y, ddof=1) + np.var(X, ddof=1)) / 2)
    d = 0.038 / pooled
    j = math.gamma(4) / (math.sqrt(4) * math.gamma(3.5))  # df = 8
    assert c["hedges_g"] == pytest.approx(d * j, rel=1e-12)
    assert c["hedges_g"] == pytest.approx(d * (1 - 3 / (4 * 10 - 9)), rel=2e-3)  # the approximation
    # Y > X in 22 of 25 pairs, ties (0.72 vs 0.72, 0.73 vs 0.73) in 2: (22 + 1) / 25.
    assert c["prob_improvement"] == pytest.approx(23 / 25)
    u = sps.mannwhitneyu(Y, X).statistic
    assert c["prob_improvement"] == pytest.approx(u / 25)
    assert stats.compare(Y, X, higher_is_better=False)["prob_improvement"] == pytest.approx(2 / 25)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant group
def test_degenerate_groups_give_nan_p_not_zero():
    c = stats.compare([0.9] * 5, [0.8] * 5)
    assert c["degenerate"] and math.isnan(c["p_raw"]) and math.isnan(c["p_perm"])
    assert c["diff"] == pytest.approx(0.1) and c["prob_improvement"] == 1.0
    # Rounding noise is not variance either.
    c = stats.compare([0.1 + 0.2] * 5, [0.3] * 5)
    assert c["degenerate"] and math.isnan(c["p_raw"])
    # One constant group is fine: Welch uses the other's variance.
    c = stats.compare([0.9] * 5, X)
    assert not c["degenerate"] and c["p_raw"] == pytest.approx(sps.ttest_ind([0.9] * 5, X, equal_var=False).pvalue)


def test_ties_across_groups_are_exact():
    a, b = [0.5, 0.5, 0.6, 0.6, 0.7], [0.5, 0.6, 0.6, 0.6, 0.5]
    c = stats.compare(a, b)
    greater = sum(x > y for x in a for y in b)
    ties = sum(x == y for x in a for y in b)
    assert c["prob_improvement"] == pytest.approx((greater + ties / 2) / 25)
    ref = sps.permutation_test((np.array(a), np.array(b)), lambda x, y: x.mean() - y.mean(),
                               permutation_type="independent", n_resamples=np.inf).pvalue
    assert c["p_perm"] == pytest.approx(ref)


def test_pairing_joins_on_seed_not_row_order():
    a = pd.Series([0.71, 0.75, 0.73, 0.70, 0.74], index=[0, 1, 2, 3, 4])
    b = pd.Series([0.70, 0.69, 0.72, 0.74, 0.71, 0.99], index=[3, 0, 2, 1, 4, 9])  # shuffled, extra seed
    c = stats.compare(a, b, paired=True)
    d = np.array([0.71 - 0.69, 0.75 - 0.74, 0.73 - 0.72, 0.70 - 0.70, 0.74 - 0.71])
    assert c["n_pairs"] == 5 and c["test"] == "paired_t" and c["df"] == 4
    ref = sps.ttest_rel(a.loc[[0, 1, 2, 3, 4]], b.loc[[0, 1, 2, 3, 4]])
    assert c["statistic"] == pytest.approx(ref.statistic) and c["p_raw"] == pytest.approx(ref.pvalue)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c["diff_ci_low"], c["diff_ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    # Sign-flip permutation: 32 flips of 5 differences.
    assert c["p_perm"] * 32 == pytest.approx(round(c["p_perm"] * 32))
    with pytest.raises(TypeError):
        stats.compare([1, 2], [3, 4], paired=True)


def test_t_tests_and_intervals_equal_scipy_stats_on_random_samples():
    # nnstudy.stats computes them with scipy.special (scipy.stats costs 1 s to import per step).
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, m = rng.integers(2, 12, 2)
        x, y = rng.normal(0, rng.uniform(0.01, 3), n), rng.normal(rng.normal(), rng.uniform(0.01, 3), m)
        welch, ref = stats.compare(x, y), sps.ttest_ind(x, y, equal_var=False)
        assert (welch["statistic"], welch["p_raw"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
        y = x + rng.normal(0.1, 0.5, n)
        paired, ref = stats.compare(pd.Series(x), pd.Series(y), paired=True), sps.ttest_rel(x, y)
        assert (paired["statistic"], paired["p_raw"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
        s = stats.describe(x, level=0.9)
        half = sps.t.ppf(0.95, n - 1) * x.std(ddof=1) / math.sqrt(n)
        assert (s["ci_low"], s["ci_high"]) == (x.mean() - half, x.mean() + half)
        assert s["iqm"] == sps.trim_mean(x, 0.25)


def test_the_statistics_do_not_import_scipy_stats():
    code = "import sys; import nnstudy.stats; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_nan_runs_are_dropped_and_counted():
    c = stats.compare(X + [np.nan], Y)
    assert (c["n_a"], c["n_nan_a"], c["n_b"]) == (5, 1, 5)
    assert c["p_raw"] == pytest.approx(stats.compare(X, Y)["p_raw"])
    s = stats.describe([0.7, np.nan, np.inf])
    assert (s["n_seeds"], s["n_nan"], s["mean"]) == (1, 2, 0.7)
    assert math.isnan(s["ci_low"]) and math.isnan(s["std"])  # n < 2: NaN interval, never zero width
    paired = stats.compare(pd.Series([1.0, 2.0, np.nan]), pd.Series([0.5, 1.0, 1.0]), paired=True)
    assert paired["n_pairs"] == 2 and paired["n_nan_a"] == 1


def _runs():
    """Two runs of one variant, 3 epochs; run b stopped (diverged) after epoch 2."""
    rows = []
    for run, seed, accs in (("a", 0, [(0.5, 0.4), (0.7, 0.6), (0.9, 0.65)]), ("b", 1, [(0.6, 0.5), (0.8, 0.7)])):
        for epoch, (tr, va) in enumerate(accs, start=1):
            for split, acc in (("train", tr), ("val", va), ("test", va - 0.01)):
                rows.append(dict(run=run, seed=seed, variant="v", epoch=epoch, split=split, accuracy=acc,
                                 loss=1 - acc, diverged=False))
    return pd.DataFrame(rows)


def test_gap_is_per_run_and_epoch_and_early_stops_shrink_n():
    g = stats.gap(_runs())
    assert g.set_index(["run", "epoch"])["gap"].to_dict() == pytest.approx(
        {("a", 1): 0.1, ("a", 2): 0.1, ("a", 3): 0.25, ("b", 1): 0.1, ("b", 2): 0.1})
    s = stats.summarise(g, ["variant", "epoch"], "gap").set_index("epoch")
    assert s["n_seeds"].tolist() == [2, 2, 1]  # never forward-filled
    assert math.isnan(s.loc[3, "ci_low"]) and s.loc[3, "mean"] == pytest.approx(0.25)
    assert s.loc[1, "std"] == pytest.approx(0.0, abs=1e-15)
    lg = stats.gap(_runs(), "loss")  # val loss - train loss: positive when overfitting, like accuracy
    assert lg.set_index(["run", "epoch"]).loc[("a", 3), "gap"] == pytest.approx(0.25)


def test_gap_interval_is_one_sample_not_unpaired():
    # Train and val move together across seeds: the gap's spread is small although each is wide.
    tr = np.array([0.80, 0.90, 0.70, 0.85, 0.75])
    va = tr - np.array([0.10, 0.11, 0.09, 0.10, 0.10])
    rows = [dict(run=str(i), epoch=1, split=s, accuracy=v, loss=0.0, diverged=False)
            for i in range(5) for s, v in (("train", tr[i]), ("val", va[i]))]
    g = stats.gap(pd.DataFrame(rows))
    s = stats.describe(g["gap"])
    assert s["std"] == pytest.approx(np.std([0.10, 0.11, 0.09, 0.10, 0.10], ddof=1))
    assert s["ci_high"] - s["ci_low"] < 0.05  # the unpaired interval would be ~0.2 wide


def test_final_epoch_rules_never_look_at_test():
    df = _runs()
    df.loc[(df["run"] == "a") & (df["split"] == "test") & (df["epoch"] == 1), "accuracy"] = 0.99
    last = stats.final(df, "last")
    assert last.groupby("run")["epoch"].first().to_dict() == {"a": 3, "b": 2}
    best = stats.final(df, "best_val")
    assert best.groupby("run")["epoch"].first().to_dict() == {"a": 3, "b": 2}
    df.loc[(df["run"] == "a") & (df["split"] == "val") & (df["epoch"] == 1), ["accuracy", "loss"]] = [0.65, 0.35]
    # A tie on validation: the earliest epoch.
    assert stats.final(df, "best_val").query("run == 'a'")["epoch"].iloc[0] == 1
    assert stats.final(df, "best_val", "loss").query("run == 'a'")["epoch"].iloc[0] == 1
    assert set(last["epoch_rule"]) == {"last"}


def test_summarise_groups_and_bootstrap_option():
    df = pd.DataFrame({"variant": ["a"] * 5 + ["b"] * 5, "value": X + Y,
                       "diverged": [False] * 9 + [True]})
    s = stats.summarise(df, ["variant"], "value").set_index("variant")
    assert s.loc["a", "ci_low"] == pytest.approx(0.690367568385, abs=1e-12)
    assert s.loc["b", "n_diverged"] == 1 and list(s.columns) == stats.SUMMARY_COLUMNS
    b1 = stats.summarise(df, ["variant"], "value", method="bootstrap", resamples=2000, seed=3)
    b2 = stats.summarise(df, ["variant"], "value", method="bootstrap", resamples=2000, seed=3)
    pd.testing.assert_frame_equal(b1, b2)  # the seed is honoured
    assert b1["ci_method"].iloc[0] == "bootstrap-percentile(resamples=2000,seed=3)"
    lo, hi = b1.set_index("variant").loc["a", ["ci_low", "ci_high"]]
    assert 0.69 <= lo < 0.71 < hi <= 0.73
    empty = stats.describe([])
    assert empty["n_seeds"] == 0 and math.isnan(empty["mean"])


def test_summarise_takes_one_column_name_as_groupby_does():
    df = pd.DataFrame({"epoch": [1, 1, 2, 2], "value": [0.5, 0.7, 0.6, 0.8]})
    one = stats.summarise(df, by="epoch", value="value")
    assert one["epoch"].tolist() == [1, 2] and one["mean"].tolist() == pytest.approx([0.6, 0.7])
    pd.testing.assert_frame_equal(one, stats.summarise(df, by=["epoch"], value="value"))


def test_summarise_in_whole_columns_equals_describe_of_each_group():
    rng = np.random.default_rng(1)
    sizes = [1, 2, 3, 5, 5, 8, 4]
    rows = []
    for g, size in enumerate(sizes):
        for i in range(size):
            value = rng.normal(g, 1)
            if (g, i) in ((2, 0), (5, 3)):
                value = np.nan if g == 2 else np.inf  # counted in n_nan, not used
            rows.append({"experiment": "e" if g < 4 else "f", "epoch": g % 3, "value": value, "diverged": (g, i) == (5, 3)})
    rows.append({"experiment": "f", "epoch": 9, "value": np.nan, "diverged": True})  # a group with no finite value
    df = pd.DataFrame(rows).astype({"experiment": "category"})
    fast = stats.summarise(df, ["experiment", "epoch"], "value")
    for _, row in fast.iterrows():
        group = df[(df["experiment"] == row["experiment"]) & (df["epoch"] == row["epoch"])]
        slow = stats.describe(group["value"], diverged=group["diverged"])
        for col in stats.SUMMARY_COLUMNS:
            if isinstance(slow[col], str):
                assert row[col] == slow[col]
            else:
                assert row[col] == pytest.approx(slow[col], rel=1e-12, abs=1e-15, nan_ok=True), col
    assert not isinstance(fast["experiment"].dtype, pd.CategoricalDtype)
    assert len(fast) == df.groupby(["experiment", "epoch"], observed=True).ngroups
