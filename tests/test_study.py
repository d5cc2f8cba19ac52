"""The run table of a study file: identities, shared runs, selection templates, bad references."""
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from nnstudy.spec import SpecError
from nnstudy.study import Study, compose, fmt, labelled, materialise


def default_study():
    return Study(compose([], {}, ROOT / "config.yaml"))


def test_default_study_trains_70_runs_and_shares_identical_specs():
    study = default_study()
    assert len(study.rows) == 80 and len(study.trained) == 70
    by_exp = {}
    for row in study.trained.values():
        by_exp[row.experiment] = by_exp.get(row.experiment, 0) + 1
    assert by_exp == {"lr": 25, "lr_schedule": 5, "dropout": 25, "transfer": 10, "gradient_flow": 5}
    no_dropout = {r.seed: r.key for r in study.rows if r.experiment == "gradient_flow" and r.variant == "dropout=0.0,batchnorm=false"}
    joint = {r.seed: r.key for r in study.rows if r.experiment == "dropout" and r.variant == "dropout=0.0"}
    assert no_dropout == joint  # same resolved spec, one run


def test_planning_a_study_imports_neither_torch_nor_matplotlib():
    """Snakemake's start and every summary step plan the study (each registry's declarations,
    every run's spec and key, the figure list); importing torch and matplotlib there cost each
    such process about 3 s. Checking a study's plugins (Snakemake's start) imports torch only
    for a study that has some."""
    code = ("import sys; from pathlib import Path; from nnstudy import figures, runs; "
            "from nnstudy.study import Study, compose; "
            "study = Study(compose([], {'budget': 'demo'}, Path('config.yaml'))); study.check_plugins(); "
            "names = figures.figure_names(study.config['experiments']); "
            "print(len(study.trained), len(names), [m for m in ('torch', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split("\n")[0] == "70 15 []", out.stderr[-2000:]


def test_jobs_pack_whole_variants_and_the_longest_chains_go_first():
    def shape(study):
        return [[(study.trained[k].experiment, study.trained[k].variant) for k in keys] for keys in study.jobs.values()]

    five = default_study()  # runs_per_job 5 = the 5 seeds: a job per variant
    assert len(five.jobs) == 14 and all(len(set(job)) == 1 and len(job) == 5 for job in shape(five))
    config = compose([], {"runs_per_job": 12}, ROOT / "config.yaml")
    twelve = Study(config)
    jobs = shape(twelve)
    # Two whole variants of one experiment per job (a third would not fit): lr, dropout, lr_schedule,
    # gradient_flow (its batch-norm variant; the other is a dropout run), transfer.
    assert [len(j) for j in jobs] == [10, 10, 5, 10, 10, 5, 5, 5, 10]
    assert all(len({exp for exp, _ in j}) == 1 and all(j.count(v) == 5 for v in set(j)) for j in jobs)
    three = Study(compose([], {"runs_per_job": 3}, ROOT / "config.yaml"))  # a variant's 5 seeds: 3 + 2
    assert [len(j) for j in shape(three)][:4] == [3, 2, 3, 2]
    # Priority: the rough cost (epochs x training share) of the longest chain of training a job
    # starts. lr jobs (holdout: 90% trains) wait for lr_schedule, dropout jobs (halves) for
    # transfer; each job's own runs, then the chain after it; above them the selections.
    demo = Study(compose([], {"budget": "demo", "runs_per_job": 10}, ROOT / "config.yaml"))  # two variants a job
    by = {demo.describe_job(j).split(",")[0]: demo.job_priority(j) for j in demo.jobs}
    lr_schedule, transfer = 1 + round(10 * 5 * 4 * 0.9), 1 + round(10 * 10 * 4 * 0.5)
    assert (by["lr_schedule/schedule.name=cosine"], by["transfer/dropout=0.0"]) == (lr_schedule, transfer) == (181, 201)
    assert by["lr/lr=0.003"] == by["lr/lr=0.03"] == lr_schedule + round(10 * 10 * 4 * 0.9) == 541
    assert by["lr/lr=0.1"] == lr_schedule + 180
    assert by["dropout/dropout=0.0"] == transfer + 200 and by["dropout/dropout=0.75"] == transfer + 100
    assert by["gradient_flow/dropout=0.0"] == 1 + 100  # its batch-norm variant; nothing waits on it
    assert demo.selection_priority() == 542
    assert twelve.describe_job(next(iter(twelve.jobs))).startswith("lr/lr=0.001, seeds 0, 1, 2, 3, 4; lr/lr=0.003, seeds 0")


def test_a_training_job_is_told_the_analyses_of_every_experiment_that_reads_its_runs():
    study = Study(compose([], {"budget": "demo"}, ROOT / "config.yaml"))
    runs = {Path(r["out"]).name: r for job in study.jobs for r in study.job_runs(job)}
    shared = next(r.key for r in study.rows if r.experiment == "gradient_flow" and r.variant == "dropout=0.0,batchnorm=false")
    # a dropout run that gradient_flow reads too: both experiments' analyses, each once (defaults filled in)
    assert runs[shared]["analyses"] == [["confusion", {}], ["cost", {}], ["filters", {"images": 3}], ["summary", {}],
                                        ["gradient_trace", {}]]
    schedule = next(r.key for r in study.rows if r.experiment == "lr_schedule")
    assert runs[schedule]["analyses"] == [["confusion", {}], ["cost", {}],
                                          ["tsne", {"samples": 200, "layer": None, "seed": 0}]]
    # t-SNE and filters differ from seed to seed beyond averaging: asked of the first seed only
    later = [r.key for r in study.rows if r.experiment in ("lr_schedule", "dropout") and r.seed > 0]
    assert later and not any(n in ("tsne", "filters") for k in later for n, _ in runs[k]["analyses"])
    assert all(r.seed == 0 for r in study.rows if r.key and "tsne" in [n for n, _ in runs[r.key].get("analyses", [])])
    assert {r["weights"] for r in runs.values()} == {"final"}
    plain = Study(compose([], {"budget": "demo", "experiments": {e: {"analyses": None} for e in study.config["experiments"]}},
                          ROOT / "config.yaml"))
    assert not any("analyses" in r for job in plain.jobs for r in plain.job_runs(job))


def test_templates_resolve_by_selection_and_borrow_existing_runs():
    study = default_study()
    sched = next(r for r in study.rows if r.experiment == "lr_schedule" and r.seed == 1)
    assert sched.key.startswith("t") and sched.needs == {"best_lr"}
    assert study.job_inputs(study.job_of[sched.key]) == {"selections": ["results/cifar10/selections/best_lr.json"],
                                                         "sources": []}
    assert materialise(sched.spec, {"best_lr": 0.01})["optim"]["lr"] == 0.01
    borrowed = next(r for r in study.rows if r.experiment == "gradient_flow" and "{best_p}" in r.variant and r.seed == 1)
    assert borrowed.key == "" and set(borrowed.borrow) == {"0.1", "0.25", "0.5", "0.75"}  # p = 0 is excluded
    table = labelled(study, {"best_lr": 0.01, "best_p": 0.25})
    row = table[(table["experiment"] == "gradient_flow") & (table["seed"] == 1) & (table["variant"] == "dropout=0.25,batchnorm=false")]
    dropout = table[(table["experiment"] == "dropout") & (table["seed"] == 1) & (table["variant"] == "dropout=0.25")]
    assert row["key"].item() == dropout["key"].item()
    transfer = next(r for r in study.rows if r.experiment == "transfer" and "{best_p}" in r.variant and r.seed == 3)
    # The jobs training the candidate source runs (p = 0.1 ... 0.75) of every seed of the job.
    sources = study.job_inputs(study.job_of[transfer.key])["sources"]
    candidates = [r for r in study.rows if r.experiment == "dropout" and r.values["model.dropout"] != 0.0]
    assert sources == study.jobs_of(r.key for r in candidates) and len(sources) == 4
    assert materialise(transfer.spec, {"best_p": 0.5})["transfer"]["source"] == borrowed_source(study, 3, 0.5)


def borrowed_source(study, seed, p):
    row = next(r for r in study.rows if r.experiment == "dropout" and r.seed == seed and r.values["model.dropout"] == p)
    return f"results/cifar10/train/{row.key}/model.pt"


@pytest.mark.parametrize("change, message", [
    ({"selections": {"best_lr": {"experiment": "lr", "key": "optim.momentum"}}},
     "study.selections.best_lr.key: 'optim.momentum' is not a grid key of lr; grid keys: optim.lr"),
    ({"experiments": {"x": {"grid": {"model.dropout": [{"select": "best_q"}, 0.0]}}}},
     "study.experiments.x: unknown selection 'best_q'; selections: best_lr, best_p"),
    ({"experiments": {"x": {"transfer_from": "nope"}}}, "study.experiments.x.transfer_from: unknown experiment 'nope'"),
    ({"experiments": {"x": {"mode": "zip", "grid": {"optim.lr": [0.1, 0.2], "model.dropout": [0.0]}}}},
     "mode zip needs lists of equal length"),
])
def test_bad_references_name_the_key(change, message):
    config = compose([], {}, ROOT / "config.yaml")
    for key, value in change.items():
        config[key].update(value)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Study(config)


def test_labels_format_values_as_written():
    assert [fmt(v) for v in (0.0, 0.001, True, 3, [1, 2], {"select": "b"})] == ["0.0", "0.001", "true", "3", "[1,2]", "{b}"]


NAME_RULE = "is not allowed as a name; use letters, digits, '_', '-' and '.', not starting with '.'"


@pytest.mark.parametrize("change, message", [
    ({"study": ".."}, f"study.study: '..' {NAME_RULE}"),
    ({"experiments": {"x/../../../../../f": {}}}, f"study.experiments: 'x/../../../../../f' {NAME_RULE}"),
    ({"selections": {"a`touch pwned`": {"experiment": "lr", "key": "optim.lr"}}},
     f"study.selections: 'a`touch pwned`' {NAME_RULE}"),
    ({"comparisons": {"f": {"pairs": [["dropout/dropout=0.33", "dropout/dropout=0.0"]]}}},
     "study.comparisons.f.pairs.0: 'dropout/dropout=0.33' names no variant of dropout; variants: dropout=0.0,"),
    ({"comparisons": {"f": {"pairs": [["nope/x", "dropout/dropout=0.0"]]}}},
     "study.comparisons.f.pairs.0: 'nope/x' names no experiment; experiments: lr, lr_schedule"),
    ({"comparisons": {"f": {"pairs": [["dropout/dropout={best_q}", "dropout/dropout=0.0"]]}}},
     "study.comparisons.f.pairs.0: {best_q} is not a selection; selections: best_lr, best_p"),
    ({"ci_level": float("nan")}, "study.ci_level: nan is not a finite number"),
    ({"seeds": [0, 2 ** 63]}, "study.seeds.1: 9223372036854775808 is greater than the maximum of 9223372036854775807"),
    ({"seeds": 1_000_000}, "study: 16,000,000 runs planned, more than max_runs (100,000); set max_runs higher"),
    ({"defaults": {"seed": 3}}, "study.defaults.seed: a study's seeds come from `seeds`"),
    ({"experiments": {"lr": {"grid": {"seed": [1, 2]}}}}, "study.experiments.lr.grid.seed: a study's seeds come from"),
])
def test_names_references_and_sizes_are_checked_when_planning(change, message):
    config = compose([], {}, ROOT / "config.yaml")
    config.update(change)
    with pytest.raises(SpecError) as err:
        Study(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_template_borrows_runs_whatever_order_the_experiments_are_written_in():
    lr = {"grid": {"model.dropout": [0.1, 0.2]}}
    again = {"set": {"model.dropout": {"select": "best"}}}
    counts = []
    for experiments in ({"lr": lr, "again": again}, {"again": again, "lr": lr}):
        study = Study({"study": "o", "seeds": 2, "experiments": experiments,
                       "selections": {"best": {"experiment": "lr", "key": "model.dropout"}},
                       "defaults": {"train": {"early_stopping": {"patience": 2}}}})
        counts.append(len(study.trained))
    assert counts == [4, 4]  # `again` borrows lr's runs in both orders


def test_keys_inside_a_choice_of_forms_can_vary_in_a_grid():
    study = Study({"study": "o", "seeds": 1, "experiments": {
        "es": {"grid": {"train.early_stopping.patience": [2, 4]}, "set": {"data.val_fraction": 0.2}}}})
    assert sorted(r.spec["train"]["early_stopping"]["patience"] for r in study.rows) == [2, 4]
