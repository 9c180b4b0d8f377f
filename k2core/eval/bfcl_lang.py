"""Java and JavaScript argument values as BFCL reads them.

In the Java and JavaScript categories every parameter reaches the model as a string ("in string representation"):
`"true"`, `"50L"`, `"new ArrayList<>(Arrays.asList(\"a\", \"b\"))"`, `"[1, 2]"`, `"{'k': 1}"`. BFCL's checker turns
such a string into a Python value before comparing it with the acceptable answers, and a string it cannot read
stays a string (and then usually fails the comparison). These functions follow the same reading rules, quirks
included (a Java `char` is never unquoted; a Java `String[]` keeps its elements' quotes; a JavaScript object is read
up to its first `}`), so that our verdicts are BFCL's.
"""

from __future__ import annotations

import re
from typing import Any

# BFCL's Java / JavaScript type names -> the Python type a converted value must have.
JAVA_TYPES: dict[str, type] = {
    "byte": int, "short": int, "integer": int, "float": float, "double": float, "long": int, "boolean": bool,
    "char": str, "Array": list, "ArrayList": list, "Set": set, "HashMap": dict, "Hashtable": dict, "Queue": list,
    "Stack": list, "String": str, "any": str,
}  # fmt: skip
JS_TYPES: dict[str, type] = {
    "String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool, "dict": dict, "array": list,
    "any": str,
}  # fmt: skip
LIST_TYPES = ("Array", "ArrayList", "array")  # the types whose items BFCL converts one by one

_INT = re.compile(r"^-?\d+$")
_JAVA_FLOAT = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]$")
_JAVA_DOUBLE = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_JAVA_LONG = re.compile(r"^-?\d+[lL]$")
_JS_FLOAT = re.compile(r"^-?\d+(\.\d+)?$")
_JS_BIGINT = re.compile(r"^-?\d+n$")


def _number(text: str) -> Any:
    """Python's int(), then float(), else the text itself (the last resort of both languages' readers)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _unquoted(text: str, quotes: str) -> str | None:
    for q in quotes:
        if text.startswith(q) and text.endswith(q):
            return text[1:-1]
    return None


# ---------------------------------------------------------------- Java


def java_literal(text: str) -> Any:
    """A Java literal whose type is not declared (collection elements, HashMap values)."""
    if text in ("true", "false"):
        return text == "true"
    inner = _unquoted(text, '"')
    if inner is not None:
        return inner
    if _JAVA_LONG.match(text):
        return int(text[:-1])
    if _JAVA_FLOAT.match(text):
        return float(text[:-1])
    return _number(text)


def _java_element(text: str, nested: str | None) -> Any:
    return java_value(text, nested) if nested else java_literal(text)


def _java_array(text: str, nested: str | None) -> Any:
    match = re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", text)
    if not match:
        return text
    return [_java_element(part.strip(), nested) for part in match.group(1).split(",") if part.strip()]


def _java_list_element(text: str, nested: str | None) -> Any:
    if nested in ("char", "String"):
        return text[1:-1]
    return _java_element(text, nested)


def _java_arraylist(text: str, nested: str | None) -> Any:
    as_list = re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", text)
    if as_list:
        return [_java_list_element(part.strip(), nested) for part in as_list.group(1).split(",")]
    adds = re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", text, re.DOTALL)
    if adds:
        return [_java_list_element(item.strip(), nested) for item in re.findall(r"add\((.+?)\)", adds.group(1))]
    if re.search(r"new\s+ArrayList<\w*>\(\)", text):
        return []
    return text


def _java_hashmap(text: str) -> Any:
    body = re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", text, re.DOTALL)
    if body:
        puts = re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", body.group(1)) if body.group(1).strip() else []
        return {key: java_literal(value.strip()) for key, value in puts}
    if re.search(r"new\s+HashMap<.*?>\s*\(\)", text):
        return {}
    return text


def java_value(text: str, kind: str, nested: str | None = None) -> Any:
    """The Python value of a Java argument string of declared type `kind` (items of type `nested`)."""
    if kind in ("byte", "short", "integer"):
        return int(text) if _INT.match(text) else text
    if kind == "float":
        return float(text[:-1]) if _JAVA_FLOAT.match(text) else text
    if kind == "double":
        return float(text) if _JAVA_DOUBLE.match(text) else text
    if kind == "long":
        return int(text[:-1]) if _JAVA_LONG.match(text) else text
    if kind == "boolean":
        return text == "true" if text in ("true", "false") else text
    if kind == "Array":
        return _java_array(text, nested)
    if kind == "ArrayList":
        return _java_arraylist(text, nested)
    if kind == "HashMap":
        return _java_hashmap(text)
    if kind in ("Set", "Hashtable", "Queue", "Stack"):
        raise ValueError(f"BFCL does not read Java {kind} arguments")
    return text  # char, String, any: the text as written


# ---------------------------------------------------------------- JavaScript


def js_literal(text: str) -> Any:
    """A JavaScript literal whose type is not declared."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    inner = _unquoted(text, "\"'")
    return inner if inner is not None else _number(text)


def _js_array(code: str, nested: str | None) -> Any:
    two_d = re.match(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)", code)
    if two_d:
        rows = []
        for index, row in enumerate(re.findall(r"\[(.*?)\]", two_d.group(0))):
            row = row.strip()
            if index == 0 and row.startswith("["):
                row = row[1:]
            rows.append([js_literal(part.strip()) for part in row.split(",")])
        return rows
    flat = re.match(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)", code)
    if not flat:
        return code
    body = flat.group(1) if flat.group(1) is not None else (flat.group(2) or "")
    parts = body.strip().split(",") if body.strip() else []
    if nested:
        return [js_value(part.strip(), nested) for part in parts]
    return [js_literal(part.strip()) for part in parts]


def _js_object(code: str) -> Any:
    if code == "{}":
        return {}
    match = re.match(r"\{(.*?)\}", code)
    if not match:
        return code
    result: dict[str, Any] = {}
    for key, value in re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", match.group(1)):
        key, value = key.strip().strip("'\""), value.strip()
        if value.startswith("[") and value.endswith("]"):
            result[key] = _js_collection(value, "array")
        elif value.startswith("{") and value.endswith("}"):
            result[key] = _js_collection(value, "dict")
        else:
            result[key] = js_literal(value.strip("'\""))
    return result


def _js_collection(code: str, kind: str, nested: str | None = None) -> Any:
    code = code.strip()
    try:
        return _js_array(code, nested) if kind == "array" else _js_object(code)
    except Exception:  # noqa: BLE001 - BFCL keeps an unreadable collection as its text
        return code


def js_value(text: str, kind: str, nested: str | None = None) -> Any:
    """The Python value of a JavaScript argument string of declared type `kind` (items of type `nested`)."""
    if kind not in JS_TYPES:
        raise ValueError(f"unsupported JavaScript type {kind!r}")
    if kind == "String":
        inner = _unquoted(text, "\"'")
        return inner if inner is not None else text
    if kind == "integer":
        return int(text) if _INT.match(text) else text
    if kind == "float":
        return float(text) if _JS_FLOAT.match(text) else text
    if kind == "Bigint":
        return int(text[:-1]) if _JS_BIGINT.match(text) else text
    if kind == "Boolean":
        return text == "true" if text in ("true", "false") else text
    if kind in ("dict", "array"):
        return _js_collection(text, kind, nested)
    return text  # any
