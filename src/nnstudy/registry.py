"""One registry per kind of component: every dataset, model, optimiser, schedule and loss is
declared once, here or in a user's plugin file, with its name, factory, parameters and docstring.

The study schema's allowed names and per-entry parameters are generated from these registries
(nnstudy.spec.schema), so a list is never written twice. A user's file registers its own:

    import nnstudy

    @nnstudy.register_model("my_resnet")
    def my_resnet(input_shape, classes, width: int = 64):
        \"\"\"A ResNet of my own.\"\"\"
        ...

Parameters are JSON-schema fragments (type, default, description, bounds). Where `params` is not
given they are read off the factory's keyword parameters: each default gives the parameter's type
and default value; a parameter without a default is required.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class RegistryError(ValueError):
    """A bad name, a clash between registrations or a broken plugin; the message says which."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable
    params: dict                 # parameter -> JSON-schema fragment (with its default)
    doc: str
    origin: str | None = None    # the plugin that registered it (None: built into nnstudy)
    target: str | None = None    # for an alias (a preset): the entry it expands to
    defaults: dict = field(default_factory=dict)  # an alias's parameter values
    extra: dict = field(default_factory=dict)     # kind-specific attributes (e.g. a loss's outputs)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               tuple: "array", dict: "object"}


def params_from_signature(factory: Callable, fixed: int) -> dict:
    """Parameters read off a factory's signature, after its first `fixed` positional ones."""
    out = {}
    for p in list(inspect.signature(factory).parameters.values())[fixed:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        frag: dict[str, Any] = {}
        if p.default is not p.empty:
            frag["default"] = list(p.default) if isinstance(p.default, tuple) else p.default
            kind = _JSON_TYPES.get(type(p.default))
            if kind == "number":
                frag["type"] = ["number", "integer"]
            elif kind:
                frag["type"] = kind
        out[p.name] = frag
    return out


class Registry:
    """Named factories of one kind. `fixed` is how many leading positional arguments the engine
    passes to every factory of this kind (e.g. a model's input shape and class count)."""

    def __init__(self, kind: str, section: str, fixed: int, describe_factory: str):
        self.kind, self.section, self.fixed = kind, section, fixed
        self.describe_factory = describe_factory
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, params: dict | None = None, **extra) -> Callable:
        """Decorator: register `factory` under `name` (in the plugin being loaded, if any)."""
        def decorate(factory: Callable) -> Callable:
            declared = params_from_signature(factory, self.fixed) if params is None else copy.deepcopy(params)
            self._add(Entry(self.kind, name, factory, declared, inspect.getdoc(factory) or "",
                            origin=_loading, extra=extra))
            return factory
        return decorate

    def alias(self, name: str, target: str, defaults: dict, doc: str) -> None:
        """A named preset: `target` with `defaults` for some of its parameters."""
        base = self._entries[target]
        self._add(Entry(self.kind, name, base.factory, base.params, doc, origin=_loading, target=target,
                        defaults=copy.deepcopy(defaults), extra=base.extra))

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None and old.origin != entry.origin and not _same_plugin(old.origin, entry.origin):
            where = old.origin or "nnstudy itself"
            raise RegistryError(f"{entry.origin or 'nnstudy'}: {self.kind} {entry.name!r} is already registered "
                                f"by {where}; choose another name")
        if not entry.name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"{entry.origin or 'nnstudy'}: {self.kind} name {entry.name!r}: use letters, "
                                "digits, '_' and '-'")
        self._entries[entry.name] = entry

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, name: str, where: str | None = None) -> Entry:
        """The entry called `name`; a SpecError-style message listing the names otherwise."""
        from .spec import SpecError

        if not isinstance(name, str) or name not in self._entries:
            raise SpecError(f"{where or self.section + '.name'}: {name!r} is not a registered {self.kind}; "
                            f"allowed values: {', '.join(self.names())}")
        return self._entries[name]

    def remove_origin(self, origin: str) -> None:
        for name in [n for n, e in self._entries.items() if _same_plugin(e.origin, origin)]:
            del self._entries[name]


def _same_plugin(a: str | None, b: str | None) -> bool:
    """Origins are 'ref@sha256'; the same ref at another content is a re-load of that plugin."""
    return a is not None and b is not None and a.rsplit("@", 1)[0] == b.rsplit("@", 1)[0]


DATASETS = Registry("dataset", "data", 0, "returns (train_x, train_y, test_x, test_y) tensors")
MODELS = Registry("model", "model", 2, "gets (input_shape, classes, **params), returns an nn.Module")
OPTIMIZERS = Registry("optimiser", "optim", 3, "gets (parameters, lr, weight_decay, **params)")
SCHEDULES = Registry("schedule", "schedule", 3, "gets (base_lr, t, span, **params), returns the lr")
LOSSES = Registry("loss", "loss", 2, "gets (logits, labels), returns the mean loss")
REGISTRIES = {r.section: r for r in (DATASETS, MODELS, OPTIMIZERS, SCHEDULES, LOSSES)}  # the run spec's sections
# Per-run analyses are switched on per experiment in the study file (not part of a run's spec).
ANALYSES = Registry("analysis", "analyses", 1, "gets (run, **params), returns a DataFrame of its schema")

register_dataset = DATASETS.register
register_model = MODELS.register
register_optimizer = OPTIMIZERS.register
register_schedule = SCHEDULES.register
register_loss = LOSSES.register
register_analysis = ANALYSES.register

_builtins_loaded = False


def builtins() -> None:
    """Register nnstudy's own entries (imported on first use, not on `import nnstudy`)."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module("nnstudy.data.sources")
        importlib.import_module("nnstudy.models")
        importlib.import_module("nnstudy.training.optim")
        importlib.import_module("nnstudy.training.losses")
        importlib.import_module("nnstudy.analyses.builtin")


# -- user code --------------------------------------------------------------------------------
_loading: str | None = None          # origin tag of the plugin being imported
_loaded: dict[str, str] = {}         # ref -> sha256 of the content that was imported


def plugin_file(ref: str) -> Path | None:
    """The file behind a plugin reference: a path (ends in .py or holds a '/') or a module name."""
    if ref.endswith(".py") or "/" in ref:
        return Path(ref)
    found = importlib.util.find_spec(ref)
    return Path(found.origin) if found and found.origin else None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plugin(ref: str, where: str) -> str:
    """Import a plugin file or module once (again if its content changed) and return the SHA-256
    of its source. `where` is the study or spec key that names it, for messages."""
    global _loading
    builtins()
    if not isinstance(ref, str) or not ref:
        raise RegistryError(f"{where}: a plugin is a Python file path or a module name, not {ref!r}")
    try:
        path = plugin_file(ref)
    except (ImportError, ValueError) as e:
        raise RegistryError(f"{where}: cannot find plugin module {ref!r} ({e})") from None
    if path is None or not path.is_file():
        raise RegistryError(f"{where}: plugin {ref!r} not found"
                            + (f" (no file {path.resolve()})" if path is not None else " (no such module)"))
    sha = digest(path)
    if _loaded.get(ref) == sha:
        return sha
    _loaded.pop(ref, None)
    for registry in REGISTRIES.values():
        registry.remove_origin(ref)
    _loading = f"{ref}@{sha}"
    try:
        _execute(ref, path)
    except RegistryError:
        raise
    except SyntaxError as e:
        raise RegistryError(f"{where}: plugin {ref}: syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:  # user code: any failure is reported as the plugin's
        raise RegistryError(f"{where}: plugin {ref} failed to import: {type(e).__name__}: {e}") from None
    finally:
        _loading = None
    _loaded[ref] = sha
    return sha


def _execute(ref: str, path: Path) -> None:
    """Run a plugin's code: a file as a module of its own, a module by its name (so its
    relative imports work), again if it was imported before (its content changed)."""
    if ref.endswith(".py") or "/" in ref:
        name = "nnstudy_plugin_" + hashlib.sha256(ref.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    elif ref in sys.modules:
        importlib.reload(sys.modules[ref])
    else:
        importlib.import_module(ref)


def load_plugins(refs, where: str) -> dict[str, str]:
    """Load every plugin of a list; {ref: sha256}."""
    if not isinstance(refs, list):
        raise RegistryError(f"{where}: expected a list of plugin files or modules, got {refs!r}")
    return {ref: load_plugin(ref, f"{where}[{i}]") for i, ref in enumerate(refs)}


def origin_ref(entry: Entry) -> tuple[str, str] | None:
    """(ref, sha256) of the plugin that registered an entry; None for nnstudy's own."""
    if entry.origin is None:
        return None
    ref, sha = entry.origin.rsplit("@", 1)
    return ref, sha
