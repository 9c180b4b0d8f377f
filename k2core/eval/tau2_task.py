"""τ²-bench airline and retail as harness tasks (`tau2_airline`, `tau2_retail`), scored by pass^k.

Each sample is one trial of one task: the backend under evaluation plays the agent (`llm_agent.LLMAgent`, greedy)
with the domain policy as its system prompt and the domain's tools, against τ²'s user simulator played by
`TaskOptions.user_backend` (default: the same backend) and the domain's environment (`tau2_rollout`). The cached
output is the whole conversation; the scorer recomputes the τ² reward from it (`tau2_reward`), so a cached run is
re-scored without talking to any model. A sample's value is its success (reward within 1e-6 of 1), grouped by task;
the metrics are pass^1 .. pass^trials. `limit` draws a seeded subset of tasks; every drawn task gets all its trials.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from typing import Any

from k2core.agentic.llm_agent import AgentRole
from k2core.errors import UserError
from k2core.eval.harness import Output, Sample, Score, Task, TaskOptions, subset
from k2core.eval.tau2_data import Tau2Task, load_tasks, policy
from k2core.eval.tau2_env import Tau2Env
from k2core.eval.tau2_reward import pass_hat_metrics, score_conversation
from k2core.eval.tau2_rollout import MAX_ERRORS_DEFAULT, MAX_STEPS_DEFAULT, run_conversation
from k2core.eval.tau2_user import LLMUser
from k2core.llm.base import ChatBackend

AGENT_INSTRUCTIONS = (
    "You are a customer service agent. Help the user as the <policy> below allows.\n"
    "Each turn, do exactly one of these: send the user a message, or call tools. Never both in one turn.\n"
    "Follow the policy at all times, and write tool arguments as valid JSON."
)


def agent_system_prompt(domain: str) -> str:
    """What the agent under test is told: the turn protocol, then the domain policy."""
    return f"<instructions>\n{AGENT_INSTRUCTIONS}\n</instructions>\n<policy>\n{policy(domain)}\n</policy>"


@cache
def tool_specs(domain: str) -> tuple[dict[str, Any], ...]:
    return tuple(Tau2Env(domain).tool_specs())


def trial_seed(seed: int, task_id: str, trial: int) -> int:
    """The agent's and user's sampling seed for one trial (each trial its own, as τ² runs trials)."""
    return random.Random(f"{seed}:{task_id}:{trial}").randrange(2**31)


@dataclass
class Tau2Solver:
    """Plays one trial; the output's completion is `{"end_reason", "messages"}` (JSON, system prompt left out)."""

    domain: str
    user_backend: ChatBackend | None = None
    max_tokens: int = 256
    seed: int = 0
    max_steps: int = MAX_STEPS_DEFAULT
    max_errors: int = MAX_ERRORS_DEFAULT

    @property
    def settings(self) -> dict[str, Any]:
        user = self.user_backend.backend_id if self.user_backend is not None else "agent"
        return {"solver": "tau2", "domain": self.domain, "max_tokens": self.max_tokens, "seed": self.seed,
                "user": user, "max_steps": self.max_steps, "max_errors": self.max_errors}

    def check(self, backend: ChatBackend) -> None:
        return None

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        task = _task(self.domain, sample.metadata["task_id"])
        seed = trial_seed(self.seed, task.id, sample.metadata["trial"])
        role = AgentRole(backend, 0.0, self.max_tokens)
        user = LLMUser(self.user_backend or backend, task, self.max_tokens, seed)
        episode = run_conversation(Tau2Env(self.domain), role.policy(list(sample.tools), seed), user,
                                   sample.input[0]["content"], self.max_steps, self.max_errors)
        completion = json.dumps({"end_reason": episode.end_reason, "messages": episode.messages[1:]})
        last = next((m for m in reversed(episode.messages) if m["role"] == "assistant"), None)
        # a refused request ends the conversation as an agent or user error, which the scorer gives 0 (the sample
        # keeps its task group, which pass^k needs, so it is not reported as an Output error)
        return Output(prompt=sample.input, completion=completion, message=last)


@cache
def _tasks_by_id(domain: str) -> dict[str, Tau2Task]:
    return {t.id: t for t in load_tasks(domain)}


def _task(domain: str, task_id: str) -> Tau2Task:
    by_id = _tasks_by_id(domain)
    if task_id not in by_id:
        raise UserError(f"τ² {domain} has no task {task_id!r}")
    return by_id[task_id]


def score_sample(domain: str, sample: Sample, output: Output) -> Score:
    """The τ² reward of a recorded conversation; the value is success (0 or 1), grouped by task."""
    recorded = json.loads(output.completion)
    task = _task(domain, sample.metadata["task_id"])
    verdict = score_conversation(task, recorded["messages"], recorded["end_reason"])
    return Score(value=float(verdict.success), answer=f"{verdict.reward:g}", reason=verdict.reason, group=task.id)


def samples(domain: str, options: TaskOptions) -> list[Sample]:
    """`trials` samples for each task of a seeded subset of `limit` tasks."""
    if options.trials < 1:
        raise UserError(f"τ² needs at least 1 trial per task, got trials={options.trials}")
    system = [{"role": "system", "content": agent_system_prompt(domain)}]
    tasks = [Sample(id=t.id, metadata={"task_id": t.id}) for t in load_tasks(domain)]
    return [Sample(id=f"{t.id}/{trial}", input=system, tools=list(tool_specs(domain)),
                   metadata={"task_id": t.id, "trial": trial})
            for t in subset(tasks, options.limit, options.seed) for trial in range(options.trials)]


def tau2_task(domain: str, options: TaskOptions) -> Task:
    solver = Tau2Solver(domain, options.user_backend, options.max_tokens, options.seed)
    return Task(f"tau2_{domain}", samples(domain, options), solver,
                lambda sample, output: score_sample(domain, sample, output), pass_hat_metrics(options.trials))
