"""GPU slot assignment: K concurrent training jobs get K distinct devices."""
import os
import subprocess
import sys
import time

CLAIM = """
import os, sys, time
from nnstudy import gpu
handle = gpu.claim(poll_s=0.05)
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""


def _start(tmp_path, env):
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path / "release")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_k_concurrent_jobs_get_k_distinct_gpus_and_the_next_waits(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3", "NNSTUDY_LOCKS": str(tmp_path / "locks")}
    env.pop("SLURM_JOB_ID", None)
    jobs = [_start(tmp_path, env) for _ in range(4)]
    devices = [p.stdout.readline().strip() for p in jobs]
    assert sorted(devices) == ["0", "1", "2", "3"]
    extra = _start(tmp_path, env)  # a fifth job waits for a free GPU
    time.sleep(1.0)
    assert extra.poll() is None
    (tmp_path / "release").touch()
    assert extra.stdout.readline().strip() in {"0", "1", "2", "3"}
    for p in jobs + [extra]:
        p.wait(timeout=30)
    assert "all 4 GPUs are busy" in extra.stderr.read()


def test_two_jobs_per_gpu_spread_over_the_gpus_first(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "NNSTUDY_LOCKS": str(tmp_path / "locks"),
           "NNSTUDY_JOBS_PER_GPU": "2"}
    env.pop("SLURM_JOB_ID", None)
    jobs = [_start(tmp_path, env) for _ in range(2)]
    assert sorted(p.stdout.readline().strip() for p in jobs) == ["0", "1"]  # one on each GPU first
    jobs += [_start(tmp_path, env) for _ in range(2)]
    assert sorted(p.stdout.readline().strip() for p in jobs[2:]) == ["0", "1"]
    extra = _start(tmp_path, env)
    time.sleep(1.0)
    assert extra.poll() is None  # 2 GPUs x 2 slots taken
    (tmp_path / "release").touch()
    for p in jobs + [extra]:
        p.wait(timeout=30)
    assert "use --resources gpu=4" in extra.stderr.read()


def test_no_claim_without_a_choice(monkeypatch):
    from nnstudy import gpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.claim() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # the SLURM allocation already chose
    assert gpu.claim() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
