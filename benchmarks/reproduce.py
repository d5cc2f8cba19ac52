"""Reproduce the study catalogue on this machine and write docs/reproduction.md from the studies'
own summary Parquet (never typed by hand).

    python benchmarks/reproduce.py --cores 2                      run every study, then write the table
    python benchmarks/reproduce.py --only basics --no-run          rewrite the table from finished results

Each study runs through Snakemake at the budget RUNS names, in a working directory (--work) whose
data/ links to the real data in ../shared/data (MNIST in torchvision's layout, CIFAR-10 as JPEG
files) and to the bundled subset data/demo-cifar10, the relative data roots the studies use.
Finished runs are never trained again, so a second call only redoes what is missing.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nnstudy import schemas  # noqa: E402
from nnstudy.study import Study, compose  # noqa: E402

# study -> the budget it runs at here, and what that budget is (for the table).
RUNS = {
    "basics": ("cpu", "MNIST and XOR at full budget; CIFAR-10 on the JPEG copy, 5,000 training images, 5 epochs"),
    "mnist_cifar100": ("cpu", "the MNIST experiments at full budget; CIFAR-100 is not on this machine"),
    "fundamentals": ("cpu", "JPEG copy, 5,000 training images, 6 epochs, batches of 128, quarter-width CNN"),
    "block_attention": ("cpu", "JPEG copy, 5,000 training images, 5 epochs, channels 8-16-32 (1/8 width)"),
    "cifar10": ("demo", "the 2,500-image subset of the JPEG copy (data/demo-cifar10), 4 epochs, quarter width"),
}
# Experiments a budget leaves out, with why (rows saying "not measured here").
NOT_HERE = {
    ("mnist_cifar100", "cifar100_fc"): "CIFAR-100 is not on this machine (the tiny budget in CI uses synthetic data)",
    ("mnist_cifar100", "cifar100_cnn"): "CIFAR-100 is not on this machine",
    ("mnist_cifar100", "resnet"): "CIFAR-100 is not on this machine; a GPU job",
    ("basics", "finetune"): "needs ResNet-18's ImageNet weights, which this offline machine cannot download",
}
# Why a target was missed at full budget, where one was (filled in from the measured runs).
MISSED_AT_FULL: dict[tuple[str, str], str] = {}
SHARED = ROOT.parent / "shared" / "data"


def workdir(work: Path) -> Path:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, target in (("MNIST", SHARED / "MNIST"), ("cifar10-jpg", SHARED / "cifar10-jpg"),
                         ("demo-cifar10", ROOT / "data" / "demo-cifar10")):
        if not (data / name).exists():
            (data / name).symlink_to(target, target_is_directory=True)
    return work


def run(name: str, budget: str, work: Path, cores: int) -> float:
    started = time.monotonic()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", str(cores),
           "--configfile", str(ROOT / "studies" / f"{name}.yaml"), "--config", f"budget={budget}",
           "--rerun-incomplete"]
    print(f"reproduce: {name} at budget {budget}", flush=True)
    # The jobs' `python -m nnstudy` is this interpreter's (its environment's bin first on PATH).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.monotonic() - started


def rows(name: str, budget: str, work: Path) -> list[dict]:
    """One row per variant: its final test accuracy over seeds, beside the experiment's target;
    "full" where the variant's run specs are those of the study at full budget."""
    path = ROOT / "studies" / f"{name}.yaml"
    full = Study(compose([path], {}, ROOT / "config.yaml"))
    study = Study(compose([path], {"budget": budget}, ROOT / "config.yaml"))
    at_full = {key for key, specs in _specs(study).items() if _specs(full).get(key) == specs}
    final = schemas.read(work / study.root / "summary" / "final.parquet", schemas.FINAL)
    final = final.query("split == 'test' and metric == 'accuracy'")
    out = []
    for exp, e in full.config["experiments"].items():
        target = e.get("target")
        if exp not in study.config["experiments"]:
            out.append(dict(study=name, experiment=exp, variant="", budget="", n="", mean="", ci="",
                            target=_pct(target), verdict=f"not measured here: {NOT_HERE.get((name, exp), '')}"))
            continue
        for r in final[final["experiment"] == exp].itertuples():
            verdict = "" if target is None else ("met" if r.mean >= target else "missed")
            out.append(dict(study=name, experiment=exp, variant=r.variant, budget="full" if (exp, r.variant) in at_full else budget,
                            n=str(r.n_seeds), mean=_pct(r.mean), ci=f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                            target=_pct(target), verdict=verdict))
    return out


def _specs(study: Study) -> dict:
    """(experiment, variant) -> its runs' specs (resolved, or templates awaiting a selection),
    without the transfer source's path, which names the study's results folder."""
    out: dict = {}
    for r in study.rows:
        spec = copy.deepcopy(r.spec)
        spec.get("transfer", {}).pop("source", None)
        out.setdefault((r.experiment, r.variant), []).append(json.dumps(spec, sort_keys=True))
    return {key: sorted(specs) for key, specs in out.items()}


def _pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def markdown(table: pd.DataFrame, seconds: dict) -> str:
    head = ["study", "experiment", "variant", "budget", "n", "test accuracy (mean)", "95% CI", "target", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        lines.append(f"| {r.study} | {r.experiment} | {r.variant} | {r.budget} | {r.n} | {r.mean} | {r.ci} | "
                     f"{r.target} | {r.verdict} |")
    missed = table[table["verdict"] == "missed"]
    why = "\n".join(
        f"- {r.study} / {r.experiment} / {r.variant}: " + (
            "missed at full budget: " + MISSED_AT_FULL.get((r.study, r.experiment), "no explanation recorded yet")
            if r.budget == "full" else f"measured at the reduced budget `{r.budget}` only; its target is for the full budget")
        for r in missed.itertuples()) or "- None: every target measured here was met."
    budgets = "\n".join(f"- **{name}** at budget `{b}`: {what}" + (f" ({seconds[name]:.0f} s)" if name in seconds else "")
                        for name, (b, what) in RUNS.items())
    return TEMPLATE.format(date=datetime.date.today().isoformat(), machine=_machine(), budgets=budgets,
                           table="\n".join(lines), why=why)


def _machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import torch

    return f"{cpu}, Python {platform.python_version()}, torch {torch.__version__}, CPU only"


TEMPLATE = """# Reproduction: the study catalogue on real data

Written by `benchmarks/reproduce.py` on {date} from the studies' own summary Parquet
(`results/<study>-<budget>/summary/final.parquet`); do not edit by hand. Machine: {machine}.

Every figure is the final test accuracy of a variant: the mean over its seeds and the 95%
Student-t interval of that mean (n = seeds). "target" is the figure the experiment's source (the
coursework it comes from) asks for, declared once as the experiment's `target` in its study file.

What ran, and at which budget (each study file documents its budgets):
{budgets}

MNIST is the genuine release (../shared/data/MNIST). CIFAR-10 here is the JPEG copy
(../shared/data/cifar10-jpg): the original images re-encoded at quality 75 by a public repository,
so pixels, and accuracies by a point or two, differ from the original release that torchvision
downloads; at a reduced budget the figures say that the pipeline reproduces each experiment's
shape, not the published number. No GPU was available to this session, so no study ran at full
budget on CIFAR.

{table}

## Why targets are missed

{why}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "reproduce", help="working directory (results/, logs/, data/)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=list(RUNS), help="run only these studies (the table lists all)")
    ap.add_argument("--no-run", action="store_true", help="only write the table from finished results")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reproduction.md")
    args = ap.parse_args()
    work = workdir(args.work.resolve())
    timings = work / "seconds.json"  # each study's last run time, kept for --no-run
    seconds = json.loads(timings.read_text()) if timings.exists() else {}
    for name, (budget, _) in RUNS.items():
        if not args.no_run and (not args.only or name in args.only):
            seconds[name] = run(name, budget, work, args.cores)
            timings.write_text(json.dumps(seconds))
    table = pd.DataFrame([r for name, (b, _) in RUNS.items() for r in rows(name, b, work)])
    args.out.write_text(markdown(table, seconds))
    print(f"reproduce: wrote {args.out}")


if __name__ == "__main__":
    main()
