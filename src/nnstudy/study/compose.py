"""A study assembled from its files: what it extends, its budget, and command-line values.

The merge rules (tests/test_compose.py holds an example of each):
1. `extends: PATH` (or a list of paths, merged in order) starts a file from other study files;
   a path is relative to the file that names it. The file's own keys are merged over them.
2. Mappings merge key by key, at every depth; lists and other values replace whole (a grid's
   list of values, `seeds`, a model's `conv` blocks).
3. A key set to null in an extending file, a budget or the command line removes that key from
   what it extends: `experiments: {transfer: null}` drops an experiment, `data: {crop: null}`
   brings back crop's default. (In a file that extends nothing, null is a value: in a run spec
   or an experiment's `set` and zip grid it leaves that key out, so its default applies.)
4. `budgets: {NAME: overlay}` declares partial studies (epochs, data subset, widths, data
   location); `budget: NAME` (in a file, or `--config budget=NAME`) merges that overlay last,
   and the study's results go to results/<study>-<NAME>/ so two budgets never mix.
5. Command-line values (`--config key=value`) merge over everything.
A workflow without a study file of its own (no `study:` among its files) runs the default
study, config.yaml, with those files merged over it.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from ..spec import SpecError, parse_yaml

BUDGET_NAME = re.compile(r"[A-Za-z0-9_-]+")


def read_yaml(path: Path) -> dict:
    """A study file as a mapping; one-line errors for a missing file or bad YAML."""
    try:
        data = parse_yaml(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise SpecError(f"study file not found: {path}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a study file is a mapping of keys (study, experiments, ...)")
    return data


def merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base` by rules 2 and 3."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(path: Path, _seen: tuple = ()) -> dict:
    """A study file with what it extends merged under it (rule 1), budgets not yet applied."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise SpecError(f"extends: a study file extends itself: {chain}")
    own = read_yaml(path)
    parents = own.pop("extends", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
        raise SpecError(f"{path}: extends: a path or a list of paths (relative to this file)")
    if not parents:
        return own  # its nulls are values (an experiment's `set: {model.hidden: null}`)
    return merge(merge_all(load(path.parent / p, (*_seen, path)) for p in parents), own)


def merge_all(studies) -> dict:
    """Studies merged in order over the first."""
    studies = list(studies)
    out = studies[0] if studies else {}
    for study in studies[1:]:
        out = merge(out, study)
    return out


def with_budget(study: dict, budget: str | None, where: str) -> dict:
    """The study with budget `budget`'s overlay merged over it (rule 4); `budgets` removed."""
    budgets = study.pop("budgets", {}) or {}
    if not isinstance(budgets, dict):
        raise SpecError(f"{where}: budgets: a mapping of budget name -> overlay")
    if budget is None:
        study.pop("budget", None)
        return study
    if not isinstance(budget, str) or not BUDGET_NAME.fullmatch(budget):
        raise SpecError(f"budget: {budget!r} is not a budget name (letters, digits, '_', '-')")
    if budget not in budgets:
        raise SpecError(f"budget: {budget!r} is not a budget of {where}; "
                        f"its budgets: {', '.join(budgets) or 'none'}")
    overlay = budgets[budget]
    if not isinstance(overlay, dict):
        raise SpecError(f"{where}: budgets.{budget}: a mapping of study keys (an overlay)")
    study = merge(study, overlay)
    study["budget"] = budget
    if isinstance(study.get("study"), str):
        study["study"] = f"{study['study']}-{budget}"
    return study


def compose(files: list[Path], overrides: dict, default: Path) -> dict:
    """The study a workflow runs: `files` (its --configfile study files) merged in order over
    the default study when none names a study, its budget applied, then `overrides`."""
    overrides = copy.deepcopy(dict(overrides))
    study = merge_all(load(path) for path in files)
    if "study" not in study:
        study = merge(load(default), study)
    where = ", ".join(map(str, files)) or str(default)
    budget = overrides.pop("budget", study.get("budget"))
    return merge(with_budget(study, budget, where), overrides)


def read_study(configfile: Path, budget: str | None = None, default: Path = Path("config.yaml")):
    """The Study of one study file at `budget` (None: the file's own), assembled by `compose`."""
    from .plan import Study

    return Study(compose([Path(configfile)], {"budget": budget} if budget else {}, default))
