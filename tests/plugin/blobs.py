"""A user's plugin for the tests: a small dataset, a small model and a per-run analysis
registered by name."""
import pandas as pd
import pyarrow as pa
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


NORMS = pa.schema([("layer", pa.string()), ("norm", pa.float64())])
MEANS = pa.schema([("experiment", pa.string()), ("variant", pa.string()), ("layer", pa.string()), ("mean", pa.float64())])


def _means(rows: pd.DataFrame, level: float) -> dict:
    means = rows.groupby(["experiment", "variant", "layer"], as_index=False)["norm"].mean()
    return {"means": means.rename(columns={"norm": "mean"})}


def _draw_means(ax, tables: dict, variant: str):
    ax.bar(tables["means"]["layer"], tables["means"]["mean"])
    ax.set_title(variant)
    return ax


@nnstudy.register_analysis("weight_norms", schema=NORMS, tables={"means": MEANS}, summarise=_means, draw=_draw_means,
                           report=lambda tables: {"mean weight norm per layer": tables["means"]})
def weight_norms(run):
    """The L2 norm of each parameter tensor of the run's model."""
    return pd.DataFrame([(name, float(p.norm())) for name, p in run.model.named_parameters()], columns=["layer", "norm"])
