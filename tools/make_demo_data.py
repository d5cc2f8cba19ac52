"""Rebuild data/demo-cifar10: a small stratified CIFAR-10 subset for the offline demo and tests.

Copies (byte for byte, no re-encoding) a seeded random choice of JPEG files per class from the
CIFAR-10 ImageFolder copy in ../shared/data/cifar10-jpg (see its README.md for provenance).

    python tools/make_demo_data.py [--source ../shared/data/cifar10-jpg] [--train 200] [--test 50]
"""
import argparse
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-jpg")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo-cifar10")
    parser.add_argument("--train", type=int, default=200, help="images per class from train/")
    parser.add_argument("--test", type=int, default=50, help="images per class from test/")
    args = parser.parse_args()
    rng = random.Random(0)
    for split, per_class in (("train", args.train), ("test", args.test)):
        classes = sorted(p.name for p in (args.source / split).iterdir() if p.is_dir())
        for cls in classes:
            files = sorted((args.source / split / cls).glob("*.jpg"))
            dest = args.out / split / cls
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for f in sorted(rng.sample(files, per_class)):
                shutil.copyfile(f, dest / f.name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
