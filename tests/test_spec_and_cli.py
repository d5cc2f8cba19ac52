"""Bad specs stop before any work with a message naming the key and the allowed values."""
import json

import pytest
import yaml
from conftest import mnist_spec

from nnstudy import cli, spec as spec_mod
from nnstudy.spec import resolve, run_id


@pytest.mark.parametrize("bad, message", [
    ({"optim": {"lrr": 0.1}}, "spec.optim: unknown key 'lrr'; allowed keys: lr, momentum, name, nesterov, weight_decay"),
    ({"optim": {"lr": "fast"}}, "spec.optim.lr: 'fast' has the wrong type; expected number"),
    ({"data": {"name": "imagenet"}},
     "spec.data.name: 'imagenet' is not a registered dataset; allowed values: mnist, fashion_mnist, cifar10, cifar100, imagefolder, xor"),
    ({"model": {"preset": "resnet"}},
     "spec.model.preset: 'resnet' is not a preset; allowed values: baseline, small_cnn, deep_cnn, avgpool_cnn, wide_cnn, mlp4"),
    ({"optim": {"name": "lion"}}, "spec.optim.name: 'lion' is not a registered optimiser; allowed values: sgd, rmsprop, adam, adamw"),
    ({"model": {"activation": "swish"}}, "allowed values: relu, leaky_relu, sigmoid, tanh"),
    ({"epochs": 3}, "spec: unknown key 'epochs'; allowed keys: data, loss, model, optim, plugins, schedule, seed, train, transfer"),
    ({"train": {"epochs": 0}}, "spec.train.epochs: 0 is less than the minimum of 1"),
    ({"model": {"conv": [{"channels": "a"}]}}, "spec.model.conv.0.channels"),
])
def test_bad_spec_names_key_and_allowed_values(tmp_path, capsys, bad, message):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(bad))
    assert cli.main(["train", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_data_names_root_and_option(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(mnist_spec(tmp_path / "nowhere")))
    assert cli.main(["train", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str((tmp_path / "nowhere").resolve()) in err and "data.download" in err and "data.root" in err
    assert not (tmp_path / "run").exists()


def test_transfer_prefix_that_matches_nothing(tmp_path, shared_data, capsys):
    from nnstudy.training.run import run as train_run
    src = train_run(mnist_spec(shared_data, train={"epochs": 1}), tmp_path / "src")
    assert src["status"] == "completed"
    bad = mnist_spec(shared_data, transfer={"source": str(tmp_path / "src" / "model.pt"), "freeze": ["featurs"]})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(bad))
    assert cli.main(["train", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "spec.transfer.freeze: 'featurs' matches no parameter" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_preset_expands_and_keys_beside_it_override():
    r = spec_mod.resolve({"model": {"preset": "baseline", "dropout": 0.5}})
    assert [b["channels"] for b in r["model"]["conv"]] == [[32], [64], [128]]
    assert r["model"]["hidden"] == [256] and r["model"]["dropout"] == 0.5 and "preset" not in r["model"]
    assert spec_mod.run_id(r) == spec_mod.run_id(spec_mod.resolve({"model": {"preset": "baseline", "dropout": 0.5}}))
    explicit = spec_mod.resolve({"model": {"conv": [{"channels": c} for c in (32, 64, 128)], "hidden": [256],
                                           "dropout": 0.5}})
    assert spec_mod.run_id(explicit) == spec_mod.run_id(r)  # identity is what is trained, not how it was named


@pytest.mark.parametrize("args, message", [
    (["--threads", "-1"], "--threads: -1 is not allowed; at least 1"),
    (["--device", "cuda:7"], "--device cuda:7: "),
    (["--device", "gpu"], "--device gpu: not a device; cpu, cuda or cuda:N"),
])
def test_bad_options_name_the_option(tmp_path, capsys, args, message):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"data": {"name": "xor"}, "train": {"epochs": 1}}))
    assert cli.main(["train", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_out_a_file_and_spec_a_folder(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"data": {"name": "xor"}}))
    (tmp_path / "taken").write_text("")
    assert cli.main(["train", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "taken")]) == 2
    assert "--out " + str(tmp_path / "taken") + ": a file is there" in capsys.readouterr().err
    assert cli.main(["train", "--spec", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "--spec: no spec file at" in capsys.readouterr().err


def test_bad_selection_files_and_spec_json_name_the_option(tmp_path, capsys):
    spec = json.dumps({"data": {"name": "xor"}, "optim": {"lr": {"select": "best"}}})
    (tmp_path / "other.json").write_text(json.dumps({"name": "other", "value": 0.1}))
    for extra, message in ((["--selections", str(tmp_path / "missing.json")], "--selections"),
                           (["--selections", str(tmp_path / "other.json")], "no file for selection 'best'")):
        assert cli.main(["train", "--spec-json", spec, "--out", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert cli.main(["train", "--spec-json", "{not json", "--out", str(tmp_path / "r")]) == 2
    assert "--spec-json: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_check_names_the_line_of_a_yaml_error_and_plans_a_good_study(tmp_path, capsys):
    from conftest import ROOT

    (tmp_path / "bad.yaml").write_text("study: x\nexperiments:\n  a: {grid: {optim.lr: [0.1, 0.2}}\n")
    assert cli.main(["check", "--configfile", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "bad.yaml") in err and "line 3" in err and err.count("\n") == 1
    assert cli.main(["check", "--configfile", str(ROOT / "studies" / "cifar10.yaml"), "--budget", "demo"]) == 0
    assert "study cifar10-demo: 80 runs planned, 70 to train" in capsys.readouterr().out


def test_a_constant_channel_is_scaled_not_divided_by_zero(capsys):
    import torch

    import nnstudy
    from nnstudy.data import device

    images = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, 1] = 128

    @nnstudy.register_dataset("flat_channel_test")
    def flat():
        return images, torch.arange(20) % 2, images[:4], torch.arange(4) % 2

    d = device.build(spec_mod.resolve({"data": {"name": "flat_channel_test"}})["data"], 0, torch.device("cpu"))
    x = next(d.batches("test", 4))[0]
    assert torch.isfinite(x).all() and (x[:, 1] == 0).all()
    assert "channel(s) [1] of flat_channel_test are constant" in capsys.readouterr().err


def test_options_added_later_leave_earlier_run_ids_alone():
    """train.precision and train.compile came after runs were recorded: at their defaults the id
    is the one computed before they existed; set otherwise, they make another run."""
    assert run_id(resolve({})) == "ba5726e6a82e"  # recorded before the keys existed
    assert run_id(resolve({"train": {"precision": "fp32", "compile": False}})) == "ba5726e6a82e"
    assert resolve({})["train"]["precision"] == "fp32"
    others = {run_id(resolve({"train": t})) for t in ({"precision": "bf16"}, {"compile": True})}
    assert len(others) == 2 and "ba5726e6a82e" not in others
