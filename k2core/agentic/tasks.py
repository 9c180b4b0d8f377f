"""Procedural task generation: random walks over an environment's moves give gold action sequences.

Each walk identifies a user, then chains goals whose preconditions hold in the state left by the
previous ones (every gold step is executed while walking, so gold actions always replay cleanly).
Templates turn the walk into a user instruction, the user's known info and a rubric.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from k2core.agentic.domains import make_env
from k2core.agentic.domains._names import address_text
from k2core.agentic.env import ToolEnv

MAX_MOVE_ATTEMPTS = 20
Split = Literal["train", "test"]


class PlanStep(BaseModel):
    """One gold action and where each of its argument values comes from (`slot:NAME`, `step:K`)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any]
    sources: dict[str, str]
    kind: Literal["read", "write"]


class Goal(BaseModel):
    """One thing the user wants, with the slot values they know and the gold steps that achieve it."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    phrase: str
    vague: str
    slots: dict[str, Any]
    steps: list[int]
    outputs: list[str]


class Task(BaseModel):
    """A generated task: initial database, user scenario, gold plan and rubric."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    env: str
    seed: int
    user_name: str
    identity: dict[str, str]
    persona: str
    instruction: str
    goals: list[Goal]
    plan: list[PlanStep]
    initial_db: dict[str, Any]
    split: Split

    @property
    def outputs(self) -> list[str]:
        return [o for g in self.goals for o in g.outputs]

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "arguments": s.arguments} for s in self.plan if s.kind == "write"]

    def rubric(self) -> dict[str, Any]:
        """Success criteria, expected tool-use pattern and checkpoints, as stored in tool_tasks.parquet."""
        return {
            "success_criteria": [
                "final database equals the database after replaying the gold actions",
                "every required output is communicated to the user",
                "the user is identified before any write",
                "only the checkpoint writes are applied, in order",
                "the agent never answers right after an unresolved tool error",
            ],
            "reward_basis": ["DB", "COMMUNICATE"],
            "expected_tools": list(dict.fromkeys(s.name for s in self.plan)),
            "checkpoints": self.checkpoints,
            "outputs": self.outputs,
            "argument_sources": [s.sources for s in self.plan],
        }


def slot_text(value: Any) -> str:
    """How a slot value is said in conversation."""
    if isinstance(value, dict):
        return address_text(value)
    return str(value)


def _instruction(user_name: str, email: str, goals: list[Goal]) -> str:
    wants = "; ".join(f"({i + 1}) {g.phrase}" for i, g in enumerate(goals))
    return (
        f"You are {user_name}, email {email}. In this conversation you want to: {wants}. "
        "Ask for one thing at a time, give details when the agent asks for them, and stop once everything is done."
    )


def generate_task(env_name: str, seed: int, task_id: str, min_goals: int, max_goals: int, persona: str, split: Split) -> Task:
    """Random walk: identify a user, then chain applicable goals, executing each gold step."""
    env = make_env(env_name)
    env.reset(seed)
    rng = random.Random(seed)
    initial_db = copy.deepcopy(env.db)
    who = env.identify(rng)
    plan = [PlanStep(name=env.identify_tool, arguments={"email": who.email}, sources={"email": "slot:email"}, kind="read")]
    if env.step({"name": plan[0].name, "arguments": plan[0].arguments}).startswith("Error"):
        raise RuntimeError(f"{env_name}: identifying {who.email} failed; the database builder is inconsistent")
    goals: list[Goal] = []
    target = rng.randint(min_goals, max_goals)
    attempts = 0
    while len(goals) < target and attempts < MAX_MOVE_ATTEMPTS:
        attempts += 1
        draft = rng.choice(env.moves())(rng, who)
        if draft is None or any(g.phrase == draft.phrase for g in goals):
            continue
        snapshot = copy.deepcopy(env.db)
        steps = _walk_goal(env, draft.steps, len(plan))
        if steps is None:
            env.db = snapshot
            continue
        indices = list(range(len(plan), len(plan) + len(steps)))
        if not goals:
            indices = [0, *indices]
        plan += steps
        goals.append(Goal(kind=draft.kind, phrase=draft.phrase, vague=draft.vague, slots=draft.slots, steps=indices, outputs=draft.outputs))
    if not goals:
        raise RuntimeError(f"no applicable goal for {env_name} seed {seed}; the database builder left no valid moves")
    return Task(
        task_id=task_id, env=env_name, seed=seed, user_name=who.name, identity={"email": who.email}, persona=persona,
        instruction=_instruction(who.name, who.email, goals), goals=goals, plan=plan, initial_db=initial_db,
        split=split,
    )


def _walk_goal(env: ToolEnv, steps: list[tuple[str, dict, dict]], offset: int) -> list[PlanStep] | None:
    """Execute a goal's steps; map local `step:K` sources to plan indices; None if any step fails."""
    out = []
    for name, args, sources in steps:
        if env.step({"name": name, "arguments": args}).startswith("Error"):
            return None
        mapped = {}
        for arg, src in sources.items():
            if src == "identity":
                mapped[arg] = "step:0"
            elif src.startswith("step:"):
                mapped[arg] = f"step:{offset + int(src.split(':')[1])}"
            else:
                mapped[arg] = src
        out.append(PlanStep(name=name, arguments=args, sources=mapped, kind=env.tools[name].kind))
    return out


def generate_tasks(envs: list[str], num_tasks: int, min_goals: int, max_goals: int, personas: list[str], test_fraction: float, seed: int) -> list[Task]:
    """`num_tasks` tasks cycling over `envs`; a seeded shuffle puts round(test_fraction * n) in the test split."""
    rng = random.Random(seed)
    seeds = [rng.randrange(2**31) for _ in range(num_tasks)]
    order = list(range(num_tasks))
    rng.shuffle(order)
    test = set(order[: round(test_fraction * num_tasks)])
    return [
        generate_task(
            envs[i % len(envs)], seeds[i], f"{envs[i % len(envs)]}-{seed}-{i:05d}", min_goals, max_goals,
            personas[rng.randrange(len(personas))], "test" if i in test else "train",
        )
        for i in range(num_tasks)
    ]


def task_to_row(task: Task) -> dict[str, str]:
    """A row of tool_tasks.parquet (docs/contracts.md); the user scenario and plan ride in initial_state."""
    user = {"name": task.user_name, "identity": task.identity, "persona": task.persona, "goals": [g.model_dump() for g in task.goals]}
    return {
        "task_id": task.task_id,
        "env": task.env,
        "instruction": task.instruction,
        "gold_actions": json.dumps([{"name": s.name, "arguments": s.arguments} for s in task.plan]),
        "initial_state": json.dumps({"seed": task.seed, "db": task.initial_db, "user": user}),
        "rubric": json.dumps(task.rubric()),
        "split": task.split,
    }


def task_from_row(row: dict[str, Any]) -> Task:
    """Inverse of `task_to_row`; raises if the row is not from this generator."""
    state, rubric = json.loads(row["initial_state"]), json.loads(row["rubric"])
    gold = json.loads(row["gold_actions"])
    env = make_env(row["env"])
    plan = [
        PlanStep(name=a["name"], arguments=a["arguments"], sources=src, kind=env.tools[a["name"]].kind)
        for a, src in zip(gold, rubric["argument_sources"], strict=True)
    ]
    user = state["user"]
    return Task(
        task_id=row["task_id"], env=row["env"], seed=state["seed"], user_name=user["name"], identity=user["identity"],
        persona=user["persona"], instruction=row["instruction"], goals=[Goal(**g) for g in user["goals"]], plan=plan,
        initial_db=state["db"], split=row["split"],
    )
