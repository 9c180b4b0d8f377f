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


def _resolve(ref: Any, root: dict) -> Any:
    """The subschema a local `$ref` (`#/$defs/X`, `#/properties/a/anyOf/0`) points to in `root`; None for a remote
    or dangling reference."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def follow_refs(sub: Any, root: dict, seen: frozenset[str] = frozenset()) -> tuple[Any, frozenset[str]]:
    """`sub` with local `$ref`s followed (pydantic puts nested models in `$defs`), and the references followed; a
    reference cycle ends at None."""
    while isinstance(sub, dict) and "$ref" in sub:
        ref = sub["$ref"]
        if ref in seen:
            return None, seen
        seen = seen | {ref}
        sub = _resolve(ref, root)
    return sub, seen


def _declares_type(sub: Any) -> bool:
    return isinstance(sub, dict) and ("type" in sub or "enum" in sub or "const" in sub)


def _is_typed(sub: Any, root: dict, seen: frozenset[str] = frozenset()) -> bool:
    """A type, an enum or a const, directly or through a local `$ref`; a union (`anyOf`/`oneOf`, e.g. MCP's optional
    `[string, null]`) whose branches are typed or can never match (`{"not": {}}`, zod's optional), one at least
    typed; or an intersection (`allOf`) with a typed part."""
    if _declares_type(sub):
        return True
    sub, seen = follow_refs(sub, root, seen)
    if _declares_type(sub):
        return True
    if not isinstance(sub, dict):
        return False
    branches = sub.get("anyOf") or sub.get("oneOf")
    if branches:
        typed = [_is_typed(b, root, seen) for b in branches]
        return any(typed) and all(t or b == {"not": {}} for t, b in zip(typed, branches, strict=True))
    return any(_is_typed(b, root, seen) for b in sub.get("allOf") or [])


def _check_properties_typed(schema: dict, where: str, root: dict, seen: frozenset[str] = frozenset()) -> None:
    for prop, sub in schema.get("properties", {}).items():
        if not _is_typed(sub, root):
            raise ValueError(f"{where}: property {prop!r} has no 'type'; give every property a type")
        inner, followed = follow_refs(sub, root, seen)
        if isinstance(inner, dict) and inner.get("type") == "object":
            _check_properties_typed(inner, f"{where}.{prop}", root, followed)


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
    _check_properties_typed(params, name, params)


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
