"""Command line: `nnstudy train --spec spec.yaml --out DIR` and the workflow's steps."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataError
from .spec import SpecError


def _train(args) -> None:
    from . import spec, train

    manifest = train.run(spec.load(args.spec), args.out, threads=args.threads, device=args.device)
    print(f"run {manifest['id']} {manifest['status']}: results in {Path(args.out).resolve()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run from a spec file")
    p.add_argument("--spec", required=True, type=Path, help="YAML run spec")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(func=_train)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (SpecError, DataError) as e:
        print(f"nnstudy: error: {e}", file=sys.stderr)
        return 2
    return 0
