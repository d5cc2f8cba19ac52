"""Every Parquet table nnstudy writes, declared once, and the atomic writer/reader that enforce them."""
from __future__ import annotations

import glob
import os
import random
import shutil
import signal
import tempfile
from contextlib import contextmanager
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
    ("stopped_epoch", i32),  # the epoch early stopping ended the run at; null if it ran its epochs
])

# One row per (epoch, parameter tensor) of the trainable parameters.
GRADIENTS = pa.schema([
    ("run", s), ("epoch", i32),
    ("layer", s),         # parameter name, e.g. features.0.weight
    ("layer_index", i32), # depth: position among conv/linear layers in forward order (0 = first);
                          # a batch-norm layer has the index of the layer it normalises
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
# Which way each compared metric improves (comparisons and the figures' rankings).
HIGHER_IS_BETTER = {"accuracy": True, "loss": False, "gap_accuracy": False, "gap_loss": False}

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_path(path: Path) -> Path:
    """A temporary sibling of `path` (same filesystem, so a rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    return Path(tmp)


@contextmanager
def atomic(path: Path):
    """Yield a temporary path to write; on success it replaces `path` in one rename, on any
    error it is removed, so a killed or failed writer never leaves a file that looks done."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        fault(tmp)
        tmp.replace(path)
        fault(path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale(outputs) -> None:
    """Remove the temporary files and folders that killed writers of these outputs left. Only for
    a process that is their one writer (a workflow job owns its outputs; a run folder is locked):
    elsewhere, e.g. the shared dataset cache, another process may be writing one right now."""
    for out in map(Path, outputs):
        for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


_faults = random.Random()


def fault(at: Path) -> None:
    """Fault injection for the fault-tolerance tests: with NNSTUDY_FAULTS="P" (every file) or
    "name:P,name:P,*:P" set, SIGKILL this process with probability P just before and just after
    a write's rename (every output and checkpoint goes through `atomic`), logging the moment to
    $NNSTUDY_FAULTS_LOG first."""
    spec = os.environ.get("NNSTUDY_FAULTS", "")
    if not spec:
        return
    rates = dict(part.rsplit(":", 1) if ":" in part else ("*", part) for part in spec.split(","))
    name = at.name if not at.name.endswith(".tmp") else at.name[1:].split(".tmp")[0].rsplit(".", 1)[0]
    p = float(rates.get(name, rates.get("*", 0)))
    if p and _faults.random() < p:
        with open(os.environ.get("NNSTUDY_FAULTS_LOG", os.devnull), "a") as log:
            log.write(f"{os.getpid()} {at}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def write(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    """Write df as Parquet with exactly `schema`'s columns; atomic (tmp + rename)."""
    path = Path(path)
    missing, extra = set(schema.names) - set(df.columns), set(df.columns) - set(schema.names)
    if missing or extra:
        raise ValueError(f"{path}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)  # the schema's columns, in its order
    with atomic(path) as tmp:
        pq.write_table(table, tmp)


def read(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """Read a Parquet file written with `schema`, checking that it still has that schema."""
    return read_table(path, schema).to_pandas()


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """`read` as an Arrow table (many small files are concatenated before one to_pandas)."""
    table = pq.read_table(path)
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{path}: schema differs from the declared one:\n{table.schema}\nexpected\n{schema}")
    return table


def write_text(text: str, path: Path) -> None:
    """Atomically write a text file."""
    with atomic(path) as tmp:
        tmp.write_text(text)


# Columns that label a run in a study's collected data, ahead of its grid keys (dotted names).
LABELS = pa.schema([("run", s), ("experiment", s), ("variant", s), ("seed", i64)])


def labelled(schema: pa.Schema, table: pd.DataFrame) -> pa.Schema:
    """`schema` with the label columns and the study's grid-key columns in front."""
    grid = [c for c in table.columns if c not in LABELS.names]
    inferred = pa.Table.from_pandas(table[grid], preserve_index=False).schema if grid else pa.schema([])
    fields = list(LABELS) + [inferred.field(c) for c in grid]
    return pa.schema(fields + [f for f in schema if f.name not in LABELS.names])


@contextmanager
def atomic_dir(out: Path):
    """Yield a temporary sibling folder to fill; on success it replaces the folder `out` in one
    rename (readable like every other result), on any error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(df: pd.DataFrame, schema: pa.Schema, out: Path, partition: str) -> None:
    """Write a Parquet dataset partitioned by one column into `out` (atomic_dir)."""
    with atomic_dir(out) as tmp:
        # One file per partition, written synchronously: pyarrow's dataset writer releases the
        # pandas memory it borrowed on a worker thread, which aborts the interpreter when that
        # happens during its shutdown (apache/arrow#34314; seen here in processes with torch).
        part_schema = pa.schema([f for f in schema if f.name != partition])
        for value, part in df.groupby(partition, sort=True, observed=True):
            folder = tmp / f"{partition}={value}"
            folder.mkdir()
            table = pa.Table.from_pandas(part[part_schema.names], schema=part_schema, preserve_index=False)
            pq.write_table(table, folder / "part-0.parquet")

# -- Study summaries (results/<study>/summary/*.parquet) -----------------------------------
# The statistics of one group of per-seed values (nnstudy.stats.SUMMARY_COLUMNS).
SUMMARY = [("n_seeds", i64), ("n_nan", i64), ("n_diverged", i64), ("mean", f64), ("std", f64), ("sem", f64),
           ("ci_low", f64), ("ci_high", f64), ("median", f64), ("iqm", f64), ("min", f64), ("max", f64),
           ("ci_level", f64), ("ci_method", s)]

# Learning curves: metric in loss, accuracy, running_loss, running_accuracy (split train), and
# gap_loss, gap_accuracy (split "train-val", computed per run then aggregated).
CURVES = pa.schema([("experiment", s), ("variant", s), ("split", s), ("metric", s), ("epoch", i32)] + SUMMARY)

# Final metrics of each run (epoch chosen by epoch_rule), aggregated over seeds.
FINAL = pa.schema([("experiment", s), ("variant", s), ("split", s), ("metric", s), ("epoch_rule", s)] + SUMMARY)

# The generalisation gap of every run and epoch (accuracy: train - val; loss: val - train).
GAP = pa.schema([("run", s), ("experiment", s), ("variant", s), ("seed", i64), ("epoch", i32),
                 ("metric", s), ("gap", f64), ("diverged", b)])

# Gradient flow: each run's statistics pooled exactly over the first / last `window` epochs,
# then aggregated over seeds. statistic in grad_mean, grad_std, grad_abs_mean, grad_norm.
GRADIENT_FLOW = pa.schema([("experiment", s), ("variant", s), ("window", s), ("epochs", s), ("layer", s),
                           ("layer_index", i32), ("module", s), ("kind", s), ("statistic", s)] + SUMMARY)

# Between-variant comparisons, Holm-adjusted within each (family, metric).
COMPARISONS = pa.schema([
    ("family", s), ("variant_a", s), ("variant_b", s), ("metric", s), ("split", s), ("epoch_rule", s),
    ("paired", b), ("n_a", i64), ("n_b", i64), ("n_pairs", i64), ("n_nan_a", i64), ("n_nan_b", i64),
    ("mean_a", f64), ("mean_b", f64), ("diff", f64), ("diff_ci_low", f64), ("diff_ci_high", f64),
    ("ci_level", f64), ("test", s), ("statistic", f64), ("df", f64), ("p_raw", f64), ("p_perm", f64),
    ("p_adj", f64), ("adj_method", s), ("m", i64), ("reject", b), ("hedges_g", f64), ("g_correction", s),
    ("prob_improvement", f64), ("higher_is_better", b), ("selected_on", s), ("degenerate", b),
])

# The choices made inside the workflow, with their evidence (one row per candidate value).
SELECTIONS = pa.schema([("selection", s), ("experiment", s), ("key", s), ("value", s), ("chosen", b),
                        ("eligible", b), ("mean", f64), ("std", f64), ("n", i64), ("n_nan", i64),
                        ("chosen_on", s)])

SUMMARY_TABLES = {"curves": CURVES, "final": FINAL, "gap": GAP, "gradient_flow": GRADIENT_FLOW,
                  "comparisons": COMPARISONS, "selections": SELECTIONS}
