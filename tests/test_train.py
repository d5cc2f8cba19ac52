"""The core run engine on real MNIST: schemas, determinism, resume, transfer, divergence."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, mnist_spec

from nnstudy import schemas, spec as spec_mod
from nnstudy.training.run import run as train_run
from nnstudy.training.losses import manual_cross_entropy
from nnstudy.training.optim import lr_at
from nnstudy.training.checkpoint import CorruptFile, load_verified, save_verified


def _without_clock(df):
    return df.drop(columns=list(schemas.WALL_CLOCK))


def test_two_epochs_write_declared_schemas_and_repeat_exactly(shared_data, tmp_path):
    spec = mnist_spec(shared_data)
    m1 = train_run(spec, tmp_path / "a", threads=2)
    m2 = train_run(spec, tmp_path / "b", threads=2)
    assert m1["id"] == m2["id"] and m1["status"] == "completed"
    metrics = [schemas.read(tmp_path / d / "metrics.parquet", schemas.METRICS) for d in "ab"]
    grads = [schemas.read(tmp_path / d / "gradients.parquet", schemas.GRADIENTS) for d in "ab"]
    assert len(metrics[0]) == 2 * 3  # epochs x (train, val, test)
    assert set(metrics[0]["split"]) == {"train", "val", "test"}
    assert len(grads[0]) == 2 * 6  # epochs x (3 Linear layers x weight/bias)
    pd.testing.assert_frame_equal(_without_clock(metrics[0]), _without_clock(metrics[1]))
    pd.testing.assert_frame_equal(grads[0], grads[1])
    # It learned something, and eval-mode train metrics differ from the running average.
    final = metrics[0].query("epoch == 2").set_index("split")
    assert final.loc["test", "accuracy"] > 0.8
    assert final.loc["train", "accuracy"] != final.loc["train", "running_accuracy"]
    assert metrics[0].query("split != 'train'")["running_loss"].isna().all()
    manifest = json.loads((tmp_path / "a" / "run.json").read_text())
    assert manifest["spec"]["data"]["val_fraction"] == 0.1  # defaults recorded
    assert manifest["versions"]["torch"] == torch.__version__
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert (tmp_path / "a" / "checkpoint.pt").exists()  # kept until the workflow releases it
    # A finished run is not recomputed.
    before = (tmp_path / "a" / "metrics.parquet").stat().st_mtime_ns
    assert train_run(spec, tmp_path / "a")["id"] == m1["id"]
    assert (tmp_path / "a" / "metrics.parquet").stat().st_mtime_ns == before


def test_seed_changes_the_run(shared_data, tmp_path):
    a = train_run(mnist_spec(shared_data, train={"epochs": 1}), tmp_path / "a")
    b = train_run(mnist_spec(shared_data, train={"epochs": 1}, seed=4), tmp_path / "b")
    assert a["id"] != b["id"]
    la = pd.read_parquet(tmp_path / "a" / "metrics.parquet")["loss"].to_numpy()
    lb = pd.read_parquet(tmp_path / "b" / "metrics.parquet")["loss"].to_numpy()
    assert not np.array_equal(la, lb)


def test_cpu_evaluation_in_chunks_gives_the_numbers_of_one_forward_per_batch(shared_data):
    from nnstudy.training.build import build
    from nnstudy.training.epoch import CPU_CONV_CHUNK, evaluate

    spec = spec_mod.resolve(mnist_spec(shared_data, data={"test_size": 1500},
                                       model={"conv": [{"channels": 8}, {"channels": 16}], "hidden": [32],
                                              "batchnorm": True, "dropout": 0.3}))
    run = build(spec, torch.device("cpu"))
    assert run.channels_last and len(run.data.test_y) > 1000 > CPU_CONV_CHUNK
    chunked = evaluate(run, "test", 1000)
    total, n = torch.zeros(2, dtype=torch.float64), 0
    with torch.inference_mode():
        for x, y in run.data.batches("test", 1000):  # the whole batch in one forward
            logits = run.model(run.inputs(x))
            loss = run.loss_fn(logits, y)
            total += torch.stack([loss.double() * len(y), (logits.argmax(1) == y).sum().double()])
            n += len(y)
    # Bit for bit on some CPUs (AMD EPYC); where oneDNN picks its convolution by batch size (an
    # Intel Xeon here), the last bits of a sample's logits differ: the loss to 1e-6.
    assert chunked[0] == pytest.approx(total[0].item() / n, rel=1e-6, abs=0)
    assert chunked[1] == total[1].item() / n


def test_gradient_stats_count_a_parameter_a_step_did_not_use_as_zero():
    from nnstudy.training.callbacks import GradientStats

    class TwoHeads(torch.nn.Module):  # a user model whose second head this step does not use
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x)

    model = TwoHeads()
    stats = GradientStats(model, {"a": 0, "b": 1})
    model(torch.ones(4, 3)).sum().backward()
    stats.after_backward()
    rows = {r["layer"]: r for r in stats.end_epoch("r", 1)}
    assert rows["a.bias"]["grad_mean"] == 4.0 and rows["a.bias"]["grad_norm"] == pytest.approx(32 ** 0.5)
    assert rows["b.weight"]["grad_abs_mean"] == 0.0 and rows["b.weight"]["steps"] == 1


@pytest.mark.parametrize("packed", [False, True], ids=["tensors", "packed"])
def test_gradient_stats_match_float64_reference(packed):
    # float32 running sums over an epoch's steps, reduced in float64: 1e-6 relative at most; over
    # the packed buffer on the CPU the sums of |g| and the norms are BLAS sasum and dot per step,
    # over the tensors a running sum and torch's norm.
    torch.manual_seed(0)
    from nnstudy import models
    from nnstudy.training.callbacks import GradientStats
    from nnstudy.training.optim import make_optimizer

    resolved = spec_mod.resolve({"model": {"conv": [{"channels": 4}], "hidden": [16], "batchnorm": True},
                                 "optim": {"name": "sgd", "lr": 0.1}})
    model = models.build(resolved["model"], (1, 8, 8), 3)
    opt = make_optimizer(list(model.parameters()), resolved["optim"]) if packed else torch.optim.SGD(model.parameters(), lr=0.1)
    stats = GradientStats(model, models.forward_order(model, (1, 8, 8)), opt.flat.grad if packed else None)
    assert stats.blas == packed
    stored = {n: [] for n, _ in model.named_parameters()}
    for _ in range(60):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        stats.after_backward()
        for n, p in model.named_parameters():
            stored[n].append(p.grad.detach().double().numpy().copy())
        opt.step()
    rows = {r["layer"]: r for r in stats.end_epoch("r", 1)}
    assert list(rows) == [n for n, _ in model.named_parameters()]
    for name, steps in stored.items():
        g = np.stack(steps)
        r = rows[name]
        scale = np.abs(g).max()
        assert r["steps"] == 60 and r["numel"] == g[0].size
        assert abs(r["grad_mean"] - g.mean()) <= 1e-6 * scale
        assert abs(r["grad_std"] - g.std()) <= 1e-6 * scale
        assert r["grad_abs_mean"] == pytest.approx(np.abs(g).mean(), rel=1e-6)
        assert r["grad_norm"] == pytest.approx(np.mean([np.linalg.norm(s) for s in steps]), rel=1e-6)
    # Layer index is depth in forward order; batch norm shares its layer's index.
    assert [rows[n]["layer_index"] for n in
            ("features.conv1.weight", "features.bn1.weight", "classifier.fc1.weight",
             "classifier.bn_fc1.bias", "classifier.fc2.weight")] == [0, 0, 1, 1, 2]
    assert rows["features.bn1.weight"]["module"] == "BatchNorm2d"
    # The next epoch starts from zero.
    opt.zero_grad()
    F.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(0, 3, (16,))).backward()
    stats.after_backward()
    again = {r["layer"]: r for r in stats.end_epoch("r", 2)}
    g = model.classifier.fc2.weight.grad.double()
    assert again["classifier.fc2.weight"]["steps"] == 1
    assert again["classifier.fc2.weight"]["grad_abs_mean"] == pytest.approx(g.abs().mean().item(), rel=1e-6)


def _checkpoint_epoch(path):
    try:
        return load_verified(path, torch.device("cpu"))["state"]["epoch"]
    except (FileNotFoundError, CorruptFile):  # not written yet, or being replaced
        return 0


def kill_at_epoch(args: list, out, epoch: int, cwd, timeout: float = 120) -> None:
    """Start `nnstudy train ARGS` and SIGKILL it once its checkpoint has reached `epoch`."""
    proc = subprocess.Popen([sys.executable, "-m", "nnstudy", "train", *args], cwd=cwd)
    deadline = time.monotonic() + timeout
    while _checkpoint_epoch(out / "checkpoint.pt") < epoch:
        assert proc.poll() is None and time.monotonic() < deadline, f"run ended before epoch {epoch} was checkpointed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkilled_run_resumes_bit_identical(shared_data, tmp_path):
    # A schedule: the learning rate of the epochs after the resume must reach the optimiser.
    spec = mnist_spec(shared_data, data={"train_size": 12000}, model={"hidden": [256, 128]},
                      train={"epochs": 4, "batch_size": 32}, schedule={"name": "cosine"})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "killed"
    kill_at_epoch(["--spec", tmp_path / "spec.json", "--out", out, "--threads", "2"], out, 2, ROOT)
    killed_at = _checkpoint_epoch(out / "checkpoint.pt")
    assert 2 <= killed_at < 4
    assert not (out / "run.json").exists() and not (out / "metrics.parquet").exists()

    resumed = train_run(spec, out, threads=2)
    assert resumed["resumed_from"] == [killed_at]
    train_run(spec, tmp_path / "straight", threads=2)
    for name, schema in (("metrics.parquet", schemas.METRICS), ("gradients.parquet", schemas.GRADIENTS)):
        a = schemas.read(out / name, schema)
        b = schemas.read(tmp_path / "straight" / name, schema)
        pd.testing.assert_frame_equal(a.drop(columns=[c for c in schemas.WALL_CLOCK if c in a]),
                                      b.drop(columns=[c for c in schemas.WALL_CLOCK if c in b]))
    sa = torch.load(out / "model.pt", weights_only=True)
    sb = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_transfer_freezes_conv_layers_and_retrains_the_head(shared_data, tmp_path):
    cnn = {"conv": [{"channels": 4}, {"channels": 8}], "hidden": [16], "batchnorm": True, "dropout": 0.0}
    src = train_run(mnist_spec(shared_data, model=cnn, train={"epochs": 1}), tmp_path / "src")
    spec = mnist_spec(shared_data, model=cnn, train={"epochs": 2},
                      data={"split": "halves", "swap": True},
                      transfer={"source": str(tmp_path / "src" / "model.pt"), "freeze": ["features"],
                                "reinit": ["classifier"]})
    run = train_run(spec, tmp_path / "dst")
    assert run["status"] == "completed" and run["id"] != src["id"]
    before = torch.load(tmp_path / "src" / "model.pt", weights_only=True)
    after = torch.load(tmp_path / "dst" / "model.pt", weights_only=True)
    features = [k for k in before if k.startswith("features.")]
    head = [k for k in before if k.startswith("classifier.") and "running" not in k and "num_batches" not in k]
    assert features and all(torch.equal(before[k], after[k]) for k in features)  # buffers included
    assert all(not torch.equal(before[k], after[k]) for k in head)
    grads = pd.read_parquet(tmp_path / "dst" / "gradients.parquet")
    assert not grads["layer"].str.startswith("features.").any()  # frozen: not recorded
    assert grads["layer"].str.startswith("classifier.").any()


def test_manual_cross_entropy_matches_builtin():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        logits = (torch.randn(257, 10, generator=gen) * 5).to(dtype)
        y = torch.randint(0, 10, (257,), generator=gen)
        assert abs(manual_cross_entropy(logits, y).item() - F.cross_entropy(logits, y).item()) < 1e-6


def test_warmup_lr_follows_its_formula_per_epoch(tmp_path):
    spec = {"data": {"name": "xor"}, "model": {"hidden": [8], "activation": "tanh"},
            "optim": {"name": "sgd", "lr": 0.1},
            "schedule": {"name": "warmup", "warmup_epochs": 3, "start_lr": 0.01}, "train": {"epochs": 5}}
    train_run(spec, tmp_path / "r")
    lrs = pd.read_parquet(tmp_path / "r" / "metrics.parquet").query("split == 'train'")["lr"].tolist()
    expected = [0.01 + (0.1 - 0.01) * min(e - 1, 3) / 3 for e in range(1, 6)]
    assert lrs == pytest.approx(expected, abs=1e-15)
    assert lrs == pytest.approx([0.01, 0.04, 0.07, 0.1, 0.1])


def test_decay_schedules():
    s = spec_mod.resolve({})["schedule"]
    assert [lr_at({**s, "name": "step", "step_size": 2, "gamma": 0.5}, 1.0, e, 6) for e in range(1, 7)] == \
        [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lr_at({**s, "name": "exponential", "gamma": 0.9}, 1.0, 3, 6) == pytest.approx(0.81)
    cos = [lr_at({**s, "name": "cosine"}, 1.0, e, 5) for e in range(1, 6)]
    assert cos[0] == 1.0 and cos[2] == pytest.approx(0.5 * (1 + np.cos(np.pi * 2 / 5)))


def test_xor_is_learned_by_a_tiny_mlp(tmp_path):
    spec = {"seed": 0, "data": {"name": "xor", "val_fraction": 0.0}, "model": {"hidden": [8], "activation": "tanh"},
            "optim": {"name": "adam", "lr": 0.05}, "train": {"epochs": 300, "batch_size": 4, "eval_every": 50}}
    train_run(spec, tmp_path / "r")
    m = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert set(m["split"]) == {"train", "test"}  # no validation split asked for
    assert m.query("split == 'test' and epoch == 300")["accuracy"].item() == 1.0
    assert m.query("epoch == 10")["loss"].isna().all()  # not an evaluation epoch


def test_scipy_blas_runs_on_one_thread_while_training_only(tmp_path, monkeypatch):
    # The statistics' sasum/sdot beside torch's threads: OpenBLAS's own threads, spinning after
    # each call, made a CNN's step 1.9x as long. The analyses after training (the `after` hook)
    # get NumPy's BLAS as the analyse step does.
    from scipy.linalg import blas  # noqa: F401 (loaded, so threadpoolctl sees it)
    from threadpoolctl import threadpool_info

    import nnstudy.training.run as run_mod

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen = {}

    class Spy:
        def after_backward(self):
            seen.setdefault("training", blas_threads())

        def end_epoch(self, run, epoch):
            return []

    for_run = run_mod.for_run
    monkeypatch.setattr(run_mod, "for_run", lambda r, optimizer: for_run(r, optimizer) + [Spy()])
    before = blas_threads()
    spec = {"seed": 0, "data": {"name": "xor", "val_fraction": 0.0}, "model": {"hidden": [4]}, "train": {"epochs": 2}}
    train_run(spec, tmp_path / "r", after=lambda built: seen.setdefault("after", blas_threads()))
    assert seen == {"training": {1}, "after": before} and max(before) > 1  # (this machine has 2 cores)


def test_diverging_run_is_marked_not_raised(shared_data, tmp_path):
    spec = mnist_spec(shared_data, optim={"lr": 1e3}, train={"epochs": 3})
    manifest = train_run(spec, tmp_path / "r")
    assert manifest["status"] == "diverged"
    m = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    last = m[m["epoch"] == m["epoch"].max()]
    assert last["diverged"].all() and not np.isfinite(last.query("split == 'train'")["running_loss"]).any()
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "diverged"


def test_a_checkpoint_of_another_spec_is_discarded(tmp_path):
    spec = {"data": {"name": "xor"}, "model": {"hidden": [4]}, "train": {"epochs": 3}}
    (tmp_path / "r").mkdir()
    ckpt = {"run": "0123456789ab", "state": {"epoch": 2}}
    save_verified(ckpt, tmp_path / "r" / "checkpoint.pt")
    manifest = train_run(spec, tmp_path / "r")
    assert manifest["resumed_from"] == [] and manifest["epochs_completed"] == 3
