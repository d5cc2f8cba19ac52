"""Command line: `nnstudy train --spec spec.yaml --out DIR` trains one run (the workflow's
training jobs call it with --spec-json and --selections); `nnstudy list` prints what can be
named in a spec; `nnstudy status` says where a study stands, also while it runs; `nnstudy
compare results/STUDY A B` compares two variants as the study's declared comparisons do."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .spec import SpecError


def _train(args) -> None:
    from . import gpu, spec, study

    if args.threads is not None and args.threads < 1:
        raise SpecError(f"--threads: {args.threads} is not allowed; at least 1 (or leave it out)")
    if args.out.exists() and not args.out.is_dir():
        raise SpecError(f"--out {args.out}: a file is there; give a folder for the run")
    if args.spec_json is not None:
        try:
            raw = json.loads(args.spec_json)
        except json.JSONDecodeError as e:
            raise SpecError(f"--spec-json: not valid JSON ({e})") from None
    else:
        raw = spec.read(args.spec)
    if args.selections:
        raw = study.materialise(raw, study.load_selections(args.selections))
    resolved = spec.resolve(raw)  # a bad spec stops here, before any work
    slot = gpu.claim() if args.device is None else None  # noqa: F841 (held until exit)

    from . import training

    manifest = training.run(resolved, args.out, threads=args.threads, device=args.device)
    print(f"run {manifest['id']} {manifest['status']}: results in {Path(args.out).resolve()}")


def _list(args) -> None:
    from . import registry

    registry.builtins()
    registry.load_plugins(args.plugins, "--plugins")
    for section, reg in registry.REGISTRIES.items():
        print(f"{reg.kind}s ({section}.name; a factory {reg.describe_factory}):")
        for e in reg.entries():
            own = ", ".join(f"{k}={json.dumps(v.get('default'))}" for k, v in e.params.items())
            what = f"= {e.target} with {json.dumps(e.defaults)}" if e.target else f"({own})" if own else ""
            where = f"  [{e.origin.rsplit('@', 1)[0]}]" if e.origin else ""
            doc = " ".join(e.doc.split("\n\n")[0].split())
            print(f"  {e.name} {what}{where}\n      {doc}")


def _check(args) -> None:
    from . import status

    study = status.read_study(args.configfile)
    study.check_plugins()
    print(f"{args.configfile}: study {study.name}: {len(study.rows)} runs planned, {len(study.trained)} to train "
          f"({len(study.config['experiments'])} experiments, {len(study.seeds)} seeds)")


def _status(args) -> None:
    from . import status

    if args.cores < 1:
        raise ValueError(f"--cores: {args.cores} is not allowed; at least 1")
    report = status.status(status.read_study(args.configfile), cores=args.cores)
    print(json.dumps(report) if args.json else status.text(report))


def _compare(args) -> None:
    from . import compare, status

    row = compare.compare(status.read_study(args.configfile), args.results, args.a, args.b, args.metric, args.paired)
    print(json.dumps(row) if args.json else compare.sentence(row))


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

    p = sub.add_parser("list", help="list the registered datasets, models, optimisers, schedules and losses")
    p.add_argument("--plugins", nargs="*", default=[], help="plugin files or modules to load first")
    p.set_defaults(func=_list)

    p = sub.add_parser("check", help="validate and plan a study file (YAML errors with their line), train nothing")
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="study file (default: config.yaml)")
    p.set_defaults(func=_check, errors=(OSError,))

    p = sub.add_parser("status", help="runs planned, finished, diverged, running, failed, pending; time left")
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="study file (default: config.yaml)")
    p.add_argument("--cores", type=int, default=1, help="training jobs at a time, for the time left (default: 1)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    # Files the workflow is writing may be missing or half-read: one line, never a traceback.
    p.set_defaults(func=_status, errors=(OSError, ValueError))

    p = sub.add_parser("compare", help="compare two variants of a finished study (A - B), as its comparisons do")
    p.add_argument("results", type=Path, help="the study's results folder, results/<study>")
    p.add_argument("a", help='variant A, "experiment/variant" as in the report (e.g. "dropout/dropout=0.5")')
    p.add_argument("b", help="variant B")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "loss", "gap_accuracy", "gap_loss"])
    p.add_argument("--paired", action="store_true", help="paired t-test over seeds (default: Welch)")
    p.add_argument("--json", action="store_true", help="the comparison row as JSON (NaN as null)")
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="study file (default: config.yaml)")
    p.set_defaults(func=_compare, errors=(OSError, ValueError))

    args = parser.parse_args(argv)
    from .data.pool import DataError
    from .models import ModelError
    from .registry import RegistryError

    try:
        args.func(args)
    except (SpecError, DataError, ModelError, RegistryError, *getattr(args, "errors", ())) as e:
        print(f"nnstudy: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
