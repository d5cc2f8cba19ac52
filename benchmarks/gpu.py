"""The GPU checks of docs/performance.md in one script, for a machine with one CUDA GPU:

1. the baseline CNN's epoch on CIFAR-10's 45k/5k split: training pass, evaluation of the three
   splits, telemetry on and off, bf16 autocast;
2. no host synchronisation in a training epoch (torch.cuda.set_sync_debug_mode("error"));
3. throughput of K = 1, 2, 4, 8 `nnstudy train` processes side by side on the GPU;
4. the default study (config.yaml, read from the CIFAR-10 JPEG copy) through Snakemake, in the
   time left (what finished is reported if it is cut off);
5. torch.compile's epoch (first epoch compiles).

Every section prints markdown lines as it goes and appends them to --out; a section that would
not fit in the time left (--budget seconds from the start) says so and is skipped.

    python benchmarks/gpu.py --data ../shared/data/cifar10-jpg --budget 560 --out gpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
START = time.monotonic()
DEVICE = "cuda"
STUDY_SECONDS = 200  # the throughput section stops early to leave this much for the study
SECTIONS = ("epoch", "sync", "ablations", "profile", "throughput", "study", "compile")
# What a training pass's time is made of: the engine's fp32 epoch, then one change at a time.
ABLATIONS = {
    "as the engine trains (fp32, telemetry on)": {},
    "cuDNN autotuner on (cudnn.benchmark)": {"benchmark": True},
    "no flip and crop": {"data": {"crop": 0, "flip": False}},
    "NCHW instead of channels_last": {"nchw": True},
    "telemetry off": {"train": {"gradients": False}},
    "compile, mode reduce-overhead (CUDA graphs)": {"train": {"compile": True}, "mode": "reduce-overhead"},
}


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the CIFAR-10 ImageFolder copy (train/, test/)")
    ap.add_argument("--budget", type=float, default=560, help="seconds for the whole script")
    ap.add_argument("--out", type=Path, required=True, help="markdown file the results are appended to")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nnstudy-gpu"), help="scratch folder")
    ap.add_argument("--train-size", type=int, help="a subset of the training images (a quick try of the script)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to try the script (no sync check there)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="these sections, in this order (default: all)")
    ap.add_argument("--k", type=int, default=8, help="runs per GPU for the study (default: throughput's best, or 8)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    os.environ.setdefault("NNSTUDY_CACHE", str(args.work / "cache"))
    # The workflow's rules call `python`: make it this interpreter (an exec keeps a venv's).
    (args.work / "bin").mkdir(parents=True, exist_ok=True)
    (args.work / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (args.work / "bin" / "python").chmod(0o755)
    os.environ["PATH"] = f"{args.work / 'bin'}{os.pathsep}{os.environ['PATH']}"
    out = Report(args.out, args.budget)

    import torch

    device = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU"
    out.line(f"GPU checks, {time.strftime('%Y-%m-%d')}: {device}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    spec = baseline_spec(args.data.resolve())
    spec["data"]["train_size"] = args.train_size
    t0 = time.monotonic()
    from nnstudy.data import device
    from nnstudy.spec import resolve

    device.pools(resolve(spec)["data"])  # decode the JPEGs into the cache every later process reads
    out.line(f"- CIFAR-10 JPEG decode into the cache: {time.monotonic() - t0:.1f} s")
    sections = {
        "epoch": (lambda: epochs(out, spec), 40, 0),
        "sync": (lambda: sync_check(out, spec), 15, 0),
        "ablations": (lambda: epochs(out, spec, ABLATIONS), 90, 0),
        "profile": (lambda: profile(out, spec), 20, 0),
        "throughput": (lambda: throughput(out, spec, args.work), 120, 0),
        "study": (lambda: study(out, args.data.resolve(), args.k, args.work, args.train_size), 60, 75),
        "compile": (lambda: epochs(out, spec, {"compile": {"train": {"compile": True}}}, n=3), 30, 0),
    }
    for name in args.only or sections:
        fn, need, reserve = sections[name]
        result = out.section(name, fn, need, reserve)
        if name == "throughput" and result:
            args.k = result


class Report:
    """Markdown lines to stdout and a file; sections that respect the time budget."""

    def __init__(self, path: Path, budget: float):
        self.path, self.budget = path, budget

    def left(self) -> float:
        return self.budget - (time.monotonic() - START)

    def line(self, text: str) -> None:
        print(text, flush=True)
        with self.path.open("a") as f:
            f.write(text + "\n")

    def section(self, name: str, fn, need: float, reserve: float = 0.0):
        """fn() if `need` seconds are left beside `reserve` (kept for later sections)."""
        if self.left() < need + reserve:
            self.line(f"- {name}: skipped, {self.left():.0f} s left")
            return None
        self.reserve = reserve
        try:
            return fn()
        except Exception as e:  # a broken section must not cost the others
            self.line(f"- {name}: FAILED: {type(e).__name__}: {e}")
            return None


def baseline_spec(root: Path, **train) -> dict:
    """The default study's baseline CNN run (lr experiment): 45k train / 5k validation."""
    return {"seed": 0, "data": {"name": "imagefolder", "root": str(root), "crop": 4, "flip": True,
                                "split": "holdout", "val_fraction": 0.1},
            "model": {"name": "baseline"}, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
            "train": {"epochs": 30, "batch_size": 128, **train}}


def built(spec: dict, benchmark: bool = False, nchw: bool = False, mode: str | None = None):
    """The engine's run, optimiser and telemetry for `spec`; ablations: cuDNN's autotuner on,
    NCHW instead of channels_last, a torch.compile mode."""
    import torch

    from nnstudy.spec import resolve
    from nnstudy.training.build import build
    from nnstudy.training.callbacks import for_run
    from nnstudy.training.optim import make_optimizer

    resolved = resolve(spec)
    torch.backends.cudnn.benchmark = benchmark
    r = build(resolved, torch.device(DEVICE))
    if nchw:
        r.model, r.channels_last = r.model.to(memory_format=torch.contiguous_format), False
    opt = make_optimizer([p for p in r.model.parameters() if p.requires_grad], resolved["optim"])
    callbacks = for_run(r, opt)
    if resolved["train"]["compile"]:
        r.model.compile(dynamic=False, mode=mode)
    return r, opt, callbacks


def variant(spec: dict, v: dict) -> dict:
    """spec with a variant's `data` and `train` keys laid over it."""
    return {**spec, "data": {**spec["data"], **v.get("data", {})}, "train": {**spec["train"], **v.get("train", {})}}


def epochs(out: Report, spec: dict, variants: dict | None = None, n: int = 4) -> None:
    """Per variant: seconds of the training pass (with the telemetry's epoch read-out) and of the
    evaluation of train, val and test; first epoch apart, median of the others."""
    import torch

    from nnstudy.training.epoch import evaluate, train_epoch

    variants = variants or {"fp32": {}, "fp32, telemetry off": {"train": {"gradients": False}},
                            "bf16": {"train": {"precision": "bf16"}}}
    out.line("\n| epoch of the baseline CNN, 45k/5k, batch 128 | first epoch | training pass | evaluation (train, val, test) | epoch |")
    out.line("| --- | --- | --- | --- | --- |")
    for name, v in variants.items():
        r, opt, callbacks = built(variant(spec, v), v.get("benchmark", False), v.get("nchw", False), v.get("mode"))
        gen = torch.Generator().manual_seed(0)
        times = []
        for epoch in range(n):
            sync()
            t0 = time.perf_counter()
            sums, _ = train_epoch(r, opt, [], 128, gen, callbacks)
            sums.tolist()
            for cb in callbacks:
                cb.end_epoch("bench", epoch)
            t1 = time.perf_counter()
            for which in ("train", "val", "test"):
                evaluate(r, which, 1000)
            times.append((t1 - t0, time.perf_counter() - t1))
        rest = times[1:]
        tr, ev = statistics.median(t for t, _ in rest), statistics.median(e for _, e in rest)
        out.line(f"| {name} | {sum(times[0]):.2f} s | {tr:.2f} s | {ev:.2f} s | {tr + ev:.2f} s |")
        del r, opt, callbacks
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def profile(out: Report, spec: dict, steps: int = 50) -> None:
    """CPU time per step by operator (torch.profiler) over `steps` training steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from nnstudy.training.epoch import train_epoch

    r, opt, callbacks = built(spec)
    gen = torch.Generator().manual_seed(2)
    train_epoch(r, opt, [], 128, gen, callbacks)  # warm-up
    r.data.train_idx = r.data.train_idx[: steps * 128]
    steps = -(-len(r.data.train_idx) // 128)
    sync()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train_epoch(r, opt, [], 128, gen, callbacks)
        sync()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    gpu = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    out.line(f"\n- profile of {steps} training steps (fp32, telemetry on): {launches / steps:.0f} kernel launches "
             f"per step, GPU busy {gpu / steps / 1000:.2f} ms per step; top operators by CPU time per step:")
    out.line("\n| operator | calls per step | CPU ms per step (self) |\n| --- | --- | --- |")
    top = sorted((e for e in events if e.device_type.name == "CPU"), key=lambda e: -e.self_cpu_time_total)[:15]
    for e in top:
        out.line(f"| {e.key} | {e.count / steps:.1f} | {e.self_cpu_time_total / steps / 1000:.3f} |")


def sync_check(out: Report, spec: dict) -> None:
    """A whole training epoch under set_sync_debug_mode('error'): any host sync raises."""
    import torch

    from nnstudy.training.epoch import train_epoch

    if DEVICE != "cuda":
        out.line("- sync debug mode: not on a CPU")
        return
    for name, train in {"fp32": {}, "bf16": {"precision": "bf16"}}.items():
        r, opt, callbacks = built(variant(spec, {"train": train}))
        gen = torch.Generator().manual_seed(1)
        train_epoch(r, opt, [], 128, gen, callbacks)  # warm-up: allocator, cuDNN plans
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            _, sizes = train_epoch(r, opt, [], 128, gen, callbacks)
            samples = sum(sizes)
            verdict = f"no host sync in its {-(-samples // 128)} steps"
        except RuntimeError as e:
            import traceback

            frames = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__)]
            verdict = f"SYNC: {str(e).splitlines()[0]} at {' < '.join(reversed(frames[-4:]))}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
        out.line(f"- sync debug mode 'error' over a whole training epoch ({name}, telemetry on): {verdict}")


def throughput(out: Report, spec: dict, work: Path, epochs_per_run: int = 6) -> int:
    """K whole `nnstudy train` processes side by side (one thread each); returns the K of the
    most epochs per minute inside the runs (start-up aside: a study's runs are longer)."""
    out.line(f"\n| runs side by side on the GPU (whole processes, {epochs_per_run} epochs each) | wall | "
             "epochs per minute, whole processes | median epoch inside a run | epochs per minute inside the runs | vs K = 1 |")
    out.line("| --- | --- | --- | --- | --- | --- |")
    rates = {}
    for k in (1, 2, 4, 8):
        if out.left() < STUDY_SECONDS + 60:
            out.line(f"| K = {k} | skipped, {out.left():.0f} s left | | | | |")
            break
        folder = work / f"k{k}"
        shutil.rmtree(folder, ignore_errors=True)
        procs, t0 = [], time.monotonic()
        for seed in range(k):
            s = {**spec, "seed": 100 * k + seed, "train": {**spec["train"], "epochs": epochs_per_run}}
            procs.append(subprocess.Popen([sys.executable, "-m", "nnstudy", "train", "--spec-json", json.dumps(s),
                                           "--out", str(folder / str(seed)), "--threads", "1", "--device", DEVICE],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        failed = [p.communicate()[1].strip().splitlines()[-1:] for p in procs if p.wait() != 0]
        wall = time.monotonic() - t0
        if failed:
            out.line(f"| K = {k} | FAILED: {failed[0]} | | | | |")
            break
        import pandas as pd

        epoch_time = statistics.median(pd.read_parquet(f).query("split == 'train'")["epoch_time"].median()
                                       for f in folder.glob("*/metrics.parquet"))
        rates[k] = k * 60 / epoch_time
        out.line(f"| K = {k} | {wall:.1f} s | {k * epochs_per_run / wall * 60:.1f} | {epoch_time:.2f} s | "
                 f"{rates[k]:.1f} | {rates[k] / rates[1]:.2f}× |")
    return max(rates, key=rates.get) if rates else 8


def study(out: Report, data_root: Path, k: int, work: Path, train_size: int | None) -> None:
    """config.yaml through Snakemake, on the JPEG copy, K jobs on the GPU, one run per job."""
    import snakemake  # noqa: F401  (before the clock starts: a missing package fails at once)

    from nnstudy.study import compose

    study = compose([], {}, ROOT / "config.yaml")
    data = {key: v for key, v in study["defaults"]["data"].items() if key not in ("name", "root", "download")}
    study["defaults"]["data"] = {**data, "name": "imagefolder", "root": str(data_root), "train_size": train_size}
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    results = ROOT / "results" / study["study"]
    env = {**os.environ, "NNSTUDY_JOBS_PER_GPU": str(k), "NNSTUDY_DEVICE": DEVICE}
    limit = max(out.left() - out.reserve, 30)
    log = out.path.with_name("study.log")
    cmd = ["timeout", "-s", "INT", str(int(limit)), sys.executable, "-m", "snakemake", "--cores", str(os.cpu_count()),
           "--resources", f"gpu={k}", "--configfile", str(path), "--config", "runs_per_job=1",
           "--scheduler", "greedy", "--rerun-incomplete"]
    out.line(f"\n- default study: {' '.join(cmd[4:])} (NNSTUDY_JOBS_PER_GPU={k}), stopped after {limit:.0f} s if not done")
    t0 = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    runs, started = list(results.glob("**/run.json")), len(list(results.glob("**/attempts.jsonl")))
    seconds = [json.loads(p.read_text())["train_seconds"] for p in runs]
    done = (results / "report.html").exists()
    out.line(f"- default study: {'finished, report written' if done and rc == 0 else f'stopped (rc {rc})'} after "
             f"{wall:.0f} s ({wall / 60:.1f} min): {len(runs)} of 70 runs done ({started} started), their training "
             f"{sum(seconds):.0f} s in all, median {statistics.median(seconds) if seconds else float('nan'):.1f} s per run")


if __name__ == "__main__":
    main()
