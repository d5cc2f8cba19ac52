"""The one way back from disk: a finished run's spec, data (same seed, same split) and model;
the check that a finished run's files are still what its run.json recorded; and the release of
its checkpoints once the workflow has recorded it. Only load_run imports torch."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .spec import SpecError, resolve

if TYPE_CHECKING:
    import torch

    from .training.build import Built

CHECKPOINTS = ("checkpoint.pt", "checkpoint.prev.pt")  # a run's latest two (training.checkpoint)
WEIGHTS = {"final": "model.pt", "best": "best.pt"}  # which weights of a finished run -> their file


def load_run(run_dir: str | Path, weights: str = "final", device: str | torch.device | None = None) -> Built:
    """Load a finished run: `.spec` (resolved), `.data` (the run's split of its dataset),
    `.model` (in eval mode, with the final weights, model.pt, or those of the epoch of best
    validation accuracy, best.pt), `.loss_fn`, `.predict`. Plugins the run used are loaded and must still have
    the content it was trained with."""
    import torch  # here: planning a study (heal, damaged) needs no torch

    from .training.build import build, pick_device
    from .training.transfer import verify

    run_dir = Path(run_dir)
    if weights not in WEIGHTS:
        raise ValueError(f"weights: {weights!r} is not allowed; allowed values: final, best")
    manifest_path = run_dir / "run.json"
    if not manifest_path.exists():
        raise SpecError(f"{run_dir}: no run.json (not a finished run)")
    manifest = json.loads(manifest_path.read_text())
    dev = device if isinstance(device, torch.device) else pick_device(device)
    loaded = build(resolve(manifest["spec"]), dev, with_transfer=False)
    path = run_dir / WEIGHTS[weights]
    if path.name not in manifest.get("files", {path.name: None}):
        raise SpecError(f"{path}: not a file of this run (run.json lists {', '.join(manifest['files'])})"
                        + (": it had no validation split" if weights == "best" else ""))
    if not path.exists():
        raise SpecError(f"{path}: missing" + (" (the run had no validation split)" if weights == "best" else ""))
    verify(path, "load_run")
    loaded.model.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    loaded.model.eval()
    loaded.dir = run_dir
    return loaded


def damaged(run_dir: str | Path) -> list[str]:
    """The files of a finished run that are missing or differ from what its run.json recorded:
    Parquet files by SHA-256, weights by size (hashing every weights file at each plan would
    be slow; their content is checked when they are read: transfer, load_run)."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "run.json").read_text())
    bad = []
    for name, sha in manifest.get("files", {}).items():
        path = run_dir / name
        if not path.exists() or path.stat().st_size != manifest.get("bytes", {}).get(name, path.stat().st_size):
            bad.append(name)
        elif name.endswith(".parquet") and hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            bad.append(name)
    return bad


def heal(run_dirs) -> int:
    """Mark every finished run with a damaged file as not done (its run.json and the damaged
    files are removed, with a line on stderr), so the workflow trains it again. Returns how many."""
    healed = 0
    for run_dir in map(Path, run_dirs):
        try:
            bad = damaged(run_dir) if (run_dir / "run.json").exists() else []
        except (ValueError, OSError):  # run.json itself unreadable
            bad = ["run.json"]
        if bad:
            for name in ["run.json", *bad]:
                (run_dir / name).unlink(missing_ok=True)
            print(f"nnstudy: {run_dir}: {', '.join(bad)} damaged or missing; the run will be trained again",
                  file=sys.stderr)
            healed += 1
    return healed


def reopen(jobs: dict) -> int:
    """Remove the file of every finished training job ({job file: its run directories}) one of
    whose runs is not finished (deleted, or damaged and healed), so that the workflow runs the
    job again; its finished runs return at once. Returns how many."""
    reopened = 0
    for job, run_dirs in jobs.items():
        if Path(job).exists() and not all((Path(d) / "run.json").exists() for d in run_dirs):
            Path(job).unlink()
            reopened += 1
    return reopened


def release(run_dir: str | Path) -> None:
    """Drop a finished run's checkpoints: called once the workflow has recorded it as done."""
    if (Path(run_dir) / "run.json").exists():
        for name in CHECKPOINTS:
            (Path(run_dir) / name).unlink(missing_ok=True)
