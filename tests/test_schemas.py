"""Schemas are enforced on write and read; writes are atomic."""
import pandas as pd
import pytest

from nnstudy import schemas, stats


def _metrics_row(**kw):
    row = dict(run="r", epoch=1, split="train", loss=0.5, accuracy=0.9, running_loss=0.6, running_accuracy=0.8,
               lr=0.1, samples_seen=10, epoch_time=1.0, wall_time=1.0, diverged=False, stopped_epoch=None)
    return {**row, **kw}


def test_write_enforces_columns_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "m.parquet"
    with pytest.raises(ValueError, match="missing columns \\['lr'\\], unexpected \\['lrr'\\]"):
        row = _metrics_row()
        row["lrr"] = row.pop("lr")
        schemas.write(pd.DataFrame([row]), schemas.METRICS, path)
    assert list(tmp_path.iterdir()) == []
    schemas.write(pd.DataFrame([_metrics_row()]), schemas.METRICS, path)
    assert schemas.read(path, schemas.METRICS).loc[0, "accuracy"] == 0.9
    with pytest.raises(ValueError, match="schema differs"):
        schemas.read(path, schemas.GRADIENTS)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.txt"
    schemas.write_text("old", path)
    with pytest.raises(RuntimeError):
        with schemas.atomic(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_summary_columns_are_declared_once():
    assert stats.SUMMARY_COLUMNS == [n for n, _ in schemas.SUMMARY]
    assert set(stats.COMPARISON_COLUMNS) <= set(schemas.COMPARISONS.names)
