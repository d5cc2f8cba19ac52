"""nnstudy's own datasets, registered by name. A dataset factory takes its parameters and
returns (train_x, train_y, test_x, test_y): uint8 images (N, C, H, W) or float features (N, D),
int64 labels. torch is imported only where data is built (declaring the datasets must not load it:
planning a study needs only the declarations), torchvision only where a torchvision dataset is
decoded (once per dataset and cache), because importing it costs ~1.5 s in every training process."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import DataError
from ..registry import register_dataset

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
ROOT = {"description": "Data root (torchvision's layout).", "type": "string", "default": "data"}
DOWNLOAD = {"description": "Let torchvision download missing data (needs a network).", "type": "boolean",
            "default": False}


def _decode_torchvision(cls_name: str, download: bool, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    try:
        ds = getattr(tvd, cls_name)(root=str(root), train=train, download=download)
    except RuntimeError as e:
        raise DataError(
            f"{cls_name} not found under data root {root.resolve()} ({e}). "
            "Set data.root to the folder that holds it, or data.download: true to fetch it."
        ) from None
    x = np.asarray(ds.data, dtype=np.uint8)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    return x, np.asarray(ds.targets, dtype=np.int64)


def _torchvision(name: str, cls_name: str, doc: str) -> None:
    def factory(root="data", download=False):
        from .pool import cached  # torch: imported where data is built, not where a study is planned

        decode = partial(_decode_torchvision, cls_name, download)
        train, test = cached(name, root, True, decode), cached(name, root, False, decode)
        return train.x, train.y, test.x, test.y

    factory.__doc__ = doc
    register_dataset(name, {"root": ROOT, "download": DOWNLOAD})(factory)


_torchvision("mnist", "MNIST", "MNIST digits (28x28 grey, 60,000 + 10,000), torchvision's layout under root.")
_torchvision("fashion_mnist", "FashionMNIST", "Fashion-MNIST (28x28 grey, 60,000 + 10,000), torchvision's layout.")
_torchvision("cifar10", "CIFAR10", "CIFAR-10 (32x32 colour, 50,000 + 10,000), torchvision's layout under root.")
_torchvision("cifar100", "CIFAR100", "CIFAR-100 (32x32 colour, 100 classes), torchvision's layout under root.")


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _decode_imagefolder(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    folder = root / ("train" if train else "test")
    classes = _classes(folder)
    if not classes:
        raise DataError(f"no ImageFolder tree at {folder.resolve()} (expected {folder}/<class>/*.jpg|png). "
                        "Set data.root to a folder holding train/ and test/.")
    if not train and classes != _classes(root / "train"):
        raise DataError(f"{folder}: its class folders differ from {root / 'train'}'s; both need the same classes")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = [p for p in sorted((folder / cls).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"{folder / cls}: no images (.jpg, .jpeg, .png) in this class folder")
        for path in files:
            try:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert("RGB")))
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(f"{path}: not a readable image ({e})") from None
            labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{folder}: images differ in size {sorted(shapes)[:3]}; nnstudy needs one size")
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64)


@register_dataset("imagefolder", {"root": {**ROOT, "description": "A folder holding train/<class>/*.jpg|png "
                                            "and test/<class>/*.jpg|png."}})
def imagefolder(root="data"):
    """Images in ImageFolder layout (train/ and test/, one folder per class, sorted names = labels)."""
    from .pool import cached

    train, test = cached("imagefolder", root, True, _decode_imagefolder), cached("imagefolder", root, False,
                                                                                 _decode_imagefolder)
    return train.x, train.y, test.x, test.y


def _xor_points(samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    idx = torch.arange(samples) % 4
    gen = torch.Generator().manual_seed(seed)
    return corners[idx] + noise * torch.randn(samples, 2, generator=gen), labels[idx]


@register_dataset("xor", {
    "samples": {"description": "Samples per split (4 = the four corners, more = noisy copies).",
                "type": "integer", "minimum": 4, "default": 4},
    "noise": {"description": "Standard deviation of Gaussian noise around the corners.",
              "type": "number", "minimum": 0, "default": 0.0},
})
def xor(samples=4, noise=0.0):
    """The XOR problem: the four corners of the unit square (label = x1 xor x2), repeated to
    `samples` points with seeded Gaussian noise (train and test draw different noise)."""
    return (*_xor_points(samples, noise, seed=0), *_xor_points(samples, noise, seed=1))
