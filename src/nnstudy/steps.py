"""The workflow's script steps, one function each of Snakemake's `snakemake` object (its input,
output, log, params, wildcards and the study's config), named as its rule.
workflow/scripts/step.py calls `nnstudy.warm.step(snakemake, snakemake.rule)`, which runs it in
the warm process when there is one."""
from __future__ import annotations

from pathlib import Path

from .logs import logged


def select(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .study import Study, select

        select(Study(smk.config), smk.wildcards.name, smk.output[0])


def collect(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .runs import release
        from .study import Study, collect, load_selections

        study = Study(smk.config)
        collect(study, load_selections(smk.input.selections), smk.output.runs, smk.output.gradients)
        for key in study.trained:  # every run is recorded as done now: its checkpoint is no longer needed
            release(study.run_dir(key))


def summarise(smk) -> None:
    with logged(smk.log[0], smk.output):
        from .aggregate import summarise_study
        from .study import Study

        summarise_study(Study(smk.config), smk.input.selections, smk.input.runs, smk.input.gradients,
                        dict(smk.output.items()))


def analysis_summaries(smk) -> None:
    with logged(smk.log[0], smk.output):
        from . import analyses
        from .study import Study, load_selections
        from .study.collect import labelled

        study = Study(smk.config)
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

        flow = schemas.read(smk.input[0], schemas.SUMMARY_TABLES["gradient_flow"])
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
        names = [Path(p).stem for p in smk.input.summary]
        report.write(smk.config, dict(zip(names, smk.input.summary)), smk.input.figures, smk.params.manifests,
                     smk.output[0], smk.input.analyses)
