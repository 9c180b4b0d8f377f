"""Synthetic tools by hierarchical domain evolution (K2 §3.1.1): categories -> application domains -> tools.

Two evolvers share one interface. `TemplateEvolver` (offline, deterministic) grows domains and entities from the
real MCP tools of each category and writes tools from verb templates; `LLMEvolver` asks a `ChatBackend` for strict
JSON, validates it and retries. Every tool leaves with a name, description, JSON-schema parameters and an output
description, and is checked by `validate_spec`.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from k2core.agentic.llm_roles import JsonAsker
from k2core.agentic.repository import RepoTool, slug, spec_problem

VERBS = {"get", "list", "search", "create", "update", "delete", "add", "set", "fetch", "read", "find", "run", "generate",
         "remove", "send", "query", "check", "make", "save", "clear", "upload", "download", "convert", "export", "copy",
         "batch", "by", "to", "for", "from", "with", "the", "all", "info", "details", "data", "mcp", "tool", "api", "id",
         "current", "based", "new", "and", "of", "in", "on"}
PRIORITY = {"type": "string", "enum": ["low", "normal", "high"], "description": "How urgent the change is"}


def _id(entity: str) -> dict[str, Any]:
    return {"type": "string", "description": f"Identifier of the {entity}"}


def template_tools(entity: str) -> list[tuple[str, str, dict[str, Any], list[str], str]]:
    """(verb, description, properties, required, output description) for the CRUD-and-search family of one entity."""
    label = entity.replace("_", " ")
    return [
        ("get", f"Fetch one {label} by its identifier.", {f"{entity}_id": _id(label)}, [f"{entity}_id"],
         f"The {label} record with all of its fields, or an error if it does not exist."),
        ("list", f"List {label} records, newest first.",
         {"limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Maximum number of records"}}, ["limit"],
         f"An array of {label} records and the total count."),
        ("search", f"Search {label} records whose name or notes contain the query.",
         {"query": {"type": "string", "description": "Words to look for"},
          "limit": {"type": "integer", "minimum": 1, "maximum": 20, "description": "Maximum number of hits"}}, ["query"],
         f"Matching {label} records, best match first."),
        ("create", f"Create a new {label}.",
         {"name": {"type": "string", "description": f"Display name of the {label}"},
          "notes": {"type": "string", "description": "Free-text notes"}, "priority": PRIORITY}, ["name"],
         f"The created {label} with its new {entity}_id."),
        ("update", f"Change the priority or notes of an existing {label}.",
         {f"{entity}_id": _id(label), "priority": PRIORITY, "notes": {"type": "string", "description": "Replacement notes"}},
         [f"{entity}_id", "priority"], f"The {label} after the change."),
        ("delete", f"Delete a {label} permanently.", {f"{entity}_id": _id(label)}, [f"{entity}_id"],
         f"Confirmation with the deleted {entity}_id."),
    ]


def closed_object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


class Evolver(Protocol):
    """One level of the hierarchy at a time."""

    def domains(self, category: str, n: int) -> list[str]: ...

    def tools(self, category: str, domain: str, n: int) -> list[RepoTool]: ...


class TemplateEvolver:
    """Offline evolver: domains and entity nouns mined from the real MCP tools of a category, tools from templates."""

    def __init__(self, real_tools: Sequence[RepoTool], seed: int) -> None:
        self.rng = random.Random(seed)
        self.domains_of: dict[str, Counter[str]] = defaultdict(Counter)
        self.words_of: dict[str, Counter[str]] = defaultdict(Counter)
        for tool in real_tools:
            self.domains_of[tool.category][tool.domain] += 1
            for word in re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", tool.name).lower()):
                if len(word) > 2 and word not in VERBS:
                    noun = word.removesuffix("s") if len(word) > 4 else word
                    self.words_of[tool.domain][noun] += 1
                    self.words_of[tool.category][noun] += 1  # fallback vocabulary for a domain without nouns

    def categories(self) -> list[str]:
        return sorted(self.domains_of)

    def domains(self, category: str, n: int) -> list[str]:
        return [d for d, _ in self.domains_of[category].most_common(n)]

    def tools(self, category: str, domain: str, n: int) -> list[RepoTool]:
        entities = [w for w, _ in self.words_of[domain].most_common(3)] or [w for w, _ in self.words_of[category].most_common(3)]
        families = [(e, t) for e in entities for t in template_tools(e)]
        chosen = self.rng.sample(families, min(n, len(families)))
        prefix = slug(domain, 12)
        return [
            RepoTool(name=f"{prefix}_{verb}_{entity}"[:64], description=f"{desc} Part of {domain}.",
                     parameters=closed_object(props, req), output_description=output, category=category, domain=domain,
                     provenance="synthetic", source="evolve:template")
            for entity, (verb, desc, props, req, output) in chosen
        ]


DOMAINS_SCHEMA = {
    "type": "object", "required": ["domains"],
    "properties": {"domains": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 3}}},
}
TOOLS_SCHEMA = {
    "type": "object", "required": ["tools"],
    "properties": {"tools": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "description", "parameters", "output_description"],
        "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "description": {"type": "string", "minLength": 10},
                       "parameters": {"type": "object"}, "output_description": {"type": "string", "minLength": 5}},
    }}},
}


class LLMEvolver:
    """Evolver backed by a chat model: strict JSON answers, schema-checked, retried with the error shown."""

    def __init__(self, asker: JsonAsker) -> None:
        self.asker = asker

    def domains(self, category: str, n: int) -> list[str]:
        prompt = (f"List {n} distinct, specific software application domains in the category '{category}' "
                  '(for example a category "Financial Trading" has domains like "crypto exchange order desk"). '
                  'Answer with JSON only: {"domains": ["..."]}.')
        got = self.asker.ask([{"role": "user", "content": prompt}], DOMAINS_SCHEMA)
        return list(dict.fromkeys(got["domains"]))[:n] if got else []

    def tools(self, category: str, domain: str, n: int) -> list[RepoTool]:
        prompt = (f"Design {n} tools for the application domain '{domain}' (category '{category}'). Each tool needs a "
                  "snake_case name, a clear description of what it does and its side effects, JSON Schema parameters "
                  '({"type": "object", "properties": {...}, "required": [...]}, every property with a "type" and a '
                  "description), and a description of its output. Answer with JSON only: "
                  '{"tools": [{"name": "...", "description": "...", "parameters": {...}, "output_description": "..."}]}.')
        got = self.asker.ask([{"role": "user", "content": prompt}], TOOLS_SCHEMA,
                             check=lambda obj: next((p for t in obj["tools"] for p in [_llm_tool_problem(t)] if p), None))
        if not got:
            return []
        return [RepoTool(name=t["name"], description=t["description"], parameters=t["parameters"],
                         output_description=t["output_description"], category=category, domain=domain,
                         provenance="synthetic", source="evolve:llm") for t in got["tools"][:n]]


def _llm_tool_problem(tool: dict[str, Any]) -> str | None:
    problem = spec_problem({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")}})
    return f"tool {tool['name']!r} is invalid: {problem}" if problem else None


@dataclass
class EvolveReport:
    categories: int = 0
    domains: int = 0
    tools: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def evolve_tools(evolver: Evolver, categories: Sequence[str], domains_per_category: int, tools_per_domain: int) -> tuple[list[RepoTool], EvolveReport]:
    """Walk the hierarchy; keep only tools whose spec validates (rejections counted by reason)."""
    report, out = EvolveReport(), []
    for category in categories:
        report.categories += 1
        for domain in evolver.domains(category, domains_per_category):
            report.domains += 1
            for tool in evolver.tools(category, domain, tools_per_domain):
                problem = spec_problem(tool.spec())
                if problem:
                    report.rejected[problem] += 1
                else:
                    out.append(tool)
    report.tools = len(out)
    return out, report
