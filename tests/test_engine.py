"""The open engine: registries and the schema agree, input normalisation, the binary loss,
and load_run as the one way back from disk."""
import pandas as pd
import torch
import torchvision.transforms.v2.functional as TF
from conftest import mnist_spec

import nnstudy
from nnstudy import registry, spec as spec_mod
from nnstudy.data import device
from nnstudy.training.epoch import evaluate
from nnstudy.training.run import run as train_run


def test_every_registered_name_is_in_the_schema_and_the_reverse():
    props = spec_mod.schema()["$defs"]["spec"]["properties"]
    for section, reg in registry.REGISTRIES.items():
        allowed = props[section]["enum"] if section == "loss" else props[section]["properties"]["name"]["enum"]
        assert allowed == reg.names() and allowed
        if section != "loss":  # each concrete entry brings exactly its own parameters
            cases = {c["if"]["properties"]["name"]["const"]: c["then"]["properties"] for c in props[section]["allOf"]}
            for entry in reg.entries():
                if entry.target is None:
                    assert set(cases[entry.name]) == set(props[section]["properties"]) | set(entry.params)
    assert {"samples", "noise"} <= set(registry.DATASETS.get("xor").params)  # XOR's own, not data's
    assert "xor_samples" not in props["data"]["properties"]


def _batch(spec_data: dict, shared_data):
    resolved = spec_mod.resolve({"data": {"name": "mnist", "root": str(shared_data), "train_size": 100,
                                          "test_size": 10, **spec_data}})
    d = device.build(resolved["data"], seed=0, device=torch.device("cpu"))
    raw = device.pools(resolved["data"])[0].x[d.train_idx[:16]]  # uint8, as the dataset gives them
    return raw, next(d.batches("train", 16))[0]


def test_normalize_none_gives_pixels_over_255_exactly(shared_data):
    raw, x = _batch({"normalize": "none"}, shared_data)
    assert torch.equal(x, raw.float() / 255)


def test_normalize_imagenet_equals_torchvision_normalize(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.arange(40) % 2

    @nnstudy.register_dataset("tiny_rgb_test")
    def tiny_rgb():
        return images, labels, images[:10], labels[:10]

    resolved = spec_mod.resolve({"data": {"name": "tiny_rgb_test", "normalize": "imagenet", "val_fraction": 0.5}})
    d = device.build(resolved["data"], seed=0, device=torch.device("cpu"))
    x = next(d.batches("test", 10))[0]
    expected = TF.normalize(images[:10].float() / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert torch.equal(x, expected)
    explicit = spec_mod.resolve({"data": {"name": "tiny_rgb_test", "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}})
    x = next(device.build(explicit["data"], 0, torch.device("cpu")).batches("test", 10))[0]
    assert torch.equal(x, (images[:10].float() / 255 - 0.5) / 0.25)
    resized = spec_mod.resolve({"data": {"name": "tiny_rgb_test", "resize": 16}})
    assert next(device.build(resized["data"], 0, torch.device("cpu")).batches("test", 10))[0].shape == (10, 3, 16, 16)
    assert spec_mod.run_id(resolved) != spec_mod.run_id(explicit)  # normalisation is part of the identity


def test_xor_2_4_1_with_one_sigmoid_output_and_binary_cross_entropy(tmp_path):
    spec = {"seed": 0, "data": {"name": "xor", "val_fraction": 0.0}, "loss": "binary_cross_entropy",
            "model": {"hidden": [4], "activation": "tanh"}, "optim": {"name": "adam", "lr": 0.1},
            "train": {"epochs": 500, "batch_size": 4, "eval_every": 100}}
    train_run(spec, tmp_path / "r")
    weights = torch.load(tmp_path / "r" / "model.pt")
    assert weights["classifier.fc1.weight"].shape == (4, 2) and weights["classifier.fc2.weight"].shape == (1, 4)
    m = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert m.query("split == 'test' and epoch == 500")["accuracy"].item() == 1.0  # 4 of 4 corners


def test_load_run_recomputes_the_recorded_test_accuracy_exactly(shared_data, tmp_path):
    spec = mnist_spec(shared_data, model={"preset": "small_cnn", "conv": [{"channels": 4}, {"channels": 8}],
                                          "hidden": [16]})
    manifest = train_run(spec, tmp_path / "r")
    run = nnstudy.load_run(tmp_path / "r")
    assert run.id == manifest["id"] and run.spec == manifest["spec"] and not run.model.training
    assert len(run.data.val_idx) == 300 and len(run.data.test_y) == 1000  # the run's own split
    recorded = pd.read_parquet(tmp_path / "r" / "metrics.parquet").query("split == 'test'")
    loss, acc = evaluate(run, "test", run.spec["train"]["eval_batch_size"])
    assert acc == recorded["accuracy"].iloc[-1] and loss == recorded["loss"].iloc[-1]
    best = nnstudy.load_run(tmp_path / "r", weights="best")
    best_val = pd.read_parquet(tmp_path / "r" / "metrics.parquet").query("split == 'val'")["accuracy"].max()
    assert evaluate(best, "val", 1000)[1] == best_val


def test_images_kept_as_normalised_floats_train_exactly_as_uint8_batches(tmp_path, monkeypatch):
    """The fast path (a pool normalised once, kept as float) against normalising every batch:
    same metrics, gradient statistics and weights, with flip and crop augmentation."""
    from conftest import ROOT
    from test_bundles import same_run

    spec = {"data": {"name": "imagefolder", "root": str(ROOT / "data" / "demo-cifar10"), "flip": True, "crop": 2},
            "model": {"name": "convnet", "conv": [{"channels": 4}], "hidden": [16]}, "train": {"epochs": 2}}
    assert device.build(spec_mod.resolve(spec)["data"], 0, torch.device("cpu")).train_x.dtype == torch.float32
    train_run(spec, tmp_path / "resident", threads=1)
    monkeypatch.setattr(device, "RESIDENT_FLOAT_BYTES", 0)
    assert device.build(spec_mod.resolve(spec)["data"], 0, torch.device("cpu")).train_x.dtype == torch.uint8
    train_run(spec, tmp_path / "per_batch", threads=1)
    same_run(tmp_path / "resident", tmp_path / "per_batch")


def test_bf16_and_compile_are_spec_options_of_their_own_runs(tmp_path):
    """bf16 autocast trains a slightly different run under its own id; torch.compile the same
    numbers as eager (to float tolerance) under its own id; both recorded in run.json."""
    base = {"seed": 0, "data": {"name": "xor", "samples": 64}, "model": {"hidden": [8]},
            "train": {"epochs": 2, "batch_size": 16}}
    runs = {}
    for name, extra in {"fp32": {}, "bf16": {"precision": "bf16"}, "compiled": {"compile": True}}.items():
        manifest = train_run({**base, "train": {**base["train"], **extra}}, tmp_path / name)
        runs[name] = (manifest, pd.read_parquet(tmp_path / name / "metrics.parquet")["loss"].to_numpy())
    assert len({m["id"] for m, _ in runs.values()}) == 3
    assert runs["bf16"][0]["spec"]["train"]["precision"] == "bf16" and runs["compiled"][0]["spec"]["train"]["compile"]
    fp32, bf16, compiled = (loss for _, loss in runs.values())
    assert abs(bf16 - fp32).max() < 0.02 and (bf16 != fp32).any()
    assert abs(compiled - fp32).max() < 1e-5
