"""Several runs in one training process (a workflow job): each equals the same run trained alone,
and a killed job redoes only its unfinished runs."""
import json
import subprocess
import sys

import pandas as pd
import torch
from conftest import ROOT, mnist_spec
from test_train import _checkpoint_epoch, kill_at_epoch

from nnstudy import schemas
from nnstudy.training.run import run as train_run


def same_run(a, b) -> None:
    for name, schema in (("metrics.parquet", schemas.METRICS), ("gradients.parquet", schemas.GRADIENTS)):
        x, y = schemas.read(a / name, schema), schemas.read(b / name, schema)
        clock = [c for c in schemas.WALL_CLOCK if c in x]
        pd.testing.assert_frame_equal(x.drop(columns=clock), y.drop(columns=clock))
    wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bundled_runs_equal_runs_alone_and_a_killed_bundle_redoes_only_unfinished_runs(shared_data, tmp_path):
    small = [mnist_spec(shared_data, seed=s) for s in (0, 1)]
    big = mnist_spec(shared_data, seed=2, data={"train_size": 12000}, model={"hidden": [256, 128]},
                     train={"epochs": 4, "batch_size": 32})
    specs = [small[0], big, small[1]]  # the job is killed inside the second run
    outs = [tmp_path / "job" / name for name in ("first", "second", "third")]
    args = ["--runs-json", json.dumps([{"spec": s, "out": str(o)} for s, o in zip(specs, outs)]),
            "--done", tmp_path / "done.json", "--threads", "2"]
    kill_at_epoch(args, outs[1], 2, ROOT, timeout=180)
    killed_at = _checkpoint_epoch(outs[1] / "checkpoint.pt")
    first = (outs[0] / "run.json").stat().st_mtime_ns
    assert not (outs[1] / "run.json").exists() and not outs[2].exists() and not (tmp_path / "done.json").exists()

    again = subprocess.run([sys.executable, "-m", "nnstudy", "train", *map(str, args)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (outs[0] / "run.json").stat().st_mtime_ns == first  # finished: not trained again
    manifests = [json.loads((o / "run.json").read_text()) for o in outs]
    assert [m["resumed_from"] for m in manifests] == [[], [killed_at], []]
    done = json.loads((tmp_path / "done.json").read_text())["runs"]
    assert done == {o.name: {"id": m["id"], "status": "completed"} for o, m in zip(outs, manifests)}
    for spec, out in zip(specs, outs):
        train_run(spec, tmp_path / "alone" / out.name, threads=2)
        same_run(out, tmp_path / "alone" / out.name)


def test_a_folder_holding_another_run_is_kept_unless_replace(tmp_path):
    xor = {"data": {"name": "xor"}, "model": {"name": "convnet", "hidden": [4]}, "train": {"epochs": 1}}
    train_run(xor, tmp_path / "run")
    other = json.dumps([{"spec": {**xor, "seed": 7}, "out": str(tmp_path / "run")}])
    train = lambda *extra: subprocess.run([sys.executable, "-m", "nnstudy", "train", "--runs-json", other, *extra],  # noqa: E731
                                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    kept = train()
    assert kept.returncode == 2 and "choose another --out" in kept.stderr.splitlines()[-1]
    stale = tmp_path / "jobs" / ".j1.json.x8k2q.tmp"  # the job file of an attempt killed mid-write
    stale.parent.mkdir()
    stale.write_text("{")
    replaced = train("--replace", "--done", str(tmp_path / "jobs" / "j1.json"))
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["spec"]["seed"] == 7
    assert [p.name for p in stale.parent.iterdir()] == ["j1.json"]
