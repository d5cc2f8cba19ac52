"""TensorBoard event files (the optional extra) read back with the values they were written from."""
import math
import subprocess
import sys

import pandas as pd
import pytest

from nnstudy import tensorboard

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_every_runs_metrics_and_each_variants_interval(tmp_path):
    runs = pd.DataFrame([{"experiment": "lr", "variant": "lr=0.1", "seed": seed, "epoch": e, "split": split,
                          "loss": 1.0 / e + seed, "accuracy": 0.1 * e + 0.01 * seed if split != "val" or e > 1 else math.nan,
                          "lr": 0.1 / e} for seed in (0, 1) for e in (1, 2, 3) for split in ("train", "val", "test")])
    curves = pd.DataFrame([{"experiment": "lr", "variant": "lr=0.1", "split": "test", "metric": "accuracy", "epoch": e,
                            "mean": 0.1 * e, "ci_low": 0.1 * e - 0.05, "ci_high": 0.1 * e + 0.05} for e in (1, 2, 3)])
    tensorboard.write(runs, curves, tmp_path / "tb")
    one = scalars(tmp_path / "tb" / "runs" / "lr" / "lr=0.1" / "seed1")
    assert set(one) == {f"{s}/{m}" for s in ("train", "val", "test") for m in ("loss", "accuracy")} | {"lr"}
    for tag, rows in one.items():
        split, _, metric = tag.partition("/")
        expected = runs[(runs["seed"] == 1) & (runs["split"] == (split if metric else "train"))]
        expected = expected.dropna(subset=[metric or "lr"])
        assert [s for s, _ in rows] == expected["epoch"].tolist()
        assert [v for _, v in rows] == pytest.approx(expected[metric or "lr"].tolist(), rel=1e-6)  # float32 events
    for stat in tensorboard.STATISTICS:
        values = scalars(tmp_path / "tb" / "variants" / "lr" / "lr=0.1" / stat)["test/accuracy"]
        assert [v for _, v in values] == pytest.approx(curves[stat].tolist(), rel=1e-6)
    assert not list(tmp_path.glob(".tb.*"))  # built beside and renamed into place


def test_event_files_are_written_without_torch(tmp_path):
    # The study's TensorBoard step runs after the last training job: torch's import (2 s) and
    # SummaryWriter's thread per file made it 3.5 s of the demo's 0.5 s of writing.
    code = ("import sys, pandas as pd; from nnstudy import tensorboard; "
            "runs = pd.DataFrame([{'experiment': 'e', 'variant': 'v', 'seed': 0, 'epoch': 1, 'split': 'train', "
            "'loss': 1.0, 'accuracy': 0.5, 'lr': 0.1}]); "
            "curves = pd.DataFrame(columns=['experiment', 'variant', 'split', 'metric', 'epoch', 'mean', 'ci_low', 'ci_high']); "
            f"tensorboard.write(runs, curves, {str(tmp_path / 'tb')!r}); print(sorted(m for m in ('torch',) if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert scalars(tmp_path / "tb" / "runs" / "e" / "v" / "seed0") == {"train/loss": [(1, 1.0)], "train/accuracy": [(1, 0.5)],
                                                                        "lr": [(1, pytest.approx(0.1))]}
