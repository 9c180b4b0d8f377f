"""Executable, stateful tool environment in the τ-bench style: a JSON database plus Python tools.

The database is a plain dict so its state hashes exactly; tools raise `ToolError` for business
errors, and `step` turns every failure into an "Error: ..." string so a rollout never crashes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from k2core.agentic.faults import EDGE_READ_NOTICE, EDGE_WRITE_MESSAGE, TRANSIENT_MESSAGE, FaultInjector, no_faults
from k2core.agentic.specs import argument_error, function_spec, validate_specs

Verifier = tuple[str, dict[str, Any], Callable[[Any], bool]]


class ToolError(Exception):
    """A business-rule failure reported to the agent as "Error: <message>"."""


@dataclass(frozen=True)
class Tool:
    """One tool: its schema, its implementation and, for writes, how a read can confirm it."""

    name: str
    kind: Literal["read", "write"]
    description: str
    properties: dict[str, Any]
    required: list[str]
    fn: Callable[..., Any]
    verify: Callable[[dict[str, Any]], Verifier] | None = None

    @property
    def spec(self) -> dict:
        return function_spec(self.name, self.description, self.properties, self.required)


@dataclass
class CallRecord:
    """What the environment actually did for one call (ground truth for the judge)."""

    name: str
    arguments: dict[str, Any]
    result: str
    outcome: str
    applied: bool


@dataclass
class Identity:
    """The simulated user's account: database key, display name and the email that identifies them."""

    key: str
    name: str
    email: str


@dataclass
class GoalDraft:
    """A user goal proposed by a domain move: phrasing, user-known slots, gold steps and outputs.

    `sources` maps each argument of each step to `slot:NAME`, `step:K` (K = index of an earlier
    step in this goal), or `identity` (the identification step's result).
    """

    kind: str
    phrase: str
    vague: str
    slots: dict[str, Any]
    steps: list[tuple[str, dict[str, Any], dict[str, str]]]
    outputs: list[str] = field(default_factory=list)


class ToolEnv:
    """Base environment; a domain subclass supplies the database builder, tools and walk moves."""

    name: str = ""
    domain_description: str = ""
    identify_tool: str = ""
    slot_descriptions: dict[str, str] = {}

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {t.name: t for t in self.build_tools()}
        validate_specs([t.spec for t in self.tools.values()])
        self.db: dict[str, Any] = {}
        self.log: list[CallRecord] = []
        self._faults = no_faults()

    # --- domain hooks -------------------------------------------------------------------------
    def build_tools(self) -> list[Tool]:
        raise NotImplementedError(f"{type(self).__name__} must define build_tools")

    def build_db(self, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define build_db")

    def identify(self, rng: random.Random) -> Identity:
        raise NotImplementedError(f"{type(self).__name__} must define identify")

    def moves(self) -> list[Callable[[random.Random, Identity], GoalDraft | None]]:
        raise NotImplementedError(f"{type(self).__name__} must define moves")

    # --- runtime ------------------------------------------------------------------------------
    def reset(self, seed: int, db: dict[str, Any] | None = None, faults: FaultInjector | None = None) -> None:
        """Start fresh: a copy of `db` if given, else a database built from `seed`."""
        self.db = copy.deepcopy(db) if db is not None else self.build_db(random.Random(seed))
        self.log = []
        self._faults = faults if faults is not None else no_faults()

    def tool_specs(self, names: list[str] | None = None) -> list[dict]:
        chosen = names if names is not None else list(self.tools)
        return [self.tools[n].spec for n in chosen]

    def step(self, call: dict[str, Any]) -> str:
        """Execute `{"name", "arguments"}` (arguments a dict or JSON string); never raises."""
        name = call.get("name", "")
        raw_args = call.get("arguments", {})
        tool = self.tools.get(name)
        if tool is None:
            return self._record(name, {}, f"Error: unknown tool {name!r}", "invalid", False)
        problem = argument_error(tool.spec, raw_args)
        args = json.loads(raw_args) if isinstance(raw_args, str) and problem is None else raw_args
        if problem is not None:
            return self._record(name, args if isinstance(args, dict) else {}, f"Error: invalid arguments: {problem}", "invalid", False)
        outcome = self._faults.draw()
        if outcome == "transient":
            return self._record(name, args, TRANSIENT_MESSAGE, outcome, False)
        try:
            result = tool.fn(self.db, **args)
        except ToolError as exc:
            return self._record(name, args, f"Error: {exc}", outcome, False)
        except Exception as exc:  # a tool bug must not kill a rollout; surface it to the agent
            return self._record(name, args, f"Error: internal error ({type(exc).__name__}: {exc})", outcome, False)
        applied = tool.kind == "write"
        if outcome == "edge" and tool.kind == "write":
            return self._record(name, args, EDGE_WRITE_MESSAGE, outcome, applied)
        if outcome == "edge" and isinstance(result, dict):
            result = {**result, "notice": EDGE_READ_NOTICE}
        return self._record(name, args, json.dumps(result, sort_keys=True), outcome, applied)

    def _record(self, name: str, args: dict, result: str, outcome: str, applied: bool) -> str:
        self.log.append(CallRecord(name, args, result, outcome, applied))
        return result

    def db_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.db, sort_keys=True).encode()).hexdigest()

    def similar_values(self, value: Any) -> list[Any]:
        """Other keys of the database collection that holds `value` (for plausible wrong arguments)."""
        for table in self.db.values():
            if isinstance(table, dict) and value in table:
                return sorted(k for k in table if k != value)
        return []
