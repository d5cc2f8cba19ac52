"""The run table of a study file: every (experiment, variant, seed), its spec and its identity.

Every row of the run table is one (experiment, variant, seed). Its spec is either concrete
(trained under its id) or a template holding `{select: NAME}` placeholders: values chosen by a
selection (e.g. the best LR) that the workflow makes after the runs it reads have finished. A
template is trained under "t" + the hash of the template and resolved when its job starts, so the
whole plan (every training job) is known before anything runs. A template that can only resolve
to runs of the selection's own experiment (e.g. "the best dropout rate" in a second experiment
with an otherwise identical spec) is not trained again: it borrows that run. A random search is
drawn here too, from its own seed, so its samples are variants like grid values.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import itertools
import json
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import analyses, registry, spec as spec_mod
from ..spec import SpecError

RESULTS = "results"


def is_placeholder(v) -> bool:
    return isinstance(v, dict) and "select" in v


def fmt(v) -> str:
    """A value as it appears in variant labels and selection files."""
    if isinstance(v, bool):
        return str(v).lower()
    if is_placeholder(v):
        return "{" + v["select"] + "}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return repr(v) if isinstance(v, float) else str(v)


def materialise(obj, selections: dict):
    """Replace placeholders by the selected values ({select, from} picks a path by value)."""
    if is_placeholder(obj):
        if obj["select"] not in selections:
            raise SpecError(f"--selections: no file for selection {obj['select']!r}, which this spec uses")
        value = selections[obj["select"]]
        return obj["from"][fmt(value)] if "from" in obj else value
    if isinstance(obj, dict):
        return {k: materialise(v, selections) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialise(v, selections) for v in obj]
    return obj


def needs(obj) -> set[str]:
    """Names of the selections a spec (or value) depends on."""
    if is_placeholder(obj):
        return {obj["select"]}
    if isinstance(obj, dict):
        return set().union(*(needs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(needs(v) for v in obj)) if obj else set()
    return set()


def natural_key(label: str):
    """Sort key for variant labels: numbers by value (lr=0.003 before lr=0.01), words as text."""
    key = []
    for token in label.replace("=", " ").replace(",", " ").split():
        try:
            key.append((0, float(token), ""))
        except ValueError:
            key.append((1, 0.0, token))
    return key


def run_cost(resolved: dict) -> float:
    """A run's rough relative cost, to order the training jobs: its epochs times the share of
    the training pool that trains (holdout: 1 - val_fraction; halves: a half)."""
    data = resolved["data"]
    share = 0.5 if data["split"] == "halves" else 1 - data["val_fraction"]
    return resolved["train"]["epochs"] * share


def variant_label(values: dict) -> str:
    """A variant's label from its grid values: "lr=0.01", "dropout=0.5,batchnorm=true" (a key's
    last part, or the whole dotted key where last parts repeat); a null value (the key left out
    of that variant) is not shown."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return "default"
    leaves = [k.rsplit(".", 1)[-1] for k in values]
    names = [leaf if leaves.count(leaf) == 1 and leaf != "name" else k for k, leaf in zip(values, leaves)]
    return ",".join(f"{n}={fmt(v)}" for n, v in zip(names, values.values()))


@dataclass
class Row:
    experiment: str
    variant: str          # label; "{name}" parts are filled in once the selection is made
    seed: int
    values: dict          # the experiment's grid keys -> values (placeholders allowed)
    spec: dict            # resolved spec, or a template with placeholders
    key: str              # train directory; for a borrowed row, "" (see `borrow`)
    borrow: dict = field(default_factory=dict)  # fmt(selected value) -> key, for borrowed rows
    cost: float = 1.0     # rough relative cost of training it (run_cost), to order the jobs

    @property
    def needs(self) -> set[str]:
        return needs(self.spec)


class Study:
    """A validated study: its run table and what each training job needs."""

    def __init__(self, config: dict):
        self.config = copy.deepcopy(config)
        try:  # first: the schema's names and parameters include the plugins' entries
            self.plugins = registry.load_plugins(self.config.get("plugins", []), "study.plugins")
        except registry.RegistryError as e:
            raise SpecError(str(e)) from None
        spec_mod.check(self.config, spec_mod.schema(), where="study")
        c = self.config
        self.name = c["study"]
        self.root = f"{RESULTS}/{self.name}"
        self._check_size()
        if c.get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
            raise SpecError("study.tensorboard: TensorBoard is not installed; pip install 'nnstudy[tensorboard]' "
                            "(or set tensorboard: false)")
        self.seeds = list(range(c["seeds"])) if isinstance(c["seeds"], int) else list(c["seeds"])
        defaults = copy.deepcopy(c["defaults"])
        if "seed" in defaults:
            raise SpecError("study.defaults.seed: a study's seeds come from `seeds` (a count or a list)")
        try:
            spec_mod.resolve(defaults)
        except SpecError as e:
            raise SpecError(str(e).replace("spec", "study.defaults", 1)) from None
        self.defaults = defaults
        self._check_experiments()
        # Drawn before anything else reads the variants (selections check their values).
        self.samples = {exp: self._draw(exp) for exp in c["experiments"]}
        self._check_selections()
        self._resolved: dict[bytes, dict] = {}  # see _resolve
        self.rows: list[Row] = []
        self.resolved_choices: list[tuple[str, dict]] = []  # (where, resolved spec) of template choices
        concrete: dict[str, Row] = {}
        # Experiments whose runs use a selection after those they may borrow runs from, transfer
        # experiments last: their rows point at their source experiment's rows.
        order = sorted(c["experiments"], key=lambda e: ("transfer_from" in c["experiments"][e],
                                                         bool(needs(c["experiments"][e]))))
        for exp in order:
            for values in self.grid(exp):
                for seed in self.seeds:
                    self.rows.append(self._row(exp, values, seed, concrete))
        self.trained = {}
        for row in self.rows:
            if row.key:
                self.trained.setdefault(row.key, row)
        self.jobs = self._bundle(c.get("runs_per_job", 5))
        self.job_of = {key: job for job, keys in self.jobs.items() for key in keys}
        self._check_comparisons()

    # -- parsing --------------------------------------------------------------------------
    def _check_experiments(self) -> None:
        c = self.config
        exps = c["experiments"]
        for name, exp in exps.items():
            for part in ("set", "grid"):
                for key in exp[part]:
                    spec_mod.check_dotted(key, f"study.experiments.{name}.{part}")
                    if key == "seed":
                        raise SpecError(f"study.experiments.{name}.{part}.seed: a study's seeds come from `seeds`")
            if exp["mode"] == "zip" and len({len(v) for v in exp["grid"].values()}) > 1:
                raise SpecError(f"study.experiments.{name}.grid: mode zip needs lists of equal length")
            if "random" in exp:
                _check_random(name, exp)
            if "transfer_from" in exp and exp["transfer_from"] not in exps:
                raise SpecError(f"study.experiments.{name}.transfer_from: unknown experiment "
                                f"{exp['transfer_from']!r}; experiments: {', '.join(exps)}")
            for analysis, params in exp["analyses"].items():
                analyses.check(analysis, params, f"study.experiments.{name}.analyses")
            for sel in needs([exp["set"], exp["grid"], exp.get("random", {})]):
                if sel not in c["selections"]:
                    raise SpecError(f"study.experiments.{name}: unknown selection {sel!r}; "
                                    f"selections: {', '.join(c['selections']) or '(none declared)'}")

    def _check_size(self) -> None:
        """Stop before expanding a grid or seed list far larger than anyone means to train."""
        c, total = self.config, 0
        seeds = c["seeds"] if isinstance(c["seeds"], int) else len(c["seeds"])
        for exp in c["experiments"].values():
            sizes = [len(v) for v in exp["grid"].values()]
            samples = exp["random"]["samples"] if "random" in exp else 1  # at most: equal draws are merged
            total += (min(sizes, default=1) if exp["mode"] == "zip" else math.prod(sizes)) * samples * seeds
        if total > c["max_runs"]:
            raise SpecError(f"study: {total:,} runs planned, more than max_runs ({c['max_runs']:,}); set max_runs "
                            "higher in the study file if you mean it")

    def _check_selections(self) -> None:
        exps = self.config["experiments"]
        for name, sel in self.config["selections"].items():
            where = f"study.selections.{name}"
            if sel["experiment"] not in exps:
                raise SpecError(f"{where}.experiment: unknown experiment {sel['experiment']!r}; "
                                f"experiments: {', '.join(exps)}")
            grid = self.grid_keys(sel["experiment"])
            if sel["key"] not in grid:
                raise SpecError(f"{where}.key: {sel['key']!r} is not a grid key of {sel['experiment']}; "
                                f"grid keys: {', '.join(grid) or '(none)'}")
            if needs(exps[sel["experiment"]]):
                raise SpecError(f"{where}: experiment {sel['experiment']} depends on a selection itself")
            if not self.eligible(name):
                raise SpecError(f"{where}.exclude: no value of {sel['key']} is left to choose from")

    def _check_comparisons(self) -> None:
        """Every "experiment/variant" a comparison names must exist (for each value a placeholder
        in it can take), so a typo stops the plan instead of the summary after training."""
        labels = {e: {r.variant for r in self.rows_of(e)} for e in self.config["experiments"]}
        for family, comp in self.config["comparisons"].items():
            for i, pair in enumerate(comp["pairs"]):
                for label in pair:
                    where = f"study.comparisons.{family}.pairs.{i}"
                    exp, _, variant = label.partition("/")
                    if exp not in labels:
                        raise SpecError(f"{where}: {label!r} names no experiment; experiments: {', '.join(labels)}")
                    if variant != "*" and variant not in labels[exp] and not self._fills(variant, labels[exp], where):
                        raise SpecError(f"{where}: {label!r} names no variant of {exp}; variants: "
                                        f"{', '.join(sorted(labels[exp]))}")

    def _fills(self, variant: str, labels: set[str], where: str) -> bool:
        """Whether every value of the selections a label names gives one of `labels`."""
        names = re.findall(r"\{([^{}]+)\}", variant)
        for name in names:
            if name not in self.config["selections"]:
                raise SpecError(f"{where}: {{{name}}} is not a selection; selections: "
                                f"{', '.join(self.config['selections']) or '(none declared)'}")
        if not names:
            return False
        for combo in itertools.product(*(self.eligible(n) for n in names)):
            filled = variant
            for name, value in zip(names, combo):
                filled = filled.replace("{" + name + "}", fmt(value))
            if filled not in labels:
                return False
        return True

    def grid(self, exp: str) -> list[dict]:
        """The experiment's variants: its grid's product (or zip), each with every random sample."""
        e = self.config["experiments"][exp]
        g = e["grid"]
        # zip() of nothing is empty, product() of nothing is the one empty variant.
        combos = zip(*g.values()) if e["mode"] == "zip" and g else itertools.product(*g.values())
        return [{**dict(zip(g, combo)), **sample} for combo in combos for sample in self.samples[exp]]

    def grid_keys(self, exp: str) -> list[str]:
        """The keys that vary between an experiment's variants: grid keys, then random-search keys."""
        e = self.config["experiments"][exp]
        return [*e["grid"], *(e["random"]["params"] if "random" in e else [])]

    def key_values(self, exp: str, key: str) -> list:
        """The distinct values a grid (or random-search) key takes in an experiment, in plan order."""
        return list({fmt(v[key]): v[key] for v in self.grid(exp)}.values())

    def _draw(self, exp: str) -> list[dict]:
        """The experiment's random-search samples ([{}] without one): sample by sample, params in
        the order written, so one seed always draws the same samples. Identical draws are one
        variant (and one run: ids are spec hashes), so they are kept once."""
        random = self.config["experiments"][exp].get("random")
        if not random:
            return [{}]
        rng = np.random.default_rng(random["seed"])
        samples = {}
        for _ in range(random["samples"]):
            sample = {key: _draw_value(rng, dist) for key, dist in random["params"].items()}
            samples.setdefault(tuple(map(fmt, sample.values())), sample)
        return list(samples.values())

    def eligible(self, selection: str) -> list:
        sel = self.config["selections"][selection]
        return [v for v in self.key_values(sel["experiment"], sel["key"]) if v not in sel["exclude"]]

    def label(self, exp: str, values: dict) -> str:
        return variant_label(values)

    def _template(self, exp: str, values: dict, seed: int) -> dict:
        spec = copy.deepcopy(self.defaults)
        for key, value in {**self.config["experiments"][exp]["set"], **values}.items():
            if value is None:  # null leaves the key out (its default), as in a study's merge rules
                spec_mod.unset(spec, key)
            else:
                spec_mod.set_(spec, key, copy.deepcopy(value))
        spec["seed"] = seed
        spec["plugins"] = dict(self.plugins)  # resolve keeps those of the entries it uses
        return spec

    def _row(self, exp: str, values: dict, seed: int, concrete: dict) -> Row:
        where = f"study.experiments.{exp}"
        spec = self._template(exp, values, seed)
        source_exp = self.config["experiments"][exp].get("transfer_from")
        if source_exp:
            spec.setdefault("transfer", {})["source"] = self._source(exp, source_exp, spec, seed)
        label = self.label(exp, values)
        wanted = needs(spec)
        if not wanted:
            try:
                resolved = self._resolve(spec)
            except SpecError as e:
                raise SpecError(f"{where} (variant {label}): {e}") from None
            row = Row(exp, label, seed, values, resolved, spec_mod.run_id(resolved), cost=run_cost(resolved))
            concrete[row.key] = row
            return row
        # A template: check that each choice gives a valid spec, and whether each is a run of
        # the selection's own experiment already (then it is borrowed, not trained again).
        choices, used = {}, {}
        for combo in itertools.product(*(self.eligible(s) for s in sorted(wanted))):
            chosen = dict(zip(sorted(wanted), combo))
            try:
                resolved = self._resolve(materialise(spec, chosen))
            except SpecError as e:
                raise SpecError(f"{where} (variant {label}, with {chosen}): {e}") from None
            choices[tuple(map(fmt, combo))] = spec_mod.run_id(resolved)
            used.update(resolved["plugins"])
            self.resolved_choices.append((f"{where} (variant {label})", resolved))
        if len(wanted) == 1 and all(k in concrete for k in choices.values()):
            return Row(exp, label, seed, values, spec, "", {k[0]: v for k, v in choices.items()})
        spec["plugins"] = dict(sorted(used.items()))  # so only the code its choices use is its identity
        return Row(exp, label, seed, values, spec, "t" + spec_mod.run_id(spec), cost=run_cost(resolved))

    def _resolve(self, spec: dict) -> dict:
        """spec_mod.resolve, validated once per spec apart from its seed: a variant's runs differ
        in nothing else, and validating each was most of the planning time. (The seeds are
        checked with the study, within the same bounds.)"""
        key = pickle.dumps({**spec, "seed": None})  # not JSON: a YAML date or an int key reaches resolve's error
        if key not in self._resolved:
            self._resolved[key] = spec_mod.resolve(spec)
        return {**copy.deepcopy(self._resolved[key]), "seed": spec["seed"]}

    def _source(self, exp: str, source_exp: str, spec: dict, seed: int):
        """The weights a transfer run starts from: the source experiment's run with this seed and
        this run's values of the source's grid keys (a placeholder picks among candidates)."""
        src_keys = self.grid_keys(source_exp)
        unset = [k for k in src_keys if not _has(spec, k)]
        if unset:
            raise SpecError(f"study.experiments.{exp}: set {', '.join(unset)} (a grid key of {source_exp}) "
                            "so that each run knows which run of it to transfer from")
        matches = {}
        for row in self.rows:
            if row.experiment != source_exp or row.seed != seed:
                continue
            if row.needs:
                raise SpecError(f"study.experiments.{exp}.transfer_from: {source_exp} depends on a selection")
            mine = {k: spec_mod.get(spec, k) for k in src_keys}
            fixed = {k: v for k, v in mine.items() if not is_placeholder(v)}
            if all(row.values[k] == v for k, v in fixed.items()):
                matches[tuple(fmt(row.values[k]) for k in src_keys if k not in fixed)] = row
        chosen = [k for k in src_keys if is_placeholder(spec_mod.get(spec, k))]
        if not matches:
            wanted = ", ".join(f"{k}={fmt(spec_mod.get(spec, k))}" for k in src_keys)
            raise SpecError(f"study.experiments.{exp}: no run of {source_exp} with seed {seed} and {wanted} "
                            "to transfer from")
        path = lambda row: f"{self.root}/train/{row.key}/model.pt"  # noqa: E731
        if not chosen:
            if len(matches) > 1:
                raise SpecError(f"study.experiments.{exp}: several runs of {source_exp} match; set its grid keys "
                                f"({', '.join(src_keys)}) in this experiment")
            return path(next(iter(matches.values())))
        if len(chosen) > 1:
            raise SpecError(f"study.experiments.{exp}: transfer from more than one selected key is not supported")
        name = spec_mod.get(spec, chosen[0])["select"]
        eligible = {fmt(v) for v in self.eligible(name)}
        return {"select": name, "from": {k[0]: path(row) for k, row in matches.items() if k[0] in eligible}}

    def check_plugins(self) -> None:
        """Build once every model and dataset a plugin provides, as the study uses them, so that a
        factory that raises or returns the wrong type stops the study before any job starts (torch
        is imported only then: a study without plugins starts Snakemake ~2 s sooner)."""
        specs = [(f"study.experiments.{r.experiment} (variant {r.variant})", r.spec) for r in self.rows
                 if r.key and not r.needs] + self.resolved_choices
        seen = set()
        for where, resolved in specs:
            key = json.dumps([resolved["data"], resolved["model"], resolved["loss"]], sort_keys=True)
            if resolved["plugins"] and key not in seen:
                from ..training.build import check_factories

                seen.add(key)
                check_factories(resolved, where)

    def _bundle(self, size: int) -> dict[str, list[str]]:
        """Training jobs of at most `size` runs: whole variants (their seeds) of one experiment
        packed together in plan order; a variant with more runs than `size` is split into jobs
        of its own. A job is named by the hash of its run keys (so adding seeds adds jobs and
        leaves finished ones alone)."""
        variants: dict[tuple, list[str]] = {}
        for key, row in self.trained.items():
            variants.setdefault((row.experiment, row.variant), []).append(key)
        chunks: list[list[str]] = []
        last = None  # the experiment of the last chunk, while whole variants may join it
        for (exp, _), keys in variants.items():
            if len(keys) > size:
                chunks += [keys[i:i + size] for i in range(0, len(keys), size)]
                last = None
            elif last == exp and len(chunks[-1]) + len(keys) <= size:
                chunks[-1] = chunks[-1] + keys
            else:
                chunks.append(list(keys))
                last = exp
        return {"j" + hashlib.sha256(",".join(keys).encode()).hexdigest()[:12]: keys for keys in chunks}

    # -- what the workflow asks ----------------------------------------------------------
    def rows_of(self, experiment: str) -> list[Row]:
        return [r for r in self.rows if r.experiment == experiment]

    def run_dir(self, key: str) -> str:
        return f"{self.root}/train/{key}"

    def job_path(self, job: str) -> str:
        """The file a training job writes once every run in it has finished (run.json each)."""
        return f"{self.root}/jobs/{job}.json"

    def jobs_of(self, keys) -> list[str]:
        """The files of the training jobs that train these runs, each once, in plan order."""
        return list(dict.fromkeys(self.job_path(self.job_of[k]) for k in keys))

    def job_inputs(self, job: str) -> dict:
        """Files a training job reads: selection files, and the jobs training the runs whose
        weights its transfer runs start from."""
        selections, sources = set(), []
        for key in self.jobs[job]:
            spec = self.trained[key].spec
            selections |= needs(spec)
            source = spec.get("transfer", {}).get("source")
            paths = list(source["from"].values()) if is_placeholder(source) else [source] if source else []
            sources += [Path(p).parent.name for p in paths]
        return {"selections": [self.selection_path(n) for n in sorted(selections)], "sources": self.jobs_of(sources)}

    def job_priority(self, job: str) -> int:
        """Snakemake's priority of a training job: the rough cost of the longest chain of training
        that starts with it (`_chains`), at least 3: above the analyses (1) and summaries (2). Jobs
        that later training waits on go first, the longest chain first, and what nothing waits
        on fills the cores, larger jobs before smaller ones: the study does not end with one
        long job training alone while the other cores idle."""
        return max(3, 1 + round(10 * self._chains[job]))

    def selection_priority(self) -> int:
        """Above every training job: a selection takes seconds, and what waits on it is the rest
        of the longest chains."""
        return 1 + max(map(self.job_priority, self.jobs), default=1)

    @functools.cached_property
    def _chains(self) -> dict[str, float]:
        """Job -> the summed cost (Row.cost) of its runs plus the largest such chain among the jobs
        that wait on it (a selection among its runs, or a transfer from their weights)."""
        waiting: dict[str, set[str]] = {job: set() for job in self.jobs}
        for job in self.jobs:
            ins = self.job_inputs(job)
            awaited = [*ins["sources"], *(f for p in ins["selections"] for f in self.selection_inputs(Path(p).stem))]
            for path in awaited:
                waiting[Path(path).stem].add(job)
        chains: dict[str, float] = {}

        def chain(job: str) -> float:
            if job not in chains:
                chains[job] = sum(self.trained[k].cost for k in self.jobs[job]) + max(map(chain, waiting[job]), default=0.0)
            return chains[job]

        for job in self.jobs:
            chain(job)
        return chains

    def job_runs(self, job: str) -> list[dict]:
        """What a training job trains: each run's spec (resolved, or a template) and directory,
        and the analyses the study's experiments ask of it (the job keeps them: analyses.keep)."""
        weights = self.config.get("analysis_weights", "final")
        return [{"spec": self.trained[k].spec, "out": self.run_dir(k),
                 **({"analyses": self._asked[k], "weights": weights} if k in self._asked else {})}
                for k in self.jobs[job]]

    @functools.cached_property
    def _asked(self) -> dict[str, list]:
        """Run key -> the analyses ([name, parameters]) that experiments reading it ask for."""
        asked: dict[str, list] = {}
        for exp, cfg in self.config["experiments"].items():
            for name, params in (cfg.get("analyses") or {}).items():
                pair = [name, params or {}]
                for key in self.analysis_keys(exp, first_seed=analyses.first_seed_only(name)):
                    mine = asked.setdefault(key, [])
                    if pair not in mine:
                        mine.append(pair)
        return asked

    def describe_job(self, job: str) -> str:
        """"EXPERIMENT/VARIANT, seeds 0, 1, ...[; EXPERIMENT/VARIANT, seeds ...]: runs KEY, ..."
        (Snakemake's message for the job: each variant it trains, then its runs in that order)."""
        seeds: dict[str, list[str]] = {}
        for key in self.jobs[job]:
            row = self.trained[key]
            seeds.setdefault(f"{row.experiment}/{row.variant}", []).append(str(row.seed))
        return "; ".join(f"{v}, seeds {', '.join(s)}" for v, s in seeds.items()) + f": runs {', '.join(self.jobs[job])}"

    def analyses_dir(self, experiment: str) -> str:
        """The folder of an experiment's per-run analyses, one <analysis>.parquet each."""
        return f"{self.root}/analyses/{experiment}"

    def analysis_summary(self, experiment: str) -> str:
        """The folder of an experiment's analysis summaries: <analysis>/, each with the
        analysis's tables and its figure, <experiment>.png."""
        return f"{self.root}/summary/analyses/{experiment}"

    def analysis_keys(self, experiment: str, first_seed: bool = False) -> list[str]:
        """The runs an experiment's analyses read: its own and every run a row may borrow; with
        `first_seed`, those of its first seed only (for analyses registered first_seed=True)."""
        rows = self.rows_of(experiment)
        if first_seed and rows:
            first = min(r.seed for r in rows)
            rows = [r for r in rows if r.seed == first]
        keys = [r.key for r in rows if r.key]
        keys += [k for r in rows for k in r.borrow.values()]
        return list(dict.fromkeys(keys))

    def selection_path(self, name: str) -> str:
        return f"{self.root}/selections/{name}.json"

    def experiment_selections(self, experiment: str) -> list[str]:
        """The selection files an experiment's runs are labelled with (its summaries wait on these only)."""
        return [self.selection_path(n) for n in sorted(set().union(*(r.needs for r in self.rows_of(experiment))))]

    def selection_inputs(self, name: str) -> list[str]:
        """Files the selection reads: the jobs that train its experiment's runs."""
        sel = self.config["selections"][name]
        return self.jobs_of(r.key for r in self.rows_of(sel["experiment"]) if r.key)


def _check_random(name: str, exp: dict) -> None:
    where = f"study.experiments.{name}.random"
    if exp["mode"] == "zip":
        raise SpecError(f"{where}: not allowed with mode zip (each sample is crossed with every grid variant); "
                        "use mode product")
    for key, dist in exp["random"]["params"].items():
        spec_mod.check_dotted(key, f"{where}.params")
        if key in exp["grid"]:
            raise SpecError(f"{where}.params.{key}: also a grid key; give it in grid or in random, not both")
        [(kind, bounds)] = dist.items()
        if kind != "choice" and not bounds[0] < bounds[1]:
            raise SpecError(f"{where}.params.{key}.{kind}: needs low < high, got {bounds}")


def _draw_value(rng: np.random.Generator, dist: dict):
    [(kind, values)] = dist.items()
    if kind == "choice":
        return copy.deepcopy(values[rng.integers(len(values))])
    low, high = values
    x = math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "loguniform" else rng.uniform(low, high)
    # 4 significant digits keep labels and Parquet columns readable; the clip keeps a bound given
    # with more digits from being rounded past.
    return float(min(max(float(f"{x:.4g}"), low), high))


def _has(spec: dict, dotted: str) -> bool:
    try:
        spec_mod.get(spec, dotted)
        return True
    except (KeyError, TypeError):
        return False
