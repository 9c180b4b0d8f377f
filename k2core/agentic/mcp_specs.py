"""Real MCP tool specs from the public-server collection (servers.jsonl, Toucan crawl, MIT), read in place.

Each MCP tool `{name, description, input_schema, annotations}` becomes an OpenAI function spec with provenance
`mcp`. Names are made K2-safe (no dots or spaces); every spec is checked with `jsonschema` and the lint rules of
`specs.validate_spec`, and rejected ones are counted by reason, never dropped silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2core.agentic.repository import RepoTool, spec_problem

DEFAULT_DRAFT = "http://json-schema.org/draft-07/schema#"


@dataclass
class McpLoad:
    """What loading produced: valid tools, rejected tools with reasons, and counts."""

    tools: list[RepoTool]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    servers: int = 0

    def report(self) -> dict[str, Any]:
        total = len(self.tools) + len(self.rejected)
        return {
            "servers": self.servers, "tools_total": total, "tools_valid": len(self.tools),
            "tools_rejected": len(self.rejected), "valid_rate": len(self.tools) / total if total else 0.0,
            "rejected_by_reason": dict(Counter(r["reason"] for r in self.rejected)),
        }


def safe_name(name: str) -> str:
    """Replace what a K2 call id cannot carry (dots, spaces, symbols) with `_`; at most 64 characters."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", name.strip())).strip("_")[:64]


def convert_tool(server: dict[str, Any], tool: dict[str, Any]) -> RepoTool:
    """One MCP tool as a repository entry; the `$schema` key is dropped after validation as OpenAI specs omit it."""
    schema = tool.get("input_schema")
    params = {k: v for k, v in schema.items() if k != "$schema"} if isinstance(schema, dict) else schema
    if isinstance(params, dict) and params.get("type") == "object" and "properties" not in params:
        params = {**params, "properties": {}}
    return RepoTool(
        name=safe_name(str(tool.get("name", ""))), description=str(tool.get("description") or "").strip(),
        parameters=params if isinstance(params, dict) else {}, output_description="",
        category=server.get("primary_label") or "Others", domain=server.get("custom_label") or server.get("server_name", ""),
        provenance="mcp", source=f"mcp:{server.get('server_id')}:{server.get('server_name', '')}",
    )


def load_mcp_tools(path: str | Path) -> McpLoad:
    """Read and validate every tool of every server in `path` (JSON lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MCP server collection not found at {path.resolve()}; set agentic.repository.mcp_path to the "
            "servers.jsonl of ../shared/data/mcp-servers (see its README), it is read in place and not copied"
        )
    out = McpLoad(tools=[])
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            server = json.loads(line)
            out.servers += 1
            for tool in server.get("tools", []):
                entry = convert_tool(server, tool)
                schema = tool.get("input_schema")
                # check against the draft the schema declares, else draft-07 (the draft MCP's own schema is written in)
                probe = entry.spec()
                if isinstance(schema, dict):
                    probe["function"]["parameters"] = {**entry.parameters, "$schema": schema.get("$schema", DEFAULT_DRAFT)}
                reason = "no_schema" if not isinstance(schema, dict) else spec_problem(probe)
                if reason is None:
                    out.tools.append(entry)
                else:
                    out.rejected.append({"source": entry.source, "name": tool.get("name", ""), "reason": reason})
    return out
