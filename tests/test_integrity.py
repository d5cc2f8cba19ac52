"""Nothing lost: damaged checkpoints are set aside, a finished run is finished from its kept
checkpoint (never retrained), one writer per run directory, every start on record."""
import fcntl
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, mnist_spec
from test_train import _checkpoint_epoch, _without_clock

import nnstudy
from nnstudy import cli, schemas
from nnstudy.runs import release
from nnstudy.training.run import run as train_run
from nnstudy.spec import SpecError


def small(shared_data, epochs=3):
    return mnist_spec(shared_data, train={"epochs": epochs})


@pytest.fixture
def straight(shared_data, tmp_path):
    """The uninterrupted run everything is compared with."""
    train_run(small(shared_data), tmp_path / "straight")
    return schemas.read(tmp_path / "straight" / "metrics.parquet", schemas.METRICS)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_set_aside_and_the_previous_one_resumes(shared_data, tmp_path, straight, damage, capfd):
    spec = small(shared_data)
    out = tmp_path / "r"
    train_run(spec, out)  # finished: its last two checkpoints are still there
    (out / "run.json").unlink()
    blob = bytearray((out / "checkpoint.pt").read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 3] ^= 0x10
    (out / "checkpoint.pt").write_bytes(bytes(blob))
    manifest = train_run(spec, out)
    assert "set aside a damaged checkpoint" in capfd.readouterr().err
    assert (out / "checkpoint.pt.bad").exists() and manifest["resumed_from"] == [2]  # the previous one
    pd.testing.assert_frame_equal(_without_clock(schemas.read(out / "metrics.parquet", schemas.METRICS)),
                                  _without_clock(straight))


def test_a_finished_run_whose_outputs_were_deleted_is_finished_not_retrained(shared_data, tmp_path, straight):
    spec, out = small(shared_data), tmp_path / "r"
    first = train_run(spec, out)
    for name in ("metrics.parquet", "gradients.parquet", "model.pt", "run.json"):  # --rerun-incomplete
        (out / name).unlink()
    again = train_run(spec, out)
    assert again["resumed_from"] == [3] and again["train_seconds"] == first["train_seconds"]
    assert again["files"] == first["files"]  # the same bytes: nothing was trained again
    release(out)
    assert not (out / "checkpoint.pt").exists() and not (out / "checkpoint.prev.pt").exists()


def test_one_writer_per_run_directory_and_stale_temporary_files_go(shared_data, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".metrics.parquet.abc.tmp").write_text("half")
    (tmp_path / "spec.json").write_text(json.dumps(small(shared_data, epochs=1)))
    with (out / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process is training there
        assert cli.main(["train", "--spec", str(tmp_path / "spec.json"), "--out", str(out)]) == 2
        assert "another nnstudy process is training into it" in capsys.readouterr().err
    assert cli.main(["train", "--spec", str(tmp_path / "spec.json"), "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))


def test_damaged_weights_of_a_source_run_stop_with_the_file_named(shared_data, tmp_path):
    train_run(small(shared_data, epochs=1), tmp_path / "src")
    weights = tmp_path / "src" / "model.pt"
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0x01
    weights.write_bytes(bytes(blob))
    spec = small(shared_data, epochs=1)
    spec["transfer"] = {"source": str(weights), "freeze": ["classifier.fc1"]}
    with pytest.raises(SpecError, match="model.pt does not match the checksum in .*run.json"):
        train_run(spec, tmp_path / "dst")
    with pytest.raises(SpecError, match="does not match the checksum"):
        nnstudy.load_run(tmp_path / "src")


def _attempts(out):
    path = out / "attempts.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_every_start_is_recorded_even_one_killed_before_its_checkpoint(shared_data, tmp_path):
    spec = mnist_spec(shared_data, data={"train_size": 12000}, model={"hidden": [256, 128]},
                      train={"epochs": 4, "batch_size": 32})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "nnstudy", "train", "--spec", tmp_path / "spec.json", "--out", out, "--threads", "2"]
    for until in (lambda: _checkpoint_epoch(out / "checkpoint.pt") >= 2, lambda: _attempts(out) >= 2):
        proc = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 120
        while not until():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _checkpoint_epoch(out / "checkpoint.pt")
    manifest = train_run(spec, out, threads=2)
    assert manifest["resumed_from"] == [2, killed_at] and _attempts(out) == 3


def test_a_study_without_gradient_statistics_summarises(tmp_path):
    from nnstudy import aggregate, plots

    (tmp_path / "gradients").mkdir()  # what collect writes when no run recorded gradients
    flow = aggregate.gradient_flow(aggregate.read_runs(tmp_path / "gradients"), 2, 0.95)
    schemas.write(flow, schemas.GRADIENT_FLOW, tmp_path / "gradient_flow.parquet")
    table = schemas.read(tmp_path / "gradient_flow.parquet", schemas.GRADIENT_FLOW)
    assert table.empty
    plots.figure_gradients(table, "lr", tmp_path / "gradient_flow_lr.png")
    assert (tmp_path / "gradient_flow_lr.png").stat().st_size > 0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_parquet_file_of_a_finished_run_is_healed(shared_data, tmp_path, straight, damage):
    from nnstudy.runs import heal

    spec, out = small(shared_data), tmp_path / "r"
    first = train_run(spec, out)
    path = out / "metrics.parquet"
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[:-20]
    else:
        blob[len(blob) // 2] ^= 0x04
    path.write_bytes(bytes(blob))
    assert heal([out, tmp_path / "straight"]) == 1 and not (out / "run.json").exists()
    again = train_run(spec, out)  # what the workflow's rerun does: finished from the kept checkpoint
    assert again["files"] == first["files"] and again["resumed_from"] == [3]
    pd.testing.assert_frame_equal(_without_clock(schemas.read(path, schemas.METRICS)), _without_clock(straight))


def test_truncated_weights_of_a_finished_run_are_healed(shared_data, tmp_path):
    from nnstudy.runs import damaged, heal

    out = tmp_path / "r"
    train_run(small(shared_data, epochs=1), out)
    weights = out / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert damaged(out) == ["model.pt"]
    assert heal([out]) == 1 and not (out / "run.json").exists() and not weights.exists()
