"""The study catalogue (studies/*.yaml): each study plans the jobs it should at full budget, and
runs end to end at its tiny budget on real data (MNIST, the bundled CIFAR-10 subset) and on a
small synthetic 100-class image set standing in for CIFAR-100."""
import os

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from PIL import Image
from test_workflow import job_counts, snakemake

from nnstudy.study import Study, compose

pytestmark = pytest.mark.slow
STUDIES = ROOT / "studies"

# Training jobs (a variant's seeds each) and analyse jobs (one per experiment with analyses) of
# each study at full budget; the summary steps follow from them.
PLANS = {
    "cifar10": {"train": 14, "select": 2, "analyse": 5, "analysis_summaries": 5},
    "fundamentals": {"train": 6, "analyse": 6, "analysis_summaries": 6, "tensorboard": 1},
    "block_attention": {"train": 1, "analyse": 1, "analysis_summaries": 1},
    "mnist_cifar100": {"train": 8, "analyse": 5, "analysis_summaries": 5},
    "basics": {"train": 17, "analyse": 8, "analysis_summaries": 8},
}
ALWAYS = {"collect": 1, "summarise": 1, "figures": 1, "gradient_figures": 1, "report": 1, "all": 1}


def test_every_study_file_is_in_the_catalogue_test():
    assert {p.stem for p in STUDIES.glob("*.yaml")} == set(PLANS)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_study_plans_its_jobs(name):
    plan = snakemake("-n", "--configfile", STUDIES / f"{name}.yaml")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-2000:]
    assert job_counts(out) == {**ALWAYS, **PLANS[name]}


def synthetic_cifar100(root, train: int = 10, test: int = 5) -> None:
    """A 100-class ImageFolder of 32x32 PNGs: each class a colour with seeded noise (learnable)."""
    rng = np.random.default_rng(0)
    for c in range(100):
        colour = rng.integers(0, 256, 3)
        for split, n in (("train", train), ("test", test)):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    """A working directory whose data/ holds what the studies' tiny budgets read."""
    work = tmp_path_factory.mktemp("catalogue")
    data = work / "data"
    data.mkdir()
    (data / "demo-cifar10").symlink_to(ROOT / "data" / "demo-cifar10")
    (data / "MNIST").symlink_to(shared_data / "MNIST")
    synthetic_cifar100(data / "cifar100-synthetic")
    return work


def run_tiny(work, name: str) -> tuple[Study, pd.DataFrame]:
    """Run the study at its tiny budget; its plan and final test metrics per run."""
    run = snakemake("-d", work, "--cores", 2, "--configfile", STUDIES / f"{name}.yaml", "--config", "budget=tiny")
    assert run.returncode == 0, run.stderr[-3000:]
    study = Study(compose([STUDIES / f"{name}.yaml"], {"budget": "tiny"}, ROOT / "config.yaml"))
    res = work / study.root
    assert (res / "report.html").stat().st_size > 10_000
    for exp in study.config["experiments"]:
        assert f'<section id="exp-{exp}">' in (res / "report.html").read_text()
    runs = pd.read_parquet(res / "runs")
    last = runs[runs["split"] == "test"].sort_values("epoch").groupby("run", observed=True).tail(1)
    assert len(last) == len(study.trained)  # every run trained and tested once
    return study, last


def test_fundamentals_tiny(work):
    study, last = run_tiny(work, "fundamentals")
    assert set(last["experiment"]) == set(study.config["experiments"]) and len(last) == 12
    acc = last.groupby("experiment", observed=True)["accuracy"].mean()
    assert acc["cnn"] > 0.15 and acc["mlp"] > 0.15  # 10 classes: above chance after 2 short epochs
    res = work / study.root
    pairs = pd.read_parquet(res / "summary" / "comparisons.parquet")
    assert set(pairs["family"]) == {"dropout_vs_none", "warmup_vs_none", "cnn_vs_mlp"}


def test_block_attention_tiny(work):
    study, last = run_tiny(work, "block_attention")
    assert len(last) == 2
    layers = pd.read_parquet(work / study.root / "summary" / "analyses" / "block_attention" / "summary" / "layers.parquet")
    assert layers.query("layer == 'total'")["params"].iloc[0] > 10_000


def test_mnist_cifar100_tiny(work):
    study, last = run_tiny(work, "mnist_cifar100")
    acc = last.groupby("experiment", observed=True)["accuracy"].mean()
    assert acc["mnist_fc"] > 0.6 and acc["mnist_cnn"] > 0.3  # 1,000 MNIST images, one epoch
    assert acc["cifar100_fc"] > 0.05  # the synthetic classes are colours: far above chance (0.01)
    assert last.query("experiment == 'resnet'")["variant"].nunique() == 4


def test_basics_tiny(work):
    study, last = run_tiny(work, "basics")
    xor = last.query("experiment == 'xor'")
    assert len(xor) == 2 and (xor["accuracy"] == 1.0).all()  # all four points right, both seeds
    boundary = pd.read_parquet(work / study.root / "analyses" / "xor" / "boundary.parquet")
    assert len(boundary) > 0
    assert "finetune" not in study.config["experiments"]
    assert os.path.exists(work / study.root / "figures")
