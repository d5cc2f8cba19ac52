"""A run's data on its device: the registered dataset's tensors, subset, split by the seed,
normalised and augmented per batch, batched by indexing (no DataLoader)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import torch

from .. import registry
from .pool import SUBSET_SEED, DataError, Pool, split, stratified_take

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MIN_STD = 1e-3  # a constant channel is scaled by this instead of dividing by zero
# Images are normalised once, kept as float, when both pools take at most this much memory (MNIST:
# 220 MB, CIFAR-10: 740 MB): 4 fewer operations per batch; larger datasets stay uint8.
RESIDENT_FLOAT_BYTES = 2 * 2**30


@dataclass
class Data:
    """Pools on the device, split indices, normalisation, resizing and augmentation."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    classes: int
    mean: torch.Tensor | None  # per channel, (1, C, 1, 1); None for float features (no scaling)
    std: torch.Tensor | None
    resize: tuple[int, int] | None
    crop: int
    flip: bool
    images: bool  # image pools (uint8, or float once normalised), not float features

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = tuple(self.train_x.shape[1:])
        return (shape[0], *self.resize) if self.resize else shape

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, in [0, 1] or normalised (elementwise: a whole pool at once gives
        the same values as batch by batch). In place on the float copy: the same operations, no
        allocation per operation (a whole pool's are page faults)."""
        x = x.float().div_(255)
        return x.sub_(self.mean).div_(self.std) if self.mean is not None else x

    def prepare(self, x: torch.Tensor, flip: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        """A batch of images, normalised (if still uint8) and resized; flipped where `flip` (bool
        per sample) and cropped by `shift` ((2, n, 1) offsets), as `augmentation` draws them.
        Float features pass unchanged."""
        if x.dtype == torch.uint8:
            x = self.normalise(x)
        elif not self.images:
            return x
        if self.resize:
            x = torch.nn.functional.interpolate(x, size=self.resize, mode="bilinear", align_corners=False,
                                                antialias=True)
        if flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if shift is not None:
            x = crop_at(x, self.crop, shift)
        return x

    def augmentation(self, n: int, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor | None, ...]:
        """An epoch's flips (bool, n) and crop offsets (2, n, 1), drawn from `gen` batch by batch
        in the order the batches use them, before the first step: the step loop then copies
        nothing from the host (no sync per step), with the numbers of per-batch draws."""
        flips, shifts = [], []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            if self.flip:
                flips.append(torch.rand(m, generator=gen) < 0.5)
            if self.crop:
                shifts.append(torch.randint(0, 2 * self.crop + 1, (2, m, 1), generator=gen))
        return (torch.cat(flips) if flips else None), (torch.cat(shifts, dim=1) if shifts else None)

    def batches(self, which: str, batch_size: int, gen: torch.Generator | None = None):
        """Yield (x, y) batches of the train/val/test split; shuffled and augmented with `gen`."""
        if which == "test":
            xs, ys, idx = self.test_x, self.test_y, torch.arange(len(self.test_y))
        else:
            xs, ys, idx = self.train_x, self.train_y, self.train_idx if which == "train" else self.val_idx
        flip = shift = None
        if gen is not None:
            idx = idx[torch.randperm(len(idx), generator=gen)]
            if self.images:
                flip, shift = (to_device(t, xs.device) for t in self.augmentation(len(idx), batch_size, gen))
        idx = to_device(idx, xs.device)
        # index_select, not xs[b]: the same rows, 2.5x (float) to 15x (uint8) faster on the CPU
        for start in range(0, len(idx), batch_size):
            end = start + batch_size
            b = idx[start:end]
            yield self.prepare(xs.index_select(0, b), None if flip is None else flip[start:end],
                               None if shift is None else shift[:, start:end]), ys.index_select(0, b)


def to_device(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A host tensor on `device`; to a GPU through pinned memory without waiting (a plain copy
    from pageable memory synchronises the host with the GPU)."""
    if t is None or t.device == device or device.type != "cuda":
        return t if t is None else t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def crop_at(x: torch.Tensor, pad: int, shift: torch.Tensor) -> torch.Tensor:
    """Per-sample crop of the zero-padded batch at offsets `shift` (2, n, 1), back to its size:
    one gather of each sample's pixels from its flattened padded image (no loop; 5x faster on
    the CPU than indexing by four broadcast index tensors, the same values)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    width = w + 2 * pad
    dy, dx = shift
    rows = torch.arange(h, device=x.device) + dy  # (n, h)
    cols = torch.arange(w, device=x.device) + dx  # (n, w)
    pixels = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, pixels).view(n, c, h, w)


def _checked(entry: registry.Entry, out) -> tuple[Pool, Pool]:
    """The factory's tensors as two pools, or a DataError saying what is wrong with them."""
    who = f"dataset {entry.name!r}" + (f" of plugin {entry.origin.rsplit('@', 1)[0]}" if entry.origin else "")
    if not (isinstance(out, (tuple, list)) and len(out) == 4 and all(isinstance(t, torch.Tensor) for t in out)):
        raise DataError(f"spec.data: {who} must return (train_x, train_y, test_x, test_y) tensors")
    pools = (Pool(out[0], out[1]), Pool(out[2], out[3]))
    for which, pool in zip(("train", "test"), pools):
        if pool.x.dtype != torch.uint8 and not pool.x.is_floating_point():
            raise DataError(f"spec.data: {who}: {which}_x is {pool.x.dtype}; uint8 images or float features")
        if pool.x.dtype == torch.uint8 and pool.x.ndim != 4:
            raise DataError(f"spec.data: {who}: uint8 {which}_x must be images (N, C, H, W), got {tuple(pool.x.shape)}")
        if pool.y.dtype != torch.int64 or pool.y.ndim != 1 or len(pool.y) != len(pool.x) or len(pool.y) == 0:
            raise DataError(f"spec.data: {who}: {which}_y must be int64 labels, one per sample (got "
                            f"{pool.y.dtype} {tuple(pool.y.shape)} for {len(pool.x)} samples)")
        if int(pool.y.min()) < 0:
            raise DataError(f"spec.data: {who}: {which}_y has negative labels")
    if pools[0].x.shape[1:] != pools[1].x.shape[1:]:
        raise DataError(f"spec.data: {who}: train samples are {tuple(pools[0].x.shape[1:])}, test samples "
                        f"{tuple(pools[1].x.shape[1:])}; they must have one shape")
    return pools


def pools(data_spec: dict) -> tuple[Pool, Pool]:
    """The registered dataset's (train, test) pools, subset to train_size / test_size."""
    entry = registry.DATASETS.get(data_spec["name"], "spec.data.name")
    params = {k: data_spec[k] for k in entry.params}
    try:
        out = entry.factory(**params)
    except DataError:
        raise
    except Exception as e:
        if entry.origin is None and isinstance(e, OSError):
            raise DataError(f"spec.data: {entry.name}: {e}") from None
        if entry.origin is None:
            raise
        raise DataError(f"spec.data: dataset {entry.name!r} of plugin {entry.origin.rsplit('@', 1)[0]} "
                        f"failed: {type(e).__name__}: {e}") from None
    train, test = _checked(entry, out)
    gen = torch.Generator().manual_seed(SUBSET_SEED)
    for pool, key in ((train, "train_size"), (test, "test_size")):
        size = data_spec[key]
        if size is not None and size > len(pool.y):
            raise DataError(f"spec.data.{key}: {size} is more than the {len(pool.y)} samples of {data_spec['name']}")
        if size is not None and size < len(pool.y):
            keep = stratified_take(pool.y, size, gen)
            pool.x, pool.y = pool.x[keep], pool.y[keep]
    return train, test


def _normalisation(data_spec: dict, x: torch.Tensor, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mean, std) shaped (1, C, 1, 1) for uint8 images, or (None, None) (features; normalize none)."""
    how = data_spec["normalize"]
    if x.dtype != torch.uint8 or how == "none":
        return None, None
    channels = x.shape[1]
    if how == "train":
        xs = x.float().div_(255)
        mean, std = xs.mean((0, 2, 3)), xs.std((0, 2, 3))
        flat = (std < MIN_STD).nonzero().flatten().tolist()
        if flat:
            print(f"nnstudy: data: channel(s) {flat} of {data_spec['name']} are constant in the training split; "
                  f"they are scaled by {MIN_STD} instead of their std", file=sys.stderr)
        std = std.clamp_min(MIN_STD)
    else:
        mean, std = (torch.tensor(v) for v in (IMAGENET if how == "imagenet" else (how["mean"], how["std"])))
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"spec.data.normalize: {len(mean)} means and {len(std)} stds for {channels}-channel images")
    return mean.float().view(1, -1, 1, 1).to(device), std.float().view(1, -1, 1, 1).to(device)


# (data spec, working directory, dataset factory, seed, device) -> (mean, std), for the life of a
# process (a training job): its variants share their seeds' splits, and the statistics of each took
# ~40 ms of a CIFAR-10 demo run's start.
_NORMALISATIONS: dict[tuple, tuple] = {}
# The same key -> the normalised (train, test) pools, while all kept take at most this much memory:
# normalising them took another ~23 ms of each demo run. Runs only read them (batches are copies).
KEPT_FLOAT_BYTES = 512 * 2**20
_NORMALISED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def build(data_spec: dict, seed: int, device: torch.device) -> Data:
    """The run's Data from the resolved `spec['data']` and the run's seed."""
    train, test = pools(data_spec)
    train_idx, val_idx = split(train.y, data_spec["split"], data_spec["val_fraction"], data_spec["swap"], seed)
    if len(train_idx) == 0:
        raise DataError(f"spec.data: the {data_spec['split']} split leaves no training samples")
    factory = registry.DATASETS.get(data_spec["name"], "spec.data.name").factory  # a plugin registered anew: its own
    key = (json.dumps(data_spec, sort_keys=True), os.getcwd(), factory, seed, str(device))  # (relative roots)
    if key not in _NORMALISATIONS:
        _NORMALISATIONS[key] = _normalisation(data_spec, train.x[train_idx], device)
    mean, std = _NORMALISATIONS[key]
    resize = data_spec["resize"]
    if resize is not None and train.x.dtype != torch.uint8:
        raise DataError("spec.data.resize: only images can be resized")
    data = Data(
        train_x=train.x.to(device), train_y=train.y.to(device), test_x=test.x.to(device), test_y=test.y.to(device),
        train_idx=train_idx, val_idx=val_idx, classes=int(max(train.y.max(), test.y.max())) + 1,
        mean=mean, std=std, resize=(resize, resize) if isinstance(resize, int) else tuple(resize) if resize else None,
        crop=data_spec["crop"], flip=data_spec["flip"], images=train.x.dtype == torch.uint8,
    )
    if data.images and 4 * (train.x.numel() + test.x.numel()) <= RESIDENT_FLOAT_BYTES:
        data.train_x, data.test_x = _normalised(key, data)
    return data


def _normalised(key: tuple, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Data's uint8 pools normalised, kept under `key` while KEPT_FLOAT_BYTES allows."""
    if key in _NORMALISED:
        return _NORMALISED[key]
    pools = data.normalise(data.train_x), data.normalise(data.test_x)
    if sum(4 * t.numel() for kept in [*_NORMALISED.values(), pools] for t in kept) <= KEPT_FLOAT_BYTES:
        _NORMALISED[key] = pools
    return pools


