"""Users' own code: a plugin file registers a model, a dataset and an analysis that a study uses by name."""
import json
import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from test_train import _without_clock, kill_at_epoch
from test_workflow import job_counts, planned_runs, snakemake

from nnstudy import schemas, spec as spec_mod
from nnstudy.training.run import run as train_run
from nnstudy.spec import SpecError
from nnstudy.study import Study

PLUGIN = ROOT / "tests" / "plugin"


@pytest.fixture
def plugged(tmp_path, monkeypatch):
    """The plugin study in a fresh working directory (plugin paths are relative to it)."""
    for name in ("blobs.py", "study.yaml"):
        shutil.copy(PLUGIN / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan(work) -> dict:
    study = Study(yaml.safe_load((work / "study.yaml").read_text()))
    study.check_plugins()
    return {(r.experiment, r.seed): r.key for r in study.rows}


@pytest.mark.slow
def test_plugin_study_plans_trains_transfers_and_edits_retrain_only_its_runs(plugged):
    dry = snakemake("-d", plugged, "--cores", 2, "--configfile", plugged / "study.yaml", "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout)["train"] == 3 and sum(map(len, planned_runs(dry.stdout).values())) == 6
    run = snakemake("-d", plugged, "--cores", 2, "--configfile", plugged / "study.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    keys = plan(plugged)
    sha = json.loads((plugged / "results/plugged/train" / keys["base", 0] / "run.json").read_text())["spec"]["plugins"]
    assert list(sha) == ["blobs.py"] and len(sha["blobs.py"]) == 64
    builtin = json.loads((plugged / "results/plugged/train" / keys["builtin", 0] / "run.json").read_text())
    assert builtin["spec"]["plugins"] == {}  # xor + convnet use no plugin code
    grads = pd.read_parquet(plugged / "results/plugged/train" / keys["base", 1] / "gradients.parquet")
    order = grads.query("epoch == 1").set_index("layer")["layer_index"].to_dict()
    assert order == {"head.weight": 2, "head.bias": 2, "body.0.weight": 0, "body.0.bias": 0,
                     "body.2.weight": 1, "body.2.bias": 1}  # forward order, not declaration order
    for seed in (0, 1):  # transfer: body.0 frozen at the source's weights, the head retrained
        src = torch.load(plugged / "results/plugged/train" / keys["base", seed] / "model.pt")
        dst = torch.load(plugged / "results/plugged/train" / keys["transfer", seed] / "model.pt")
        assert torch.equal(src["body.0.weight"], dst["body.0.weight"])
        assert not torch.equal(src["head.weight"], dst["head.weight"])
        assert not torch.equal(src["body.2.weight"], dst["body.2.weight"])
    means = pd.read_parquet(plugged / "results/plugged/summary/analyses/base/weight_norms/means.parquet")
    assert set(means["variant"]) == {"default"} and set(means["layer"]) == set(order)  # the plugin's analysis
    assert "mean weight norm per layer" in (plugged / "results/plugged/report.html").read_text()
    (plugged / "blobs.py").write_text((plugged / "blobs.py").read_text() + "#")  # one byte more
    edited = plan(plugged)
    changed = {k for k in keys if keys[k] != edited[k]}
    assert changed == {(e, s) for e in ("base", "transfer") for s in (0, 1)}
    again = snakemake("-d", plugged, "--cores", 2, "--configfile", plugged / "study.yaml", "-n")
    assert set(planned_runs(again.stdout)) == {"base/default", "transfer/default"}  # the plugin's runs; xor's stay done
    metrics = plugged / "results/plugged/train" / keys["builtin", 1] / "metrics.parquet"
    blob = bytearray(metrics.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit in a finished run's Parquet file
    metrics.write_bytes(bytes(blob))
    healed = snakemake("-d", plugged, "--cores", 2, "--configfile", plugged / "study.yaml", "-n")
    assert set(planned_runs(healed.stdout)) == {"base/default", "transfer/default", "builtin/default"}
    assert "metrics.parquet damaged" in healed.stderr


def test_plugin_run_resumes_bit_identical_after_sigkill(plugged):
    spec = {"plugins": ["blobs.py"], "seed": 1, "data": {"name": "blobs", "n": 30000, "dim": 64},
            "model": {"name": "tower", "width": 256}, "train": {"epochs": 4, "batch_size": 16}}
    (plugged / "spec.json").write_text(json.dumps(spec))
    out = plugged / "killed"
    kill_at_epoch(["--spec", "spec.json", "--out", out, "--threads", "1"], out, 2, plugged, timeout=180)
    resumed = train_run(spec, out, threads=1)
    assert resumed["resumed_from"] == [2] and resumed["spec"]["plugins"]["blobs.py"]
    train_run(spec, plugged / "straight", threads=1)
    for name, schema in (("metrics", schemas.METRICS), ("gradients", schemas.GRADIENTS)):
        a, b = (schemas.read(plugged / d / f"{name}.parquet", schema) for d in ("killed", "straight"))
        pd.testing.assert_frame_equal(_without_clock(a) if name == "metrics" else a,
                                      _without_clock(b) if name == "metrics" else b)
    final = [torch.load(plugged / d / "model.pt") for d in ("killed", "straight")]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


BROKEN = {
    "missing": (None, "study.plugins[0]: plugin 'blobs.py' not found"),
    "syntax": ("def broken(:\n", "study.plugins[0]: plugin blobs.py: syntax error at line 1"),
    "raises": ("import nnstudy\n@nnstudy.register_model('tower')\ndef tower(input_shape, classes, width: int = 3):\n"
               "    raise ValueError('no towers today')\n",
               "study.experiments.base (variant default): spec.model: model 'tower' of plugin blobs.py failed to "
               "build: ValueError: no towers today"),
    "wrong_type": ("import nnstudy\n@nnstudy.register_model('tower')\ndef tower(input_shape, classes, width: int = 3):\n"
                   "    return 'a tower'\n",
                   "spec.model: model 'tower' of plugin blobs.py returned str, not a torch.nn.Module"),
    "bad_data": ("import torch, nnstudy\n@nnstudy.register_dataset('blobs')\ndef blobs(n: int = 1):\n"
                 "    return torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3)\n",
                 "dataset 'blobs' of plugin blobs.py: train_y must be int64 labels"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_plugin_stops_the_plan_naming_file_and_key(plugged, case):
    code, message = BROKEN[case]
    if code is None:
        (plugged / "blobs.py").unlink()
    else:  # keep the other entry the study needs, replace one
        keep = "\n".join(line for line in (PLUGIN / "blobs.py").read_text().splitlines())
        keep = keep.replace('@nnstudy.register_model("tower")', '@nnstudy.register_model("tower_old")') \
            if "register_model" in code else keep.replace('@nnstudy.register_dataset("blobs")',
                                                          '@nnstudy.register_dataset("blobs_old")')
        (plugged / "blobs.py").write_text(code if case == "syntax" else keep + "\n" + code)
    with pytest.raises(SpecError) as err:
        plan(plugged)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_module_plugin_is_imported_as_a_module_with_its_relative_imports(tmp_path, monkeypatch):
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("WIDTH = 5\n")
    (package / "nets.py").write_text(
        "import torch\nimport nnstudy\nfrom .helpers import WIDTH\n\n"
        "@nnstudy.register_model('tiny_module_net')\n"
        "def tiny(input_shape, classes, width: int = WIDTH):\n"
        "    '''A linear model.'''\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    resolved = spec_mod.resolve({"plugins": ["mynets.nets"], "data": {"name": "xor"}, "model": {"name": "tiny_module_net"}})
    assert resolved["model"]["width"] == 5 and list(resolved["plugins"]) == ["mynets.nets"]
