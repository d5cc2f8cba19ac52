"""The built-in architectures: resnet, block_attention, torchvision (parameter counts by hand,
output shapes, ImageNet weights from torch.hub's cache or a message saying where they go), and
each trained end to end on the demo CIFAR-10 subset."""
import json
import socket
import urllib.error

import pytest
import torch
from torch import nn

import nnstudy
from conftest import ROOT
from nnstudy import cli, models
from nnstudy.models import ModelError, torchvision_models

CLASSES = 10
DEMO = {"name": "imagefolder", "root": str(ROOT / "data/demo-cifar10"), "train_size": 500, "test_size": 200}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet_parameter_count_and_output():
    model = models.build({"name": "resnet", "blocks": [1, 1], "width": 4}, (3, 32, 32), CLASSES)
    expected = (
        3 * 4 * 9 + 2 * 4                        # stem: conv 3->4 3x3, batch norm 4         = 116
        + 2 * (4 * 4 * 9 + 2 * 4)                # stages.0.0: conv1, conv2 4->4 3x3, 2 bn   = 304
        + 4 * 8 * 9 + 2 * 8 + 8 * 8 * 9 + 2 * 8  # stages.1.0: conv1 4->8 (stride 2), conv2 8->8, 2 bn = 896
        + 4 * 8 + 2 * 8                          #   its shortcut: conv 4->8 1x1 stride 2, bn 8 = 48
        + 8 * CLASSES + CLASSES                  # head: Linear 8->10                        = 90
    )
    assert expected == 1454
    assert n_params(model) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "stem.conv.weight" and "stages.1.0.shortcut.conv.weight" in names
    assert names[-2:] == ["head.weight", "head.bias"]


def test_resnet18_layout_matches_the_published_cifar_count():
    # The usual CIFAR ResNet-18 (e.g. kuangliu/pytorch-cifar) has 11,173,962 parameters for 10 classes.
    model = models.build({"name": "resnet", "blocks": [2, 2, 2, 2], "width": 64}, (3, 32, 32), CLASSES)
    assert n_params(model) == 11_173_962


def test_block_attention_parameter_count_and_output():
    spec = {"name": "block_attention", "channels": [4, 8], "blocks": [1, 2], "k": 2, "reduction": 2}
    model = models.build(spec, (3, 32, 32), CLASSES)
    expected = (
        # stages.0.0, 3->4: MLP hidden max(3 // 2, 2) = 2
        (3 * 2 + 2) + (2 * 2 + 2)                # attention: Linear 3->2, Linear 2->k=2     = 14
        + 2 * 4 * 3 * 9 + 2 * 4                  # convs: k=2 convs 3->4 3x3, bn 4           = 224
        + 3 * 4 + 2 * 4                          # shortcut: conv 3->4 1x1, bn 4             = 20
        # stages.1.0, 4->8: hidden max(4 // 2, 2) = 2
        + (4 * 2 + 2) + (2 * 2 + 2)              # attention: Linear 4->2, Linear 2->2       = 16
        + 2 * 8 * 4 * 9 + 2 * 8                  # convs: 2 convs 4->8 3x3, bn 8             = 592
        + 4 * 8 + 2 * 8                          # shortcut: conv 4->8 1x1, bn 8             = 48
        # stages.1.1, 8->8: hidden max(8 // 2, 2) = 4, identity shortcut
        + (8 * 4 + 4) + (4 * 2 + 2)              # attention: Linear 8->4, Linear 4->2       = 46
        + 2 * 8 * 8 * 9 + 2 * 8                  # convs: 2 convs 8->8 3x3, bn 8             = 1168
        + 8 * CLASSES + CLASSES                  # head: Linear 8->10                        = 90
    )
    assert expected == 2218
    assert n_params(model) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)
    names = {n for n, _ in model.named_parameters()}
    assert {"stages.0.0.convs.weight", "stages.0.0.attention.fc1.weight", "stages.0.0.bn.weight",
            "stages.0.0.shortcut.conv.weight", "head.weight"} <= names


def test_block_attention_mixes_k_separate_convs():
    spec = {"name": "block_attention", "channels": [6], "blocks": [1], "k": 3, "reduction": 2}
    block = models.build(spec, (3, 8, 8), CLASSES).stages[0][0].eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = torch.softmax(block.attention(x), dim=1)
        convs = block.convs.weight.chunk(3)  # conv i's weight: outputs i*6 .. i*6+5
        mixed = sum(a[:, i, None, None, None] * nn.functional.conv2d(x, convs[i], padding=1) for i in range(3))
        expected = nn.functional.leaky_relu(block.bn(mixed) + block.shortcut(x), 0.01)
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_block_attention_needs_one_block_count_per_stage():
    spec = {"name": "block_attention", "channels": [4, 8], "blocks": [1], "k": 2, "reduction": 2}
    with pytest.raises(ModelError, match=r"^spec\.model\.blocks: "):
        models.build(spec, (3, 32, 32), CLASSES)


def test_torchvision_unknown_arch_lists_the_models():
    with pytest.raises(ModelError, match=r"^spec\.model\.arch: 'resnet19' .*resnet18, resnet34"):
        models.build({"name": "torchvision", "arch": "resnet19", "pretrained": None}, (3, 32, 32), CLASSES)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache, and no network: a download fails as it does offline, saying which
    socket timeout it ran under."""
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError(f"offline (socket timeout {socket.getdefaulttimeout()})")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def cache_resnet18(torch_home) -> dict:
    """A randomly initialised resnet18 state dict where torch.hub caches resnet18's ImageNet weights."""
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    path = torchvision_models.weights_file("resnet18")
    assert path.parent == torch_home / "hub" / "checkpoints" and path.name == "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_torchvision_pretrained_missing_weights_say_where_they_go(torch_home):
    with pytest.raises(ModelError) as e:
        models.build({"name": "torchvision", "arch": "resnet18", "pretrained": "imagenet"}, (3, 32, 32), CLASSES)
    message = str(e.value)
    assert message.startswith("spec.model.pretrained: ImageNet weights for resnet18 are not in the cache")
    assert str(torch_home / "hub" / "checkpoints") in message and "resnet18-f37072fd.pth" in message
    assert "TORCH_HOME" in message and "\n" not in message
    assert f"could not be downloaded: URLError: <urlopen error offline (socket timeout " \
           f"{float(torchvision_models.DOWNLOAD_TIMEOUT_S)})>" in message
    assert socket.getdefaulttimeout() is None  # the download's timeout does not outlive it


def test_torchvision_pretrained_loads_the_cached_file_and_replaces_the_head(torch_home):
    saved = cache_resnet18(torch_home)
    model = models.build({"name": "torchvision", "arch": "resnet18", "pretrained": "imagenet"}, (3, 32, 32),
                         CLASSES)
    assert torch.equal(model.state_dict()["layer3.1.conv2.weight"], saved["layer3.1.conv2.weight"])
    assert type(model.fc) is nn.Linear and (model.fc.in_features, model.fc.out_features) == (512, CLASSES)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)


# -- end to end: the training engine and the command line --------------------------------------

@pytest.mark.parametrize("model", [
    {"name": "resnet", "blocks": [1, 1], "width": 8},
    {"name": "block_attention", "channels": [8, 16], "blocks": [1, 1], "k": 2},
], ids=lambda m: m["name"])
def test_trains_one_epoch_on_demo_cifar(tmp_path, model):
    from nnstudy.training.run import run as train_run

    spec = {"data": DEMO, "model": model, "train": {"epochs": 1, "batch_size": 64},
            "optim": {"name": "adam", "lr": 1e-3}}
    manifest = train_run(spec, tmp_path / "run", progress=False)
    assert manifest["status"] == "completed"
    assert nnstudy.load_run(tmp_path / "run").channels_last


def pretrained_spec(**sections) -> dict:
    return {"seed": 0, "data": {**DEMO, "train_size": 200, "test_size": 100},
            "model": {"name": "torchvision", "arch": "resnet18", "pretrained": "imagenet"},
            "train": {"epochs": 1, "batch_size": 64}, "optim": {"name": "adam", "lr": 1e-3}, **sections}


def test_cli_pretrained_without_weights_stops_with_the_cache_path(torch_home, tmp_path, capsys):
    spec_file = tmp_path / "spec.json"  # JSON is YAML
    spec_file.write_text(json.dumps(pretrained_spec()))
    assert cli.main(["train", "--spec", str(spec_file), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "spec.model.pretrained" in err and str(torch_home / "hub" / "checkpoints") in err
    assert not (tmp_path / "run").exists()


def test_pretrained_frozen_backbone_keeps_the_cached_weights(torch_home, tmp_path):
    from nnstudy import spec as spec_mod
    from nnstudy.training.run import run as train_run
    from nnstudy.training.build import build

    saved = cache_resnet18(torch_home)
    spec = pretrained_spec(transfer={"freeze": ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]})
    assert train_run(spec, tmp_path / "run", progress=False)["status"] == "completed"
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for name, tensor in trained.items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, saved[name]), name
    initial = build(spec_mod.resolve(spec), torch.device("cpu")).model.state_dict()
    assert trained["fc.weight"].shape == (CLASSES, 512)
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])
