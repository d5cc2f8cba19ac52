"""Early stopping on validation: the expected epoch on a plateau, an exact resume after SIGKILL,
and the determinism switch recorded with the run."""
import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, mnist_spec
from test_train import _without_clock, kill_at_epoch

from nnstudy import cli, schemas
from nnstudy.training.run import run as train_run


def plateau(shared_data, **train):
    """SGD at lr 1e-9: the validation loss moves by far less than min_delta, a plateau from
    epoch 1, so the run must stop after exactly `patience` evaluated epochs more."""
    return mnist_spec(shared_data, optim={"lr": 1e-9, "momentum": 0.0},
                      train={"epochs": 12, **train, "early_stopping": {"metric": "loss", "patience": 3, "min_delta": 1e-4}})


def test_stops_at_the_expected_epoch_on_a_plateau(shared_data, tmp_path):
    manifest = train_run(plateau(shared_data), tmp_path / "r")
    assert manifest["stopped_epoch"] == 4 and manifest["epochs_completed"] == 4  # best at 1, then 3 without gain
    m = schemas.read(tmp_path / "r" / "metrics.parquet", schemas.METRICS)
    assert m["epoch"].max() == 4 and (m["stopped_epoch"] == 4).all()
    every_other = train_run(plateau(shared_data, eval_every=2), tmp_path / "e2")
    assert every_other["stopped_epoch"] == 8  # only evaluated epochs (2, 4, 6, 8) count
    full = train_run(mnist_spec(shared_data, train={"epochs": 2}), tmp_path / "full")
    assert full["stopped_epoch"] is None
    assert schemas.read(tmp_path / "full" / "metrics.parquet", schemas.METRICS)["stopped_epoch"].isna().all()


def test_needs_a_validation_split(tmp_path, capsys):
    spec = {"data": {"name": "xor", "val_fraction": 0.0}, "train": {"early_stopping": {"patience": 2}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert cli.main(["train", "--spec", str(tmp_path / "spec.json"), "--out", str(tmp_path / "r")]) == 2
    assert "spec.train.early_stopping: needs a validation split" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sigkill_after_patience_started_resumes_to_the_same_stop(shared_data, tmp_path):
    spec = mnist_spec(shared_data, data={"train_size": 12000}, model={"hidden": [256, 128]},
                      optim={"lr": 1e-9, "momentum": 0.0},
                      train={"epochs": 20, "batch_size": 32, "early_stopping": {"metric": "loss", "patience": 5,
                                                                                 "min_delta": 1e-4}})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "killed"
    # Killed at epoch 3: best at 1, two epochs without gain counted.
    kill_at_epoch(["--spec", tmp_path / "spec.json", "--out", out, "--threads", "2"], out, 3, ROOT, timeout=180)
    resumed = train_run(spec, out, threads=2)
    straight = train_run(spec, tmp_path / "straight", threads=2)
    assert resumed["resumed_from"] and resumed["resumed_from"][0] >= 3
    assert resumed["stopped_epoch"] == straight["stopped_epoch"] == 6
    a, b = (schemas.read(tmp_path / d / "metrics.parquet", schemas.METRICS) for d in ("killed", "straight"))
    pd.testing.assert_frame_equal(_without_clock(a), _without_clock(b))


@pytest.mark.parametrize("flag", [True, False])
def test_deterministic_switch_is_recorded(tmp_path, flag):
    spec = {"data": {"name": "xor"}, "model": {"hidden": [4]}, "train": {"epochs": 2, "deterministic": flag}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    # A subprocess: the switch is process-wide, as in a training job.
    run = subprocess.run([sys.executable, "-m", "nnstudy", "train", "--spec", tmp_path / "spec.json", "--out",
                          tmp_path / "r"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert manifest["spec"]["train"]["deterministic"] is flag and manifest["deterministic_algorithms"] is flag


def test_curves_show_n_per_epoch_when_runs_stop_early():
    import matplotlib.pyplot as plt

    from nnstudy import plots

    n = [5, 5, 4, 2]  # runs still training at epochs 1..4
    curves = pd.DataFrame({"experiment": "es", "variant": "p=3", "split": "val", "metric": "loss",
                           "epoch": [1, 2, 3, 4], "n_seeds": n, "mean": [1.0, 0.8, 0.7, 0.65], "std": 0.1})
    fig, ax = plt.subplots()
    plots.curve_panel(ax, curves, "es", "loss")
    twin = [a for a in fig.axes if a is not ax]
    assert len(twin) == 1 and list(twin[0].lines[0].get_ydata()) == n
    plt.close(fig)
