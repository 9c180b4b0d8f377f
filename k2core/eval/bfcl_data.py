"""BFCL v4 records from the bfcl-eval package's data, with their ground truth and the tools an FC model is shown.

The data ships in the `bfcl-eval` wheel (installed with `--no-deps`, scripts/setup.sh): one JSON object per line in
`bfcl_eval/data/BFCL_v4_<category>.json`, the acceptable answers in `data/possible_answer/`, the multi-turn tool docs
in `data/multi_turn_func_doc/`. Nothing here imports bfcl-eval's code.

The tools follow what BFCL sends a function-calling model: a language hint appended to each description, Java and
JavaScript parameters turned into strings ("in string representation"), BFCL's types mapped to JSON-schema ones
("dict" -> "object", "float" -> "number", "tuple" -> "array", unknown -> "string") and dots in function names
replaced by underscores (OpenAI-style names allow no dots). The checker reads the raw docs (`functions`), as BFCL's
does.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from k2core.errors import UserError

AST_CATEGORIES = (
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
RELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")
MULTI_TURN_CATEGORIES = ("multi_turn_base",)
CATEGORIES = AST_CATEGORIES + RELEVANCE_CATEGORIES + MULTI_TURN_CATEGORIES

# BFCL's type names (Python, Java and JavaScript flavoured) -> JSON-schema types (bfcl_eval GORILLA_TO_OPENAPI).
OPENAPI_TYPES = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object", "tuple": "array",
    "any": "string", "byte": "integer", "short": "integer", "long": "integer", "double": "number",
    "char": "string", "ArrayList": "array", "Array": "array", "HashMap": "object", "Hashtable": "object",
    "Queue": "array", "Stack": "array", "Any": "string", "String": "string", "Bigint": "integer",
}  # fmt: skip

# The stateful classes of the multi-turn categories and their tool docs (bfcl_eval MULTI_TURN_FUNC_DOC_FILE_MAPPING).
MULTI_TURN_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}


@dataclass(frozen=True)
class BfclRecord:
    """One BFCL test entry.

    `turns` holds the user messages of each turn (single-turn categories have one). `ground_truth` is BFCL's:
    for AST categories a list of `{function: {param: [acceptable values]}}`, for multi-turn one list of call
    strings per turn, empty for the relevance categories (they have none).
    """

    id: str
    category: str
    turns: list[list[dict[str, Any]]]
    functions: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    ground_truth: list[Any]
    language: str = "python"
    initial_config: dict[str, Any] = field(default_factory=dict)
    involved_classes: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The first turn's messages: the whole prompt of a single-turn entry."""
        return self.turns[0]


def data_dir() -> Path:
    """bfcl-eval's data folder; a missing package is a setup error with the fix in the message."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("BFCL needs the bfcl-eval data package: run scripts/setup.sh (pip install --no-deps bfcl-eval)")
    return Path(spec.submodule_search_locations[0]) / "data"


def language_of(category: str) -> str:
    if "javascript" in category:
        return "javascript"
    return "java" if "java" in category else "python"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@cache
def category_size(category: str) -> int:
    """Number of entries of a category's file (BFCL weighs a category it did not run by its full size)."""
    with (data_dir() / f"BFCL_v4_{category}.json").open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


_HINTS = {
    "python": " Note that the provided function is in Python 3 syntax.",
    "java": " Note that the provided function is in Java 8 SDK syntax.",
    "javascript": " Note that the provided function is in JavaScript syntax.",
}
_LANGUAGE_NAMES = {"java": "Java", "javascript": "JavaScript"}
_LISTS = {"java": ("ArrayList", "Array"), "javascript": ("array",)}


def _hinted(function: dict[str, Any], language: str) -> dict[str, Any]:
    """The doc as BFCL shows it to a model: a language hint; Java/JS parameters become strings, described."""
    function = copy.deepcopy(function)
    function["description"] = function.get("description", "") + _HINTS[language]
    if language == "python":
        return function
    lang = _LANGUAGE_NAMES[language]
    for spec in function["parameters"].get("properties", {}).values():
        kind = spec.get("type")
        description = spec.get("description", "")
        if kind == "any":
            description += f" This parameter can be of any type of {lang} object in string representation."
        else:
            description += f" This is {lang} {kind} type parameter in string representation."
        if kind in _LISTS[language] and "items" in spec:
            description += (
                f" The list elements are of type {spec['items'].get('type')}; they are not in string representation."
            )
            del spec["items"]
        if language == "javascript" and kind == "dict" and "properties" in spec:
            description += (
                " The dictionary entries have the following schema; they are not in string representation. "
                + json.dumps(spec["properties"])
            )
            del spec["properties"]
        spec["description"] = description
        spec["type"] = "string"
    return function


def _schema_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """BFCL's types -> JSON-schema types, recursing into object properties and (two levels of) array items."""
    for spec in properties.values():
        kind = spec.get("type")
        if kind == "float":
            spec["format"] = "float"
            spec["description"] = spec.get("description", "") + " This is a float type value."
        spec["type"] = OPENAPI_TYPES.get(kind, "string") if kind is not None else "string"
        if spec["type"] not in ("array", "object"):
            continue
        if "properties" in spec:
            spec["properties"] = _schema_properties(spec["properties"])
        elif "items" in spec:
            items = spec["items"]
            items["type"] = OPENAPI_TYPES.get(items.get("type"), "string")
            if items["type"] == "array" and "items" in items:
                items["items"]["type"] = OPENAPI_TYPES.get(items["items"].get("type"), "string")
            elif items["type"] == "object" and "properties" in items:
                items["properties"] = _schema_properties(items["properties"])
    return properties


def tool_name(name: str) -> str:
    """A function's name as an FC model sees and calls it (BFCL replaces dots for OpenAI-style models)."""
    return name.replace(".", "_")


def to_openai_tools(functions: Sequence[dict[str, Any]], language: str = "python") -> list[dict[str, Any]]:
    """OpenAI `tools` for BFCL function docs, as BFCL builds them for a function-calling model."""
    tools = []
    for raw in functions:
        function = _hinted(raw, language)
        function["name"] = tool_name(function["name"])
        function["parameters"]["type"] = "object"
        function["parameters"]["properties"] = _schema_properties(function["parameters"].get("properties", {}))
        tools.append({"type": "function", "function": function})
    return tools


@cache
def _multi_turn_doc(class_name: str) -> tuple[dict[str, Any], ...]:
    if class_name not in MULTI_TURN_DOCS:
        raise UserError(f"BFCL multi-turn class {class_name!r} is not supported (known: {sorted(MULTI_TURN_DOCS)})")
    return tuple(_read_jsonl(data_dir() / "multi_turn_func_doc" / MULTI_TURN_DOCS[class_name]))


def _record(entry: dict[str, Any], answer: dict[str, Any] | None, category: str) -> BfclRecord:
    language = language_of(category)
    if category in MULTI_TURN_CATEGORIES:
        functions = [dict(doc) for name in entry["involved_classes"] for doc in _multi_turn_doc(name)]
    else:
        functions = entry["function"]
    return BfclRecord(
        id=entry["id"],
        category=category,
        turns=entry["question"],
        functions=functions,
        tools=to_openai_tools(functions, language),
        ground_truth=answer["ground_truth"] if answer else [],
        language=language,
        initial_config=entry.get("initial_config", {}),
        involved_classes=entry.get("involved_classes", []),
    )


def _load_category(category: str) -> list[BfclRecord]:
    root = data_dir()
    entries = _read_jsonl(root / f"BFCL_v4_{category}.json")
    if category in RELEVANCE_CATEGORIES:
        return [_record(entry, None, category) for entry in entries]
    answers = {a["id"]: a for a in _read_jsonl(root / "possible_answer" / f"BFCL_v4_{category}.json")}
    missing = [entry["id"] for entry in entries if entry["id"] not in answers]
    if missing:
        raise UserError(f"bfcl-eval data: {len(missing)} {category} entries lack a possible_answer (e.g. {missing[0]});"
                        " reinstall bfcl-eval==2026.3.23")
    return [_record(entry, answers[entry["id"]], category) for entry in entries]


def load_bfcl(categories: Sequence[str] | None = None, limit: int | None = None, seed: int = 0) -> list[BfclRecord]:
    """Records of `categories` (default: all supported); `limit` keeps a seeded subset of that many per category."""
    chosen = list(categories) if categories is not None else list(CATEGORIES)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        raise UserError(f"unknown BFCL categories {unknown}; known: {', '.join(CATEGORIES)}")
    records: list[BfclRecord] = []
    for category in chosen:
        rows = _load_category(category)
        if limit is not None and limit < len(rows):
            keep = sorted(random.Random(f"{seed}:{category}").sample(range(len(rows)), limit))
            rows = [rows[i] for i in keep]
        records.extend(rows)
    return records
