"""What produced a run: the git commit, library versions, the machine, the time."""
from __future__ import annotations

import functools
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch


@functools.cache  # once per process: its code does not change while it runs (two git processes: ~17 ms a run)
def git() -> dict:
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10)
            if commit.returncode == 0:
                dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10).stdout.strip() != ""
                return {"commit": commit.stdout.strip(), "dirty": dirty}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"commit": None, "dirty": None}


@functools.cache  # ~8 ms a run
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("torchvision", "nnstudy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine(dev: torch.device) -> dict:
    import os

    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
