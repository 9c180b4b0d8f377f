"""Rule-based trajectory judge: τ-bench reward (DB hash match and outputs communicated) plus the rubric.

Filters run in a fixed order so that per-filter pass rates say where trajectories are lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from k2core.agentic.domains import make_env
from k2core.agentic.rollout import Episode
from k2core.agentic.specs import argument_error
from k2core.agentic.tasks import Task

FILTERS = ("format", "completed", "db_match", "outputs", "rubric")


@dataclass
class Verdict:
    """Which filters passed; `reward` is τ-bench's (db_match and outputs), `passed` needs every filter."""

    checks: dict[str, bool]

    @property
    def reward(self) -> float:
        return float(self.checks["db_match"] and self.checks["outputs"])

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    @property
    def first_failure(self) -> str | None:
        return next((f for f in FILTERS if not self.checks[f]), None)


def gold_hash(task: Task) -> str:
    """Hash of the database after replaying the gold actions on a fresh, fault-free copy."""
    env = make_env(task.env)
    env.reset(task.seed, db=task.initial_db)
    for step in task.plan:
        result = env.step({"name": step.name, "arguments": step.arguments})
        if result.startswith("Error"):
            raise RuntimeError(f"gold action {step.name} of task {task.task_id} failed on replay: {result}")
    return env.db_hash()


def format_ok(episode: Episode) -> bool:
    """Every call has an id unique within its turn, a declared tool and schema-valid arguments; every
    tool result answers a call of the assistant turn before it (K2 ids are only unique per turn)."""
    specs = {s["function"]["name"]: s for s in episode.tools}
    open_ids: set[str] = set()
    for m in episode.messages:
        if m["role"] == "assistant":
            calls = m.get("tool_calls") or []
            open_ids = {c.get("id", "") for c in calls}
            if "" in open_ids or len(open_ids) != len(calls):
                return False
            for call in calls:
                fn = call.get("function", {})
                if fn.get("name") not in specs or argument_error(specs[fn["name"]], fn.get("arguments", "")) is not None:
                    return False
        elif m["role"] == "tool" and m.get("tool_call_id") not in open_ids:
            return False
    return True


def outputs_communicated(task: Task, episode: Episode) -> bool:
    said = " ".join(m["content"].lower() for m in episode.messages if m["role"] == "assistant")
    return all(o.lower() in said for o in task.outputs)


def rubric_ok(task: Task, episode: Episode) -> bool:
    """Checkpoints: identification precedes writes, and the applied writes are exactly the gold writes in order.

    Identical consecutive writes collapse (an idempotent retry after an ambiguous timeout is allowed).
    """
    applied: list[dict] = []
    identified = False
    for rec in episode.calls:
        if rec.name == task.plan[0].name and not rec.result.startswith("Error"):
            identified = True
        if rec.applied:
            if not identified:
                return False
            entry = {"name": rec.name, "arguments": rec.arguments}
            if not applied or json.dumps(applied[-1], sort_keys=True) != json.dumps(entry, sort_keys=True):
                applied.append(entry)
    canon = lambda xs: [json.dumps(x, sort_keys=True) for x in xs]  # noqa: E731
    return canon(applied) == canon(task.checkpoints)


def errors_resolved(episode: Episode) -> bool:
    """The agent never answers the user right after a failed tool call (no goal ends on an unresolved error)."""
    last_tool = None
    for m in episode.messages:
        if m["role"] == "tool":
            last_tool = m["content"]
        elif m["role"] == "assistant" and not m.get("tool_calls"):
            if last_tool is not None and last_tool.startswith("Error"):
                return False
            last_tool = None
    return True


def judge_episode(task: Task, episode: Episode, expected_hash: str) -> Verdict:
    return Verdict({
        "format": format_ok(episode),
        "completed": episode.end_reason == "user_stop",
        "db_match": episode.final_hash == expected_hash,
        "outputs": outputs_communicated(task, episode),
        "rubric": rubric_ok(task, episode) and errors_resolved(episode),
    })
