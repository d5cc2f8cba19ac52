"""Command line: `nnstudy train --spec spec.yaml --out DIR` trains one run (the workflow's
training jobs call it with --spec-json and --selections)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataError
from .spec import SpecError


def _train(args) -> None:
    import json

    from . import gpu, spec, study

    if args.spec_json is not None:
        raw = json.loads(args.spec_json)
    else:
        raw = spec.read(args.spec)
    if args.selections:
        raw = study.materialise(raw, study.load_selections(args.selections))
    resolved = spec.resolve(raw)  # a bad spec stops here, before any work
    slot = gpu.claim() if args.device is None else None  # noqa: F841 (held until exit)

    from . import train

    manifest = train.run(resolved, args.out, threads=args.threads, device=args.device)
    print(f"run {manifest['id']} {manifest['status']}: results in {Path(args.out).resolve()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run from a spec file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", type=Path, help="YAML run spec")
    src.add_argument("--spec-json", help="the run spec as JSON text (used by the workflow)")
    p.add_argument("--selections", nargs="*", type=Path, default=[],
                   help="selection files filling {select: NAME} values in the spec")
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
