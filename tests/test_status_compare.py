"""`nnstudy status` while a real Snakemake run trains a small study, and `nnstudy compare` against
the comparisons table that run writes; the states status reads from files, on made-up files."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT

from nnstudy.training.checkpoint import RunState

from nnstudy import cli, status
from nnstudy.study import Study

# Compared exactly as the summarise step compares them: every column that is a number.
NUMBERS = ["n_a", "n_b", "n_pairs", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high", "statistic", "df",
           "p_raw", "p_perm", "hedges_g", "prob_improvement"]


def tiny_study(seeds: int = 2) -> dict:
    """2 experiments x 2 variants of a small MLP; lr=0.05 and dropout=0.0 are the same runs."""
    return {
        "study": "tiny", "seeds": seeds, "final": "last",
        "defaults": {"data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10"),
                              "train_size": 400, "test_size": 200},
                     "model": {"name": "convnet", "hidden": [32]},
                     "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                     "train": {"epochs": 3, "batch_size": 64}},
        "experiments": {"lr": {"grid": {"optim.lr": [0.01, 0.05]}},
                        "dropout": {"grid": {"model.dropout": [0.0, 0.5]}}},
        "comparisons": {"dropout_vs_none": {"pairs": [["dropout/dropout=0.5", "dropout/dropout=0.0"]]},
                        "lr_paired": {"paired": True, "pairs": [["lr/lr=0.01", "lr/lr=0.05"]], "metrics": ["accuracy", "gap_loss"]}},
    }


def nnstudy(*args, cwd: Path) -> tuple[int, str, str]:
    """`nnstudy ARGS` in this process, in `cwd`: exit code, stdout, stderr."""
    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)  # not contextlib.chdir: Python 3.10 is supported
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in args])
    finally:
        os.chdir(before)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One Snakemake run of the tiny study, one job at a time; status is asked (by a separate
    process, as a user would) once the first run has finished, and again at the end."""
    work = tmp_path_factory.mktemp("tiny")
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(tiny_study(), sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    target = "results/tiny/summary/comparisons.parquet"  # the figures and report are not needed here
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", target, "-d", work,
                                 "--cores", "1", "--configfile", study], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not list((work / "results" / "tiny" / "train").glob("*/run.json")):
        assert proc.poll() is None and time.monotonic() < deadline, (work / "snakemake.log").read_text()[-3000:]
        time.sleep(0.1)
    mid = subprocess.run([sys.executable, "-m", "nnstudy", "status", "--configfile", study, "--json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert proc.wait(timeout=600) == 0, (work / "snakemake.log").read_text()[-3000:]
    return {"dir": work, "study": study, "mid": mid, "planned": len(Study(tiny_study()).trained)}


def test_status_while_snakemake_runs_and_after(tiny):
    assert tiny["mid"].returncode == 0, tiny["mid"].stderr
    mid = json.loads(tiny["mid"].stdout)["total"]
    assert mid["planned"] == tiny["planned"] == 6
    assert mid["finished"] >= 1 and mid["running"] <= 1 and mid["failed"] == 0
    assert mid["finished"] + mid["diverged"] + mid["running"] + mid["pending"] + mid["failed"] == mid["planned"]
    assert mid["seconds_left"] > 0  # from the finished run's epoch times
    code, out, _ = nnstudy("status", "--configfile", tiny["study"], "--json", cwd=tiny["dir"])
    end = json.loads(out)
    assert code == 0 and end["total"]["finished"] == 6 and end["total"]["seconds_left"] == 0
    assert {(v["experiment"], v["variant"]): v["finished"] for v in end["variants"]} == {
        ("lr", "lr=0.01"): 2, ("lr", "lr=0.05"): 2, ("dropout", "dropout=0.0"): 2, ("dropout", "dropout=0.5"): 2}
    code, out, _ = nnstudy("status", "--configfile", tiny["study"], "--cores", 2, cwd=tiny["dir"])
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert code == 0 and total.split()[1:8] == ["6", "6", "0", "0", "0", "0", "time"], out


def same(x, y) -> bool:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return y is None or (isinstance(y, float) and math.isnan(y))
    return y is not None and math.isclose(x, y, rel_tol=0, abs_tol=1e-12)


@pytest.mark.parametrize("a, b, metric, paired", [("dropout/dropout=0.5", "dropout/dropout=0.0", "accuracy", False),
                                                  ("dropout/dropout=0.5", "dropout/dropout=0.0", "gap_accuracy", False),
                                                  ("lr/lr=0.01", "lr/lr=0.05", "gap_loss", True)])
def test_compare_gives_the_comparisons_table_numbers(tiny, a, b, metric, paired):
    res = tiny["dir"] / "results" / "tiny"
    table = pd.read_parquet(res / "summary" / "comparisons.parquet")
    want = table.query("variant_a == @a and variant_b == @b and metric == @metric").iloc[0]
    args = ["compare", res, a, b, "--metric", metric, "--configfile", tiny["study"]] + (["--paired"] if paired else [])
    code, out, _ = nnstudy(*args, "--json", cwd=tiny["dir"])
    got = json.loads(out)
    assert code == 0 and got["paired"] == paired and got["split"] == want["split"]
    assert all(same(got[k], want[k]) for k in NUMBERS), {k: (got[k], want[k]) for k in NUMBERS}
    code, out, _ = nnstudy(*args, cwd=tiny["dir"])
    assert code == 0 and len(out.splitlines()) == 1
    if metric == "accuracy":
        assert out.startswith(f"dropout=0.5 vs dropout=0.0 (dropout): test accuracy {100 * want['diff']:+.2f} points"), out


@pytest.mark.parametrize("label, listed", [("dropout/dropout=0.9", "variants of dropout: dropout=0.0, dropout=0.5"),
                                           ("drop/dropout=0.5", "experiments: dropout, lr")])
def test_compare_unknown_label_lists_the_known_ones(tiny, label, listed):
    res = tiny["dir"] / "results" / "tiny"
    code, out, err = nnstudy("compare", res, label, "dropout/dropout=0.0", "--configfile", tiny["study"], cwd=tiny["dir"])
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and listed in err, err


def test_errors_are_one_line(tmp_path):
    code, _, err = nnstudy("status", "--configfile", tmp_path / "missing.yaml", cwd=tmp_path)
    assert code == 2 and err == f"nnstudy: error: study file not found: {tmp_path / 'missing.yaml'}\n"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(tiny_study()))
    code, _, err = nnstudy("compare", "results/tiny", "a/b", "c/d", "--configfile", "study.yaml", cwd=tmp_path)
    assert code == 2 and len(err.splitlines()) == 1 and "results/tiny/runs not found or empty" in err, err


def fake_run(work: Path, study: Study, key: str, state: str, times=(), epoch: int = 0) -> None:
    """The files a training job leaves in each state (see nnstudy.status); the runs of one job
    share its log, one after another."""
    out, log = work / "results" / "tiny" / "train" / key, work / "logs" / "tiny" / "train" / f"{study.job_of[key]}.log"
    out.mkdir(parents=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = f"nnstudy: run {key}: starting (1 of 3)\nnnstudy[x]: training on the CPU\n"
    rows = [{"epoch": e, "split": s, "epoch_time": t} for e, t in enumerate(times, 1) for s in ("train", "val", "test")]
    if state in ("completed", "diverged"):
        (out / "run.json").write_text(json.dumps({"status": state}))
        if rows:
            pd.DataFrame(rows).to_parquet(out / "metrics.parquet")
    elif state == "checkpoint":
        log.write_text(started + "Traceback (most recent call last): an earlier attempt\n")
        os.utime(log, (time.time() - 60,) * 2)  # the checkpoint is newer: a retry is under way
        torch.save({"run": key, "state": RunState(epoch=epoch, metrics=rows).as_dict()}, out / "checkpoint.pt")
    elif state == "unreadable":
        (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 half written")
    elif state in ("error", "started"):
        with log.open("a") as f:
            f.write(started + ("nnstudy: error: out of memory\n" if state == "error" else ""))


def test_each_state_from_the_files_and_the_time_left(tmp_path, monkeypatch):
    study = Study(tiny_study(seeds=3))
    keys = list(study.trained)  # lr=0.01 seeds 0-2, lr=0.05 (= dropout=0.0) seeds 0-2, dropout=0.5 seeds 0-2
    for key, (state, times, epoch) in zip(keys, [("completed", [2, 2, 2], 0), ("checkpoint", [4, 4], 2), ("pending", [], 0),
                                                 ("diverged", [], 0), ("error", [], 0), ("started", [], 0),
                                                 ("completed", [10, 10, 10], 0), ("unreadable", [], 0), ("pending", [], 0)]):
        if state != "pending":
            fake_run(tmp_path, study, key, state, times, epoch)
    monkeypatch.chdir(tmp_path)
    report = status.status(study, cores=2)
    runs = {r["key"]: (r["state"], r["epoch"]) for r in report["runs"]}
    assert [runs[k] for k in keys] == [("finished", None), ("running", 2), ("pending", None), ("diverged", None),
                                       ("failed", None), ("running", 0), ("finished", None), ("running", "?"), ("pending", None)]
    t = report["total"]
    assert (t["planned"], t["finished"], t["diverged"], t["running"], t["failed"], t["pending"]) == (9, 2, 1, 3, 1, 2)
    # Epochs left x the variant's median epoch time, else the study's (4 s), over 2 cores.
    assert t["seconds_left"] == ((1 + 3) * 2 + 3 * 4 + (3 + 3) * 10) / 2
    lines = status.text(report).splitlines()
    assert len(lines) == 1 + 4 + 2 and lines[-1].startswith("total") and "40 s on 2 cores" in lines[-1]
    assert lines[1].startswith("lr/lr=0.01 ") and lines[1].endswith("running at epoch 2/3")
    assert lines[4].startswith("dropout/dropout=0.5 ") and lines[4].endswith("running at epoch ?/3")
