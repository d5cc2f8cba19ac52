"""Every Parquet table nnstudy writes, declared once, and the atomic writer/reader that enforce them."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

f64, i32, i64, s, b = pa.float64(), pa.int32(), pa.int64(), pa.string(), pa.bool_()

# One row per (epoch, split). Train rows hold eval-mode metrics measured after the epoch, plus
# the running average during the epoch (dropout / batch norm active) in running_*; running_* is
# NaN on val/test rows. loss/accuracy are NaN on epochs that were not evaluated (eval_every).
METRICS = pa.schema([
    ("run", s), ("epoch", i32), ("split", s),
    ("loss", f64), ("accuracy", f64), ("running_loss", f64), ("running_accuracy", f64),
    ("lr", f64), ("samples_seen", i64),
    ("epoch_time", f64),  # seconds spent in this epoch (training + evaluation)
    ("wall_time", f64),   # seconds since the run started, summed over resumed segments
    ("diverged", b),
])

# One row per (epoch, parameter tensor) of the trainable parameters.
GRADIENTS = pa.schema([
    ("run", s), ("epoch", i32),
    ("layer", s),         # parameter name, e.g. features.0.weight
    ("layer_index", i32), # position of the owning module in forward order (0 = first)
    ("module", s),        # Conv2d, Linear, BatchNorm1d, ...
    ("kind", s),          # weight | bias
    ("numel", i64), ("steps", i64),
    ("grad_mean", f64), ("grad_std", f64),  # over all elements of all steps of the epoch
    ("grad_abs_mean", f64),
    ("grad_norm", f64),   # L2 norm of the gradient, mean over steps
    ("weight_norm", f64), # L2 norm of the weights at the end of the epoch
])

# Columns that measure the clock, not the computation: excluded when runs are compared.
WALL_CLOCK = ("epoch_time", "wall_time")

SPLITS = ("train", "val", "test")

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_path(path: Path):
    """A temporary sibling of `path` (same filesystem, so a rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    return Path(tmp)


def write(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    """Write df as Parquet with exactly `schema`'s columns; atomic (tmp + rename)."""
    path = Path(path)
    missing, extra = set(schema.names) - set(df.columns), set(df.columns) - set(schema.names)
    if missing or extra:
        raise ValueError(f"{path}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    tmp = atomic_path(path)
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """Read a Parquet file written with `schema`, checking that it still has that schema."""
    table = pq.read_table(path)
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{path}: schema differs from the declared one:\n{table.schema}\nexpected\n{schema}")
    return table.to_pandas()


def write_text(text: str, path: Path) -> None:
    """Atomically write a text file."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
