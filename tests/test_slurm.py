"""The cluster profile on a real single-node SLURM cluster (tests/slurm/cluster.sh).

Needs the Debian SLURM packages (`bash tests/slurm/cluster.sh install`, done by .ci/run); skipped
where they are absent unless NNSTUDY_SLURM_TESTS=1 (CI), where that is a failure.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT

from nnstudy import schemas
from nnstudy.training.checkpoint import CorruptFile, load_verified

pytestmark = pytest.mark.slow
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"


def merged_profile(dest: Path) -> Path:
    """profiles/slurm/config.yaml with the CI overlay (tests/slurm/overlay.yaml) merged over it."""
    base = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "tests" / "slurm" / "overlay.yaml").read_text())

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(base, overlay)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(base))
    return dest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not shutil.which("slurmctld"):
        if os.environ.get("NNSTUDY_SLURM_TESTS"):
            pytest.fail("SLURM is not installed: run bash tests/slurm/cluster.sh install")
        pytest.skip("SLURM is not installed (bash tests/slurm/cluster.sh install)")
    state = Path(os.environ.get("NNSTUDY_SLURM_DIR") or tmp_path_factory.mktemp("slurm"))
    up = subprocess.run(["bash", CLUSTER, "up", state], capture_output=True, text=True, timeout=120)
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    try:
        assert up.returncode == 0, up.stderr
        env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        yield {"env": env, "profile": merged_profile(tmp_path_factory.mktemp("profile"))}
    finally:
        subprocess.run(["bash", CLUSTER, "down", state], timeout=120)
        for pid in pids:  # every process `up` started is gone
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def study_file(tmp: Path, **changes) -> Path:
    study = yaml.safe_load((ROOT / "tests" / "slurm" / "study.yaml").read_text())
    study["defaults"]["data"]["root"] = str(ROOT / "data" / "demo-cifar10")
    for key, value in changes.items():
        study["defaults"].setdefault(key, {}).update(value)
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def snakemake(cluster, work, *args, timeout=600):
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile",
           "-d", work, *args]
    return subprocess.run(list(map(str, cmd)), env=cluster["env"], capture_output=True, text=True)


def slurm(cluster, work, study, *args, timeout=600):
    return snakemake(cluster, work, "--profile", cluster["profile"], "--configfile", study, *args, timeout=timeout)


def without_clock(df):
    return df.drop(columns=list(schemas.WALL_CLOCK)).sort_values(["run", "epoch", "split"]).reset_index(drop=True)


def test_tiny_study_on_slurm_equals_the_local_run(cluster, tmp_path):
    study = study_file(tmp_path)
    on_slurm = slurm(cluster, tmp_path / "slurm", study)
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
    local = snakemake(cluster, tmp_path / "local", "--cores", 2, "--set-threads", "train=4", "--configfile", study)
    assert local.returncode == 0, local.stderr[-3000:]
    manifests = list((tmp_path / "slurm" / "results" / "slurm" / "train").glob("*/run.json"))
    assert len(manifests) == 4
    assert all(json.loads(p.read_text())["slurm_job_id"] for p in manifests)
    for where in ("slurm", "local"):
        assert (tmp_path / where / "results" / "slurm" / "report.html").exists()
    confusion = [pd.read_parquet(tmp_path / where / "results" / "slurm" / "summary" / "analyses" / "lr" /
                                 "confusion" / "per_class.parquet") for where in ("slurm", "local")]
    pd.testing.assert_frame_equal(*confusion)  # the analyse job ran on the cluster, with the same answer
    chosen = [json.loads((tmp_path / where / "results" / "slurm" / "selections" / "best_lr.json").read_text())
              for where in ("slurm", "local")]
    assert chosen[0] == chosen[1] and chosen[0]["value"] in (0.01, 0.05)  # the select job too
    a = pd.read_parquet(tmp_path / "slurm" / "results" / "slurm" / "runs")
    b = pd.read_parquet(tmp_path / "local" / "results" / "slurm" / "runs")
    pd.testing.assert_frame_equal(without_clock(a), without_clock(b))
    for name in ("final", "comparisons"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "slurm" / "results" / "slurm" / "summary" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "local" / "results" / "slurm" / "summary" / f"{name}.parquet"))


def _epoch(path: Path) -> int:
    try:
        return load_verified(path, torch.device("cpu"))["state"]["epoch"]
    except (FileNotFoundError, CorruptFile):  # not written yet, or being replaced
        return 0


def test_cancelled_job_is_resubmitted_and_resumes(cluster, tmp_path):
    study = study_file(tmp_path, data={"train_size": 2000}, model={"hidden": [256]}, train={"epochs": 12})
    spec = yaml.safe_load(study.read_text())
    spec["experiments"]["lr"]["grid"]["optim.lr"] = [0.05]
    spec["seeds"] = 1
    spec["comparisons"] = {}
    study.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(list(map(str, ["timeout", "-k", "10", "300", sys.executable, "-m", "snakemake", "-s",
                                           ROOT / "Snakefile", "-d", tmp_path, "--profile", cluster["profile"],
                                           "--configfile", study, "--retries", "0"])),
                            env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train = tmp_path / "results" / "slurm" / "train"
    deadline = time.monotonic() + 240
    while not any(_epoch(p) >= 2 for p in train.glob("*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster["env"], capture_output=True, text=True).stdout.split()
    assert len(jobs) == 1
    subprocess.run(["scancel", jobs[0]], env=cluster["env"], check=True)
    first = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "CANCELLED" in first, first[-3000:]
    (run_dir,) = list(train.iterdir())
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "run.json").exists()

    second = slurm(cluster, tmp_path, study, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["slurm_job_id"] != jobs[0] and len(manifest["resumed_from"]) == 1
    (log,) = [p.read_text() for p in (tmp_path / "logs" / "slurm" / "train").glob("*.log")]  # one job, one run
    assert re.search(r"resumed from checkpoint after epoch \d+", log), log


@pytest.mark.parametrize("case, reason", [
    ("impossible memory", "sbatch: error: Memory specification can not be satisfied"),
    ("failing rule", "SLURM status is: 'FAILED'"),
])
def test_failing_job_fails_the_workflow_with_slurm_reason(cluster, tmp_path, case, reason):
    if case == "impossible memory":
        study, args = study_file(tmp_path), ["--set-resources", "train:mem_mb=100000000", "train:gpu=0"]
    else:  # the data root does not exist, so training fails inside the allocation
        study, args = study_file(tmp_path, data={"root": str(tmp_path / "nonexistent")}), []
    run = slurm(cluster, tmp_path, study, "--retries", "0", *args, timeout=300)
    assert run.returncode != 0
    assert reason in run.stderr + run.stdout, (run.stderr + run.stdout)[-3000:]
    assert not list(tmp_path.glob("results/slurm/train/*/run.json"))
    assert not (tmp_path / "results" / "slurm" / "report.html").exists()


def test_training_jobs_ask_slurm_for_one_gpu(cluster, tmp_path):
    # The test node has no GPU, so sbatch refuses; the submitted line is what is checked.
    run = slurm(cluster, tmp_path, study_file(tmp_path), "--set-resources", "train:gpu=1", "--verbose",
                "--retries", "0", timeout=300)
    calls = [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("sbatch call:")]
    assert calls and all(" --gpus=1 " in c and "--cpus-per-task=4" in c and "--requeue" in c for c in calls)
    assert run.returncode != 0


def test_users_profile_marks_its_placeholders():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["set-resources"]["train"]["gpu"] == 1
    assert profile["default-resources"]["slurm_partition"].startswith("EDIT-ME")
    assert profile["default-resources"]["slurm_account"].startswith("EDIT-ME")
    assert profile["slurm-requeue"] and profile["rerun-incomplete"] and profile["retries"] >= 1
