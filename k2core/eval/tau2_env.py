"""A τ² domain as a tool environment with the interface the rollouts use (`step`, `tool_specs`, `log`, `db_hash`).

The database and tools are τ²'s own (`tau2.domains.<domain>.environment.get_environment`: the pydantic DB loaded from
the package's `db.json` and the domain's toolkit), used like benchmark data. A call is executed as τ²'s environment
executes it (`Environment.get_response`): the tool's return value as JSON text, or "Error: <message>" when it raises,
which also counts as an error toward τ²'s limit. Calls whose arguments are not a JSON object never reach a tool.
The DB hash is ours: SHA-256 of the DB's dump as canonical JSON (sorted keys), so two states hash alike exactly
when τ² would call them equal.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any

from loguru import logger

from k2core.agentic.env import CallRecord
from k2core.eval.tau2_data import DOMAINS

logger.disable("tau2")  # τ²'s modules log at import (no .env file) and on every failing call


def canonical_hash(data: Any) -> str:
    """SHA-256 of `data` as sorted-key JSON (values JSON cannot hold, such as dates, as their str())."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class Tau2Env:
    """A fresh copy of one domain's environment (its initial database)."""

    def __init__(self, domain: str) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"unknown τ² domain {domain!r}; known: {DOMAINS}")
        module = importlib.import_module(f"tau2.domains.{domain}.environment")
        self.domain = domain
        self._env = module.get_environment()
        if self._env.user_tools is not None:
            raise ValueError(f"τ² domain {domain} gives the user tools, which this environment does not model")
        self._tool_call = importlib.import_module("tau2.data_model.message").ToolCall
        self.log: list[CallRecord] = []

    def writes(self, name: str) -> bool:
        """Whether `name` is one of the domain's tools that write the DB (τ²'s WRITE tool type)."""
        toolkit = self._env.tools
        return toolkit.has_tool(name) and toolkit.tool_type(name).value == "write"

    def tool_specs(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The domain's tools as OpenAI function specs (τ²'s own schemas from the signatures and docstrings)."""
        tools = {t.name: t.openai_schema for t in self._env.get_tools()}
        return [tools[n] for n in (names if names is not None else list(tools))]

    def step(self, call: dict[str, Any]) -> str:
        """Execute `{"name", "arguments"}` (arguments a JSON string or a dict); never raises."""
        name = call.get("name", "")
        raw = call.get("arguments", {})
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as error:
            arguments, problem = {}, f"Error: the arguments are not JSON ({error})"
        else:
            problem = None if isinstance(arguments, dict) else "Error: the arguments must be a JSON object"
        if problem is not None:
            self.log.append(CallRecord(name, {}, problem, "error", False))
            return problem
        response = self._env.get_response(self._tool_call(id="", name=name, arguments=arguments))
        self.log.append(CallRecord(name, arguments, response.content or "", "error" if response.error else "ok",
                                   self.writes(name) and not response.error))
        return response.content or ""

    @property
    def errors(self) -> int:
        """Calls that failed so far (τ²'s max_errors counts these)."""
        return sum(record.outcome == "error" for record in self.log)

    def db_hash(self) -> str:
        return canonical_hash(self._env.tools.db.model_dump())
