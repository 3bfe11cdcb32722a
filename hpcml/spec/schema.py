"""A JSON Schema (Draft 2020-12) of workflow.yaml, for editors.

It describes shapes and value syntax so an editor can complete keys and flag typos; the
checker remains the authority (cross-references such as `needs`, cycles, files and
placeholders are checked only there). The key lists come from rules.py, which the checker
enforces, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from hpcml.render import buildargs
from hpcml.spec import rules as spec
from hpcml.spec.expand import SWEEP_FORMS

SCHEMA_ID = "https://hpcml.invalid/schema/workflow-v1.json"

_NAME = {"type": "string", "pattern": f"^{spec.NAME_RE.pattern}$", "maxLength": spec.MAX_NAME}
_ENV_NAME = f"^{spec.ENV_RE.pattern}$"
_DURATION = {
    "description": "wall time: minutes as a number, 30m, 4h, 1d, 1h30m, MM:SS, HH:MM:SS, D-HH:MM:SS",
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^(\d+|(\d+d)?(\d+h)?(\d+m)?(\d+s)?|(\d+-)?\d+(:\d+){0,2})$"},
    ],
}
_SIZE = {
    "description": "memory: MiB as a number, or 500M, 32G, 1T (binary units)",
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+\s*([KMGTkmgt](i?[Bb])?)?$"}],
}
_ENV = {
    "type": "object",
    "propertyNames": {"pattern": _ENV_NAME},
    "additionalProperties": {"type": ["string", "number"]},
}
_SCALAR = {"type": ["string", "number", "boolean"]}


def _object(properties: dict[str, Any], keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    assert set(properties) == set(keys), (sorted(properties), sorted(keys))
    return {"type": "object", "properties": properties, "additionalProperties": False, **extra}


def _pattern(regex: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{regex.pattern}$", **extra}


def _resources() -> dict[str, Any]:
    slurm_name = _pattern(spec.SLURM_NAME_RE)
    return _object(
        {
            "partition": slurm_name,
            "account": slurm_name,
            "qos": slurm_name,
            "time": _DURATION,
            "nodes": {"type": "integer", "minimum": 1},
            "cpus": {"type": "integer", "minimum": 1},
            "mem": _SIZE,
            "gpus": {"type": "integer", "minimum": 0, "maximum": spec.MAX_GPUS},
            "gpu_type": _pattern(spec.GPU_TYPE_RE),
            "gpu_vendor": {"enum": list(spec.GPU_VENDORS)},
            "cpus_per_gpu": {"type": "integer", "minimum": 1},
            "constraint": _pattern(spec.CONSTRAINT_RE),
            "launch": {"enum": list(spec.LAUNCH_MODES)},
        },
        spec.RESOURCE_KEYS,
    )


def _image() -> dict[str, Any]:
    rel_path = {"type": "string", "pattern": r"^[^/\s][^\s]*$"}
    # A requirements file is copied by a %files line, a definition-file word (model.WORD_RE):
    # no blanks, '#', '%', quotes, backslashes or control characters.
    rel_word = {"type": "string", "pattern": r"^[^/\s'\"\\%#][^\s'\"\\%#]*$"}
    return _object(
        {
            "from": {"type": "string", "description": spec.FROM_FORMS},
            "apt": {"type": "array", "items": _pattern(spec.APT_RE)},
            "pip": {"type": "array", "items": _pattern(spec.PIP_RE)},
            "requirements": rel_word,
            "files": {"type": "object", "additionalProperties": {"type": "string", "pattern": r"^/[^\s'\"\\%#]*$"}},
            "env": _ENV,
            "post": {"type": "string"},
            "test": {"type": "string"},
            "runscript": {"type": "string"},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": f"^{spec.LABEL_KEY_RE.pattern}$"},
                "additionalProperties": {"type": ["string", "number"]},
            },
            "mirror": _pattern(spec.URL_RE),
            "shell": {"enum": list(spec.SHELLS)},
            "deffile": rel_path,
            "dockerfile": rel_path,
            "build_args": {
                "type": "object",
                "description": "values of the deffile's {{ NAME }} build arguments",
                "propertyNames": {"pattern": f"^{buildargs.NAME_RE.pattern}$"},
                "additionalProperties": {"type": ["string", "number"], "pattern": f"^{buildargs.VALUE_RE.pattern}$"},
            },
        },
        spec.IMAGE_KEYS,
        oneOf=[{"required": ["from"]}, {"required": ["deffile"]}, {"required": ["dockerfile"]}],
    )


def _matrix() -> dict[str, Any]:
    entry = {"type": "object", "minProperties": 1, "additionalProperties": _SCALAR}
    return {
        "type": "object",
        "properties": {"include": {"type": "array", "items": entry}, "exclude": {"type": "array", "items": entry}},
        "additionalProperties": {"anyOf": [{"type": "array", "minItems": 1, "items": _SCALAR}, *_sweeps()]},
    }


def _sweeps() -> list[dict[str, Any]]:
    # A bound may be a string: YAML 1.1 reads 1e-4 (no dot) as one, and the checker accepts it.
    number = {"type": ["number", "string"]}
    count = {"type": "integer", "minimum": 1}
    sizes = {"range": (2, 3), "linspace": (3, 3), "logspace": (3, 3)}
    forms = []
    for form, description in SWEEP_FORMS.items():
        lo, hi = sizes[form]
        items = [{"type": "integer"}] * hi if form == "range" else [number, number, count]
        args = {"type": "array", "prefixItems": items, "items": False, "minItems": lo, "maxItems": hi}
        forms.append({"type": "object", "description": f"{form}: {description}", "properties": {form: args},
                      "required": [form], "additionalProperties": False})
    return forms


def _step() -> dict[str, Any]:
    env_names = {"type": "array", "items": {"type": "string", "pattern": _ENV_NAME}}
    return _object(
        {
            "image": _NAME,
            "run": {"type": "string", "minLength": 1},
            "needs": {"anyOf": [_NAME, {"type": "array", "items": _NAME}]},
            "matrix": _matrix(),
            "max_parallel": {"type": "integer", "minimum": 1},
            "resources": _resources(),
            "retries": {"type": "integer", "minimum": 0, "maximum": spec.MAX_RETRIES},
            "checkpoint": {
                "anyOf": [
                    {"type": "boolean"},
                    _object(
                        {
                            "signal": {"enum": [*spec.SIGNALS, *(f"SIG{s}" for s in spec.SIGNALS)]},
                            "grace": {"anyOf": [{"type": "integer", "minimum": 1}, _DURATION]},
                        },
                        spec.CHECKPOINT_KEYS,
                    ),
                ]
            },
            "secrets": env_names,
            "env": _ENV,
            "shell": {"enum": list(spec.SHELLS)},
        },
        spec.STEP_KEYS,
        required=["run"],
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of workflow.yaml (spec version 1) as a dict; `hpcml schema` prints it."""
    defaults = _object(
        {
            "image": _NAME,
            "resources": {"$ref": "#/$defs/resources"},
            "env": _ENV,
            "shell": {"enum": list(spec.SHELLS)},
            "retries": {"type": "integer", "minimum": 0, "maximum": spec.MAX_RETRIES},
        },
        spec.DEFAULTS_KEYS,
    )
    top = _object(
        {
            "hpcml": {"enum": list(spec.SUPPORTED_VERSIONS), "description": "spec version"},
            "name": _NAME,
            "defaults": defaults,
            "images": {"type": "object", "propertyNames": _NAME, "additionalProperties": {"$ref": "#/$defs/image"}},
            "notify": _object(
                {
                    "on": {"type": "array", "items": {"enum": list(spec.NOTIFY_EVENTS)}, "minItems": 1, "uniqueItems": True},
                    "webhook": {"type": "string", "pattern": f"^{spec.ENV_RE.pattern}$",
                                "description": "name of the secret (environment variable) holding the webhook URL"},
                    "mail": {"type": "string", "pattern": f"^{spec.MAIL_RE.pattern}$"},
                },
                spec.NOTIFY_KEYS,
                required=["on"],
            ),
            "steps": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": _NAME,
                "additionalProperties": {"$ref": "#/$defs/step"},
            },
        },
        spec.TOP_KEYS,
        required=["hpcml", "name", "steps"],
    )
    step = _step()
    step["properties"]["resources"] = {"$ref": "#/$defs/resources"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "hpcml workflow",
        "description": "An hpcml workflow file (workflow.yaml). Reference: docs/spec.md.",
        **top,
        "$defs": {"resources": _resources(), "image": _image(), "step": step},
    }
