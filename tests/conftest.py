import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Decoded-dataset cache private to the test session (never the user's)."""
    os.environ["NNSTUDY_CACHE"] = str(tmp_path_factory.mktemp("nnstudy-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data expected at {SHARED_DATA} in CI")
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def mnist_spec(root, **sections) -> dict:
    """A small MLP on a few thousand real MNIST images; `sections` override spec sections."""
    spec = {
        "seed": 3,
        "data": {"name": "mnist", "root": str(root), "train_size": 3000, "test_size": 1000},
        "model": {"hidden": [64, 32], "dropout": 0.2},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 2, "batch_size": 64},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec
