"""Per-run analyses, averaged over seeds.

An analysis is registered like a model (`nnstudy.register_analysis(name, schema=..., tables=...,
summarise=..., draw=...)` on a function `(run, **params) -> DataFrame`) and switched on per
experiment in the study file (`analyses: {confusion: {}}`). One workflow job per experiment
computes its analyses for every run it reads from `load_run` (final or best weights: the study's
`analysis_weights`), into analyses/<experiment>/<name>.parquet with `schema`'s columns and the
run's `key`; one job per analysis (summary/analyses/<name>/) runs `summarise`, which turns
the runs' rows, labelled with experiment, variant and seed, into the declared `tables` (per
variant, over seeds); `draw(ax, tables, variant)` draws one variant on an Axes and returns it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .. import registry, schemas, spec as spec_mod
from ..spec import SpecError

KEY = pa.field("key", pa.string())  # the run's folder name under train/


def entry(name: str, where: str = "analysis") -> registry.Entry:
    registry.builtins()
    return registry.ANALYSES.get(name, where)


def check(name: str, params, where: str, params_where: str | None = None) -> None:
    """A study's `analyses: {name: params}` entry (at `where`): a registered analysis with its
    own parameters (at `params_where`, default where.name)."""
    e = entry(name, where)
    params_where = params_where or f"{where}.{name}"
    params = params if params is not None else {}
    if isinstance(params, dict) and params and not e.params:
        raise SpecError(f"{params_where}: unknown key {next(iter(params))!r}; {name} takes no parameters")
    schema = {"type": "object", "additionalProperties": False, "properties": e.params,
              "required": [p for p, frag in e.params.items() if "default" not in frag]}
    spec_mod.check(params, schema, where=params_where)


def run_schema(name: str) -> pa.Schema:
    return pa.schema([KEY, *entry(name).extra["schema"]])


def compute(wanted: dict[str, dict], run_dirs: list[Path], weights: str, out: Path, device=None) -> None:
    """Each analysis of `wanted` (name -> parameters) for every run in `run_dirs` (each loaded
    once), written to the folder `out` as <name>.parquet; built beside it, then renamed."""
    from ..runs import load_run

    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in wanted}
    for run_dir in map(Path, run_dirs):
        run = load_run(run_dir, weights=weights if weights == "final" or _has_best(run_dir) else "final",
                       device=device)
        for name, params in wanted.items():
            try:
                frames[name].append(entry(name).factory(run, **(params or {})).assign(key=run_dir.name))
            except ValueError as e:  # what an analysis says of its input (e.g. a layer that does not exist)
                raise SpecError(f"analysis {name!r} of run {run_dir}: {e}") from None
    with schemas.atomic_dir(out) as tmp:
        for name, parts in frames.items():
            schemas.write(pd.concat(parts, ignore_index=True), run_schema(name), tmp / f"{name}.parquet")


def _has_best(run_dir: Path) -> bool:
    """A run without a validation split has no best.pt: its final weights stand in."""
    return "best.pt" in json.loads((run_dir / "run.json").read_text()).get("files", {})


def _experiment(path) -> str:
    """The experiment of an analysis file, analyses/<experiment>/<name>.parquet."""
    return Path(path).parent.name


def summarise(name: str, labelled: pd.DataFrame, files: list[Path], level: float) -> dict[str, pd.DataFrame]:
    """The analysis's summary tables from its per-experiment files and the study's labelled run
    table (experiment, variant, seed, key): rows of runs that several variants share count once
    under each."""
    e = entry(name)
    labels = labelled[["experiment", "variant", "seed", "key"]]
    rows = pd.concat([labels[labels["experiment"] == _experiment(f)].merge(schemas.read(Path(f), run_schema(name)), on="key")
                      for f in files], ignore_index=True).drop(columns="key")
    tables = e.extra["summarise"](rows, level)
    missing = set(e.extra["tables"]) ^ set(tables)
    if missing:
        raise SpecError(f"analysis {name!r}: summarise returned tables {sorted(tables)}, declared {sorted(e.extra['tables'])}")
    return tables


def write_summary(name: str, labelled: pd.DataFrame, files: list[Path], level: float, out: Path) -> None:
    """The analysis's summary folder: each declared table as <table>.parquet and one figure per
    experiment, <experiment>.png; built beside `out` and renamed into place."""
    tables = summarise(name, labelled, files, level)
    with schemas.atomic_dir(out) as tmp:
        for table, df in tables.items():
            schemas.write(df, entry(name).extra["tables"][table], tmp / f"{table}.parquet")
        for f in files:
            figure(name, tables, _experiment(f), tmp / f"{_experiment(f)}.png", entry(name).extra.get("columns", 4))


def read_summary(name: str, folder: Path) -> dict[str, pd.DataFrame]:
    """The declared tables of an analysis's summary folder."""
    return {t: schemas.read(Path(folder) / f"{t}.parquet", schema) for t, schema in entry(name).extra["tables"].items()}


def figure(name: str, tables: dict[str, pd.DataFrame], experiment: str, out: Path, columns: int = 4) -> None:
    """One panel per variant of the experiment (the first 12), drawn by the analysis's `draw`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(tables.values()))
    variants = list(dict.fromkeys(first.loc[first["experiment"] == experiment, "variant"]))[:12]
    cols = min(columns, max(len(variants), 1))
    rows = -(-max(len(variants), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, variant in zip(axes.flat, variants):
        mine = {t: df[(df["experiment"] == experiment) & (df["variant"] == variant)] for t, df in tables.items()}
        entry(name).extra["draw"](ax, mine, variant)
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.suptitle(f"{experiment}: {name}", fontsize=10)
    fig.tight_layout()
    with schemas.atomic(Path(out)) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
