"""Speed at study scale: prints measured figures and ratios (medians of interleaved repetitions),
no pass/fail. Sections (all by default; --only picks some):

  loops      whole-process wall time of `nnstudy train` vs the notebook and the careful loop
             (benchmarks/loops.py) on the MNIST MLP (10 epochs, 60,000 images) and the 2-conv
             CNN on 10,000 CIFAR-10 JPEG images (2 epochs)
  telemetry  training steps with and without per-layer gradient statistics, alternated within
             whole epochs of one process; and the MLP's whole `nnstudy train` process with and
             without them
  epochs     one process alternating an epoch of the careful loop with an MLP epoch of nnstudy
             (training, telemetry on or off, evaluation of the training and test splits): each
             epoch is shorter than the machine's slow and fast stretches that blur whole processes
  study      the demo study (`make demo`) through Snakemake: wall time vs its runs' training time / cores
  summaries  plan, collect, summarise and figures of a synthetic 10,000-run study

  python benchmarks/bench_study.py [--only loops,telemetry] [--reps 3] [--data ../shared/data]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


def specs(data: Path) -> dict:
    """The nnstudy spec of each task, the same work as benchmarks/loops.py (no validation split)."""
    return {
        "mlp": {"seed": 0, "data": {"name": "mnist", "root": str(data), "val_fraction": 0},
                "model": {"name": "convnet", "hidden": [128, 64]}, "optim": {"name": "adam", "lr": 0.001},
                "train": {"epochs": 10, "batch_size": 64}},
        "cnn": {"seed": 0, "data": {"name": "imagefolder", "root": str(data / "cifar10-jpg"), "train_size": 10_000,
                                    "val_fraction": 0},
                "model": {"name": "convnet", "conv": [{"channels": 32}, {"channels": 64}], "hidden": [128]},
                "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 128}},
    }


def wall(cmd: list, cwd=ROOT) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def interleaved(cases: dict, reps: int) -> dict:
    """Median seconds of each case; every repetition runs every case once, so a slow phase of
    the machine hits them all; the order is reversed every other repetition, so no case always
    runs right after the same one (a fixed order had put the telemetry-on CNN epoch at +13-14%,
    where the statistics cost 0.4% of a step)."""
    times = {name: [] for name in cases}
    for rep in range(reps):
        for name, fn in (cases.items() if rep % 2 == 0 else reversed(cases.items())):
            times[name].append(fn())
    return {name: statistics.median(v) for name, v in times.items()}


def loops(args, tmp: Path) -> None:
    for task, spec in specs(args.data).items():
        loops_of(task, spec, args, tmp)


def loops_of(task: str, spec: dict, args, tmp: Path) -> None:
    path = tmp / f"{task}.json"
    path.write_text(json.dumps(spec))

    def train():
        return wall([PY, "-m", "nnstudy", "train", "--spec", path, "--out", tmp / f"{task}-{time.monotonic_ns()}",
                     "--threads", 2])

    train()  # warm-up: the dataset cache
    med = interleaved({
        "notebook loop": lambda: wall([PY, HERE / "loops.py", "notebook", task, "--data", args.data]),
        "careful loop": lambda: wall([PY, HERE / "loops.py", "careful", task, "--data", args.data]),
        "nnstudy train": train,
    }, args.reps)
    for name, s in med.items():
        print(f"| {task} | {name} | {s:.1f} s |")
    print(f"| {task} | speed of nnstudy train vs the careful loop | {med['careful loop'] / med['nnstudy train']:.2f}x |")
    print(f"| {task} | speed of nnstudy train vs the notebook loop | {med['notebook loop'] / med['nnstudy train']:.2f}x |")


def telemetry(args, tmp: Path) -> None:
    baseline = {**specs(args.data)["cnn"], "model": {"name": "baseline"}}
    for task, spec in (("mlp", specs(args.data)["mlp"]), ("baseline cnn", baseline)):
        telemetry_of(task, spec)
    whole_runs(specs(args.data)["mlp"], args, tmp)


def whole_runs(spec: dict, args, tmp: Path) -> None:
    """The MLP's whole `nnstudy train` process with gradient statistics on and off."""
    paths = {}
    for on in (True, False):
        paths[on] = tmp / f"mlp-gradients-{on}.json"
        paths[on].write_text(json.dumps({**spec, "train": {**spec["train"], "gradients": on}}))

    def train(on: bool) -> float:
        return wall([PY, "-m", "nnstudy", "train", "--spec", paths[on], "--out", tmp / f"run-{time.monotonic_ns()}",
                     "--threads", 2])

    med = interleaved({"on": lambda: train(True), "off": lambda: train(False)}, args.reps)
    print(f"| telemetry, mlp, whole nnstudy train process | {med['off']:.1f} s off, {med['on']:.1f} s on | "
          f"{100 * (med['on'] / med['off'] - 1):+.1f}% |")


def engine(spec: dict):
    """A run's model, data, optimiser and telemetry as `nnstudy train` builds them, and a generator."""
    import torch

    from nnstudy import spec as spec_mod
    from nnstudy.training.build import build
    from nnstudy.training.callbacks import for_run
    from nnstudy.training.optim import make_optimizer

    torch.set_num_threads(2)
    r = build(spec_mod.resolve(spec), torch.device("cpu"))
    opt = make_optimizer([p for p in r.model.parameters() if p.requires_grad], r.spec["optim"])
    return r, opt, for_run(r, opt), torch.Generator().manual_seed(0)


class Alternating:
    """A callback running the gradient statistics `stats` for `block` steps, then not for the next
    `block`, in turns, and timing each step (from one backward's end to the next)."""

    def __init__(self, stats, block: int):
        self.stats, self.block, self.step, self.last, self.was = stats, block, 0, None, "off"
        self.times = {"on": [], "off": []}

    def after_backward(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times[self.was].append(now - self.last)
        self.was = "on" if (self.step // self.block) % 2 == 0 else "off"
        if self.was == "on":
            self.stats.after_backward()
        self.step, self.last = self.step + 1, now


def telemetry_of(task: str, spec: dict) -> None:
    """Whole training epochs with the gradient statistics on for a few steps and off for the next
    few, in turns: each step is compared with its neighbours, so the machine's slow and fast
    stretches (up to 1.7x, 10-20 s long) cancel, where alternating whole epochs left a few
    percent of noise. Mean step times (a run pays every step, the rare slow ones included); each
    epoch's `end_epoch` (its one sync and reduction, here over half its steps) is timed and
    charged to the epoch's steps."""
    from nnstudy.training.callbacks import one_blas_thread
    from nnstudy.training.epoch import train_epoch

    epochs, block = TELEMETRY[task]
    r, opt, stats, gen = engine(spec)
    alternating, ends = Alternating(stats[0], block), []
    for _ in range(epochs):
        alternating.last = None  # the epoch's end is not a step
        with one_blas_thread():  # as `nnstudy train` trains
            train_epoch(r, opt, [], spec["train"]["batch_size"], gen, [alternating])
        t0 = time.perf_counter()
        stats[0].end_epoch("bench", 1)
        ends.append(time.perf_counter() - t0)
    steps = alternating.step // epochs
    on, off = (statistics.mean(alternating.times[k]) for k in ("on", "off"))
    charged = on + statistics.median(ends) / steps
    print(f"| telemetry, {task}, {epochs} epochs of {steps} steps, on and off every {block} steps | "
          f"{1e3 * off:.2f} ms a step off, {1e3 * charged:.2f} ms on (end of epoch {1e3 * statistics.median(ends):.1f} ms) "
          f"| {100 * (charged / off - 1):+.1f}% |")


TELEMETRY = {"mlp": (3, 8), "baseline cnn": (2, 2)}  # (epochs, steps per turn): ~1.5 s and ~7.5 s an epoch here


def epochs(args, tmp: Path, rounds: int = 10) -> None:
    """MLP epochs in one process: the careful loop's (training, test) against nnstudy's (training,
    evaluation of the training and test splits), telemetry on and off; medians of `rounds`
    alternations and the median of the paired ratios."""
    sys.path.insert(0, str(HERE))
    import loops
    from nnstudy.training.callbacks import one_blas_thread
    from nnstudy.training.epoch import epoch_sums, evaluate, train_epoch

    spec = specs(args.data)["mlp"]
    careful = loops.Careful("mlp", args.data)
    r, opt, stats, gen = engine(spec)

    def nnstudy(callbacks) -> None:
        with one_blas_thread():  # as `nnstudy train` trains
            epoch_sums(*train_epoch(r, opt, [], spec["train"]["batch_size"], gen, callbacks))
        for cb in callbacks:
            cb.end_epoch("bench", 1)
        for which in ("train", "test"):
            evaluate(r, which, r.spec["train"]["eval_batch_size"])

    cases = {"careful loop": careful.epoch, "nnstudy": lambda: nnstudy(stats), "nnstudy, telemetry off": lambda: nnstudy([])}
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    paired = statistics.median(c / n for c, n in zip(times["careful loop"], times["nnstudy"]))
    off = statistics.median(n / o for n, o in zip(times["nnstudy"], times["nnstudy, telemetry off"]))
    print(f"| mlp epochs, one process, {rounds} alternations | careful loop {med['careful loop']:.2f} s, nnstudy "
          f"{med['nnstudy']:.2f} s, telemetry off {med['nnstudy, telemetry off']:.2f} s | nnstudy vs careful "
          f"{paired:.2f}x (paired), telemetry {100 * (off - 1):+.1f}% (paired) |")


def study(args, tmp: Path) -> None:
    """The default study at its demo budget (`make demo`), in a fresh working directory."""
    work = tmp / "demo"
    work.mkdir()
    (work / "data").symlink_to(ROOT / "data", target_is_directory=True)  # the study's relative data root
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "snakemake", "-s", ROOT / "Snakefile", "-d", work, "--cores", str(args.cores),
                    "--config", "budget=demo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"})
    seconds = time.perf_counter() - t0
    runs = [json.loads(p.read_text()) for p in (work / "results" / "cifar10-demo" / "train").glob("*/run.json")]
    jobs = len(list((work / "results" / "cifar10-demo" / "jobs").glob("*.json")))
    training = sum(m["train_seconds"] for m in runs)
    print(f"| demo study ({len(runs)} runs in {jobs} training jobs, with its analyses and report), {args.cores} cores "
          f"| {seconds:.0f} s wall, training {training:.0f} s ({training / args.cores:.0f} s per core) "
          f"| overhead {seconds / (training / args.cores):.2f}x |")


def summaries(args, tmp: Path) -> None:
    import numpy as np

    from nnstudy import plots, schemas
    from nnstudy.aggregate import summarise_study
    from nnstudy.study import Study, collect

    os.chdir(tmp)
    lrs = [round(1e-4 * 1.005 ** i, 8) for i in range(1000)]
    config = {"study": "synthetic", "seeds": 5, "defaults": {"data": {"name": "xor"}, "train": {"epochs": 30}},
              "experiments": {e: {"description": e, "set": {"train.batch_size": batch}, "grid": {"optim.lr": lrs},
                                  "mode": "product"} for e, batch in (("a", 32), ("b", 64))},
              "selections": {}, "comparisons": {}}
    t0 = time.perf_counter()
    s = Study(config)
    plan = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    for key in s.trained:
        synthetic_run(Path(s.run_dir(key)), key, rng)
    res = Path(s.root)
    t0 = time.perf_counter()
    collect(s, {}, res / "runs", res / "gradients")
    t_collect = time.perf_counter() - t0
    out = {name: res / "summary" / f"{name}.parquet" for name in schemas.SUMMARY_TABLES}
    s.config.update(final="last", selection_metric="accuracy", ci_level=0.95, gradient_window=5)
    t0 = time.perf_counter()
    summarise_study(s, [], res / "runs", res / "gradients", out)
    t_summarise = time.perf_counter() - t0
    tables = {name: schemas.read(p, schemas.SUMMARY_TABLES[name]) for name, p in out.items()}
    t0 = time.perf_counter()
    plots.draw_all(tables, s.config["experiments"], res / "figures")
    t_figures = time.perf_counter() - t0
    print(f"| synthetic study, {len(s.trained):,} runs x 30 epochs | plan {plan:.1f} s, collect {t_collect:.1f} s, "
          f"summarise {t_summarise:.1f} s, figures {t_figures:.1f} s | |")


def synthetic_run(out: Path, key: str, rng) -> None:
    """A finished run's Parquet files with random values: 30 epochs x (train, val, test) metrics,
    30 x 6 gradient rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nnstudy import schemas

    out.mkdir(parents=True)
    epochs = np.repeat(np.arange(1, 31, dtype=np.int32), 3)
    n = len(epochs)
    cols = {"run": [key] * n, "epoch": epochs, "split": ["train", "val", "test"] * 30, "loss": rng.random(n),
            "accuracy": rng.random(n), "running_loss": rng.random(n), "running_accuracy": rng.random(n),
            "lr": np.full(n, 0.01), "samples_seen": np.arange(n, dtype=np.int64), "epoch_time": rng.random(n),
            "wall_time": rng.random(n), "diverged": np.zeros(n, bool), "stopped_epoch": [None] * n}
    pq.write_table(pa.table(cols, schema=schemas.METRICS), out / "metrics.parquet")
    g = 30 * 6
    gcols = {"run": [key] * g, "epoch": np.repeat(np.arange(1, 31, dtype=np.int32), 6),
             "layer": ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"] * 30,
             "layer_index": np.tile(np.array([0, 0, 1, 1, 2, 2], np.int32), 30), "module": ["Linear"] * g,
             "kind": ["weight", "bias"] * 90, "numel": np.full(g, 100), "steps": np.full(g, 10),
             **{c: rng.random(g) for c in ("grad_mean", "grad_std", "grad_abs_mean", "grad_norm", "weight_norm")}}
    pq.write_table(pa.table(gcols, schema=schemas.GRADIENTS), out / "gradients.parquet")


SECTIONS = {"loops": loops, "telemetry": telemetry, "epochs": epochs, "study": study, "summaries": summaries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2, help="for the demo study")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    args.data = args.data.resolve()
    print("| what | measured | ratio |\n| --- | --- | --- |")
    for name in args.only.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"nnstudy-bench-{name}-"))
        try:
            SECTIONS[name](args, tmp)
        finally:
            os.chdir(ROOT)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
