"""Transfer: start from another run's weights, re-initialise and freeze parameters by
name prefix. Works on any nn.Module: prefixes are parameter-name prefixes (`features`,
`stages.0`, `fc`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .. import models
from ..spec import SpecError


def matching(model: nn.Module, prefixes: list[str], key: str) -> set[str]:
    """Names of the parameters under any of `prefixes`; a prefix matching nothing is an error
    that lists the model's top-level prefixes."""
    names = [n for n, _ in model.named_parameters()]
    hit = set()
    for prefix in prefixes:
        found = {n for n in names if n == prefix or n.startswith(prefix + ".")}
        if not found:
            tops = sorted({n.split(".")[0] for n in names})
            raise SpecError(f"spec.transfer.{key}: {prefix!r} matches no parameter; top-level prefixes: "
                            f"{', '.join(tops)} (deeper ones such as {names[0].rsplit('.', 1)[0]} work too)")
        hit |= found
    return hit


def apply(model: nn.Module, t: dict, device: torch.device) -> set[str]:
    """Load the source weights (if any), re-initialise `reinit`, freeze `freeze`. Returns the
    names of the frozen parameters."""
    if t["source"] is not None:
        src = Path(t["source"])
        if not src.is_file():
            raise SpecError(f"spec.transfer.source: no weights file at {src}")
        verify(src, "spec.transfer.source")
        state = torch.load(src, map_location=device, weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SpecError(f"spec.transfer.source: {src} does not fit this model ({first})") from None
    reinit = matching(model, t["reinit"], "reinit")
    if reinit:
        models.reinitialise(model, tuple(sorted({n.rsplit(".", 1)[0] for n in reinit})))
    frozen = matching(model, t["freeze"], "freeze")
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def verify(weights: Path, key: str) -> None:
    """Check a run's weights file against the SHA-256 its run.json recorded (where it has one)."""
    manifest = weights.parent / "run.json"
    recorded = json.loads(manifest.read_text()).get("files", {}).get(weights.name) if manifest.exists() else None
    if recorded and hashlib.sha256(weights.read_bytes()).hexdigest() != recorded:
        raise SpecError(f"{key}: {weights} does not match the checksum in {manifest} (damaged); delete "
                        f"{weights.parent} to train that run again")


def frozen_modules(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """Modules all of whose own parameters are frozen: kept in eval mode while training, so a
    frozen batch-norm layer keeps its running statistics too."""
    return [m for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))
            and all(f"{name}.{n}" in frozen for n, _ in m.named_parameters(recurse=False))]
