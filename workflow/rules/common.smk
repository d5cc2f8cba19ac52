import json
import math
import os
import re
import sys
import threading
from pathlib import Path

from snakemake.utils import min_version, validate

# nnstudy from this checkout, for this process and every job (also in a --sdm conda env).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.getenv("PYTHONPATH")]))
)

from nnstudy import figures, schemas, spec, steps, warm
from nnstudy.runs import heal, reopen
from nnstudy.study import Study, compose

min_version("9.17")  # priority as a function of the job


# The study from its files (nnstudy.study.compose: `extends`, then its budget, then --config
# values): a study file with its own `study:` replaces config.yaml whole, so a second study never
# inherits the default one's experiments. `nnstudy check/status` read a study the same way.
_study = compose(
    workflow.config_settings.configfiles,
    workflow.config_settings.config,
    Path(workflow.basedir) / "config.yaml",
)
config.clear()
config.update(_study)
STUDY = Study(config)  # first: its errors name the key and the allowed keys or values
STUDY.check_plugins()  # users' models and datasets build, before any job starts
heal(STUDY.run_dir(k) for k in STUDY.trained)  # a damaged finished run is trained again
reopen(
    {
        STUDY.job_path(j): [STUDY.run_dir(k) for k in keys]
        for j, keys in STUDY.jobs.items()
    }
)
validate(
    config, spec.SCHEMA_PATH
)  # fills the study-level defaults into `config` for the steps
R = STUDY.root
STUDY_FILE = steps.snapshot(config)  # the config as the steps read it
SELECTIONS = [STUDY.selection_path(n) for n in config["selections"]]
OUTCOME_FIGURES = [
    f"{R}/figures/{n}" for n in figures.outcome_figure_names(config["experiments"])
]
GRADIENT_FIGURES = [
    f"{R}/figures/{n}" for n in figures.gradient_figure_names(config["experiments"])
]
FIGURES = OUTCOME_FIGURES + GRADIENT_FIGURES
SUMMARY = {name: f"{R}/summary/{name}.parquet" for name in schemas.SUMMARY_TABLES}
# One file per training job, written once every run in it has finished: the summary steps'
# inputs, so a job that trained again (a run deleted, damaged or of a changed spec) reruns them.
JOBS = [STUDY.job_path(j) for j in STUDY.jobs]
# Per-run analyses: the experiments that switch some on, and their summary folders.
ANALYSED = [e for e, c in config["experiments"].items() if c["analyses"]]
ANALYSIS_SUMMARIES = [STUDY.analysis_summary(e) for e in ANALYSED]
TENSORBOARD = [f"{R}/tensorboard"] if config["tensorboard"] else []


wildcard_constraints:
    job=r"j[0-9a-f]{12}",
    experiment="|".join(map(re.escape, config["experiments"])),
    name="|".join(config["selections"]) or "(?!)",


def train_inputs(wildcards):
    """Selection files and the jobs training the transfer sources a training job reads."""
    return STUDY.job_inputs(wildcards.job)


def job_runs(wildcards):
    """The job's runs as JSON: each one's spec (resolved, or a template with selection
    placeholders) and directory."""
    return json.dumps(STUDY.job_runs(wildcards.job))


def job_priority(wildcards):
    """Training before analyses, the longest chains of training first (Study.job_priority)."""
    return STUDY.job_priority(wildcards.job)


def job_description(wildcards):
    """What a job trains, for Snakemake's listing (also -n): experiment, variant, seeds, runs."""
    return STUDY.describe_job(wildcards.job)


def analysis_inputs(wildcards):
    """The training jobs of the runs an experiment's analyses read."""
    return STUDY.jobs_of(STUDY.analysis_keys(wildcards.experiment))


def selection_inputs(wildcards):
    """The training jobs of the experiment a selection chooses from."""
    return STUDY.selection_inputs(wildcards.name)


def step_job(*inputs):
    """params.job of a step besides training and analyses (`nnstudy step RULE`, nnstudy.steps):
    its named `inputs`, outputs and wildcards, and the study snapshot, as JSON. A function of
    input and output: Snakemake reruns a step for its files, not for this text."""

    def job(wildcards, input, output):
        named = {name: getattr(input, name) for name in inputs}
        return steps.job_json(STUDY_FILE, wildcards, named, output)

    return job


def _runs(wildcards):
    return [STUDY.trained[k].spec for k in STUDY.jobs[wildcards.job]]


def _images(spec):
    return spec.get("data", {}).get("train_size") or 50_000


def train_runtime(wildcards, attempt):
    """Minutes: generous for a GPU (>= 350 images/s with evaluation) per run, doubled on each retry."""
    epochs = lambda spec: spec.get("train", {}).get("epochs", 10)  # noqa: E731
    return (
        sum(10 + math.ceil(epochs(s) * _images(s) / 20_000) for s in _runs(wildcards))
        * attempt
    )


def train_mem_mb(wildcards, attempt):
    return (
        3000 + math.ceil(max(map(_images, _runs(wildcards))) * 3072 * 8 / 1e6)
    ) * attempt


# Jobs on this machine start from a warm process that has imported torch, pandas and matplotlib
# once and planned the study for the steps (nnstudy.warm); NNSTUDY_WARM=0 in the environment
# turns it off.
onstart:
    if workflow.local_exec and warm.available() and os.environ.get(warm.ENV) != "0":
        os.environ[warm.ENV] = warm.start(
            Path(f"logs/{STUDY.name}/warm.log"), STUDY_FILE
        )


def end_timers():
    """Cancel the threading.Timer that Snakemake's job rate limiter
    (--max-jobs-per-timespan, 100/1s by default) starts after each scheduling pass:
    Python's exit waits for the last one, ~1 s at the end of every workflow. Once the
    workflow has ended it has nothing to wake. Only Snakemake's: the API may run in a
    process with timers of its own."""
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in timers:
        if getattr(timer.function, "__module__", "").startswith("snakemake."):
            timer.cancel()


onsuccess:
    warm.stop()
    end_timers()


onerror:
    warm.stop()
    end_timers()
