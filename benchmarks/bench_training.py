"""Where a training step's time goes on this machine: prints measured ratios (medians of
interleaved repetitions), no pass/fail. Run: python benchmarks/bench_training.py [--reps 5]

  data path     torchvision ImageFolder + PIL transforms through a DataLoader, vs nnstudy's
                uint8 tensor indexed per batch with batched flip/crop (data/demo-cifar10)
  memory format the baseline CNN (quarter width) NCHW vs channels_last, one training epoch
  telemetry     the same epoch with and without per-layer gradient statistics
"""
import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nnstudy import models, spec
from nnstudy.data import device
from nnstudy.training.callbacks import GradientStats

ROOT = Path(__file__).resolve().parents[1] / "data" / "demo-cifar10"


def torchvision_loader_pass() -> int:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    n = 0
    for x, _ in torch.utils.data.DataLoader(ImageFolder(ROOT / "train", tf), batch_size=128, shuffle=True):
        n += len(x)
    return n


def nnstudy_pass(d: device.Data, gen) -> int:
    n = 0
    for x, _ in d.batches("train", 128, gen):
        n += len(x)
    return n


def epoch(model, d: device.Data, gen, channels_last: bool, stats: GradientStats | None) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = 0
    for x, y in d.batches("train", 128, gen):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if stats:
            stats.after_backward()
        opt.step()
        n += len(x)
    if stats:
        stats.end_epoch("bench", 1)
    return n


def timed(fn) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    resolved = spec.resolve({"data": {"name": "imagefolder", "root": str(ROOT), "crop": 4, "flip": True},
                             "model": {"name": "baseline", "conv": [{"channels": c} for c in (8, 16, 32)],
                                       "hidden": [64]}})
    d = device.build(resolved["data"], 0, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    nchw = models.build(resolved["model"], d.input_shape, d.classes)
    cl = models.build(resolved["model"], d.input_shape, d.classes).to(memory_format=torch.channels_last)
    order = models.forward_order(cl, d.input_shape)
    cases = {
        "data: torchvision DataLoader (img/s)": torchvision_loader_pass,
        "data: nnstudy indexed uint8 (img/s)": lambda: nnstudy_pass(d, gen),
        "train: NCHW (img/s)": lambda: epoch(nchw, d, gen, False, None),
        "train: channels_last (img/s)": lambda: epoch(cl, d, gen, True, None),
        "train: channels_last + gradient stats (img/s)": lambda: epoch(cl, d, gen, True, GradientStats(cl, order)),
    }
    for fn in cases.values():  # warm-up
        fn()
    rates = {k: [] for k in cases}
    for _ in range(args.reps):  # interleaved, so slow phases of the machine hit every case
        for name, fn in cases.items():
            rates[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, value in med.items():
        print(f"{name:48s} {value:10.0f}")
    keys = list(med)
    print(f"ratio data path, nnstudy / DataLoader:        {med[keys[1]] / med[keys[0]]:.2f}x")
    print(f"ratio channels_last / NCHW:                   {med[keys[3]] / med[keys[2]]:.2f}x")
    print(f"gradient statistics overhead:                 {100 * (med[keys[3]] / med[keys[4]] - 1):.1f}%")


if __name__ == "__main__":
    main()
