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

from nnstudy import analyses
from nnstudy.training.run import run as train_run
from nnstudy.analyses.builtin import confusion_counts, parameter_counts as summary_counts, summarise_confusion
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
        train_run({**spec, "seed": seed}, d)
    out = tmp_path / "analyses"
    done = subprocess.run([sys.executable, "-m", "nnstudy", "analyse", "--analyses-json", '{"confusion": {}}',
                           "--weights", "best", "--out", str(out), "--device", "cpu", "--runs", *map(str, dirs)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == ["confusion.parquet"]
    table = pd.read_parquet(out / "confusion.parquet")
    assert list(table.columns) == ["key", "true", "pred", "count"] and len(table) == 8
    for d in dirs:
        run = nnstudy.load_run(d)
        x, y = next(run.data.batches("test", 4))
        pred = run.predict(run.model(x))
        expected = confusion_counts(y.numpy(), pred.numpy(), 2)["count"].tolist()
        assert table[table["key"] == d.name]["count"].tolist() == expected and sum(expected) == 4
    bad = subprocess.run([sys.executable, "-m", "nnstudy", "analyse", "--analyses-json", json.dumps({"confusion": {"k": 1}}),
                          "--out", str(out), "--runs", str(dirs[0])], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == ("nnstudy: error: --analyses-json.confusion: unknown key 'k'; "
                                                           "confusion takes no parameters")


def _xor_runs(tmp_path, seeds=(0, 1), **train):
    spec = {"data": {"name": "xor", "samples": 4, "val_fraction": 0.0}, "loss": "binary_cross_entropy",
            "model": {"hidden": [4], "activation": "tanh"}, "optim": {"name": "adam", "lr": 0.1},
            "train": {"epochs": 300, "batch_size": 4, "eval_every": 100, "gradients": False, **train}}
    dirs = [tmp_path / f"s{seed}" for seed in seeds]
    for seed, d in zip(seeds, dirs):
        train_run({**spec, "seed": seed}, d)
    return dirs


def _summarised(name, dirs, tmp_path, params=None):
    """An analysis computed for runs (one variant, a seed each) and summarised."""
    analyses.compute({name: params or {}}, dirs, "final", tmp_path / "e", device="cpu")
    labelled = pd.DataFrame({"experiment": "e", "variant": "v", "seed": range(len(dirs)), "key": [d.name for d in dirs]})
    return analyses.summarise(name, labelled, [tmp_path / "e" / f"{name}.parquet"], 0.95)


def test_parameter_counts_by_hand():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)
    counts = summary_counts(model)
    assert counts.values.tolist() == [["0", "Linear", 12, 4], ["2", "Linear", 5, 5], ["total", "", 17, 9]]


def test_a_boundary_that_separates_the_four_xor_corners(tmp_path):
    tables = _summarised("boundary", _xor_runs(tmp_path), tmp_path, {"grid": 41})
    regions = tables["regions"]
    assert len(regions) == 41 * 41 and (regions["n_seeds"] == 2).all()
    for (a, b), label in {(0, 0): 0, (1, 1): 0, (0, 1): 1, (1, 0): 1}.items():
        near = regions.loc[((regions["x1"] - a) ** 2 + (regions["x2"] - b) ** 2).idxmin()]
        assert near["label"] == label and near["agreement"] == 1.0
    assert sorted(tables["points"][["x1", "x2", "label"]].values.tolist()) == [[0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]]


def test_cost_table_columns_and_units(tmp_path):
    dirs = _xor_runs(tmp_path, epochs=3, eval_every=1)
    tables = _summarised("cost", dirs, tmp_path)
    assert tables["epochs"]["epoch"].tolist() == [1, 2, 3] and (tables["epochs"]["n_seeds"] == 2).all()
    cost = tables["cost"].set_index("what")
    assert cost["unit"].to_dict() == {"median epoch time": "s", "run time": "s", "final test accuracy": "fraction"}
    seconds = [json.loads((d / "run.json").read_text())["train_seconds"] for d in dirs]
    assert math.isclose(cost.loc["run time", "mean"], sum(seconds) / 2)
    shown = analyses.entry("cost").extra["report"](tables)["test accuracy beside training time (mean [95% CI])"]
    assert list(shown.columns) == ["variant", "n", "median epoch time (s)", "run time (s)", "final test accuracy (%)"]


def test_gradient_trace_shows_vanishing_gradients_of_a_deep_sigmoid_mlp(tmp_path):
    """Six hidden layers of 32: with sigmoid the first layer's mean |gradient| is millions of
    times below the last's; with ReLU about ten times."""
    ratio = {}
    for act in ("sigmoid", "relu"):
        run = tmp_path / act
        train_run({"seed": 0, "data": {"name": "xor", "samples": 256, "noise": 0.1},
                      "model": {"hidden": [32] * 6, "activation": act}, "train": {"epochs": 1, "batch_size": 32}}, run)
        trace = _summarised("gradient_trace", [run], tmp_path)["trace"].sort_values("layer_index")
        assert trace["layer_index"].tolist() == list(range(7))
        ratio[act] = trace["mean"].iloc[0] / trace["mean"].iloc[-1]
    assert ratio["sigmoid"] < 1e-4 and ratio["relu"] > 1e-2


def test_filter_grid_shape_and_each_tile_normalised_on_its_own(tmp_path):
    from nnstudy.analyses.builtin import filter_mosaic

    spec = {"seed": 0, "data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10")},
            "model": {"name": "convnet", "conv": [{"channels": 8}], "hidden": [16]}, "train": {"epochs": 1}}
    train_run(spec, tmp_path / "r")
    tiles = _summarised("filters", [tmp_path / "r"], tmp_path)["tiles"]
    f, maps = tiles[tiles["kind"] == "filter"], tiles[tiles["kind"] == "activation"]
    assert len(f) == 8 * 3 * 3 * 3 and len(maps) == 3 * 8 * 32 * 32  # 8 filters 3x3 on RGB; 3 images' 32x32 maps
    for part in (f.groupby("filter")["value"], maps.groupby(["image", "filter"])["value"]):
        assert np.allclose(part.min(), 0) and np.allclose(part.max(), 1)
    # one row of 8 RGB filters (3 px + 1 apart), then a row of 8 maps (32 px) per image, 1 px apart
    assert filter_mosaic(tiles).shape == (3 + 1 + 3 * (32 + 1), 8 * 33, 3)


def test_predictions_count_the_seeds_right_on_each_fixed_image_and_keep_its_pixels(tmp_path):
    dirs = _xor_runs(tmp_path)
    tables = _summarised("predictions", dirs, tmp_path, {"fixed": 4})
    fixed = tables["fixed"]
    assert fixed["index"].tolist() == [0, 1, 2, 3] and (fixed["n_seeds"] == 2).all()
    assert (fixed["correct"] == 2).all() and (fixed["pred"] == fixed["true"]).all()  # both seeds solve XOR
    assert (fixed["channels"] == 0).all() and tables["wrong"].empty  # points, not images; nothing misclassified

    spec = {"seed": 0, "data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10")},
            "model": {"name": "convnet", "hidden": [8]}, "train": {"epochs": 1}}
    train_run(spec, tmp_path / "img")
    tables = _summarised("predictions", [tmp_path / "img"], tmp_path, {"fixed": 3, "wrong": 5})
    import nnstudy
    from PIL import Image

    first = tables["fixed"].iloc[0]
    assert tables["fixed"]["index"].tolist() == [0, 250, 499]  # evenly spaced through the 500 test images
    run = nnstudy.load_run(tmp_path / "img")
    folder = sorted((ROOT / "data" / "demo-cifar10" / "test").iterdir())[int(run.data.test_y[0])]
    shown = np.frombuffer(first["pixels"], np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(shown, np.asarray(Image.open(sorted(folder.iterdir())[0]).convert("RGB")))
    wrong = tables["wrong"]
    assert len(wrong) == 5 and (wrong["true"] != wrong["pred"]).all() and wrong["index"].is_monotonic_increasing


def test_tsne_shape_and_the_same_embedding_for_a_fixed_seed(tmp_path):
    spec = {"seed": 0, "data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10")},
            "model": {"name": "convnet", "conv": [{"channels": 4}], "hidden": [16]}, "train": {"epochs": 1}}
    train_run(spec, tmp_path / "r")
    a = analyses.entry("tsne").factory(nnstudy_load(tmp_path / "r"), samples=100)
    b = analyses.entry("tsne").factory(nnstudy_load(tmp_path / "r"), samples=100)
    assert a.shape == (100, 4) and a["label"].value_counts().tolist() == [10] * 10  # stratified
    assert a.equals(b)  # bit-identical
    named = analyses.entry("tsne").factory(nnstudy_load(tmp_path / "r"), layer="classifier.fc1", samples=100)
    assert len(named) == 100 and not named[["x", "y"]].equals(a[["x", "y"]])
    with pytest.raises(ValueError, match="layer 'fc9' is not a module of the model; modules: features, "):
        analyses.entry("tsne").factory(nnstudy_load(tmp_path / "r"), layer="fc9")


def nnstudy_load(run_dir):
    import nnstudy

    return nnstudy.load_run(run_dir)


def test_a_training_job_start_imports_no_summary_libraries():
    """Registering the built-in entries (every spec resolves through them) leaves scipy,
    scikit-learn and matplotlib to the steps that use them: a job's start-up stays short."""
    code = ("import sys; from nnstudy import registry; registry.builtins(); "
            "print(sorted(m for m in ('scipy', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_a_training_job_keeps_its_runs_analyses_equal_to_those_computed_from_disk(tmp_path):
    """A training job computes the analyses the study asks of each run from the model it has just
    trained (analyses.keep, best weights here); the experiment's job reads them back without
    torch, and they equal the ones computed from the saved runs. A damaged kept file, or none,
    is computed again."""
    spec = {"data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10"), "split": "holdout",
                     "val_fraction": 0.2},
            "model": {"conv": [{"channels": 4}], "hidden": [16], "dropout": 0.25}, "train": {"epochs": 2, "batch_size": 64}}
    wanted = {"confusion": {}, "tsne": {"samples": 60}, "filters": {}, "cost": {}}
    outs = [tmp_path / f"r{seed}" for seed in (0, 1)]
    runs = [{"spec": {**spec, "seed": seed}, "out": str(out), "analyses": [[n, p] for n, p in wanted.items()],
             "weights": "best"} for seed, out in zip((0, 1), outs)]
    trained = subprocess.run([sys.executable, "-m", "nnstudy", "train", "--runs-json", json.dumps(runs), "--threads", "1"],
                             capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    code = ("import json, sys; from pathlib import Path; from nnstudy import analyses; "
            "analyses.compute(json.loads(sys.argv[1]), sys.argv[3:], 'best', Path(sys.argv[2])); print('torch' in sys.modules)")

    def compute(out):
        done = subprocess.run([sys.executable, "-c", code, json.dumps(wanted), str(out), *map(str, outs)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1]

    assert compute(tmp_path / "kept") == "False"  # all read back: no run loaded, no torch
    damaged = next((outs[0] / "analyses").glob("confusion-*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:-8])
    for path in (outs[1] / "analyses").iterdir():
        path.unlink()
    assert compute(tmp_path / "disk") == "True"  # run 0's confusion and all of run 1's from the saved runs
    for name in wanted:
        kept, disk = (pd.read_parquet(tmp_path / side / f"{name}.parquet") for side in ("kept", "disk"))
        pd.testing.assert_frame_equal(kept, disk, check_exact=True)
        # t-SNE and filters (first_seed analyses) of the first seed's run only
        assert len(kept) and set(kept["key"]) == ({"r0"} if name in ("tsne", "filters") else {"r0", "r1"})


def test_test_set_analyses_of_the_final_weights_reuse_the_last_evaluation_and_equal_a_pass_from_disk(tmp_path):
    """The final epoch's evaluation keeps the test logits, and a training job's confusion and
    predictions of the final weights use them instead of a pass of their own: they equal the
    analyses of the run loaded from disk, bit for bit (eval mode, the same batches). Its
    analyses of the best weights drop them (keep loads those weights), and a loaded run's own
    pass is kept nowhere."""
    import torch

    from nnstudy import load_run
    from nnstudy.training import epoch

    spec = {"data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10"), "split": "holdout",
                     "val_fraction": 0.2},
            "model": {"conv": [{"channels": 4}], "hidden": [16], "dropout": 0.25},
            "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 300}, "seed": 3}
    kept = {}

    def after(built):
        assert built.test_logits is not None and len(built.test_logits) == len(built.data.test_y)
        logits = built.test_logits
        kept.update({n: analyses.entry(n).factory(built) for n in ("confusion", "predictions")})
        assert built.test_logits is logits  # no pass of their own

        # a job's analyses of the best weights: keep loads them and drops the final weights' logits
        built.test_logits = torch.zeros_like(logits)  # (were they used, every prediction would be class 0)
        analyses.keep(built, [["confusion", {}]], "best")

    train_run(spec, tmp_path / "r", threads=1, after=after)
    loaded = load_run(tmp_path / "r")
    for name, frame in kept.items():
        pd.testing.assert_frame_equal(frame, analyses.entry(name).factory(loaded), check_exact=True)
    assert int(kept["confusion"]["count"].sum()) == len(loaded.data.test_y)
    epoch.test_logits(loaded)
    assert loaded.test_logits is None  # a pass of its own is kept nowhere
    best = analyses.entry("confusion").factory(load_run(tmp_path / "r", weights="best"))
    pd.testing.assert_frame_equal(analyses._kept(tmp_path / "r", "confusion", {}, "best"), best, check_exact=True)


def test_an_overlay_analysis_draws_every_variant_on_one_panel_and_others_one_panel_each(tmp_path, monkeypatch):
    """cost (overlay=True): the variants' seconds per epoch on one Axes, one legend entry each;
    confusion: a panel per variant."""
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    variants = ["lr=0.01", "lr=0.1", "lr=1"]
    epochs = pd.DataFrame([{"experiment": "lr", "variant": v, "epoch": e, "n_seeds": 2, "mean": 1.0 + i, "std": 0.1,
                            "ci_low": 0.9 + i, "ci_high": 1.1 + i} for i, v in enumerate(variants) for e in (1, 2)])
    analyses.figure("cost", {"epochs": epochs, "cost": epochs.iloc[:0]}, "lr", tmp_path / "cost.png")
    cells = pd.DataFrame([{"experiment": "lr", "variant": v, "true": t, "pred": p, "n_seeds": 2, "count_mean": 1.0,
                           "count_std": 0.0, "rate_mean": 0.5, "rate_std": 0.0}
                          for v in variants for t in (0, 1) for p in (0, 1)])
    analyses.figure("confusion", {"cells": cells, "per_class": cells.iloc[:0]}, "lr", tmp_path / "confusion.png")
    cost, confusion = saved
    assert len(cost.axes) == 1
    assert [t.get_text() for t in cost.axes[0].get_legend().get_texts()] == [f"{v} (n = 2)" for v in variants]
    assert [ax.axison for ax in confusion.axes] == [True, True, True]
