"""A user's plugin for the tests: a small dataset and a small model registered by name."""
import torch
from torch import nn

import nnstudy


def _draw(centers: torch.Tensor, n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(centers)
    return centers[y] + torch.randn(n, centers.shape[1], generator=gen), y


@nnstudy.register_dataset("blobs")
def blobs(n: int = 600, dim: int = 8, classes: int = 3):
    """Gaussian blobs around fixed random centres (float features)."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 2
    return (*_draw(centers, n, 1), *_draw(centers, n // 2, 2))


class Tower(nn.Module):
    def __init__(self, dim: int, width: int, classes: int):
        super().__init__()
        self.head = nn.Linear(width, classes)  # declared first, called last: forward order matters
        self.body = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(x))


@nnstudy.register_model("tower")
def tower(input_shape, classes, width: int = 32):
    """Two hidden layers of `width` units and a linear head."""
    return Tower(input_shape[0], width, classes)
