"""The tool repository (K2 Fig. 8a): real MCP specs, live-harvested MCP tools, synthetic tools and the tools of the
executable environments, as one table of validated OpenAI function specs with unique names and provenance."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import jsonschema
import pandas as pd
from pydantic import BaseModel, ConfigDict

from k2core.agentic.specs import NAME_PATTERN, validate_spec

Provenance = Literal["mcp", "mcp_live", "synthetic", "env"]
TOOL_COLUMNS = ["name", "provenance", "category", "domain", "source", "description", "output_description", "spec"]


class RepoTool(BaseModel):
    """One tool of the repository; `spec()` is what an agent sees, the rest says where it came from."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    parameters: dict[str, Any]
    output_description: str
    category: str
    domain: str
    provenance: Provenance
    source: str

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def spec_problem(spec: dict[str, Any]) -> str | None:
    """Why a spec is rejected (a short reason class), or None if it passes `validate_spec`."""
    try:
        validate_spec(spec)
    except jsonschema.SchemaError:
        return "invalid_json_schema"
    except ValueError as exc:
        text = str(exc)
        for cue, reason in (("must match", "bad_name"), ("description", "no_description"), ("parameters must", "not_object"),
                            ("required", "required_not_in_properties"), ("no 'type'", "untyped_property")):
            if cue in text:
                return reason
        return "invalid_spec"
    return None


def slug(text: str, limit: int = 24) -> str:
    """A name-safe lowercase token for prefixes (`Web Search & Research` -> `web_search_research`)."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", text.lower())).strip("_")[:limit].strip("_") or "tool"


def unique_names(tools: list[RepoTool]) -> list[RepoTool]:
    """Keep the first holder of each name; rename later ones `<domain-slug>_<name>` (numbered if still taken)."""
    taken: set[str] = set()
    out = []
    for tool in tools:
        name = tool.name
        if name in taken:
            base = f"{slug(tool.domain, 20)}_{tool.name}"[:60]
            name, k = base, 2
            while name in taken:
                name, k = f"{base}_{k}", k + 1
        if not NAME_PATTERN.match(name):
            raise ValueError(f"renamed tool {name!r} breaks {NAME_PATTERN.pattern}")
        taken.add(name)
        out.append(tool if name == tool.name else tool.model_copy(update={"name": name}))
    return out


def env_tools() -> list[RepoTool]:
    """The executable environments' tools (provenance `env`), so agents can mix them with spec-only tools."""
    from k2core.agentic.domains import ENVIRONMENTS

    out = []
    for env_name, cls in sorted(ENVIRONMENTS.items()):
        env = cls()
        for tool in env.tools.values():
            fn = tool.spec["function"]
            out.append(RepoTool(
                name=fn["name"], description=fn["description"], parameters=fn["parameters"],
                output_description="JSON record from the environment database", category="Customer Support",
                domain=env.domain_description, provenance="env", source=f"env:{env_name}",
            ))
    return out


def tools_frame(tools: list[RepoTool]) -> pd.DataFrame:
    """The repository as a table (one row a tool; `spec` is the OpenAI function spec as JSON)."""
    rows = [{**t.model_dump(exclude={"parameters"}), "spec": json.dumps(t.spec(), ensure_ascii=False)} for t in tools]
    return pd.DataFrame(rows, columns=TOOL_COLUMNS)


def tools_from_frame(frame: pd.DataFrame) -> list[RepoTool]:
    """Inverse of `tools_frame`."""
    out = []
    for row in frame.to_dict("records"):
        fn = json.loads(row.pop("spec"))["function"]
        out.append(RepoTool(**row, parameters=fn["parameters"]))
    return out
