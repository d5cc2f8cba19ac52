"""The two hand-written training loops nnstudy is measured against (bench_study.py), kept as
plain scripts: the same model, optimiser, batch size and epochs as the nnstudy spec beside them.

  notebook  torchvision dataset through a DataLoader (ToTensor + Normalize), `.item()` every step
  careful   the data preloaded as normalised float tensors, indexed batches, sums kept on the device

  python benchmarks/loops.py notebook|careful mlp|cnn --data ../shared/data [--epochs N]
mlp: MNIST, 784-128-64-10, Adam, batch 64, all 60,000 images. cnn: 2 conv blocks (32, 64) + FC 128,
SGD, batch 128, a 10,000-image subset of the CIFAR-10 JPEG copy. Both test after every epoch.
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import MNIST, ImageFolder

MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def model(task: str) -> nn.Module:
    if task == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]  # noqa: E731
    return nn.Sequential(*block(3, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def datasets(task: str, root: Path, transform):
    if task == "mlp":
        return MNIST(root, train=True, transform=transform), MNIST(root, train=False, transform=transform)
    train = ImageFolder(root / "cifar10-jpg" / "train", transform)
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:10_000]
    return Subset(train, subset.tolist()), ImageFolder(root / "cifar10-jpg" / "test", transform)


def optimiser(task: str, net: nn.Module):
    if task == "mlp":
        return torch.optim.Adam(net.parameters(), lr=1e-3)
    return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


def notebook(task: str, root: Path, epochs: int) -> float:
    tf = T.Compose([T.ToTensor(), T.Normalize(*(MNIST_STATS if task == "mlp" else CIFAR_STATS))])
    train, test = datasets(task, root, tf)
    batch = 64 if task == "mlp" else 128
    train_loader = DataLoader(train, batch_size=batch, shuffle=True)
    test_loader = DataLoader(test, batch_size=1000)
    net = model(task)
    opt = optimiser(task, net)
    for epoch in range(epochs):
        net.train()
        total, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            opt.zero_grad()
            out = net(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        acc = evaluate_notebook(net, test_loader)
        print(f"epoch {epoch + 1}: train loss {total / seen:.4f} acc {correct / seen:.4f}, test acc {acc:.4f}")
    return acc


def evaluate_notebook(net, loader) -> float:
    net.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (net(x).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


def preload(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as one normalised float tensor (MNIST straight from its uint8 tensor)."""
    if isinstance(dataset, MNIST):
        mean, std = MNIST_STATS
        return ((dataset.data.float() / 255 - mean[0]) / std[0]).unsqueeze(1), dataset.targets
    xs, ys = zip(*DataLoader(dataset, batch_size=2000))
    return torch.cat(xs), torch.cat(ys)


class Careful:
    """The careful loop's state (preloaded tensors, model, optimiser); `epoch()` trains once over
    the training split and tests."""

    def __init__(self, task: str, root: Path):
        tf = T.Compose([T.ToTensor(), T.Normalize(*(MNIST_STATS if task == "mlp" else CIFAR_STATS))])
        (self.xtr, self.ytr), (self.xte, self.yte) = map(preload, datasets(task, root, tf))
        self.batch = 64 if task == "mlp" else 128
        self.net = model(task)
        self.opt = optimiser(task, self.net)

    def epoch(self) -> tuple[float, float, float]:
        """(mean training loss, training accuracy, test accuracy)."""
        net, opt = self.net, self.opt
        net.train()
        sums = torch.zeros(2)
        for idx in torch.randperm(len(self.xtr)).split(self.batch):
            x, y = self.xtr[idx], self.ytr[idx]
            out = net(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach() * len(y), (out.argmax(1) == y).sum()])
        net.eval()
        with torch.inference_mode():
            right = sum((net(x).argmax(1) == y).sum() for x, y in zip(self.xte.split(2000), self.yte.split(2000)))
        loss_sum, correct = sums.tolist()
        return loss_sum / len(self.xtr), correct / len(self.xtr), right.item() / len(self.xte)


def careful(task: str, root: Path, epochs: int) -> float:
    loop = Careful(task, root)
    for epoch in range(epochs):
        loss, acc, test = loop.epoch()
        print(f"epoch {epoch + 1}: train loss {loss:.4f} acc {acc:.4f}, test acc {test:.4f}")
    return test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("loop", choices=["notebook", "careful"])
    parser.add_argument("task", choices=["mlp", "cnn"])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (mlp), 2 (cnn)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fn = notebook if args.loop == "notebook" else careful
    fn(args.task, args.data, args.epochs or (10 if args.task == "mlp" else 2))
    print(f"{args.loop} {args.task}: {time.perf_counter() - t0:.1f} s in the loop")


if __name__ == "__main__":
    main()
