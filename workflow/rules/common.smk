import json
import math
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

# nnstudy from this checkout, for this process and every job (also in a --sdm conda env).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.getenv("PYTHONPATH")]))
)

from nnstudy import plots, schemas, spec
from nnstudy.runs import heal
from nnstudy.status import study_config
from nnstudy.study import Study

min_version("8.0")


# A study file given with --configfile replaces config.yaml whole (it has its own `study:`), so
# a second study never inherits the default one's experiments; values without `study:` (e.g.
# --config seeds=3) override config.yaml. `nnstudy status` reads a study the same way.
_study = study_config(config, Path(workflow.basedir) / "config.yaml")
config.clear()
config.update(_study)
STUDY = Study(config)  # first: its errors name the key and the allowed keys or values
STUDY.check_plugins()  # users' models and datasets build, before any job starts
heal(STUDY.run_dir(k) for k in STUDY.trained)  # a damaged finished run is trained again
validate(
    config, spec.SCHEMA_PATH
)  # fills the study-level defaults into `config` for the scripts
R = STUDY.root
SELECTIONS = [STUDY.selection_path(n) for n in config["selections"]]
FIGURES = [f"{R}/figures/{n}" for n in plots.figure_names(config["experiments"])]
SUMMARY = {name: f"{R}/summary/{name}.parquet" for name in schemas.SUMMARY_TABLES}
MANIFESTS = [f"{STUDY.run_dir(k)}/run.json" for k in STUDY.trained]
# The per-run Parquet files the summary steps read: inputs, so a rewritten one reruns them.
PARQUET = [
    f"{STUDY.run_dir(k)}/{n}.parquet"
    for k in STUDY.trained
    for n in ("metrics", "gradients")
]


wildcard_constraints:
    key=r"t?[0-9a-f]{12}",
    name="|".join(config["selections"]) or "(?!)",


def train_inputs(wildcards):
    """Selection files and transfer source weights a training job reads."""
    return STUDY.job_inputs(wildcards.key)


def run_spec(wildcards):
    """The run's spec (resolved, or a template with selection placeholders) as JSON."""
    return json.dumps(STUDY.trained[wildcards.key].spec)


def run_dir(wildcards):
    return STUDY.run_dir(wildcards.key)


def selection_inputs(wildcards):
    """run.json of every run of the experiment a selection chooses from."""
    return STUDY.selection_inputs(wildcards.name)


def train_images(wildcards):
    """Training images of a run (for its memory and runtime requests)."""
    data = STUDY.trained[wildcards.key].spec.get("data", {})
    return data.get("train_size") or 50_000


def train_runtime(wildcards, attempt):
    """Minutes: generous for a GPU (>= 350 images/s with evaluation), doubled on each retry."""
    epochs = STUDY.trained[wildcards.key].spec.get("train", {}).get("epochs", 10)
    return (10 + math.ceil(epochs * train_images(wildcards) / 20_000)) * attempt


def train_mem_mb(wildcards, attempt):
    return (3000 + math.ceil(train_images(wildcards) * 3072 * 8 / 1e6)) * attempt
