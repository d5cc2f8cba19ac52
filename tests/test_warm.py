"""The warm process (nnstudy.warm): a command run through it is the command run alone (same
files bit for bit, exit code and streams), signals reach its child, a killed client takes its
child with it, and without a warm process commands run as before."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT, mnist_spec

from nnstudy import schemas
from nnstudy import warm as warm_module

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
NNSTUDY = [sys.executable, "-m", "nnstudy"]


@pytest.fixture
def warm(tmp_path):
    """The environment of a job whose Snakemake started a warm process (here, a stand-in parent
    that starts one and waits), and the parent."""
    log = tmp_path / "warm.log"
    parent = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from nnstudy import warm;"
                               "print(warm.start(Path(sys.argv[1])), flush=True); time.sleep(600)", str(log)],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    path = parent.stdout.readline().strip()
    yield {**ENV, "NNSTUDY_WARM": path}, parent, log
    parent.kill()
    parent.wait()


def _train(spec, out, env, **kwargs):
    return subprocess.run([*NNSTUDY, "train", "--spec-json", json.dumps(spec), "--out", str(out), "--threads", "1"],
                          env=env, capture_output=True, text=True, **kwargs)


def _pid(out) -> int:
    """The pid that trained the run (attempts.jsonl)."""
    deadline = time.monotonic() + 60
    while not (out / "attempts.jsonl").exists():
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    return json.loads((out / "attempts.jsonl").read_text().splitlines()[0])["pid"]


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_run_through_the_warm_process_is_the_run_alone(shared_data, tmp_path, warm):
    env, _, log = warm
    spec = mnist_spec(shared_data)
    alone, served = _train(spec, tmp_path / "alone", ENV), _train(spec, tmp_path / "served", env)
    assert alone.returncode == served.returncode == 0, served.stderr
    assert "completed after 2 epochs" in served.stderr and "results in" in served.stdout
    for name, schema in (("metrics", schemas.METRICS), ("gradients", schemas.GRADIENTS)):
        a, b = (schemas.read(tmp_path / d / f"{name}.parquet", schema) for d in ("alone", "served"))
        pd.testing.assert_frame_equal(a.drop(columns=list(schemas.WALL_CLOCK), errors="ignore"),
                                      b.drop(columns=list(schemas.WALL_CLOCK), errors="ignore"))
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("alone", "served"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Trained in a child of the warm process, which logged it; alone, in the command's own process.
    assert re.search(rf"nnstudy train \(pid {_pid(tmp_path / 'served')}\): exit 0 after [\d.]+ s, [\d.]+ s of CPU$",
                     log.read_text(), re.M)
    assert f"(pid {_pid(tmp_path / 'alone')})" not in log.read_text()


def test_exit_codes_and_errors_are_the_commands_own(tmp_path, warm):
    env, _, log = warm
    args = [*NNSTUDY, "check", "--configfile", str(tmp_path / "missing.yaml")]
    alone, served = (subprocess.run(args, env=e, capture_output=True, text=True) for e in (ENV, env))
    assert served.returncode == alone.returncode == 2
    assert served.stderr == alone.stderr and served.stderr.startswith("nnstudy: error:") and "missing.yaml" in served.stderr
    assert "nnstudy check (pid" in log.read_text()
    listed = subprocess.run([*NNSTUDY, "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "mnist" in listed.stdout


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_job_takes_its_child_with_it(shared_data, tmp_path, warm, how):
    env, _, _ = warm
    client = subprocess.Popen([*NNSTUDY, "train", "--spec-json", json.dumps(mnist_spec(shared_data, train={"epochs": 200})),
                               "--out", str(tmp_path / "run"), "--threads", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _pid(tmp_path / "run")
    assert child != client.pid  # trained by the warm process's child
    client.send_signal(getattr(signal, how))
    assert client.wait(timeout=30) == -getattr(signal, how)  # the job ends as its child did
    assert _gone(child)
    assert not (tmp_path / "run" / "run.json").exists()


def test_without_a_warm_process_commands_run_in_their_own_process(shared_data, tmp_path):
    spec = mnist_spec(shared_data, train={"epochs": 1})
    done = _train(spec, tmp_path / "run", {**ENV, "NNSTUDY_WARM": str(tmp_path / "no-such-socket")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "run.json").exists()


def test_the_warm_process_ends_with_its_parent(warm):
    env, parent, _ = warm
    folder = os.path.dirname(env["NNSTUDY_WARM"])
    deadline = time.monotonic() + 60
    while not os.path.exists(env["NNSTUDY_WARM"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(folder):
        assert time.monotonic() < deadline, "the warm process outlived its parent"
        time.sleep(0.05)


def test_stop_ends_the_warm_process(tmp_path):
    code = ("import os, sys; from pathlib import Path; from nnstudy import warm; path = warm.start(Path(sys.argv[1]));"
            "warm.stop(); print(os.path.exists(os.path.dirname(path)), os.environ.get(warm.ENV))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "warm.log")], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["False", "None"], done.stderr


def test_the_folder_of_a_killed_warm_process_is_removed(warm):
    env, _, log = warm
    stale = Path(tempfile.mkdtemp(prefix="nnstudy-warm-"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale / "socket"))  # closed unlistened: as a SIGKILLed warm process leaves it
    os.utime(stale / "socket", (time.time() - 120,) * 2)
    os.utime(env["NNSTUDY_WARM"], (time.time() - 120,) * 2)
    warm_module.remove_stale()
    assert not stale.exists()
    assert os.path.exists(env["NNSTUDY_WARM"])  # a live one stays, and serves on
    listed = subprocess.run([*NNSTUDY, "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "mnist" in listed.stdout
    assert "Traceback" not in log.read_text() and "nnstudy list (pid" in log.read_text()
