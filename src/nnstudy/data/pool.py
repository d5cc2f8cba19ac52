"""A dataset's two pools (train, test) as tensors: decoded once into a uint8 cache, subset and
split by seed. Which dataset gives the tensors is a registered entry (nnstudy.data.sources)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import DataError
from ..schemas import atomic

SUBSET_SEED = 0  # subsets (train_size, test_size) are the same pool for every seed of a study


def cache_dir() -> Path:
    return Path(os.environ.get("NNSTUDY_CACHE", Path.home() / ".cache" / "nnstudy"))


@dataclass
class Pool:
    """All samples of one split of a dataset: x uint8 (N, C, H, W) or float (N, D), y int64 (N,)."""
    x: torch.Tensor
    y: torch.Tensor


def cached(name: str, root: str | Path, train: bool,
           decode: Callable[[Path, bool], tuple[np.ndarray, np.ndarray]]) -> Pool:
    """A decoded split through the per-dataset uint8 cache (decoded on first use only)."""
    root = Path(root)
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    path = cache_dir() / f"{name}-{'train' if train else 'test'}-{key}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=True)
    else:
        x, y = decode(root, train)
        blob = {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)}
        with atomic(path) as tmp:
            torch.save(blob, tmp)
    return Pool(blob["x"], blob["y"])


def stratified_take(y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of a stratified random subset of size n (class counts differ by at most one)."""
    classes = int(y.max()) + 1
    per_class = [torch.nonzero(y == c).flatten() for c in range(classes)]
    per_class = [ix[torch.randperm(len(ix), generator=gen)] for ix in per_class]
    counts = [n // classes + (c < n % classes) for c in range(classes)]
    short = [c for c in range(classes) if counts[c] > len(per_class[c])]
    if n > len(y) or short:
        raise DataError(f"cannot take a stratified subset of {n} from {len(y)} samples")
    return torch.sort(torch.cat([ix[:k] for ix, k in zip(per_class, counts)])).values


def split(y: torch.Tensor, how: str, val_fraction: float, swap: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices, stratified, drawn by the seed.

    holdout: floor(val_fraction * n_c) of each class validate; halves: each class's first
    half (A) trains and the second (B) validates, or the reverse with swap.
    """
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in range(int(y.max()) + 1):
        ix = torch.nonzero(y == c).flatten()
        ix = ix[torch.randperm(len(ix), generator=gen)]
        cut = int(val_fraction * len(ix)) if how == "holdout" else len(ix) // 2
        a, b = (ix[cut:], ix[:cut]) if how == "holdout" else (ix[:cut], ix[cut:])
        if how == "halves" and swap:
            a, b = b, a
        train.append(a)
        val.append(b)
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
