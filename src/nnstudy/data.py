"""Datasets as in-memory tensors: decoded once into a uint8 cache, split by the seed, batched by indexing.

torchvision is imported only where a torchvision dataset is decoded (once per dataset and
cache), because importing it costs ~1.5 s in every training process.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .schemas import atomic

TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SUBSET_SEED = 0  # subsets (train_size, test_size) are the same pool for every seed of a study


class DataError(RuntimeError):
    """Data missing or malformed; the message names where it looked and what to change."""


def cache_dir() -> Path:
    return Path(os.environ.get("NNSTUDY_CACHE", Path.home() / ".cache" / "nnstudy"))


@dataclass
class Pool:
    """All images of one split of a dataset: x uint8 (N, C, H, W) or float (N, D), y int64 (N,)."""
    x: torch.Tensor
    y: torch.Tensor
    classes: int


def _decode_torchvision(name: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[name])
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as e:
        raise DataError(
            f"{TORCHVISION[name]} not found under data root {root.resolve()} ({e}). "
            "Set data.root to the folder that holds it, or data.download: true to fetch it."
        ) from None
    x = np.asarray(ds.data, dtype=np.uint8)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    return x, np.asarray(ds.targets, dtype=np.int64)


def _decode_imagefolder(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    folder = root / ("train" if train else "test")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataError(
            f"no ImageFolder tree at {folder.resolve()} (expected {folder}/<class>/*.jpg|png). "
            "Set data.root to a folder holding train/ and test/."
        )
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert("RGB")))
                labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{folder}: images differ in size {sorted(shapes)[:3]}; nnstudy needs one size")
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64)


def load_pool(name: str, root: str | Path, train: bool, download: bool = False) -> Pool:
    """Decoded images of a dataset split, through the per-dataset uint8 cache."""
    root = Path(root)
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    path = cache_dir() / f"{name}-{'train' if train else 'test'}-{key}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=True)
    else:
        if name == "imagefolder":
            x, y = _decode_imagefolder(root, train)
        else:
            x, y = _decode_torchvision(name, root, train, download)
        blob = {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)}
        with atomic(path) as tmp:
            torch.save(blob, tmp)
    return Pool(blob["x"], blob["y"], int(blob["y"].max()) + 1)


def xor_pool(samples: int, noise: float, seed: int) -> Pool:
    """The XOR problem: the four corners of the unit square (label = x1 xor x2), repeated to
    `samples` points with Gaussian noise of std `noise` (seeded, so fixed per split)."""
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    idx = torch.arange(samples) % 4
    gen = torch.Generator().manual_seed(seed)
    x = corners[idx] + noise * torch.randn(samples, 2, generator=gen)
    return Pool(x, labels[idx], 2)


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


@dataclass
class Data:
    """A run's data on its device: pools, split indices, normalisation and augmentation."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    classes: int
    mean: torch.Tensor | None  # per-channel, from the training split; None for non-image data
    std: torch.Tensor | None
    crop: int
    flip: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def prepare(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """uint8 batch -> normalised float batch; with `gen`, apply the training augmentation."""
        if self.mean is None:
            return x
        x = (x.float() / 255 - self.mean) / self.std
        if gen is not None and self.flip:
            mask = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        if gen is not None and self.crop:
            x = random_crop(x, self.crop, gen)
        return x

    def batches(self, which: str, batch_size: int, gen: torch.Generator | None = None):
        """Yield (x, y) batches of the train/val/test split; shuffled and augmented with `gen`."""
        if which == "test":
            xs, ys, idx = self.test_x, self.test_y, torch.arange(len(self.test_y))
        else:
            xs, ys, idx = self.train_x, self.train_y, self.train_idx if which == "train" else self.val_idx
        if gen is not None:
            idx = idx[torch.randperm(len(idx), generator=gen)]
        idx = idx.to(xs.device)
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            yield self.prepare(xs[b], gen), ys[b]


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch back to its size (one gather, no loop)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=gen).to(x.device)
    rows = (torch.arange(h, device=x.device) + dy)[:, None, :, None]
    cols = (torch.arange(w, device=x.device) + dx)[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def build(data_spec: dict, seed: int, device: torch.device) -> Data:
    """The run's Data from the resolved `spec['data']` and the run's seed."""
    name = data_spec["name"]
    if name == "xor":
        train_pool = xor_pool(data_spec["xor_samples"], data_spec["xor_noise"], seed=0)
        test_pool = xor_pool(data_spec["xor_samples"], data_spec["xor_noise"], seed=1)
    else:
        train_pool = load_pool(name, data_spec["root"], True, data_spec["download"])
        test_pool = load_pool(name, data_spec["root"], False, data_spec["download"])
    subset_gen = torch.Generator().manual_seed(SUBSET_SEED)
    for pool, size in ((train_pool, data_spec["train_size"]), (test_pool, data_spec["test_size"])):
        if size is not None and size < len(pool.y):
            keep = stratified_take(pool.y, size, subset_gen)
            pool.x, pool.y = pool.x[keep], pool.y[keep]
    train_idx, val_idx = split(train_pool.y, data_spec["split"], data_spec["val_fraction"], data_spec["swap"], seed)
    mean = std = None
    if train_pool.x.dtype == torch.uint8:
        # Per-channel statistics of the training split only.
        xs = train_pool.x[train_idx].float() / 255
        dims = [0] + list(range(2, xs.ndim))
        mean = xs.mean(dims).float()
        std = xs.std(dims).float()
        view = (1, -1) + (1,) * (xs.ndim - 2)
        mean, std = mean.view(view).to(device), std.view(view).to(device)
    return Data(
        train_x=train_pool.x.to(device), train_y=train_pool.y.to(device),
        test_x=test_pool.x.to(device), test_y=test_pool.y.to(device),
        train_idx=train_idx, val_idx=val_idx, classes=max(train_pool.classes, test_pool.classes),
        mean=mean, std=std, crop=data_spec["crop"], flip=data_spec["flip"],
    )
