"""Run specs: validation against the declared schema, preset expansion, identity (hash).

A resolved spec is a plain nested dict with every default filled and no preset left, so two
specs that train the same thing have the same hash, which is the run's id.
"""
from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("study.schema.yaml")

# Named architectures (issue 2). Widths are output channels / units; the class layer is implicit.
PRESETS: dict[str, dict] = {
    # Study baseline: three conv blocks (conv, activation, pooling), then two FC layers.
    "baseline": {"conv": [{"channels": 32}, {"channels": 64}, {"channels": 128}], "hidden": [256]},
    "small_cnn": {"conv": [{"channels": 32}, {"channels": 64}], "hidden": [128]},
    "wide_cnn": {
        "conv": [{"channels": [32, 64]}, {"channels": [128, 128]}, {"channels": [256, 256]}],
        "hidden": [1024, 512],
    },
    "mlp4": {"conv": [], "hidden": [1024, 512, 256, 128]},
}


class SpecError(ValueError):
    """A bad spec or study file; the message names the key and what is allowed."""


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(cls):
    """A validator class that also fills `default` values (nested objects included)."""
    validate_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, sch):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, sch)

    return jsonschema.validators.extend(cls, {"properties": properties})


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
    if err.validator == "type":
        return f"{path}: {err.instance!r} has the wrong type; expected {err.validator_value}"
    return f"{path}: {err.message}"


def check(instance: Any, sch: dict, where: str = "") -> None:
    """Validate `instance` against `sch` (refs resolved in the study schema), filling defaults.

    Raises SpecError naming the first offending key path and the allowed keys or values.
    """
    full = {"$defs": schema()["$defs"], **sch}
    errors = sorted(_Filling(full).iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        err = errors[0]
        # oneOf/anyOf report the parent; the most specific sub-error reads best.
        while err.context:
            err = min(err.context, key=lambda e: len(e.absolute_path))
        raise SpecError(_describe(err, where))


def resolve(spec: dict) -> dict:
    """Validate a (partial) run spec and return it resolved: preset expanded, defaults filled."""
    if not isinstance(spec, dict):
        raise SpecError(f"spec: expected a mapping, got {type(spec).__name__}")
    spec = copy.deepcopy(spec)
    model = spec.get("model")
    if isinstance(model, dict) and "preset" in model:
        preset = model.pop("preset")
        if preset not in PRESETS:
            raise SpecError(f"spec.model.preset: {preset!r} is not allowed; allowed values: {', '.join(PRESETS)}")
        spec["model"] = {**copy.deepcopy(PRESETS[preset]), **model}
    check(spec, {"$ref": "#/$defs/spec"}, where="spec")
    for block in spec["model"]["conv"]:
        if isinstance(block["channels"], int):
            block["channels"] = [block["channels"]]
    if spec["schedule"]["name"] == "warmup" and spec["schedule"]["warmup_epochs"] < 1:
        raise SpecError("spec.schedule.warmup_epochs: must be >= 1 for schedule 'warmup'")
    return spec


def run_id(resolved: dict) -> str:
    """Stable id of a resolved spec: the first 12 hex digits of the SHA-256 of its canonical JSON."""
    blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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


def check_dotted(dotted: str, where: str) -> None:
    """Raise SpecError unless `dotted` names a key of the run spec."""
    node = schema()["$defs"]["spec"]
    walked = []
    for part in dotted.split("."):
        props = node.get("properties", {})
        if part not in props:
            at = ".".join(walked) or "spec"
            raise SpecError(f"{where}: {dotted!r} is not a spec key; allowed under {at}: {', '.join(sorted(props))}")
        node = props[part]
        walked.append(part)


def read(path: Path) -> dict:
    """Read a YAML (or JSON) spec file, unresolved."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
