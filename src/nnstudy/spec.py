"""Run specs: validation against the declared schema, preset expansion, identity (hash).

A resolved spec is a plain nested dict with every default filled and no preset left, so two
specs that train the same thing have the same hash, which is the run's id. The parts of the
schema that name registered components (data, model, optim, schedule, loss) are generated from
the registries; user code a spec uses enters the hash through the SHA-256 of its source.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import registry

SCHEMA_PATH = Path(__file__).with_name("study.schema.yaml")

SAFE_NAME = "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"  # names that become paths and command-line words


class SpecError(ValueError):
    """A bad spec or study file; the message names the key and what is allowed."""


# libyaml's parser where PyYAML was built with it: the same documents, ~10x faster to read.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YAML_LOADER)


@cache
def _declared() -> dict:
    return parse_yaml(SCHEMA_PATH.read_text())


def _section_schema(section: str, entry: registry.Entry | None) -> dict:
    """The schema of one registry section: the shared keys of study.schema.yaml plus, for a
    given entry, its own parameters (and nothing else); for None, every entry by its name."""
    reg = registry.REGISTRIES[section]
    declared = _declared()["$defs"]["spec"]["properties"][section]
    if section == "loss":
        return {**declared, "enum": reg.names()}
    props = copy.deepcopy(declared["properties"])
    props["name"]["enum"] = reg.names()
    if entry is not None:
        props["name"]["enum"] = [entry.name]
        return {**declared, "properties": {**props, **copy.deepcopy(entry.params)}, "additionalProperties": False}
    if section == "model":
        props["preset"] = {"description": "The old spelling of a preset's name (model.name: baseline reads the same).",
                           "enum": [e.name for e in reg.entries() if e.target]}
    cases = [{"if": {"properties": {"name": {"const": e.name}}},
              "then": {"properties": {**props, **e.params}, "additionalProperties": False}}
             for e in reg.entries() if e.target is None]
    return {**declared, "properties": props, "allOf": cases}


def schema() -> dict:
    """The study schema with the registries' names and parameters filled in (plugins included)."""
    full = copy.deepcopy(_declared())
    full["$defs"]["spec"] = copy.deepcopy(_spec_schema())
    return full


def _spec_schema() -> dict:
    """The run spec's part of `schema()`, sharing the declared schema's parts: to read only."""
    registry.builtins()
    declared = _declared()["$defs"]["spec"]
    sections = {section: _section_schema(section, None) for section in registry.REGISTRIES}
    return {**declared, "properties": {**declared["properties"], **sections}}


def _with_defaults(cls):
    """A validator class that also fills `default` values (nested objects included)."""
    validate_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, sch):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, sch)

    return jsonschema.validators.extend(cls, {"properties": properties, "pattern": _pattern})


def _pattern(validator, pattern: str, instance, schema):
    """JSON Schema's regular expressions are ECMA-262's, whose `$` is the end of the string;
    Python's `$` also matches before a final newline, which would let "name\\n" into a path."""
    anchored = pattern[:-1] + "\\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    if isinstance(instance, str) and not re.search(anchored, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Filling = _with_defaults(jsonschema.Draft202012Validator)


def _describe(err: jsonschema.ValidationError, where: str) -> str:
    path = ".".join([where, *map(str, err.absolute_path)]) if where else ".".join(map(str, err.absolute_path))
    path = path or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"{path}: unknown key {', '.join(map(repr, extra))}; allowed keys: {', '.join(allowed)}"
    if err.validator == "enum":
        allowed = ", ".join("null" if v is None else str(v) for v in err.validator_value)
        return f"{path}: {err.instance!r} is not allowed; allowed values: {allowed}"
    if err.validator == "pattern" and err.validator_value == SAFE_NAME:
        return (f"{path}: {err.instance!r} is not allowed as a name; use letters, digits, '_', '-' and '.', "
                "not starting with '.'")
    if err.validator == "type":
        return f"{path}: {err.instance!r} has the wrong type; expected {err.validator_value}"
    return f"{path}: {err.message}"


def check(instance: Any, sch: dict, where: str = "") -> None:
    """Validate `instance` against `sch` (refs resolved in the study schema), filling defaults.

    Raises SpecError naming the first offending key path and the allowed keys or values.
    """
    finite(instance, where)
    full = {"$defs": _declared()["$defs"], **sch}
    errors = sorted(_Filling(full).iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise SpecError(_describe(_specific(errors[0]), where))


def finite(value: Any, where: str) -> None:
    """Raise SpecError at the first NaN or infinite number (YAML's .nan, .inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            finite(v, f"{where}.{i}")


def _specific(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """oneOf/anyOf report the parent: descend into the branch meant for this kind of value (not
    one that fails on its type or allowed values outright), then to its deepest error; at equal
    depth an allowed-values message reads better than a type or key one."""
    while err.context:
        branches: dict = {}
        for e in err.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        meant = [es for es in branches.values()
                 if not any(e.validator in ("type", "enum", "const") and not e.relative_path for e in es)]
        pool = [e for es in (meant or branches.values()) for e in es]
        err = min(pool, key=lambda e: (-len(e.absolute_path), e.validator in ("type", "additionalProperties", "required")))
    return err


def _entries(spec: dict) -> dict[str, registry.Entry]:
    """Pick each section's registered entry by name, expanding a preset into its parameters."""
    model = spec.get("model")
    if isinstance(model, dict) and "preset" in model:
        if "name" in model:
            raise SpecError("spec.model: give name or preset (its old spelling), not both")
        presets = [e.name for e in registry.MODELS.entries() if e.target]
        if model["preset"] not in presets:
            raise SpecError(f"spec.model.preset: {model['preset']!r} is not a preset; allowed values: "
                            f"{', '.join(presets)} (other models: model.name)")
        model["name"] = model.pop("preset")
    picked = {}
    for section, reg in registry.REGISTRIES.items():
        block = spec.setdefault(section, copy.deepcopy(_declared()["$defs"]["spec"]["properties"][section]["default"]))
        if section == "loss":
            picked[section] = reg.get(block, "spec.loss")
            continue
        if not isinstance(block, dict):
            continue  # the schema check names the wrong type
        default = _declared()["$defs"]["spec"]["properties"][section]["properties"]["name"]["default"]
        entry = reg.get(block.get("name", default), f"spec.{section}.name")
        if entry.target:
            spec[section] = block = {**copy.deepcopy(entry.defaults), **block, "name": entry.target}
            entry = reg.get(entry.target)
        block["name"] = entry.name
        picked[section] = entry
    return picked


def _plugins(raw) -> None:
    """Load the plugins a spec names; a resolved spec's must still have the recorded content."""
    if isinstance(raw, list):
        registry.load_plugins(raw, "spec.plugins")
    elif isinstance(raw, dict):
        for ref, sha in raw.items():
            now = registry.load_plugin(ref, "spec.plugins")
            if now != sha:
                raise SpecError(f"spec.plugins: {ref} has changed since this spec was resolved "
                                f"(sha256 {sha[:12]}..., now {now[:12]}...)")


_CONCRETE: dict[tuple, tuple[dict, list]] = {}


def _concrete(picked: dict[str, registry.Entry]) -> dict:
    """The run-spec schema for these entries, built once per combination (a study resolves
    hundreds of specs over a few; validation never changes a schema). The entries stay in the
    cache with it, so an id in its key always means the same entry."""
    key = tuple((section, id(entry)) for section, entry in picked.items())
    if key not in _CONCRETE:
        concrete = copy.deepcopy(_declared()["$defs"]["spec"])
        for section, entry in picked.items():
            concrete["properties"][section] = _section_schema(section, entry)
        _CONCRETE[key] = (concrete, list(picked.values()))
    return _CONCRETE[key][0]


def resolve(spec: dict) -> dict:
    """Validate a (partial) run spec and return it resolved: preset expanded, defaults filled,
    and `plugins` narrowed to {file or module: sha256} of the plugins whose entries it uses."""
    if not isinstance(spec, dict):
        raise SpecError(f"spec: expected a mapping, got {type(spec).__name__}")
    registry.builtins()
    spec = copy.deepcopy(spec)
    try:
        _plugins(spec.get("plugins", []))
    except registry.RegistryError as e:
        raise SpecError(str(e)) from None
    picked = _entries(spec)
    check(spec, _concrete(picked), where="spec")
    for section, entry in picked.items():
        canonical = entry.extra.get("canonical")
        if canonical:
            canonical(spec[section], f"spec.{section}")
    if spec["schedule"]["name"] == "warmup" and spec["schedule"]["warmup_epochs"] < 1:
        raise SpecError("spec.schedule.warmup_epochs: must be >= 1 for schedule 'warmup'")
    used = dict(sorted(filter(None, (registry.origin_ref(e) for e in picked.values()))))
    spec["plugins"] = used
    return spec


# Keys added to the spec after run ids were in use: at their schema default they are left out of
# the id, so adding them changed no earlier run's id (and the id stays a function of the spec).
ID_NEUTRAL = ("train.precision", "train.compile")


def run_id(resolved: dict) -> str:
    """Stable id of a resolved spec: the first 12 hex digits of the SHA-256 of its canonical JSON
    (without the ID_NEUTRAL keys that are at their defaults)."""
    hashed = dict(resolved)
    for dotted in ID_NEUTRAL:
        section, key = dotted.split(".")
        block = hashed.get(section)
        if isinstance(block, dict) and key in block and block[key] == _default(section, key):
            hashed[section] = {k: v for k, v in block.items() if k != key}
    blob = json.dumps(hashed, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _default(section: str, key: str) -> Any:
    return _declared()["$defs"]["spec"]["properties"][section]["properties"][key]["default"]


def get(spec: dict, dotted: str) -> Any:
    node = spec
    for part in dotted.split("."):
        node = node[part]
    return node


def set_(spec: dict, dotted: str, value: Any) -> None:
    """Set a dotted key, creating intermediate mappings."""
    *parents, leaf = dotted.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"{dotted}: {part!r} is not a mapping")
    node[leaf] = value


def unset(spec: dict, dotted: str) -> None:
    """Remove a dotted key where it is set (its default then applies)."""
    *parents, leaf = dotted.split(".")
    node = spec
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(leaf, None)


def check_dotted(dotted: str, where: str) -> None:
    """Raise SpecError unless `dotted` names a key of the run spec (for a registry section: a key
    that the section shares or that some registered entry takes)."""
    node = _spec_schema()
    walked = []
    for part in dotted.split("."):
        props = dict(node.get("properties", {}))
        for case in node.get("allOf", []):
            props.update(case["then"]["properties"])
        for branch in node.get("oneOf", []) + node.get("anyOf", []):
            props.update(branch.get("properties", {}))
        if part not in props:
            at = ".".join(walked) or "spec"
            raise SpecError(f"{where}: {dotted!r} is not a spec key; allowed under {at}: {', '.join(sorted(props))}")
        node = props[part]
        walked.append(part)


def read(path: Path) -> dict:
    """Read a YAML (or JSON: *.json) spec file, unresolved."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix == ".json":  # YAML 1.1 would read JSON's 1e-09 as a string
            return json.loads(text)
        return parse_yaml(text) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise SpecError(f"--spec: no spec file at {path}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not valid JSON: {e}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
