"""Fault injection with real SIGKILLs: training jobs killed around every write, Snakemake itself
killed twice; rerun until done; the study must equal an uninterrupted one, with 0 runs lost,
0 retrained from scratch, no temporary file left and every resumption on record."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import ROOT
from test_workflow import ENV

from nnstudy import schemas

pytestmark = pytest.mark.slow
SMK = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
STUDY = {  # 2 runs per training job: a kill ends the job, so bundles of 5 would need many more rounds
    "study": "faults", "seeds": 3, "gradient_window": 1, "runs_per_job": 2,
    "defaults": {"data": {"name": "imagefolder", "root": str(ROOT / "data/demo-cifar10"), "train_size": 300,
                          "test_size": 200}, "model": {"hidden": [32]},
                 "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 50}},
    "experiments": {"lr": {"grid": {"optim.lr": [0.02, 0.05]}}, "width": {"grid": {"model.hidden": [[16], [48]]}}},
    "comparisons": {"lr_pair": {"pairs": [["lr/lr=0.05", "lr/lr=0.02"]]}},
}


# SIGKILL probability just before and just after each write's rename, per file (after the targeted rounds).
FAULTS = "checkpoint.pt:0.02,best.next.pt:0.02,metrics.parquet:0.04,gradients.parquet:0.03,model.pt:0.04,run.json:0.04,*:0.01"
WRITES = ("checkpoint.pt", "metrics.parquet", "model.pt", "run.json")  # each must have been hit


def run_study(work, rng: random.Random, faults: str = "", kill_snakemake: bool = False) -> tuple:
    """One Snakemake invocation, with a training job of this study SIGKILLed at random moments
    when `faults` are on, and Snakemake itself SIGKILLed while its training jobs run when
    `kill_snakemake`. Returns (exit code or None if this test killed Snakemake, training jobs
    killed from outside)."""
    env = {**ENV, "NNSTUDY_FAULTS": faults, "NNSTUDY_FAULTS_LOG": str(work / "faults.log")}
    cmd = SMK + ["-d", work, "--configfile", work / "study.yaml", "--keep-going", "--rerun-incomplete"]
    subprocess.run(SMK + ["-d", work, "--configfile", work / "study.yaml", "--unlock"], env=env, capture_output=True)
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = 0
    while proc.poll() is None:
        time.sleep(rng.uniform(0.2, 1.0))  # a training job of this study lives 0.3-3 s
        jobs = subprocess.run(["pgrep", "-f", "nnstudy train --runs-json .*results/faults/train/"], capture_output=True,
                              text=True).stdout.split() if faults or kill_snakemake else []
        if jobs and kill_snakemake:
            proc.send_signal(signal.SIGKILL)  # Snakemake itself; its jobs go on as orphans
            proc.wait()
            return None, killed
        if jobs and faults and rng.random() < 0.15:
            os.kill(int(rng.choice(jobs)), signal.SIGKILL)
            killed += 1
    return proc.returncode, killed


def collected(work) -> pd.DataFrame:
    runs = pd.read_parquet(work / "results/faults/runs").drop(columns=list(schemas.WALL_CLOCK))
    runs["experiment"] = runs["experiment"].astype(str)
    return runs.sort_values(["experiment", "variant", "seed", "epoch", "split"]).reset_index(drop=True)


def test_study_survives_kills_at_the_worst_moments(tmp_path):
    straight, faulty = tmp_path / "straight", tmp_path / "faulty"
    for work in (straight, faulty):
        work.mkdir()
        (work / "study.yaml").write_text(yaml.safe_dump(STUDY))
    rng = random.Random(0)
    assert run_study(straight, rng)[0] == 0
    snakemake_kills, outside_kills, rounds = 0, 0, 0
    while True:
        rounds += 1
        assert rounds <= 25, "the study did not finish under faults"
        kill = snakemake_kills < 2 and rounds > len(WRITES)
        # The first rounds kill every job at its first write of one file each, so every kind of
        # write is hit whatever the random draws; random faults after that.
        faults = f"{WRITES[rounds - 1]}:1" if rounds <= len(WRITES) else FAULTS
        code, killed_now = run_study(faulty, rng, faults=faults, kill_snakemake=kill)
        snakemake_kills, outside_kills = snakemake_kills + (code is None), outside_kills + killed_now
        if code == 0 and snakemake_kills >= 2:
            break
        time.sleep(0.5)  # orphans of a killed Snakemake finish or die
    killed = (faulty / "faults.log").read_text().splitlines() if (faulty / "faults.log").exists() else []
    print(f"\nsurvived {len(killed)} SIGKILLs of jobs around writes, {outside_kills} at random moments and "
          f"{snakemake_kills} of Snakemake, in {rounds} rounds")
    hit = {w for w in WRITES for line in killed if f"/{w}" in line or f"/.{w}." in line}
    assert hit == set(WRITES), f"no kill around {set(WRITES) - hit}"
    pd.testing.assert_frame_equal(collected(faulty), collected(straight))
    runs = list((faulty / "results/faults/train").iterdir())
    assert len(runs) == 12 and all((r / "run.json").exists() for r in runs)  # 0 lost
    resumed = 0
    for run in runs:
        starts = [json.loads(x)["from_epoch"] for x in (run / "attempts.jsonl").read_text().splitlines()]
        assert starts == sorted(starts), f"{run.name} was trained again from an earlier epoch: {starts}"
        assert json.loads((run / "run.json").read_text())["resumed_from"] == starts[1:]  # every start on record
        resumed += len(starts) - 1
    leftovers = [p for p in (faulty / "results").rglob(".*") if p.name.endswith(".tmp") or p.is_dir()]
    assert leftovers == [] and resumed >= 1
    assert not os.environ.get("NNSTUDY_FAULTS")
