"""Tool-use evaluation on held-out environment tasks (τ-bench protocol): pass^1, pass^k, call well-formedness.

Any chat backend plays the agent through `llm_agent.LLMAgent`, the policy data synthesis uses: a checkpoint already in
memory (`ModelBackend`, what the bench does), the `k2` backend on a checkpoint folder, or any OpenAI-compatible server
(`k2 serve` of a checkpoint, an external model). So checkpoints and external models play identical tasks with the same
faults and the same scripted users. Their tool calls are executed in the environment and fed back (errors included),
and the scripted user answers, until the user stops or `max_turns` agent turns pass. Success is the τ-bench reward
(state-based): the final database equals the gold replay and every required output was said. An episode whose request
the backend refused (a conversation beyond the model's context, one its format cannot carry) is a failure.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Callable

import pandas as pd
from tqdm import tqdm

from k2core.agentic.domains import make_env
from k2core.agentic.env import ToolEnv
from k2core.agentic.faults import FaultInjector
from k2core.agentic.judge import gold_hash, judge_episode
from k2core.agentic.llm_agent import REQUEST_ERROR, AgentRole, parse_failure
from k2core.agentic.rollout import Episode, Policy, run_episode
from k2core.agentic.specs import argument_error
from k2core.agentic.tasks import Task, task_from_row
from k2core.agentic.users import ScriptedUser
from k2core.llm import ChatBackend, ChatRequest, ChatResponse
from k2core.llm.k2_checkpoint import complete_k2
from k2core.rl.encoding import stop_token_ids

PolicyFactory = Callable[[Task, ToolEnv, list[dict], int], Policy]  # (task, env, tool specs, seed) -> policy


def system_prompt(env: ToolEnv) -> str:
    """The fixed agent instructions used for evaluation."""
    return (
        f"You are a customer-support agent for {env.domain_description}. Identify the user by email before "
        "looking anything up or changing anything. Use the tools to act; never invent ids. Before any change, "
        "ask the user to confirm with yes or no."
    )


class ModelBackend:
    """A K2 model already in memory as a `ChatBackend`, answering as the `k2` backend does for a checkpoint folder
    (K2's chat format in, K2's tool-call parser out, the turn cut at the context), so the bench evaluates the model it
    loaded without loading it again. `dropped_calls` counts the calls the parser could not read, which no reply
    carries."""

    backend_id = "k2-in-memory"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.stop = stop_token_ids(tokenizer)
        self.context: int | None = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.dropped_calls = 0

    def complete(self, request: ChatRequest) -> ChatResponse:
        response, dropped = complete_k2(self.model, self.tokenizer, self.stop, self.context, request)
        self.dropped_calls += dropped
        return response


def pass_hat_k(successes: list[int], n: int, k: int) -> float:
    """Mean over tasks of comb(c, k) / comb(n, k): the chance that k i.i.d. trials all succeed."""
    return sum(math.comb(c, k) for c in successes) / (len(successes) * math.comb(n, k))


def call_counts(episode: Episode) -> tuple[int, int, int]:
    """(calls, schema-valid calls, malformed calls) of the agent: a call naming no offered tool or whose arguments
    are not a JSON object is malformed and not counted as a call (K2's parser drops those before they are calls)."""
    specs = {s["function"]["name"]: s for s in episode.tools}
    calls = valid = malformed = 0
    for message in episode.messages:
        for call in message.get("tool_calls") or []:
            if parse_failure(call, specs):
                malformed += 1
                continue
            fn = call["function"]
            calls += 1
            valid += int(argument_error(specs[fn["name"]], fn["arguments"]) is None)
    return calls, valid, malformed


def run_tool_eval(
    tasks: list[Task], make_policy: PolicyFactory, max_turns: int, num_trials: int, p_transient: float, p_edge: float, seed: int
) -> dict[str, Any]:
    """Run every task `num_trials` times with a policy from `make_policy` and score it; each trial draws its own
    fault seed and agent seed from (seed, task, trial)."""
    if not tasks:
        raise ValueError("no test tasks to evaluate; generate tool_tasks with test_fraction > 0")
    successes, ends = [], Counter()
    rubric_passes = calls = well_formed = malformed = turns = 0
    for task in tqdm(tasks, desc="tool eval", unit="task"):
        expected = gold_hash(task)
        wins = 0
        for trial in range(num_trials):
            env = make_env(task.env)
            rng = random.Random(f"{seed}:{task.task_id}:{trial}")
            env.reset(task.seed, db=task.initial_db, faults=FaultInjector(p_transient, p_edge, rng.randrange(2**31)))
            tools = env.tool_specs()
            policy = make_policy(task, env, tools, rng.randrange(2**31))
            user = ScriptedUser(task, task.persona, env.slot_descriptions)
            episode = run_episode(env, policy, user, system_prompt(env), list(env.tools), max_turns)
            ends[episode.end_reason] += 1
            turns += episode.turns
            counts = call_counts(episode)
            calls, well_formed, malformed = calls + counts[0], well_formed + counts[1], malformed + counts[2]
            if episode.end_reason != REQUEST_ERROR:
                verdict = judge_episode(task, episode, expected)
                wins += int(verdict.reward)
                rubric_passes += int(verdict.passed)
        successes.append(wins)
    episodes = len(tasks) * num_trials
    return {
        "tasks": len(tasks),
        "trials": num_trials,
        **{f"pass^{k}": pass_hat_k(successes, num_trials, k) for k in range(1, num_trials + 1)},
        "rubric_pass_rate": rubric_passes / episodes,
        "tool_calls": calls,
        "well_formed_tool_calls": well_formed,
        "malformed_tool_calls": malformed,
        "mean_turns": turns / episodes,
        "end_reasons": dict(ends),
    }


def held_out_tasks(tasks_df: pd.DataFrame, max_tasks: int | None) -> list[Task]:
    """The held-out (split == "test") tasks of a tool_tasks table, at most `max_tasks`."""
    rows = tasks_df[tasks_df["split"] == "test"].to_dict("records")
    return [task_from_row(r) for r in rows[:max_tasks]]


def evaluate_agent(
    backend: ChatBackend, tasks_df: pd.DataFrame, max_turns: int, max_tokens: int, num_trials: int = 1,
    temperature: float = 0.0, p_transient: float = 0.0, p_edge: float = 0.0, max_tasks: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """pass^1 (and pass^k for k <= num_trials) of any chat backend as the agent (`LLMAgent`) on the test split of
    `tasks_df`; `max_tokens` caps each assistant turn.

    Greedy at temperature 0; trials then differ only through the seeded faults (p_transient, p_edge).
    """
    role = AgentRole(backend, temperature, max_tokens)

    def make_policy(task: Task, env: ToolEnv, tools: list[dict], agent_seed: int) -> Policy:
        return role.policy(tools, agent_seed)

    return run_tool_eval(held_out_tasks(tasks_df, max_tasks), make_policy, max_turns, num_trials, p_transient, p_edge, seed)


def evaluate_tool_use(
    model: Any, tokenizer: Any, tasks_df: pd.DataFrame, max_turns: int, max_new_tokens: int, num_trials: int = 1,
    temperature: float = 0.0, p_transient: float = 0.0, p_edge: float = 0.0, max_tasks: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """`evaluate_agent` for a K2 model in memory; its malformed calls include those K2's parser dropped."""
    backend = ModelBackend(model, tokenizer)
    result = evaluate_agent(backend, tasks_df, max_turns, max_new_tokens, num_trials, temperature, p_transient, p_edge,
                            max_tasks, seed)
    return {**result, "malformed_tool_calls": result["malformed_tool_calls"] + backend.dropped_calls}


def tool_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A result as bench metrics: prefixed `tool_`, "pass^k" as "passk" (MLflow metric names may not contain "^")."""
    return {f"tool_{key.replace('^', '')}": value for key, value in result.items()}
