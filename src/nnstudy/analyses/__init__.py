"""Per-run analyses, averaged over seeds.

An analysis is registered like a model (`nnstudy.register_analysis(name, schema=..., tables=...,
summarise=..., draw=...)` on a function `(run, **params) -> DataFrame`) and switched on per
experiment in the study file (`analyses: {confusion: {}}`). One workflow job per experiment
computes its analyses for every run it reads from `load_run` (final or best weights: the study's
`analysis_weights`), into analyses/<experiment>/<name>.parquet with `schema`'s columns and the
run's `key`; then one job per experiment (summary/analyses/<experiment>/<name>/) runs
`summarise`, which turns the runs' rows, labelled with experiment, variant and seed, into the
declared `tables` (per variant, over seeds); `draw(ax, tables, variant)` draws one variant on an
Axes and returns it (`columns=N`: N panels a row; `overlay=True`: every variant drawn on one
Axes, labelled with its name for the legend). An analysis registered with `first_seed=True` (one
whose summary keeps each variant's first seed: what differs from seed to seed beyond averaging,
like t-SNE embeddings) is computed for the runs of the experiment's first seed only.

The training job computes the analyses the study asks of each run it trains, from the model
still in memory (`keep`), into the run's analyses/ folder; the experiment's job then reads them
instead of starting torch and loading every run again, and computes only what is not there.
"""
from __future__ import annotations

import hashlib
import json
import shutil
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


def first_seed_only(name: str) -> bool:
    """Whether the analysis is computed for the first seed's runs only (registered first_seed=True)."""
    return entry(name).extra.get("first_seed", False)


def run_schema(name: str) -> pa.Schema:
    return pa.schema([KEY, *entry(name).extra["schema"]])


def compute(wanted: dict[str, dict], run_dirs: list[Path], weights: str, out: Path, device=None) -> None:
    """Each analysis of `wanted` (name -> parameters) for every run in `run_dirs` (a `first_seed`
    analysis: for those of the smallest seed among them), written to the folder `out` as
    <name>.parquet; built beside it, then renamed. What a run's training job kept is read; a run
    is loaded (once) only for what it did not keep."""
    from ..runs import load_run

    manifests = {}
    for run_dir in map(Path, run_dirs):
        try:
            manifests[run_dir] = json.loads((run_dir / "run.json").read_text())
        except OSError:  # not a finished run: load_run says so
            manifests[run_dir] = None
    first = min((m["spec"]["seed"] for m in manifests.values() if m), default=None)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in wanted}
    for run_dir, manifest in manifests.items():
        used = _weights(manifest, weights) if manifest else "final"
        run = None
        for name, params in wanted.items():
            if first_seed_only(name) and manifest and manifest["spec"]["seed"] != first:
                continue
            frame = _kept(run_dir, name, params or {}, used)
            if frame is None:
                run = run or load_run(run_dir, weights=used, device=device)
                frame = _analyse(run, name, params or {})
            frames[name].append(frame.assign(key=run_dir.name))
    with schemas.atomic_dir(out) as tmp:
        for name, parts in frames.items():
            schemas.write(pd.concat(parts, ignore_index=True), run_schema(name), tmp / f"{name}.parquet")


def _analyse(run, name: str, params: dict) -> pd.DataFrame:
    """One analysis of a loaded run, on one CPU thread: torch's CPU kernels sum in an order that
    depends on the number of threads, and t-SNE turns a last-bit difference of its features into
    another map. So the training job (any --threads) and the analyse job (torch's default: every
    core) give the same table of a run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return entry(name).factory(run, **params)
    except ValueError as e:  # what an analysis says of its input (e.g. a layer that does not exist)
        raise SpecError(f"analysis {name!r} of run {run.dir}: {e}") from None
    finally:
        torch.set_num_threads(threads)


KEPT = "analyses"  # a run's folder of the analyses its training job computed; index.json lists them


def _weights(manifest: dict, weights: str) -> str:
    """A run without a validation split has no best.pt: its final weights stand in."""
    return "best" if weights == "best" and "best.pt" in manifest.get("files", {}) else "final"


def _kept_name(name: str, params: dict, weights: str) -> str:
    """<name>-<digest>.parquet: the digest of the analysis, its parameters (defaults filled in),
    the weights and the plugin (with its content's hash) that registered it."""
    e = entry(name)
    params = {**{k: frag["default"] for k, frag in e.params.items() if "default" in frag}, **params}
    key = json.dumps([name, params, weights, e.origin], sort_keys=True)
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keep(run, wanted: list, weights: str) -> None:
    """The analyses `wanted` ([name, parameters] pairs) of a run its job has just trained, from
    the model in memory, into <run>/analyses/ and, last, its index.json: the SHA-256 of the run's
    run.json and of each file, so a later read trusts only whole files of this very run. An
    analysis that fails here is left to the experiment's job, which reports it; so is every
    analysis of a compiled model (hooks do not fire in a compiled forward)."""
    import torch

    if run.spec["train"]["compile"]:
        return
    manifest = json.loads((run.dir / "run.json").read_text())
    used = _weights(manifest, weights)
    if used == "best":
        run.model.load_state_dict(torch.load(run.dir / "best.pt", map_location=run.device, weights_only=True))
        run.test_logits = None  # the final weights'
    run.model.eval()
    folder = run.dir / KEPT
    shutil.rmtree(folder, ignore_errors=True)  # another training's analyses
    files = {}
    for name, params in wanted:
        try:
            frame = entry(name).factory(run, **params)
        except Exception:  # user code too: the analyse job computes it again and reports the error
            continue
        path = folder / _kept_name(name, params, used)
        schemas.write(frame, pa.schema(entry(name).extra["schema"]), path)
        files[path.name] = _sha256(path)
    index = {"run": _sha256(run.dir / "run.json"), "files": files}
    schemas.write_text(json.dumps(index, indent=1) + "\n", folder / "index.json")


def _kept(run_dir: Path, name: str, params: dict, weights: str) -> pd.DataFrame | None:
    """The analysis as the run's training job kept it, if it did, from this very run (its
    run.json unchanged since) and the file is whole; None otherwise."""
    folder, file = run_dir / KEPT, _kept_name(name, params, weights)
    try:
        index = json.loads((folder / "index.json").read_text())
        whole = index["run"] == _sha256(run_dir / "run.json") and index["files"][file] == _sha256(folder / file)
        return schemas.read(folder / file, pa.schema(entry(name).extra["schema"])) if whole else None
    except (OSError, ValueError, LookupError, TypeError):  # none kept, or a damaged index
        return None


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
            figure(name, tables, _experiment(f), tmp / f"{_experiment(f)}.png")


def write_summaries(experiment: str, names, labelled: pd.DataFrame, folder: Path, level: float, out: Path) -> None:
    """An experiment's summary folder: <name>/ (write_summary) for each of its analyses `names`,
    from their files in `folder`, analyses/<experiment>/; built beside `out`, renamed into place."""
    with schemas.atomic_dir(Path(out)) as tmp:
        for name in names:
            write_summary(name, labelled, [Path(folder) / f"{name}.parquet"], level, tmp / name)


def read_summary(name: str, folder: Path) -> dict[str, pd.DataFrame]:
    """The declared tables of an analysis's summary folder."""
    return {t: schemas.read(Path(folder) / f"{t}.parquet", schema) for t, schema in entry(name).extra["tables"].items()}


def figure(name: str, tables: dict[str, pd.DataFrame], experiment: str, out: Path) -> None:
    """One panel per variant of the experiment (the first 12), drawn by the analysis's `draw`, in
    rows of its `columns` (default 4); or with `overlay`, all of them on one panel (a legend)."""
    import matplotlib.pyplot as plt

    from ..plots import subplots  # (also selects matplotlib's Agg backend)

    first = next(iter(tables.values()))
    variants = list(dict.fromkeys(first.loc[first["experiment"] == experiment, "variant"]))[:12]
    overlay = entry(name).extra.get("overlay", False)
    panels = 1 if overlay else max(len(variants), 1)
    cols = min(entry(name).extra.get("columns", 4), panels)
    rows = -(-panels // cols)
    size = (6.0, 4.0) if overlay else (3.6 * cols, 3.4 * rows)
    fig, axes = subplots(rows, cols, figsize=size, squeeze=False)
    for i, variant in enumerate(variants):
        mine = {t: df[(df["experiment"] == experiment) & (df["variant"] == variant)] for t, df in tables.items()}
        entry(name).extra["draw"](axes.flat[0 if overlay else i], mine, variant)
    if overlay and variants:
        axes.flat[0].legend(fontsize=6)
    for ax in list(axes.flat)[panels if overlay else len(variants):]:
        ax.axis("off")
    fig.suptitle(f"{experiment}: {name}", fontsize=10)
    fig.tight_layout()
    fig.set_layout_engine(None)  # tight_layout leaves a placeholder engine, for which savefig draws twice
    with schemas.atomic(Path(out)) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
