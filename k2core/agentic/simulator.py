"""Stateful tool simulator for spec-only tools (K2's "tool simulator, functionally a world model").

A `SimWorld` holds a JSON world state, executes calls through an engine (rule-based, or LLM-backed with the state
as JSON in the prompt), and draws each call's mode (success, partial failure, error, edge case) from a seeded
injector built on `faults.FaultInjector`, so one seed fixes every result and therefore the trajectory. It has the
same surface as an executable `ToolEnv` (`step`, `log`, `tool_specs`, `db_hash`), so `rollout.run_episode` drives
it unchanged, and a tool can be routed to a live MCP server instead of being simulated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from k2core.agentic.env import CallRecord
from k2core.agentic.faults import EDGE_READ_NOTICE, TRANSIENT_MESSAGE, FaultInjector
from k2core.agentic.llm_roles import JsonAsker
from k2core.agentic.repository import RepoTool
from k2core.agentic.specs import argument_error

Mode = Literal["success", "partial", "error", "edge"]
Kind = Literal["create", "read", "list", "update", "delete", "action"]
PARTIAL_NOTE = "partial failure: only part of the request could be completed"
VERB_KINDS: dict[str, Kind] = {
    **dict.fromkeys(["create", "add", "new", "post", "send", "insert", "upload", "book", "save", "register", "schedule"], "create"),
    **dict.fromkeys(["get", "read", "fetch", "show", "describe", "retrieve", "check", "lookup", "view", "open"], "read"),
    **dict.fromkeys(["list", "search", "find", "query", "browse"], "list"),
    **dict.fromkeys(["update", "set", "edit", "modify", "change", "rename", "move", "patch", "assign"], "update"),
    **dict.fromkeys(["delete", "remove", "cancel", "clear", "archive"], "delete"),
}
STATUSES = ["active", "pending", "closed", "archived"]


class ModeInjector:
    """Per-call mode at fixed probabilities: error and edge from one `FaultInjector`, partial from a second one
    drawn only on success (so `p_partial` is the overall partial rate)."""

    def __init__(self, p_error: float, p_partial: float, p_edge: float, seed: int) -> None:
        if p_error + p_partial + p_edge > 1:
            raise ValueError(f"mode probabilities must sum to <= 1, got {p_error + p_partial + p_edge}")
        rest = 1.0 - p_error - p_edge
        self._first = FaultInjector(p_error, p_edge, seed)
        self._partial = FaultInjector(0.0, min(p_partial / rest, 1.0) if rest > 0 else 0.0, seed + 1)

    def draw(self) -> Mode:
        outcome = self._first.draw()
        if outcome == "transient":
            return "error"
        if outcome == "edge":
            return "edge"
        return "partial" if self._partial.draw() == "edge" else "success"


def tool_kind(name: str) -> tuple[Kind, str]:
    """(operation, collection) read from a tool name: `crm_get_contact` -> ("read", "contact")."""
    tokens = [t for t in re.split(r"[_\-]+|(?<=[a-z])(?=[A-Z])", name) if t]
    lowered = [t.lower() for t in tokens]
    for i, tok in enumerate(lowered):
        if tok in VERB_KINDS:
            entity = "_".join(lowered[i + 1:]) or "_".join(lowered[:i]) or tok
            return VERB_KINDS[tok], entity
    return "action", name.lower()


def key_field(parameters: dict[str, Any]) -> str | None:
    """The argument that identifies a record: an `*id` property, else `name`."""
    props = list(parameters.get("properties", {}))
    return next((p for p in props if p.lower().endswith("id")), "name" if "name" in props else None)


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).digest(), "little")


class Engine(Protocol):
    """Computes one call's result text and the next world state for a forced mode."""

    def execute(self, tool: RepoTool, args: dict[str, Any], mode: Mode, state: dict[str, Any]) -> tuple[str, dict[str, Any]]: ...


class RuleEngine:
    """Deterministic world model: records per collection; reads of unseen records materialize them from a hash of
    the key and store them, so every later call sees the same record (consistency across calls)."""

    def execute(self, tool: RepoTool, args: dict[str, Any], mode: Mode, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if mode == "error":
            return TRANSIENT_MESSAGE, state
        state = copy.deepcopy(state)
        kind, coll = tool_kind(tool.name)
        table = state.setdefault("collections", {}).setdefault(coll, {})
        gone = state.setdefault("deleted", {}).setdefault(coll, [])
        key_name = key_field(tool.parameters)
        key = str(args[key_name]) if key_name and key_name in args else None
        if kind == "action" or (kind in ("read", "update", "delete") and key is None):
            return self._action(tool, args, mode, state)
        if kind == "create":
            counter = state.setdefault("counters", {}).get(coll, 0) + 1
            state["counters"][coll] = counter
            new_key = key if key_name and key_name.lower().endswith("id") and key else f"{coll[:12]}-{counter:04d}"
            if new_key in table:
                return f"Error: {coll} {new_key} already exists", state
            fields = dict(args) if mode != "partial" else {k: args[k] for k in tool.parameters.get("required", []) if k in args}
            record = {f"{coll}_id": new_key, **fields, "status": "active"}
            table[new_key] = record
            result: dict[str, Any] = {"created": record}
            if mode == "partial":
                result.update(status="partial", note=PARTIAL_NOTE, not_saved=sorted(set(args) - set(fields)))
        elif kind == "list":
            records = [r for r in table.values() if all(str(v).lower() in json.dumps(r).lower() for k, v in args.items() if k in ("query", "q", "name"))]
            if not records and mode != "edge":
                records = [self._materialize(coll, f"{coll[:12]}-{_digest(coll, args, i) % 9000 + 1000}", args) for i in range(2)]
                for r in records:
                    table[r[f"{coll}_id"]] = r
            limit = args.get("limit") if isinstance(args.get("limit"), int) else 10
            items = [] if mode == "edge" else records[:limit]
            result = {"items": items[: max(1, len(items) // 2)] if mode == "partial" else items, "total": len(items)}
            if mode == "partial":
                result.update(partial=True, note=PARTIAL_NOTE)
        else:
            assert key is not None
            if key in gone:
                return f"Error: {coll} {key} not found", state
            record = table.setdefault(key, self._materialize(coll, key, {}))
            if kind == "update":
                changes = {k: v for k, v in args.items() if k != key_name}
                if mode == "partial":
                    changes = dict(list(changes.items())[:1])
                record.update(changes)
                result = {"updated": record, **({"status": "partial", "note": PARTIAL_NOTE} if mode == "partial" else {})}
            elif kind == "delete":
                del table[key]
                gone.append(key)
                result = {"deleted": key}
            else:
                result = dict(record)
                if mode == "partial":
                    result = {k: record[k] for k in list(record)[:2]} | {"partial": True, "note": PARTIAL_NOTE}
        if mode == "edge":
            result["notice"] = EDGE_READ_NOTICE
        return json.dumps(result, sort_keys=True), state

    @staticmethod
    def _materialize(coll: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        h = _digest(coll, key)
        return {f"{coll}_id": key, "name": f"{coll.replace('_', ' ')} {h % 1000}", "status": STATUSES[h % len(STATUSES)],
                "updated_at": f"2026-{h % 12 + 1:02d}-{h % 28 + 1:02d}", **{k: v for k, v in args.items() if k == "query"}}

    @staticmethod
    def _action(tool: RepoTool, args: dict[str, Any], mode: Mode, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A call without record semantics: its answer is fixed by (tool, arguments) and remembered."""
        memo = state.setdefault("answers", {})
        slot = f"{tool.name}:{json.dumps(args, sort_keys=True)}"
        if slot not in memo:
            h = _digest(tool.name, args)
            memo[slot] = {"result_id": f"r-{h % 10**6:06d}", "summary": f"{tool.name} completed for {json.dumps(args, sort_keys=True)}",
                          "count": h % 50}
        result = dict(memo[slot])
        if mode == "partial":
            result = {"result_id": result["result_id"], "partial": True, "note": PARTIAL_NOTE}
        elif mode == "edge":
            result = {**result, "count": 0, "notice": EDGE_READ_NOTICE}
        return json.dumps(result, sort_keys=True), state


RESULT_SCHEMA = {"type": "object", "required": ["result", "state"], "properties": {"result": {}, "state": {"type": "object"}}}
MODE_RULES = {
    "success": "The call succeeds; return a realistic, complete result.",
    "partial": "The call partly fails: complete only part of it, say which part failed, and change the state only for the part that succeeded.",
    "error": "The call fails with a realistic error message starting with 'Error:'; the state does not change.",
    "edge": "Return an edge case that is still valid: an empty result, a boundary value or a notice the caller must handle.",
}


class LLMEngine:
    """A model as the world model: spec, world state and forced mode in the prompt; answers strict JSON
    `{"result", "state"}`. After `retries` bad answers the rule engine answers instead (counted in `fallbacks`)."""

    def __init__(self, asker: JsonAsker, seed: int) -> None:
        self.asker, self.seed, self.fallbacks, self.calls = asker, seed, 0, 0
        self.rules = RuleEngine()

    def execute(self, tool: RepoTool, args: dict[str, Any], mode: Mode, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        prompt = (
            "You simulate a software tool. Keep the world state consistent: reuse records that exist, never contradict "
            "earlier results, and record every change in the state.\n"
            f"Tool spec: {json.dumps(tool.spec(), ensure_ascii=False)}\nOutput: {tool.output_description or 'a JSON result'}\n"
            f"World state (JSON): {json.dumps(state, sort_keys=True, ensure_ascii=False)}\n"
            f"Call arguments: {json.dumps(args, sort_keys=True, ensure_ascii=False)}\nMode: {mode}. {MODE_RULES[mode]}\n"
            'Answer with JSON only: {"result": <the tool output>, "state": <the full new world state>}.'
        )
        got = self.asker.ask([{"role": "user", "content": prompt}], RESULT_SCHEMA, seed=self.seed + self.calls)
        self.calls += 1
        if got is None:
            self.fallbacks += 1
            return self.rules.execute(tool, args, mode, state)
        result = got["result"]
        text = result if isinstance(result, str) else json.dumps(result, sort_keys=True)
        if mode == "error" and not text.startswith("Error"):
            text = f"Error: {text}"
        return text, got["state"] if mode != "error" else state


class Executor(Protocol):
    """A real tool backend (e.g. a live MCP server) that runs calls instead of the simulator."""

    def call(self, name: str, arguments: dict[str, Any]) -> str: ...


class SimWorld:
    """Spec-only tools with a shared world state, seeded modes and an optional real executor per tool."""

    def __init__(self, tools: list[RepoTool], engine: Engine, injector: ModeInjector,
                 live: Mapping[str, Executor] | None = None, state: dict[str, Any] | None = None) -> None:
        self.tools = {t.name: t for t in tools}
        self.engine, self.injector, self.live = engine, injector, dict(live or {})
        self.state: dict[str, Any] = copy.deepcopy(state) if state else {}
        self.log: list[CallRecord] = []

    def tool_specs(self, names: list[str] | None = None) -> list[dict]:
        return [self.tools[n].spec() for n in (names if names is not None else list(self.tools))]

    def step(self, call: dict[str, Any]) -> str:
        """Execute `{"name", "arguments"}` (dict or JSON string); never raises."""
        name, raw = call.get("name", ""), call.get("arguments", {})
        tool = self.tools.get(name)
        if tool is None:
            return self._record(name, {}, f"Error: unknown tool {name!r}", "invalid", False)
        problem = argument_error(tool.spec(), raw)
        args = json.loads(raw) if isinstance(raw, str) and problem is None else raw
        if problem is not None:
            return self._record(name, args if isinstance(args, dict) else {}, f"Error: invalid arguments: {problem}", "invalid", False)
        mode = self.injector.draw()
        if name in self.live:
            result = TRANSIENT_MESSAGE if mode == "error" else self.live[name].call(name, args)
            return self._record(name, args, result, "ok" if mode != "error" else "transient", not result.startswith("Error"))
        result, self.state = self.engine.execute(tool, args, mode, self.state)
        outcome = {"success": "ok", "error": "transient", "partial": "partial", "edge": "edge"}[mode]
        return self._record(name, args, result, outcome, not result.startswith("Error"))

    def _record(self, name: str, args: dict, result: str, outcome: str, applied: bool) -> str:
        self.log.append(CallRecord(name, args, result, outcome, applied))
        return result

    def db_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.state, sort_keys=True).encode()).hexdigest()
