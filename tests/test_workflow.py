"""The study pipeline for real: Snakemake runs the demo-sized study in a temporary directory."""
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from markupsafe import escape

from nnstudy import figures, schemas
from nnstudy.study import Study, compose

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(*args, cwd=ROOT, timeout=900, **kw):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)


def job_counts(output: str) -> dict:
    """Job stats table of a Snakemake run or dry run: rule -> count."""
    table = output[output.rindex("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def planned_runs(output: str) -> dict:
    """Runs the training jobs of a Snakemake run or dry run train: variant -> run keys (a job's
    message lists its variants, each with its seeds, then its runs in that order)."""
    runs = {}
    for m in re.finditer(r"^Job \d+: train (.+): runs (.+)$", output, re.M):
        keys = iter(m[2].split(", "))
        for part in m[1].split("; "):
            variant, seeds = re.fullmatch(r"(\S+), seeds ([\d, ]+)", part).groups()
            runs[variant] = [next(keys) for _ in seeds.split(", ")]
    return runs


# The default study (studies/cifar10.yaml) at its CI budget: 2 seeds, 2 epochs, 500 training images.
TINY = ["--configfile", ROOT / "studies" / "cifar10.yaml", "--config", "budget=tiny"]


def workdir(tmp: Path) -> Path:
    """A working directory whose data/ is the repository's (the study's relative data root)."""
    (tmp / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return tmp


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("tiny"))
    started = time.monotonic()
    run = snakemake("-d", work, "--cores", 2, *TINY)
    assert run.returncode == 0, run.stderr[-3000:]
    study = Study(compose([ROOT / "studies" / "cifar10.yaml"], {"budget": "tiny"}, ROOT / "config.yaml"))
    return {"dir": work, "seconds": time.monotonic() - started, "log": run.stderr, "config": study,
            "results": work / study.root}


def test_demo_study_end_to_end(demo):
    res = demo["results"]
    # 8 training jobs (up to runs_per_job = 5 runs: two whole variants of 2 seeds, or one) train the
    # 24 runs, each in its own folder (lr: 2 jobs, dropout: 3, lr_schedule, gradient_flow, transfer: 1 each).
    assert job_counts(demo["log"])["train"] == len(demo["config"].jobs) == 8
    assert sum(map(len, planned_runs(demo["log"]).values())) == 24
    assert len(list((res / "train").glob("*/run.json"))) == 24
    # Every job ran in a fork of the warm process (nnstudy.warm), which logged each with its exit.
    served = re.findall(r"^\S+ (nnstudy \w+|step \w+) \(pid \d+\): exit 0 ", (demo["dir"] / "logs" / demo["config"].name
                        / "warm.log").read_text(), re.M)
    ran = {rule: n for rule, n in job_counts(demo["log"]).items() if rule != "all"}
    assert collections.Counter(w.replace("nnstudy ", "").replace("step ", "") for w in served) == ran
    for name, schema in schemas.SUMMARY_TABLES.items():
        table = schemas.read(res / "summary" / f"{name}.parquet", schema)
        assert len(table) > 0, name
    names = figures.figure_names(demo["config"].config["experiments"])
    assert "transfer_vs_joint.png" in names
    for name in names:
        assert (res / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (res / "report.html").read_text()
    experiments = demo["config"].config["experiments"]
    assert "Contents" in page and "cannot support" in page
    assert {"final_lr.png", "final_dropout.png"} <= set(names)  # one-key sweeps: accuracy against the value
    analysed = sum(len(x["analyses"]) for x in experiments.values())  # a figure per experiment and analysis
    assert page.count("data:image/png;base64") == len(names) + analysed
    # Per experiment: its seed-averaged confusion matrices and per-class accuracy with intervals.
    per_class = pd.concat([pd.read_parquet(res / "summary" / "analyses" / exp / "confusion" / "per_class.parquet")
                           for exp in experiments])
    assert set(per_class["experiment"]) == set(experiments) and (per_class["n_seeds"] == 2).all()
    assert len(per_class) == 14 * 10  # every variant, every class
    findings = {"lr_schedule": 2, "dropout": 8, "transfer": 4, "gradient_flow": 2}  # comparisons whose A is there
    for exp in experiments:  # its question, table, findings, curves, seed-averaged confusion matrices
        start = page.index(f'<section id="exp-{exp}">')
        section = page[start:page.index("</section>", start)]
        assert escape(experiments[exp]["description"]) in section and "test accuracy, % [CI]" in section
        assert section.count("<li>") == findings.get(exp, 0) and f"curves_{exp}.png" in section
        assert "<h3>confusion</h3>" in section and "per-class test accuracy" in section and "most confused pairs" in section
    # TensorBoard (the demo sets tensorboard: true): a run's event file holds its metrics.parquet values.
    from test_tensorboard import scalars

    run = pd.read_parquet(res / "runs").query("experiment == 'lr' and variant == 'lr=0.03' and seed == 0")
    events = scalars(res / "tensorboard" / "runs" / "lr" / "lr=0.03" / "seed0")["test/accuracy"]
    assert [v for _, v in events] == pytest.approx(run.query("split == 'test'").sort_values("epoch")["accuracy"].tolist())
    counts = pd.read_parquet(res / "analyses" / "lr" / "confusion.parquet").groupby("key")["count"].sum()
    assert len(counts) == 6 and (counts == 500).all()  # each lr run's 500 test images
    # One read_parquet call gives the whole study, labelled.
    runs = pd.read_parquet(res / "runs")
    assert {"run", "experiment", "variant", "seed", "optim.lr", "model.dropout", "model.batchnorm"} <= set(runs.columns)
    per_variant = runs.groupby(["experiment", "variant"], observed=True)["seed"].nunique()
    assert len(per_variant) == 14 and (per_variant == 2).all()
    grads = pd.read_parquet(res / "gradients")
    assert set(grads["experiment"].astype(str)) == set(demo["config"].config["experiments"])
    # Shared runs are trained once: p = 0 of the dropout experiment is gradient_flow's no-dropout variant.
    shared = runs[runs["variant"].isin(["dropout=0.0", "dropout=0.0,batchnorm=false"])].groupby("experiment", observed=True)["run"]
    assert set(shared.get_group("dropout")) == set(shared.get_group("gradient_flow"))


def test_selections_are_made_on_validation_and_used(demo):
    res = demo["results"]
    best_lr = json.loads((res / "selections" / "best_lr.json").read_text())
    means = {c["value"]: c["mean"] for c in best_lr["candidates"]}
    assert best_lr["value"] == max(means, key=means.get) and "val accuracy" in best_lr["chosen_on"]
    best_p = json.loads((res / "selections" / "best_p.json").read_text())
    assert best_p["value"] != 0.0  # p = 0 is excluded from the choice
    runs = pd.read_parquet(res / "runs")
    sched = runs[(runs["experiment"] == "lr_schedule") & (runs["split"] == "train")]
    assert (sched.query("epoch == 1")["lr"] == best_lr["value"]).all()
    assert (sched.query("epoch == 2")["lr"] < best_lr["value"]).all()  # cosine decay from the best LR
    transfer = set(runs[runs["experiment"] == "transfer"]["variant"])
    assert transfer == {"dropout=0.0", f"dropout={best_p['value']!r}"}
    comp = pd.read_parquet(res / "summary" / "comparisons.parquet")
    assert set(comp["family"]) == {"scheduler_vs_best_fixed_lr", "dropout_vs_none", "transfer_vs_joint", "batchnorm_vs_none"}
    assert comp.query("family == 'transfer_vs_joint'")["n_pairs"].eq(2).all()


def test_second_invocation_runs_nothing(demo):
    again = snakemake("-d", demo["dir"], "--cores", 2, *TINY)
    assert again.returncode == 0 and "Nothing to be done" in again.stderr, again.stderr[-2000:]


def test_deleting_an_lr_run_plans_it_and_its_dependents_only(demo, tmp_path):
    study = demo["config"]
    row = next(r for r in study.rows if r.experiment == "lr" and r.seed == 0)
    run_dir, job = demo["dir"] / study.run_dir(row.key), demo["dir"] / study.job_path(study.job_of[row.key])
    kept = job.read_bytes()
    hidden = tmp_path / "moved"
    run_dir.rename(hidden)
    try:
        plan = snakemake("-d", demo["dir"], "-n", "--cores", 2, *TINY)
    finally:
        hidden.rename(run_dir)
        job.write_bytes(kept)  # planning reopened the run's job (removed its file); the run is back
    # The run's job, the best-LR choice it feeds, the job of the runs started from that choice, the summaries
    # (the study's, and of the analyses of the two experiments that read those runs).
    assert job_counts(plan.stderr + plan.stdout) == {"train": 2, "select": 1, "collect": 1, "summarise": 1,
                                                     "figures": 1, "gradient_figures": 1, "report": 1, "all": 1, "analyse": 2,
                                                     "analysis_summaries": 2, "tensorboard": 1}
    same_job = {f"lr/{study.trained[k].variant}" for k in study.jobs[study.job_of[row.key]]}  # lr=0.01 and 0.03
    assert f"lr/lr={row.values['optim.lr']!r}" in same_job and len(same_job) == 2
    assert set(planned_runs(plan.stdout + plan.stderr)) == same_job | {"lr_schedule/schedule.name=cosine"}


def test_killed_training_job_resumes_and_only_it_reruns(demo):
    study, work = demo["config"], demo["dir"]
    row = next(r for r in study.rows if r.variant == "dropout=0.0,batchnorm=true" and r.seed == 1)
    run_dir = work / study.run_dir(row.key)
    before = schemas.read(run_dir / "metrics.parquet", schemas.METRICS)
    others = {p: p.stat().st_mtime_ns for p in (demo["results"] / "train").glob("*/run.json")
              if p.parent != run_dir}
    shutil.rmtree(run_dir)  # its files and the analyses its job kept: the run is trained again
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", "-d", work, "--cores", "2",
                             *TINY], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        try:
            if torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]["epoch"] >= 1:
                break
        except (FileNotFoundError, EOFError, RuntimeError):
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "training never checkpointed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "run.json").exists()
    assert snakemake("-d", work, "--unlock", *TINY).returncode == 0
    rerun = snakemake("-d", work, "--cores", 2, *TINY, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert job_counts(rerun.stderr)["train"] == 1
    log = (work / "logs" / study.name / "train" / f"{study.job_of[row.key]}.log").read_text()
    assert re.search(r"resumed from checkpoint after epoch 1\b", log), log
    manifest = json.loads((run_dir / "run.json").read_text())
    assert len(manifest["resumed_from"]) == 1
    after = schemas.read(run_dir / "metrics.parquet", schemas.METRICS)
    pd.testing.assert_frame_equal(before.drop(columns=list(schemas.WALL_CLOCK)),
                                  after.drop(columns=list(schemas.WALL_CLOCK)))
    assert others == {p: p.stat().st_mtime_ns for p in others}
    assert (run_dir / "analyses" / "index.json").exists()  # the resumed run's job kept its analyses


@pytest.mark.parametrize("change, message", [
    ({"seedz": 3}, "study: unknown key 'seedz'; allowed keys: analysis_weights, budget, budgets, ci_level"),
    ({"experiments": {"lr": {"grid": {"optim.lrr": [0.1]}}}},
     "'optim.lrr' is not a spec key; allowed under optim: alpha, betas, lr, momentum"),
    ({"defaults": {"model": {"activation": "swish"}}}, "allowed values: relu, leaky_relu, sigmoid, tanh"),
])
def test_study_file_typo_fails_naming_the_key(tmp_path, change, message):
    path = tmp_path / "study.yaml"  # the CI budget of the default study, with one typo
    path.write_text(yaml.safe_dump({"extends": str(ROOT / "studies" / "cifar10.yaml"), "budget": "tiny", **change}))
    run = snakemake("-d", tmp_path, "-n", "--configfile", path)
    assert run.returncode != 0 and message in run.stderr + run.stdout, run.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_default_study_plans_70_runs_in_14_training_jobs():
    plan = snakemake("-n")
    assert plan.returncode == 0, plan.stderr[-2000:]
    counts = job_counts(plan.stderr + plan.stdout)
    # + per experiment one analyse job and one job for the summaries of its analyses
    assert counts == {"train": 14, "select": 2, "collect": 1, "summarise": 1, "figures": 1, "gradient_figures": 1, "report": 1, "all": 1,
                      "analyse": 5, "analysis_summaries": 5}
    assert sum(map(len, planned_runs(plan.stdout + plan.stderr).values())) == 70


def test_second_study_does_not_inherit_the_default_experiments(tmp_path):
    tiny = {"study": "tiny", "seeds": 2, "defaults": {"data": {"name": "xor"}, "train": {"epochs": 2}},
            "experiments": {"only": {"grid": {"optim.lr": [0.1, 0.2]}}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    plan = snakemake("-n", "--configfile", tmp_path / "tiny.yaml")  # from the repository root, next to config.yaml
    out = plan.stderr + plan.stdout
    assert plan.returncode == 0, out[-2000:]
    # One training job: both variants' 2 seeds (4 runs <= runs_per_job).
    assert job_counts(out)["train"] == 1 and "results/cifar10" not in out and "select" not in job_counts(out)
    overridden = snakemake("-n", "--config", "seeds=2", "runs_per_job=1")  # no `study:`: overrides config.yaml
    assert job_counts(overridden.stderr + overridden.stdout)["train"] == 28


def test_lint_is_clean():
    lint = snakemake("--lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]


# Appended to a copy of the report: after load, the page records what a reader would see broken.
PROBE = """<script>
var errors = [];
window.addEventListener('error', function (e) { errors.push(String(e.message || e.type)); }, true);
window.addEventListener('load', function () {
  var bad = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-probe', JSON.stringify({images: document.images.length, broken: bad.length, errors: errors}));
});
</script>"""


def test_the_demo_report_loads_in_a_browser_with_every_image_decoded(demo, tmp_path):
    """Headless Chromium opens the demo report: no script or resource error, every image
    decoded (naturalWidth > 0). `.ci/run` installs Debian's chromium."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("NNSTUDY_BROWSER_TESTS"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium is not installed")
    page = (demo["results"] / "report.html").read_text()
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("<body>", "<body>" + PROBE, 1))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"data-probe=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    probe = json.loads(found[1].replace("&quot;", '"'))
    assert probe == {"images": page.count("data:image/png;base64"), "broken": 0, "errors": []}
