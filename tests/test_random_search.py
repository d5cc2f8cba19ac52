"""Seeded random search: samples drawn when the study is planned, so they are variants like grid values."""
import pytest
import yaml
from conftest import ROOT
from test_workflow import job_counts, planned_runs, snakemake

from nnstudy.spec import SpecError
from nnstudy.study import Study, labelled

PARAMS = {"optim.lr": {"loguniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0, 0.5]},
          "model.activation": {"choice": ["relu", "tanh"]}}


def config(seeds=3, **search) -> dict:
    """A small study whose experiment `search` is `search` (random: 4 samples of PARAMS unless given)."""
    exp = {"random": {"samples": 4, "seed": 7, "params": PARAMS}, **search}
    return {"study": "rs", "seeds": seeds,
            "defaults": {"data": {"name": "imagefolder", "root": str(ROOT / "data/demo-cifar10")}, "train": {"epochs": 1}},
            "experiments": {"search": exp}}


def samples(study: Study) -> list[dict]:
    return [r.values for r in study.rows_of("search") if r.seed == study.seeds[0]]


def test_samples_are_fixed_by_their_seed_lie_in_range_and_run_with_every_seed():
    study = Study(config())
    drawn = samples(study)
    assert drawn == samples(Study(config())) and len(drawn) == 4
    other = config()
    other["experiments"]["search"]["random"]["seed"] = 8
    assert samples(Study(other)) != drawn
    for values in drawn:
        assert list(values) == list(PARAMS)  # params in the order written
        assert 1e-4 <= values["optim.lr"] <= 1e-1 and 0 <= values["model.dropout"] <= 0.5
        assert values["model.activation"] in ("relu", "tanh")
        assert all(float(f"{values[k]:.4g}") == values[k] for k in ("optim.lr", "model.dropout"))  # 4 significant digits
    per_variant = {}
    for r in study.rows:
        per_variant.setdefault(r.variant, []).append(r.seed)
        assert r.spec["optim"]["lr"] == r.values["optim.lr"] and r.spec["model"]["activation"] == r.values["model.activation"]
    assert len(per_variant) == 4 and all(seeds == study.seeds for seeds in per_variant.values())
    assert len({r.key for r in study.rows}) == 4 * 3  # every sample is its own run


def test_samples_cross_the_grid_and_label_runs_like_grid_values():
    study = Study(config(grid={"optim.weight_decay": [0.0, 0.001]}))
    drawn = samples(study)
    assert len(drawn) == 2 * 4 and study.grid_keys("search") == ["optim.weight_decay", *PARAMS]
    assert [v["optim.weight_decay"] for v in drawn] == [0.0] * 4 + [0.001] * 4
    assert [{k: v[k] for k in PARAMS} for v in drawn[:4]] == [{k: v[k] for k in PARAMS} for v in drawn[4:]]
    table = labelled(study, {})
    assert len(table) == 8 * 3 and set(table["variant"]) == {r.variant for r in study.rows}
    for r, (_, t) in zip(study.rows, table.iterrows()):
        assert t["variant"] == r.variant == (f"weight_decay={r.values['optim.weight_decay']!r},lr={r.values['optim.lr']!r},"
                                             f"dropout={r.values['model.dropout']!r},activation={r.values['model.activation']}")
        assert all(t[k] == r.values[k] for k in study.grid_keys("search"))


def test_identical_draws_are_one_variant_and_a_random_key_can_be_selected():
    study = Study(config(random={"samples": 3, "seed": 0, "params": {"model.activation": {"choice": ["tanh"]}}}))
    assert [r.variant for r in study.rows] == ["activation=tanh"] * 3
    c = config()
    c["experiments"]["tuned"] = {"set": {"optim.lr": {"select": "best_lr"}}}
    c["selections"] = {"best_lr": {"experiment": "search", "key": "optim.lr"}}
    study = Study(c)
    assert study.eligible("best_lr") == [v["optim.lr"] for v in samples(study)]
    assert {r.key[0] for r in study.rows_of("tuned")} == {"t"}  # one template per seed, resolved by the selection


@pytest.mark.parametrize("change, message", [
    ({"random": {"samples": 2, "params": {"optim.lrr": {"uniform": [0, 1]}}}},
     "study.experiments.search.random.params: 'optim.lrr' is not a spec key; allowed under optim:"),
    ({"grid": {"optim.lr": [0.1]}}, "study.experiments.search.random.params.optim.lr: also a grid key; give it in grid or in random"),
    ({"random": {"samples": 2, "params": {"model.dropout": {"uniform": [0.5, 0.5]}}}},
     "study.experiments.search.random.params.model.dropout.uniform: needs low < high, got [0.5, 0.5]"),
    ({"random": {"samples": 2, "params": {"optim.lr": {"loguniform": [0.1, 0.001]}}}},
     "study.experiments.search.random.params.optim.lr.loguniform: needs low < high, got [0.1, 0.001]"),
    ({"random": {"samples": 2, "params": {"optim.lr": {"loguniform": [0, 0.1]}}}},
     "study.experiments.search.random.params.optim.lr"),  # low > 0: the schema's oneOf
    ({"mode": "zip", "grid": {"optim.weight_decay": [0.0, 0.001]}},
     "study.experiments.search.random: not allowed with mode zip (each sample is crossed with every grid variant)"),
])
def test_bad_random_search_names_the_key(change, message):
    with pytest.raises(SpecError) as err:
        Study(config(**change))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_dry_run_lists_every_sample_with_every_seed(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config(seeds=2), sort_keys=False))
    plan = snakemake("-d", tmp_path, "-n", "--configfile", path)
    out = plan.stderr + plan.stdout
    assert plan.returncode == 0, out[-2000:]
    # Jobs of up to runs_per_job (5) runs: two whole samples (both seeds each) per job.
    assert job_counts(out)["train"] == 2 and "select" not in job_counts(out)
    runs = planned_runs(out)
    assert len(runs) == 4 and all(len(keys) == 2 for keys in runs.values())
