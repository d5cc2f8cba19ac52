"""Per-run analyses: known answers for the confusion matrix and its seed averages, the
registry's checks, and `nnstudy analyse` on a real run."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from nnstudy import analyses, training
from nnstudy.analyses.builtin import confusion_counts, summarise_confusion
from nnstudy.spec import SpecError


def test_confusion_counts_every_cell_of_known_predictions():
    cells = confusion_counts(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    matrix = cells.pivot(index="true", columns="pred", values="count").to_numpy()
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_seed_averages_of_cells_and_per_class_accuracy_by_hand():
    # seed 0: class 0 right 1 of 2, class 1 right 2 of 2; seed 1: class 0 right 2 of 2, class 1 right 1 of 2
    seeds = {0: ([0, 0, 1, 1], [0, 1, 1, 1]), 1: ([0, 0, 1, 1], [0, 0, 1, 0])}
    rows = pd.concat([confusion_counts(np.array(t), np.array(p), 2).assign(experiment="e", variant="v", seed=s)
                      for s, (t, p) in seeds.items()])
    tables = summarise_confusion(rows, 0.95)
    cells = tables["cells"].set_index(["true", "pred"])
    assert cells.loc[(0, 0), "count_mean"] == 1.5 and cells.loc[(0, 1), "count_mean"] == 0.5
    assert cells.loc[(0, 0), "rate_mean"] == 0.75 and math.isclose(cells.loc[(0, 0), "rate_std"], math.sqrt(0.125))
    assert (cells["n_seeds"] == 2).all()
    per_class = tables["per_class"].set_index("class")
    # class 0: accuracies 0.5 and 1.0 -> mean 0.75, std sqrt(0.125), t(0.975, 1) = 12.7062
    half = 12.706204736174698 * math.sqrt(0.125) / math.sqrt(2)
    assert per_class.loc[0, "mean"] == 0.75 and math.isclose(per_class.loc[0, "ci_low"], 0.75 - half)
    assert per_class.loc[1, "mean"] == 0.75 and math.isclose(per_class.loc[1, "ci_high"], 0.75 + half)


def test_unknown_analyses_and_parameters_are_named():
    with pytest.raises(SpecError, match="'confusio' is not a registered analysis; allowed values: confusion"):
        analyses.check("confusio", {}, "study.experiments.lr.analyses")
    with pytest.raises(SpecError, match=r"study.experiments.lr.analyses.confusion: unknown key 'layer'; confusion takes no"):
        analyses.check("confusion", {"layer": "fc1"}, "study.experiments.lr.analyses")


def test_nnstudy_analyse_writes_the_test_confusion_of_each_run(tmp_path):
    """Two XOR runs through the CLI: each run's matrix counts its 4 test points and matches the
    predictions of the run loaded back."""
    import nnstudy

    spec = {"data": {"name": "xor", "samples": 4, "val_fraction": 0.0}, "loss": "binary_cross_entropy",
            "model": {"hidden": [4], "activation": "tanh"}, "optim": {"name": "adam", "lr": 0.1},
            "train": {"epochs": 300, "batch_size": 4, "eval_every": 100, "gradients": False}}
    dirs = [tmp_path / f"s{seed}" for seed in (0, 1)]
    for seed, d in enumerate(dirs):
        training.run({**spec, "seed": seed}, d)
    out = tmp_path / "confusion.parquet"
    done = subprocess.run([sys.executable, "-m", "nnstudy", "analyse", "confusion", "--weights", "best", "--out", str(out),
                           "--device", "cpu", "--runs", *map(str, dirs)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_parquet(out)
    assert list(table.columns) == ["key", "true", "pred", "count"] and len(table) == 8
    for d in dirs:
        run = nnstudy.load_run(d)
        x, y = next(run.data.batches("test", 4))
        pred = run.predict(run.model(x))
        expected = confusion_counts(y.numpy(), pred.numpy(), 2)["count"].tolist()
        assert table[table["key"] == d.name]["count"].tolist() == expected and sum(expected) == 4
    bad = subprocess.run([sys.executable, "-m", "nnstudy", "analyse", "confusion", "--params-json", json.dumps({"k": 1}),
                          "--out", str(out), "--runs", str(dirs[0])], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == ("nnstudy: error: --params-json: unknown key 'k'; "
                                                           "confusion takes no parameters")
