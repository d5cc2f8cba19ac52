"""Figures that fit the study: a few variants get legends and bands, thousands stay readable."""
import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image

from nnstudy import figures, plots, stats
from nnstudy.study.plan import variant_label


def final_table(variants: int) -> pd.DataFrame:
    means = np.linspace(0.5, 0.9, variants)
    rows = [{"experiment": "lr", "variant": f"lr={i}", "split": "test", "metric": "accuracy", "epoch_rule": "last",
             **dict.fromkeys(stats.SUMMARY_COLUMNS, 0.0), "n_seeds": 5, "mean": m, "ci_low": m - 0.01,
             "ci_high": m + 0.01, "ci_level": 0.95} for i, m in enumerate(means)]
    return pd.DataFrame(rows)


def test_many_variants_draw_a_ranking_of_the_best_not_a_page_wide_chart(tmp_path):
    plots.figure_final(final_table(400), "accuracy", "test", tmp_path / "final.png", ["lr"])
    width, _ = Image.open(tmp_path / "final.png").size
    assert width < 2000  # 400 error bars side by side would be ~20,000 px
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.final_panel(ax, final_table(400), "accuracy", "test", ["lr"])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:2] == ["lr/lr=399", "lr/lr=398"] and len(labels) == plots.RANKED  # best first
    assert "the best 30 of 400 variants" in ax.get_title()
    plt.close(fig)


def test_few_variants_keep_every_bar_in_order():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.final_panel(ax, final_table(5), "accuracy", "test", ["lr"])
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"lr/lr={i}" for i in range(5)]
    plt.close(fig)


def test_curves_of_many_variants_are_thin_lines_without_bands_or_legend(tmp_path):
    rows = [{"experiment": "lr", "variant": f"lr={v}", "split": split, "metric": metric, "epoch": e, "n_seeds": 5,
             "mean": 0.5 + 0.01 * e, "std": 0.02} for v in range(40) for split in ("train", "val")
            for metric in ("accuracy", "loss") for e in range(1, 4)]
    curves = pd.DataFrame(rows)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.curve_panel(ax, curves, "lr", "accuracy")
    # One collection of 40 thin lines per split (train, val), no bands, no legend.
    assert not ax.lines and [len(c.get_segments()) for c in ax.collections] == [40, 40]
    assert "40 variants" in ax.get_title()
    plt.close(fig)
    plots.figure_curves(curves, "lr", tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] < 1500


def test_a_study_without_validation_split_shows_test_curves_labelled_as_test():
    import matplotlib.pyplot as plt

    rows = [{"experiment": "e", "variant": "v", "split": split, "metric": "accuracy", "epoch": e, "n_seeds": 5,
             "mean": 0.5, "std": 0.1} for split in ("train", "test") for e in (1, 2)]
    fig, ax = plt.subplots()
    plots.curve_panel(ax, pd.DataFrame(rows), "e", "accuracy")
    assert [line.get_label() for line in ax.lines] == ["v (train)", "v (test)"]
    assert "dashed: test (no validation split)" in ax.get_title()
    with_val = pd.DataFrame([{**r, "split": "val"} for r in rows if r["split"] == "test"] + rows)
    ax.clear()
    plots.curve_panel(ax, with_val, "e", "accuracy")  # by default test is never drawn beside val
    assert sorted(line.get_label() for line in ax.lines) == ["v (train)", "v (val)"] and "dashed: val" in ax.get_title()
    plt.close(fig)


def test_a_two_key_grid_draws_a_heatmap_and_one_numeric_key_a_line(tmp_path):
    """A 20 x 20 grid (400 variants) is one heatmap of the page's width, every cell in place; a
    one-key LR sweep is accuracy against the LR on a log axis."""
    import matplotlib.pyplot as plt

    lrs, drops = [10.0 ** (-k / 4) for k in range(20)], [i / 20 for i in range(20)]
    exp = {"grid": {"optim.lr": lrs, "model.dropout": drops}}
    final = final_table(400)
    final["variant"] = [variant_label({"optim.lr": a, "model.dropout": b}) for a in lrs for b in drops]
    assert figures.grid_shape(exp) == "heatmap" and "final_lr.png" in figures.figure_names({"lr": exp})
    shown = []
    real = plt.Axes.imshow
    try:
        plt.Axes.imshow = lambda ax, data, **kw: shown.append(np.asarray(data)) or real(ax, data, **kw)
        plots.figure_grid(final, "lr", exp, tmp_path / "heat.png")
    finally:
        plt.Axes.imshow = real
    assert shown[0].shape == (20, 20) and np.allclose(shown[0].ravel(), 100 * final["mean"].to_numpy())
    assert Image.open(tmp_path / "heat.png").size[0] < 1400
    one = {"grid": {"optim.lr": [0.001, 0.01, 0.1]}}
    line = final_table(3).assign(variant=[variant_label({"optim.lr": v}) for v in (0.001, 0.01, 0.1)])
    assert figures.grid_shape(one) == "line"
    plots.figure_grid(line, "lr", one, tmp_path / "line.png")
    assert Image.open(tmp_path / "line.png").size[0] < 1000
    assert figures.grid_shape({"grid": {"model.batchnorm": [False, True]}}) is None  # two categories: the shared figure


def test_curve_splits_choose_what_the_curves_show():
    import matplotlib.pyplot as plt

    rows = [{"experiment": "e", "variant": "v", "split": split, "metric": "accuracy", "epoch": e, "n_seeds": 5,
             "mean": 0.5, "std": 0.1} for split in ("train", "val", "test") for e in (1, 2)]
    curves = pd.DataFrame(rows)
    for splits, styles in ((None, ["-", "--"]), (["train", "val", "test"], ["-", "--", ":"]), (["test"], [":"])):
        fig, ax = plt.subplots()
        plots.curve_panel(ax, curves, "e", "accuracy", splits)
        assert [line.get_linestyle() for line in ax.lines] == styles
        plt.close(fig)


def test_the_figures_step_imports_neither_torch_nor_scipy():
    # The figures step runs after the last training job; scipy (through the statistics) was 1 s
    # of its 2 s start for two small facts (metric directions, the variants' order).
    code = "import sys; from nnstudy import plots; print([m for m in ('torch', 'scipy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
