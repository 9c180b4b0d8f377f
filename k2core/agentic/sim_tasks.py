"""Rubric-based tasks for spec-only tools (K2 §3.1.1): from a single call to multi-step chains over an agent's tools.

Arguments are synthesized from each JSON Schema and checked against it; the gold plan is replayed on a fault-free
rule-based simulator, which fixes the values the agent must report (outputs) and the rubric's checkpoints.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from k2core.agentic.harvest import SANDBOX_REPO
from k2core.agentic.repo_agents import RepoAgent
from k2core.agentic.repository import RepoTool
from k2core.agentic.simulator import ModeInjector, RuleEngine, SimWorld, key_field, tool_kind
from k2core.agentic.specs import argument_error, follow_refs

WORDS = ["alpha", "harbor", "quarterly report", "blue", "onboarding", "paris", "invoice", "sprint", "kepler", "garden"]
FORMATS = {"date": "2026-03-14", "date-time": "2026-03-14T09:30:00Z", "email": "alex@example.com", "uri": "https://example.com/a",
           "url": "https://example.com/a", "uuid": "123e4567-e89b-12d3-a456-426614174000", "time": "09:30"}
ARG_TRIES = 4
COMMIT_HASH = re.compile(r"\b[0-9a-f]{40}\b")
TIMEZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Australia/Sydney", "America/Sao_Paulo",
             "Asia/Kolkata", "Africa/Nairobi", "Europe/London", "Pacific/Auckland"]
# realistic values for the live tools' arguments (time server; git server on the populated sandbox repository of
# `harvest.make_temp_repo`: refs, files and revisions that exist there); a name maps to (create-tools value, others)
_LIVE_CHOICES: dict[str, list[Any]] = {
    "timezone": TIMEZONES, "source_timezone": TIMEZONES, "target_timezone": TIMEZONES,
    "time": ["09:30", "12:00", "16:45", "23:15", "06:00"],
    "repo_path": [SANDBOX_REPO],
    "files": [["notes.txt"], ["src/app.py"], ["notes.txt", "src/app.py"]],
    "message": ["add notes", "run main when executed as a script", "update changelog and notes"],
    "branch_name": ["feature/docs", "main"],
    "new_branch_name": ["fix/typo", "release-0.2", "experiment/cli"],
    "base_branch": ["main", "feature/docs"],
    "revision": ["HEAD", "HEAD~1", "main", "feature/docs", "HEAD:README.md", "HEAD~2:src/app.py"],
    "target": ["main", "HEAD~1", "HEAD~2", "feature/docs"],
    "max_count": [1, 2, 3, 5],
    "branch_type": ["local", "all"],
    "context_lines": [1, 3],
}
LIVE_OPTIONAL = {"max_count", "context_lines", "base_branch"}


class SimTask(BaseModel):
    """A task for an agent on simulated tools: instruction, gold calls and the rubric the judge applies."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    agent: RepoAgent
    persona: str
    instruction: str
    plan: list[dict[str, Any]]
    outputs: list[str]
    seed: int

    def rubric(self) -> dict[str, Any]:
        return {
            "success_criteria": [
                "every requested operation is performed with the requested arguments, in order",
                "temporary tool errors are retried; failures and partial results are reported honestly",
                "the final answer reports the identifiers and values the tools returned",
            ],
            "expected_tools": list(dict.fromkeys(c["name"] for c in self.plan)),
            "checkpoints": self.plan,
            "outputs": self.outputs,
        }


def sample_value(schema: Any, name: str, rng: random.Random, depth: int = 0, root: Any = None,
                 seen: frozenset[str] = frozenset()) -> Any:
    """A plausible value for one JSON Schema (enums, formats, bounds, arrays and nested objects). Local `$ref`s are
    followed into `root` (the tool's whole parameter schema; `schema` itself when None), as the spec lint does; a
    reference already followed on the way here (a recursive type) is not followed again, so an optional recursive
    part is left out and an array of it is left empty where the schema allows."""
    root = schema if root is None else root
    schema, seen = follow_refs(schema, root, seen)
    if not isinstance(schema, dict):
        return rng.choice(WORDS)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_value(schema[key][0], name, rng, depth, root, seen)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer" or kind == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in schema else 0))
        hi = schema.get("maximum", lo + 20)
        value = rng.randint(int(lo), max(int(lo), min(int(hi), int(lo) + 20)))
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        items = schema.get("items", {})
        recursive = follow_refs(items, root, seen)[0] is None
        count = schema.get("minItems", 0) if recursive else max(1, schema.get("minItems", 1))
        return [sample_value(items, name, rng, depth + 1, root, seen) for _ in range(count)]
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        keep = [p for p in props
                if p in required or (depth == 0 and rng.random() < 0.3 and follow_refs(props[p], root, seen)[0] is not None)]
        return {p: sample_value(props[p], p, rng, depth + 1, root, seen) for p in keep}
    if schema.get("format") in FORMATS:
        return FORMATS[schema["format"]]
    low = name.lower()
    if low.endswith("id"):
        return f"{low.removesuffix('_id').removesuffix('id') or 'item'}-{rng.randint(100, 999)}"
    if "email" in low:
        return FORMATS["email"]
    if "date" in low:
        return FORMATS["date"]
    if "url" in low or "uri" in low:
        return FORMATS["url"]
    return rng.choice(WORDS)


def live_arguments(tool: RepoTool, rng: random.Random) -> dict[str, Any]:
    """Arguments a live server accepts and answers with real content: known names from `_LIVE_CHOICES` (a few
    optional ones sometimes), anything else from the schema."""
    props = tool.parameters.get("properties", {})
    required = tool.parameters.get("required", [])
    args = {}
    for name in props:
        if name not in required and not (name in LIVE_OPTIONAL and rng.random() < 0.3):
            continue
        key = "new_branch_name" if name == "branch_name" and "create" in tool.name else name
        args[name] = (rng.choice(_LIVE_CHOICES[key]) if key in _LIVE_CHOICES
                      else sample_value(props[name], name, rng, 1, tool.parameters))
    return args


def sample_arguments(tool: RepoTool, rng: random.Random) -> dict[str, Any] | None:
    """Schema-valid arguments for `tool`, or None when none of a few draws validates."""
    for _ in range(ARG_TRIES):
        args = live_arguments(tool, rng) if tool.provenance == "mcp_live" else sample_value(tool.parameters, "", rng)
        if isinstance(args, dict) and argument_error(tool.spec(), args) is None:
            return args
    return None


def salient(result: str) -> list[str]:
    """The values a good answer repeats: created or read identifiers, names and result ids; for live tools the
    (target) datetime of a time result, or the first commit hash of a git text result."""
    try:
        obj = json.loads(result)
    except json.JSONDecodeError:
        return COMMIT_HASH.findall(result)[:1]
    if not isinstance(obj, dict):
        return []
    record = obj.get("created") or obj.get("updated") or obj
    if not isinstance(record, dict):
        return []
    keys = [k for k in record if k.endswith("_id") or k == "result_id"][:1] + (["name"] if "name" in record else [])
    if not keys and isinstance(record.get("target"), dict):
        record = record["target"]
    if not keys and isinstance(record.get("datetime"), str):
        keys = ["datetime"]
    return [str(record[k]) for k in keys if isinstance(record[k], (str, int)) and str(record[k])]


def _chain(tool: RepoTool, args: dict[str, Any], created: dict[str, tuple[str, int]]) -> tuple[dict[str, Any], str | None]:
    """Point a read/update/delete at a record created earlier in the plan (multi-step dependency); returns the
    arguments and, when chained, how the user refers to that record (the user cannot know its new id)."""
    kind, coll = tool_kind(tool.name)
    key = key_field(tool.parameters)
    if kind in ("read", "update", "delete") and key and coll in created and tool.parameters["properties"].get(key, {}).get("type") == "string":
        value, step = created[coll]
        candidate = {**args, key: value}
        if argument_error(tool.spec(), candidate) is None:
            return candidate, f"{key}=the one created in step {step + 1}"
    return args, None


def generate_sim_task(agent: RepoAgent, tools: dict[str, RepoTool], task_id: str, seed: int, max_steps: int, persona: str) -> SimTask | None:
    """A task of 1..max_steps calls on the agent's simulated tools; None if no tool of the agent has valid arguments."""
    rng = random.Random(seed)
    usable = [tools[n] for n in agent.tools]
    steps = rng.randint(1, max_steps)
    world = SimWorld(usable, RuleEngine(), ModeInjector(0.0, 0.0, 0.0, 0))
    plan: list[dict[str, Any]] = []
    outputs: list[str] = []
    created: dict[str, tuple[str, int]] = {}
    asks: list[str] = []
    for _ in range(steps * 3):
        if len(plan) == steps or not usable:
            break
        tool = rng.choice(usable)
        args = sample_arguments(tool, rng)
        if args is None:
            usable.remove(tool)
            continue
        args, ref = _chain(tool, args, created)
        result = world.step({"name": tool.name, "arguments": args})
        if result.startswith("Error"):
            continue
        kind, coll = tool_kind(tool.name)
        values = salient(result)
        if kind == "create" and values:
            created[coll] = (values[0], len(plan))
        plan.append({"name": tool.name, "arguments": args})
        asks.append(_ask(tool, args, ref))
        outputs += [v for v in values[:1] if v not in outputs]
    if not plan:
        return None
    steps_text = "; ".join(f"({i + 1}) {a}" for i, a in enumerate(asks))
    instruction = f"You want the assistant to do the following, in order: {steps_text}. Give these details when asked and stop when it is done."
    return SimTask(task_id=task_id, agent=agent, persona=persona, instruction=instruction, plan=plan, outputs=outputs, seed=seed)


def _ask(tool: RepoTool, args: dict[str, Any], ref: str | None) -> str:
    what = tool.description.split(". ")[0].rstrip(".")
    key = ref.split("=")[0] if ref else None
    shown = ", ".join([ref] * bool(ref) + [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items() if k != key]) or "no details"
    return f"{what[:1].lower()}{what[1:160]} using {tool.name} with {shown}"
