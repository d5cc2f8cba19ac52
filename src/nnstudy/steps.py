"""The workflow's steps besides training and analyses, one function each of a `Job`, named as
its rule. The rule runs `python -m nnstudy step RULE --job JSON --log LOG`, which the warm
process serves when there is one: a command job starts faster than a Snakemake script, whose
preamble imports Snakemake (~0.2 s of CPU).
The JSON (`job_json`; step_job in workflow/rules/common.smk) holds the named inputs the step
reads, its outputs, its wildcards and the path of the study snapshot (`snapshot`): the config
as Snakemake validated it."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

from .logs import logged


def snapshot(config: dict, folder: Path = Path(".snakemake/nnstudy")) -> str:
    """The study config as a JSON file named by its content's SHA-256 (`read_snapshot` checks
    it), written atomically (jobs of another Snakemake process may be reading it) unless it is
    there intact; its path."""
    from .schemas import atomic

    text = json.dumps(config)  # in its order: the order of grid keys names variants
    path = Path(folder) / f"study-{_digest(text)}.json"
    if not path.exists() or path.read_text() != text:
        with atomic(path) as tmp:
            tmp.write_text(text)
    return str(path)


def read_snapshot(path: str) -> dict:
    """The config of a `snapshot` file; a ValueError naming it if its content is not the one
    its name was made from."""
    text = Path(path).read_text()
    if Path(path).stem != f"study-{_digest(text)}":
        raise ValueError(f"{path}: damaged (its content does not match its name); run Snakemake again to rewrite it")
    return json.loads(text)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_json(study: str, wildcards, inputs: dict, output) -> str:
    """The `--job` text of a step: the study snapshot's path, wildcards, the named inputs the
    step reads (not every input: a study's list of training jobs can pass the 128 kB a single
    argument may have), and every output, in order and by name."""
    return json.dumps({"study": study, "wildcards": dict(wildcards.items()), "input": _files(inputs),
                       "output": {"files": list(output), "names": dict(output.items())}})


def _files(named: dict) -> dict:
    files = [f for v in named.values() for f in ([v] if isinstance(v, str) else v)]
    return {"files": files, "names": named}


class Files(list):
    """A job's input or output files in order, and its named entries as attributes."""

    def __init__(self, files: dict):
        super().__init__(files["files"])
        self.names = files["names"]

    def __getattr__(self, name: str):
        try:
            return self.__dict__["names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def items(self):
        return self.names.items()


_PLANNED: dict = {}  # snapshot path -> its Study, planned ahead by the warm process


def plan(study: str) -> None:
    """Plan the study of snapshot `study` in this process (the warm process, while no job
    waits): the steps forked after it do not plan it again (a demo select job: 0.5 -> 0.3 s of
    CPU)."""
    from .study import Study

    _PLANNED[study] = Study(read_snapshot(study))


class Job:
    """What a step reads of its Snakemake job, as Snakemake's `snakemake` object names it, and
    its `study`, planned."""

    def __init__(self, text: str, log: str):
        job = json.loads(text)
        self.snapshot = job["study"]
        self.config = read_snapshot(self.snapshot)
        self.wildcards = SimpleNamespace(**job["wildcards"])
        self.input, self.output, self.log = Files(job["input"]), Files(job["output"]), [log]

    @functools.cached_property
    def study(self):
        from .study import Study

        planned = _PLANNED.get(self.snapshot)
        return planned if planned is not None else Study(self.config)


def select(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .study import select

        select(smk.study, smk.wildcards.name, smk.output[0])


def collect(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .runs import release
        from .study import collect, load_selections

        study = smk.study
        collect(study, load_selections(smk.input.selections), smk.output.runs, smk.output.gradients)
        for key in study.trained:  # every run is recorded as done now: its checkpoint is no longer needed
            release(study.run_dir(key))


def summarise(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .aggregate import summarise_study

        summarise_study(smk.study, smk.input.selections, smk.input.runs, smk.input.gradients,
                        dict(smk.output.items()))


def analysis_summaries(smk) -> None:
    with logged(smk.log[0], smk.output):
        from . import analyses
        from .study import load_selections
        from .study.collect import labelled

        study = smk.study
        experiment = smk.wildcards.experiment
        table = labelled(study, load_selections(smk.input.selections), [experiment])
        analyses.write_summaries(experiment, smk.config["experiments"][experiment]["analyses"], table,
                                 study.analyses_dir(experiment), smk.config["ci_level"], smk.output[0])


def figures(smk) -> None:
    with logged(smk.log[0], smk.output):
        from . import plots, schemas

        summary = {name: schemas.read(path, schemas.SUMMARY_TABLES[name]) for name, path in smk.input.items()}
        plots.draw_outcomes(summary, smk.config["experiments"], Path(smk.output[0]).parent, smk.config["curve_splits"])


def gradient_figures(smk) -> None:
    with logged(smk.log[0], smk.output):
        from . import plots, schemas

        flow = schemas.read(smk.input.flow, schemas.SUMMARY_TABLES["gradient_flow"])
        plots.draw_gradients(flow, smk.config["experiments"], Path(smk.output[0]).parent)


def tensorboard(smk) -> None:
    with logged(smk.log[0], smk.output):
        import pandas as pd

        from . import schemas, tensorboard

        curves = schemas.read(smk.input.curves, schemas.SUMMARY_TABLES["curves"])
        tensorboard.write(pd.read_parquet(smk.input.runs), curves, smk.output[0])


def report(smk) -> None:
    with logged(smk.log[0], smk.output):
        from . import registry, report

        registry.load_plugins(smk.config["plugins"], "study.plugins")  # their analyses' tables and figures
        study = smk.study  # the runs' manifests (provenance): a list too long for the command line
        manifests = [f"{study.run_dir(k)}/run.json" for k in study.trained]
        names = [Path(p).stem for p in smk.input.summary]
        report.write(smk.config, dict(zip(names, smk.input.summary)), smk.input.figures, manifests,
                     smk.output[0], smk.input.analyses)


STEPS = {f.__name__: f for f in (select, collect, summarise, analysis_summaries, figures, gradient_figures,
                                 tensorboard, report)}


def run(name: str, text: str, log: str) -> None:
    """The step `name` of the job that `text` (job_json) describes, logging to `log`."""
    STEPS[name](Job(text, log))
