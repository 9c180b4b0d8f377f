"""OpenAI function specs for environment tools, and the checks every spec and call must pass.

K2 tool-call ids have the form `functions.NAME:IDX`, so names must not contain dots; a spec
that is not valid JSON Schema would make argument validation meaningless.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def function_spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    """Build an OpenAI-format tool spec with a closed object schema."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


def _is_typed(sub: dict) -> bool:
    """A type, an enum or a const; or a union (`anyOf`/`oneOf`, e.g. MCP's optional `[string, null]`) of typed
    branches."""
    if "type" in sub or "enum" in sub or "const" in sub:
        return True
    branches = sub.get("anyOf") or sub.get("oneOf")
    return bool(branches) and all(isinstance(b, dict) and _is_typed(b) for b in branches)


def _check_properties_typed(schema: dict, where: str) -> None:
    for prop, sub in schema.get("properties", {}).items():
        if not _is_typed(sub):
            raise ValueError(f"{where}: property {prop!r} has no 'type'; give every property a type")
        if sub.get("type") == "object":
            _check_properties_typed(sub, f"{where}.{prop}")


def validate_spec(spec: dict) -> None:
    """Raise ValueError if the spec is not a well-formed OpenAI function spec (lint rules of the notes §6A)."""
    if spec.get("type") != "function" or "function" not in spec:
        raise ValueError(f"spec must be {{'type': 'function', 'function': ...}}, got keys {sorted(spec)}")
    fn = spec["function"]
    name = fn.get("name", "")
    if not NAME_PATTERN.match(name):
        raise ValueError(f"tool name {name!r} must match {NAME_PATTERN.pattern} (no dots)")
    if not fn.get("description"):
        raise ValueError(f"tool {name!r} needs a description")
    params = fn.get("parameters")
    if not isinstance(params, dict) or params.get("type") != "object":
        raise ValueError(f"tool {name!r}: parameters must be a JSON Schema object")
    jsonschema.validators.validator_for(params).check_schema(params)
    missing = set(params.get("required", [])) - set(params.get("properties", {}))
    if missing:
        raise ValueError(f"tool {name!r}: required {sorted(missing)} not in properties")
    _check_properties_typed(params, name)


def validate_specs(specs: list[dict]) -> None:
    """Validate each spec and require unique names."""
    names = [s["function"]["name"] for s in specs]
    for s in specs:
        validate_spec(s)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tool names in {names}")


def argument_error(spec: dict, arguments: str | dict) -> str | None:
    """Return why a call's arguments do not fit the spec (None if they fit); accepts a JSON string or dict."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            return f"arguments are not valid JSON ({exc.msg})"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    errors = sorted(jsonschema.Draft202012Validator(spec["function"]["parameters"]).iter_errors(arguments), key=str)
    if errors:
        return errors[0].message
    return None
