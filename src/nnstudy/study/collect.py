"""The study's runs labelled with their experiment, variant, seed and grid values, collected
into Parquet datasets (one read_parquet returns the study)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .. import schemas
from .plan import Study, fmt, materialise


def labelled(study: Study, selections: dict, experiments: list[str] | None = None) -> pd.DataFrame:
    """The run table with selections applied: experiment, variant, seed, key (train dir), run
    (id), and one column per grid or random-search key (dotted name) with that row's value; the
    rows of `experiments` only where given (then only their selections are needed)."""
    grid_keys = list(dict.fromkeys(k for e in study.config["experiments"] for k in study.grid_keys(e)))
    rows = []
    for r in study.rows if experiments is None else (r for r in study.rows if r.experiment in experiments):
        picked = {n: selections[n] for n in r.needs}
        values = materialise(r.values, picked)
        key = r.borrow[fmt(picked[next(iter(r.needs))])] if r.borrow else r.key
        variant = study.label(r.experiment, values)
        rows.append({"experiment": r.experiment, "variant": variant, "seed": r.seed, "key": key,
                     **{k: values.get(k) for k in grid_keys}})
    table = pd.DataFrame(rows, columns=["experiment", "variant", "seed", "key", *grid_keys])
    for k in grid_keys:  # one type per column: mixed types are shown as in the variant labels
        kinds = {type(v) for v in table[k] if v is not None and v == v}
        if (len(kinds) > 1 and kinds != {int, float}) or kinds & {list, dict}:
            table[k] = table[k].map(lambda v: None if v is None or v != v else fmt(v))
    return table


def collect(study: Study, selections: dict, runs_out: Path, gradients_out: Path) -> None:
    """Write the labelled per-epoch metrics and gradient statistics of the whole study as
    Parquet datasets partitioned by experiment (so one read_parquet returns the study).
    A run that several (experiment, variant) rows share appears once under each."""
    table = labelled(study, selections)
    keys = table["key"].unique()
    for name, schema, out in (("metrics", schemas.METRICS, runs_out), ("gradients", schemas.GRADIENTS, gradients_out)):
        full = table.merge(_run_files(study, keys, name, schema), on="key").drop(columns="key")
        schemas.write_dataset(full, schemas.labelled(schema, table.drop(columns="key")), out, partition="experiment")


def _run_files(study: Study, keys, name: str, schema) -> pd.DataFrame:
    """The `name`.parquet file of every run, with a `key` column, in one frame. Read by a few
    threads (Arrow reads without the GIL) and joined as Arrow tables: a study has thousands."""
    def one(key: str) -> pa.Table:
        table = schemas.read_table(Path(study.run_dir(key)) / f"{name}.parquet", schema)
        return table.append_column("key", pa.array([key] * len(table), pa.string()))

    with ThreadPoolExecutor(max_workers=4) as pool:
        tables = list(pool.map(one, keys))
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=[*schema.names, "key"])
