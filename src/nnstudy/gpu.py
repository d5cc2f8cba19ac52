"""One GPU per training job on a multi-GPU workstation.

Snakemake's `--resources gpu=K` bounds how many training jobs run at once but does not say
which GPU each gets. Each job claims the lowest free slot through an exclusive lock file
(released by the kernel when the process ends, even on SIGKILL) and restricts itself to that
GPU with CUDA_VISIBLE_DEVICES before CUDA starts. Under SLURM the allocation already sets
CUDA_VISIBLE_DEVICES per job, so nothing is claimed there.
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


def claim(poll_s: float = 0.5):
    """Pin this process to one free GPU; returns the open lock file (keep it) or None when
    there is nothing to choose (no GPU, one GPU, or a SLURM allocation)."""
    gpus = visible_gpus()
    if len(gpus) <= 1 or os.environ.get("SLURM_JOB_ID"):
        return None
    locks = lock_dir()
    locks.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        for gpu in gpus:
            handle = open(locks / f"gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return handle
        if not said:
            print(f"nnstudy: all {len(gpus)} GPUs are busy; waiting for one (use --resources gpu={len(gpus)})",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(poll_s)
