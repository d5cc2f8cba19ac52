"""The workflow's steps as commands (nnstudy.steps, `nnstudy step RULE`): the study snapshot
they read, the job text a rule passes, and a failing step's log."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT

from nnstudy import steps
from nnstudy.study import Study, compose

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_the_snapshot_is_named_by_its_content_in_the_configs_order(tmp_path):
    config = {"study": "s", "experiments": {"b": {"grid": {"z": [1], "a": [2]}}, "a": {}}}
    path = steps.snapshot(config, tmp_path)
    assert json.loads(open(path).read()) == config
    assert list(json.loads(open(path).read())["experiments"]["b"]["grid"]) == ["z", "a"]  # variants' names
    written = os.stat(path).st_mtime_ns
    assert steps.snapshot(dict(config), tmp_path) == path and os.stat(path).st_mtime_ns == written  # once
    Path(path).write_text(json.dumps({**config, "seeds": 9}))  # damaged: read back, it fails; written again
    with pytest.raises(ValueError, match="damaged"):
        steps.read_snapshot(path)
    assert steps.snapshot(config, tmp_path) == path and steps.read_snapshot(path) == config
    other = steps.snapshot({**config, "study": "t"}, tmp_path)
    assert other != path
    assert {p.name for p in tmp_path.iterdir()} == {os.path.basename(path), os.path.basename(other)}  # no temporary files


class Named(list):
    """Snakemake's Namedlist as a params function gets it: files in order, named entries."""

    def __init__(self, files, names):
        super().__init__(files)
        self.names = names

    def items(self):
        return self.names.items()


def test_a_step_reads_its_files_by_name_and_in_order(tmp_path):
    study = steps.snapshot({"study": "s"}, tmp_path)
    output = Named(["out/a.parquet", "out/b.parquet"], {"a": "out/a.parquet", "b": "out/b.parquet"})
    text = steps.job_json(study, SimpleNamespace(items=lambda: {"experiment": "lr"}.items()),
                          {"selections": ["s1.json", "s2.json"], "runs": "runs"}, output)
    job = steps.Job(text, "logs/x.log")
    assert job.config == {"study": "s"} and job.wildcards.experiment == "lr" and job.log == ["logs/x.log"]
    assert job.input.selections == ["s1.json", "s2.json"] and job.input.runs == "runs"
    assert list(job.input) == ["s1.json", "s2.json", "runs"]
    assert job.output[0] == "out/a.parquet" and dict(job.output.items()) == output.names


def test_the_study_planned_ahead_is_the_steps_own(tmp_path):
    config = compose([], {"budget": "demo"}, ROOT / "config.yaml")
    path = steps.snapshot(config, tmp_path)
    text = steps.job_json(path, SimpleNamespace(items=dict().items), {}, Named([], {}))
    alone = steps.Job(text, "x.log").study  # no plan ahead: the step plans it
    steps.plan(path)  # what the warm process does while no job waits
    try:
        ahead = steps.Job(text, "x.log").study
        assert ahead is steps.Job(text, "x.log").study  # not planned again
    finally:
        steps._PLANNED.clear()
    assert ahead is not alone and ahead.config == alone.config == Study(config).config
    assert list(ahead.trained) == list(alone.trained) and ahead.jobs == alone.jobs and len(ahead.trained) == 70


def test_a_failing_step_says_why_in_one_line_with_its_traceback_in_its_log(tmp_path):
    study = steps.snapshot({"study": "s", "experiments": {}}, tmp_path)
    out = tmp_path / "figures" / "gradient_flow.png"
    text = steps.job_json(study, SimpleNamespace(items=dict().items), {"flow": str(tmp_path / "missing.parquet")},
                          Named([str(out)], {}))
    log = tmp_path / "logs" / "gradient_figures.log"
    step = subprocess.run([sys.executable, "-m", "nnstudy", "step", "gradient_figures", "--job", text, "--log", log],
                          env=ENV, capture_output=True, text=True)
    assert step.returncode == 2 and step.stderr.startswith("nnstudy: error:") and len(step.stderr.splitlines()) == 1
    assert "missing.parquet" in step.stderr
    assert "Traceback" in log.read_text() and "missing.parquet" in log.read_text()
    assert not out.parent.exists() or not any(out.parent.iterdir())
