"""The one way back from disk: a finished run's spec, data (same seed, same split) and model."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .spec import SpecError, resolve
from .training.build import Built, build, pick_device
from .training.transfer import verify


def load_run(run_dir: str | Path, weights: str = "final", device: str | torch.device | None = None) -> Built:
    """Load a finished run: `.spec` (resolved), `.data` (the run's split of its dataset),
    `.model` (in eval mode, with the final weights, model.pt, or those of the epoch of best
    validation accuracy, best.pt), `.loss_fn`, `.predict`. Plugins the run used are loaded and must still have
    the content it was trained with."""
    run_dir = Path(run_dir)
    files = {"final": "model.pt", "best": "best.pt"}
    if weights not in files:
        raise ValueError(f"weights: {weights!r} is not allowed; allowed values: final, best")
    manifest_path = run_dir / "run.json"
    if not manifest_path.exists():
        raise SpecError(f"{run_dir}: no run.json (not a finished run)")
    manifest = json.loads(manifest_path.read_text())
    dev = device if isinstance(device, torch.device) else pick_device(device)
    loaded = build(resolve(manifest["spec"]), dev, with_transfer=False)
    path = run_dir / files[weights]
    if path.name not in manifest.get("files", {path.name: None}):
        raise SpecError(f"{path}: not a file of this run (run.json lists {', '.join(manifest['files'])})"
                        + (": it had no validation split" if weights == "best" else ""))
    if not path.exists():
        raise SpecError(f"{path}: missing" + (" (the run had no validation split)" if weights == "best" else ""))
    verify(path, "load_run")
    loaded.model.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    loaded.model.eval()
    return loaded
