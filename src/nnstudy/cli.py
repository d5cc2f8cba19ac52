"""Command line: `nnstudy train --spec spec.yaml --out DIR` trains one run (the workflow's
training jobs call it with --spec-json and --selections); `nnstudy list` prints what can be
named in a spec; `nnstudy status` says where a study stands, also while it runs; `nnstudy
compare results/STUDY A B` compares two variants as the study's declared comparisons do; `nnstudy
step RULE` runs one of the workflow's other steps (nnstudy.steps)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from . import steps
from .spec import SpecError


def _train(args) -> None:
    from . import gpu, spec, study

    if args.threads is not None and args.threads < 1:
        raise SpecError(f"--threads: {args.threads} is not allowed; at least 1 (or leave it out)")
    runs = _runs(args)
    selections = study.load_selections(args.selections) if args.selections else {}
    if args.done:  # the job is its one writer: a killed attempt's temporary file goes
        from .schemas import remove_stale

        remove_stale([args.done])
    slot = gpu.claim() if args.device is None else None  # noqa: F841 (held until exit)

    from .training.run import run

    done = {}
    for i, (raw, out, keep) in enumerate(runs, 1):
        if args.runs_json is not None:  # `nnstudy status` reads a run's lines of its job's log from here on
            print(f"nnstudy: run {out.name}: starting ({i} of {len(runs)})", file=sys.stderr, flush=True)
        resolved = spec.resolve(study.materialise(raw, selections))  # a bad spec stops here, before any work
        manifest = run(resolved, out, threads=args.threads, device=args.device, replace=args.replace, after=keep)
        done[out.name] = {"id": manifest["id"], "status": manifest["status"]}
        print(f"run {manifest['id']} {manifest['status']}: results in {out.resolve()}", flush=True)
    if args.done:
        from .schemas import write_text

        write_text(json.dumps({"runs": done}, indent=2) + "\n", args.done)


def _runs(args) -> list[tuple[dict, Path, Callable | None]]:
    """(raw spec, run directory, what to do once it has trained) of each run to train, from
    --spec/--spec-json and --out, or --runs-json (whose runs may list the analyses to keep)."""
    if args.runs_json is not None:
        try:
            runs = [(r["spec"], Path(r["out"]), _keeper(r, i)) for i, r in enumerate(json.loads(args.runs_json))]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise SpecError(f"--runs-json: not a JSON list of {{\"spec\": ..., \"out\": ...}} ({e})") from None
    elif args.out is None:
        raise SpecError("--out: required with --spec or --spec-json (the run directory)")
    elif args.spec_json is not None:
        try:
            runs = [(json.loads(args.spec_json), args.out, None)]
        except json.JSONDecodeError as e:
            raise SpecError(f"--spec-json: not valid JSON ({e})") from None
    else:
        from .spec import read

        runs = [(read(args.spec), args.out, None)]
    for _, out, _ in runs:
        if out.exists() and not out.is_dir():
            raise SpecError(f"--out {out}: a file is there; give a folder for the run")
    return runs


def _keeper(item: dict, i: int) -> Callable | None:
    """What a training job does once a --runs-json run has trained: keep the analyses the study
    asks of it ("analyses": [[name, parameters], ...] of the run's "weights", final or best).
    An analysis this process does not know (a study plugin's that no run loads) is left to the
    experiment's analyse job."""
    wanted = item.get("analyses")
    if not wanted:
        return None
    from . import analyses, registry
    from .runs import WEIGHTS

    where = f"--runs-json[{i}]"
    if not isinstance(wanted, list) or not all(isinstance(w, list) and len(w) == 2 for w in wanted):
        raise SpecError(f"{where}.analyses: a list of [name, parameters] pairs, got {wanted!r}")
    registry.builtins()
    wanted = [[name, params] for name, params in wanted if name in registry.ANALYSES.names()]
    for name, params in wanted:
        analyses.check(name, params, f"{where}.analyses")
    weights = item.get("weights", "final")
    if weights not in WEIGHTS:
        raise SpecError(f"{where}.weights: {weights!r} is not allowed; allowed values: {', '.join(WEIGHTS)}")
    return lambda built: analyses.keep(built, wanted, weights)


def _analyse(args) -> None:
    from . import analyses, gpu, registry

    registry.load_plugins(args.plugins, "--plugins")  # a study's own analyses
    try:
        wanted = json.loads(args.analyses_json)
    except ValueError as e:
        raise SpecError(f"--analyses-json: not JSON ({e})") from None
    if not isinstance(wanted, dict) or not wanted:
        raise SpecError('--analyses-json: a mapping of analysis name -> parameters, e.g. {"confusion": {}}')
    for name, params in wanted.items():
        analyses.check(name, params, "--analyses-json")
    slot = gpu.claim() if args.device is None else None  # noqa: F841 (held until exit)
    analyses.compute(wanted, args.runs, args.weights, args.out, args.device)


def _list(args) -> None:
    from . import registry

    registry.builtins()
    registry.load_plugins(args.plugins, "--plugins")
    kinds = [(r, f"{s}.name") for s, r in registry.REGISTRIES.items()] + [(registry.ANALYSES, "an experiment's analyses")]
    for reg, where in kinds:
        plural = {"loss": "losses", "analysis": "analyses"}.get(reg.kind, reg.kind + "s")
        print(f"{plural} ({where}; a factory {reg.describe_factory}):")
        for e in reg.entries():
            own = ", ".join(f"{k}={json.dumps(v.get('default'))}" for k, v in e.params.items())
            what = f"= {e.target} with {json.dumps(e.defaults)}" if e.target else f"({own})" if own else ""
            where = f"  [{e.origin.rsplit('@', 1)[0]}]" if e.origin else ""
            doc = " ".join(e.doc.split("\n\n")[0].split())
            print(f"  {e.name} {what}{where}\n      {doc}")


def _check(args) -> None:
    from .study import read_study

    study = read_study(args.configfile, args.budget)
    study.check_plugins()
    print(f"{args.configfile}: study {study.name}: {len(study.rows)} runs planned, {len(study.trained)} to train "
          f"({len(study.config['experiments'])} experiments, {len(study.seeds)} seeds)")


def _status(args) -> None:
    from . import status
    from .study import read_study

    if args.cores < 1:
        raise ValueError(f"--cores: {args.cores} is not allowed; at least 1")
    report = status.status(read_study(args.configfile, args.budget), cores=args.cores)
    print(json.dumps(report) if args.json else status.text(report))


def _compare(args) -> None:
    from . import compare
    from .study import read_study

    row = compare.compare(read_study(args.configfile, args.budget), args.results, args.a, args.b, args.metric, args.paired)
    print(json.dumps(row) if args.json else compare.sentence(row))


def _step(args) -> None:
    steps.run(args.rule, args.job, args.log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run from a spec file (or several, one after another)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", type=Path, help="YAML run spec")
    src.add_argument("--spec-json", help="the run spec as JSON text")
    src.add_argument("--runs-json", help='runs to train in this process, as JSON: [{"spec": ..., "out": DIR}, ...] '
                     "(the workflow's training jobs)")
    p.add_argument("--selections", nargs="*", type=Path, default=[],
                   help="selection files filling {select: NAME} values in the spec")
    p.add_argument("--out", type=Path, help="run directory (with --spec or --spec-json)")
    p.add_argument("--replace", action="store_true",
                   help="train a run directory holding another finished run again (a template whose selection changed)")
    p.add_argument("--done", type=Path, help="write this JSON file once every run has finished (the workflow's job output)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(func=_train)

    p = sub.add_parser("analyse", help="compute per-run analyses of finished runs (one Parquet file each)")
    p.add_argument("--analyses-json", required=True, help='analysis name -> parameters, e.g. {"confusion": {}}')
    p.add_argument("--runs", nargs="+", type=Path, required=True,
                   help="run folders (each with run.json); analyses registered first_seed=True (t-SNE, "
                        "filters): those of the smallest seed")
    p.add_argument("--weights", choices=["final", "best"], default="final", help="final or best-validation weights")
    p.add_argument("--out", type=Path, required=True, help="the folder to write, one <analysis>.parquet each")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--plugins", nargs="*", default=[], help="plugin files or modules to load first (a study's plugins:)")
    p.set_defaults(func=_analyse)

    p = sub.add_parser("list", help="list the registered datasets, models, optimisers, schedules, losses and analyses")
    p.add_argument("--plugins", nargs="*", default=[], help="plugin files or modules to load first")
    p.set_defaults(func=_list)

    p = sub.add_parser("check", help="validate and plan a study file (YAML errors with their line), train nothing")
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="study file (default: config.yaml)")
    p.add_argument("--budget", help="one of the study's budgets (default: the file's own `budget:`, if any)")
    p.set_defaults(func=_check, errors=(OSError,))

    p = sub.add_parser("status", help="runs planned, finished, diverged, running, failed, pending; time left")
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="study file (default: config.yaml)")
    p.add_argument("--budget", help="one of the study's budgets (default: the file's own `budget:`, if any)")
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
    p.add_argument("--budget", help="one of the study's budgets (default: the file's own `budget:`, if any)")
    p.set_defaults(func=_compare, errors=(OSError, ValueError))

    p = sub.add_parser("step", help="one of the workflow's steps besides training (the Snakefile's rules run it)")
    p.add_argument("rule", choices=list(steps.STEPS))
    p.add_argument("--job", required=True, help="the step's files, wildcards and study snapshot, as JSON (nnstudy.steps)")
    p.add_argument("--log", required=True, help="the step's log (its stderr, and a traceback if it fails)")
    # A failed step's traceback is in its log (nnstudy.logs.logged); here, one line.
    p.set_defaults(func=_step, errors=(OSError, ValueError))

    args = parser.parse_args(argv)
    from .data import DataError
    from .models import ModelError
    from .registry import RegistryError

    try:
        args.func(args)
    except (SpecError, DataError, ModelError, RegistryError, *getattr(args, "errors", ())) as e:
        print(f"nnstudy: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
