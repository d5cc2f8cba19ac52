"""Study composition (nnstudy.study.compose): one test per merge rule of its docstring, and the
catalogue's files assembled as the workflow assembles them."""
import pytest
import yaml
from conftest import ROOT

from nnstudy import cli
from nnstudy.spec import SpecError
from nnstudy.study import Study, compose
from nnstudy.study.compose import load, merge

CONFIG = ROOT / "config.yaml"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_mappings_merge_at_every_depth_and_other_values_replace_whole():
    base = {"seeds": 5, "defaults": {"model": {"conv": [{"channels": 32}, {"channels": 64}], "hidden": [256]},
                                     "train": {"epochs": 30, "batch_size": 128}}}
    over = {"seeds": [0, 1], "defaults": {"model": {"conv": [{"channels": 8}]}, "train": {"epochs": 2}}}
    assert merge(base, over) == {"seeds": [0, 1], "defaults": {
        "model": {"conv": [{"channels": 8}], "hidden": [256]}, "train": {"epochs": 2, "batch_size": 128}}}
    assert base["defaults"]["train"]["epochs"] == 30  # the base is not changed


def test_null_removes_a_key_from_what_is_extended():
    base = {"experiments": {"a": {"grid": {"x": [1]}}, "b": {}}, "defaults": {"data": {"crop": 4, "flip": True}}}
    assert merge(base, {"experiments": {"b": None}, "defaults": {"data": {"crop": None}}}) == {
        "experiments": {"a": {"grid": {"x": [1]}}}, "defaults": {"data": {"flip": True}}}
    assert merge({}, {"gone": None}) == {}


def test_extends_is_relative_to_the_file_merges_lists_of_parents_in_order_and_catches_cycles(tmp_path):
    write(tmp_path / "shared" / "base.yaml", {"study": "base", "seeds": 5, "defaults": {"train": {"epochs": 30}}})
    write(tmp_path / "shared" / "adam.yaml", {"defaults": {"optim": {"name": "adam"}}, "seeds": 3})
    child = write(tmp_path / "studies" / "child.yaml", {
        "extends": ["../shared/base.yaml", "../shared/adam.yaml"], "study": "child", "defaults": {"train": {"epochs": 2}}})
    assert load(child) == {"study": "child", "seeds": 3,
                           "defaults": {"train": {"epochs": 2}, "optim": {"name": "adam"}}}
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(SpecError, match="extends itself: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"extends": "missing.yaml"})
    with pytest.raises(SpecError, match="study file not found: .*missing.yaml"):
        load(tmp_path / "c.yaml")


def test_a_budget_merges_last_names_the_results_folder_and_command_line_values_win(tmp_path):
    study = write(tmp_path / "s.yaml", {
        "study": "s", "seeds": 5, "defaults": {"train": {"epochs": 30, "batch_size": 128}},
        "experiments": {"a": {"grid": {"optim.lr": [0.1, 0.01]}}},
        "budgets": {"tiny": {"seeds": 2, "defaults": {"train": {"epochs": 1}}}}})
    tiny = compose([study], {"budget": "tiny", "seeds": 3}, CONFIG)
    assert tiny["study"] == "s-tiny" and tiny["budget"] == "tiny" and "budgets" not in tiny
    assert tiny["seeds"] == 3 and tiny["defaults"]["train"] == {"epochs": 1, "batch_size": 128}
    full = compose([study], {}, CONFIG)
    assert full["study"] == "s" and "budget" not in full and full["defaults"]["train"]["epochs"] == 30
    with pytest.raises(SpecError, match=r"^budget: 'huge' is not a budget of .*s.yaml; its budgets: tiny$"):
        compose([study], {"budget": "huge"}, CONFIG)


def test_without_a_study_of_its_own_the_files_change_the_default_study(tmp_path):
    extra = write(tmp_path / "more.yaml", {"seeds": 3, "defaults": {"train": {"epochs": 2}}})
    merged = compose([extra], {}, CONFIG)
    default = compose([], {}, CONFIG)
    assert merged["study"] == default["study"] == "cifar10" and merged["seeds"] == 3
    assert merged["defaults"]["train"] == {**default["defaults"]["train"], "epochs": 2}
    assert merged["experiments"] == default["experiments"]


def test_the_demo_is_the_default_study_at_its_demo_budget():
    # The demo had a study file of its own (studies/demo.yaml, commit 68b0993); its runs are the
    # default study's at the demo budget, the same run ids. The transfer runs' specs name their
    # source's folder, results/<study>/..., which the study's new name changes.
    demo = Study(compose([], {"budget": "demo"}, CONFIG))
    assert demo.name == "cifar10-demo" and len(demo.rows) == 80 and len(demo.trained) == 70
    lr = {r.variant: r.key for r in demo.rows if r.experiment == "lr" and r.seed == 0}
    assert lr["lr=0.003"] == "d28a2075b91b"
    assert demo.config["defaults"]["data"] == {"name": "imagefolder", "root": "data/demo-cifar10", "flip": True}


def test_cli_reads_a_study_at_a_budget(capsys):
    assert cli.main(["check", "--configfile", str(ROOT / "studies" / "cifar10.yaml"), "--budget", "tiny"]) == 0
    assert "study cifar10-tiny: 28 runs planned, 24 to train" in capsys.readouterr().out
    assert cli.main(["check", "--configfile", str(ROOT / "studies" / "cifar10.yaml"), "--budget", "nope"]) == 2
    assert "budget: 'nope' is not a budget of" in capsys.readouterr().err
