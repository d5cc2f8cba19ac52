"""One GPU per training job on a multi-GPU workstation, or K jobs per GPU.

Snakemake's `--resources gpu=N` bounds how many training jobs run at once but does not say
which GPU each gets. Each job claims a free slot through an exclusive lock file (released by
the kernel when the process ends, even on SIGKILL) and restricts itself to that slot's GPU with
CUDA_VISIBLE_DEVICES before CUDA starts. A GPU has NNSTUDY_JOBS_PER_GPU slots (default 1): small
runs keep a large GPU fuller side by side (`--resources gpu=K*devices`); slots fill every GPU's
first one before any second one. Under SLURM the allocation already sets CUDA_VISIBLE_DEVICES
per job, so nothing is claimed there.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() not in ("", "-1")]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def lock_dir() -> Path:
    return Path(os.environ.get("NNSTUDY_LOCKS", Path(tempfile.gettempdir()) / f"nnstudy-gpu-{os.getuid()}"))


def jobs_per_gpu() -> int:
    value = os.environ.get("NNSTUDY_JOBS_PER_GPU", "1")
    if not value.isdigit() or int(value) < 1:
        from .spec import SpecError

        raise SpecError(f"NNSTUDY_JOBS_PER_GPU: {value!r} is not allowed; a whole number, at least 1")
    return int(value)


def claim(poll_s: float = 0.5):
    """Pin this process to one free GPU; returns the open lock file (keep it) or None when
    there is nothing to choose (no GPU, one GPU, or a SLURM allocation)."""
    gpus = visible_gpus()
    if len(gpus) <= 1 or os.environ.get("SLURM_JOB_ID"):
        return None
    per_gpu = jobs_per_gpu()
    locks = lock_dir()
    locks.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        for slot, gpu in ((k, g) for k in range(per_gpu) for g in gpus):
            handle = open(locks / f"gpu{gpu}.{slot}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return handle
        if not said:
            print(f"nnstudy: all {len(gpus)} GPUs are busy ({per_gpu} job(s) each); waiting for one "
                  f"(use --resources gpu={len(gpus) * per_gpu})",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(poll_s)
