"""Tool-use evaluation on held-out environment tasks (τ-bench protocol): pass^1, pass^k, call well-formedness.

A model plays the agent: the conversation is rendered in K2's chat format, the model generates one
assistant turn, its tool calls are executed in the environment and fed back, and the scripted user
answers, until the user stops or `max_turns` agent turns pass. Success is the τ-bench reward: the
final database equals the gold replay and every required output was said.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Callable

import pandas as pd
import torch
from tqdm import tqdm

from k2core.agentic.domains import make_env
from k2core.agentic.env import ToolEnv
from k2core.agentic.faults import FaultInjector
from k2core.agentic.judge import gold_hash, judge_episode
from k2core.agentic.rollout import Policy, run_episode
from k2core.agentic.specs import argument_error
from k2core.agentic.tasks import Task, task_from_row
from k2core.agentic.users import ScriptedUser
from k2core.chat import SPECIAL_TOKENS, parse_assistant
from k2core.model import generate
from k2core.rl.encoding import prompt_ids, stop_token_ids

PolicyFactory = Callable[[Task, ToolEnv, list[dict]], Policy]


class ContextLimitError(RuntimeError):
    """The conversation no longer fits the model's context; the episode ends as a failure."""


def system_prompt(env: ToolEnv) -> str:
    """The fixed agent instructions used for evaluation."""
    return (
        f"You are a customer-support agent for {env.domain_description}. Identify the user by email before "
        "looking anything up or changing anything. Use the tools to act; never invent ids. Before any change, "
        "ask the user to confirm with yes or no."
    )


class ModelPolicy:
    """A causal LM as the agent: render, generate one turn, parse it back into a message."""

    def __init__(self, model: Any, tokenizer: Any, tools: list[dict], max_new_tokens: int, temperature: float, seed: int) -> None:
        self.model, self.tokenizer, self.tools = model, tokenizer, tools
        self.names = {t["function"]["name"] for t in tools}
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.stop = stop_token_ids(tokenizer)
        self.limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.generator = torch.Generator().manual_seed(seed)
        self.malformed = 0

    def __call__(self, messages: list[dict]) -> dict:
        ids = prompt_ids(self.tokenizer, messages, self.tools)
        if self.limit is not None and len(ids) + self.max_new_tokens > self.limit:
            raise ContextLimitError(f"prompt of {len(ids)} tokens + {self.max_new_tokens} new exceeds {self.limit}")
        out = generate(self.model, ids, 1, self.max_new_tokens, self.temperature, self.stop, generator=self.generator)[0]
        parsed = parse_assistant(self.tokenizer.decode(out, skip_special_tokens=False))
        self.malformed += sum("tool call" in e for e in parsed["errors"])
        calls = [c for c in parsed["tool_calls"] if c["function"]["name"] in self.names]
        self.malformed += len(parsed["tool_calls"]) - len(calls)
        content = parsed["content"]
        for token in SPECIAL_TOKENS:
            content = content.replace(token, "")
        return {"role": "assistant", "content": content, "tool_calls": calls}


def pass_hat_k(successes: list[int], n: int, k: int) -> float:
    """Mean over tasks of comb(c, k) / comb(n, k): the chance that k i.i.d. trials all succeed."""
    return sum(math.comb(c, k) for c in successes) / (len(successes) * math.comb(n, k))


def run_tool_eval(
    tasks: list[Task], make_policy: PolicyFactory, max_turns: int, num_trials: int, p_transient: float, p_edge: float, seed: int
) -> dict[str, Any]:
    """Run every task `num_trials` times with a policy from `make_policy` and score it."""
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
            policy = make_policy(task, env, tools)
            user = ScriptedUser(task, task.persona, env.slot_descriptions)
            try:
                episode = run_episode(env, policy, user, system_prompt(env), list(env.tools), max_turns)
            except ContextLimitError:
                ends["context_limit"] += 1
                malformed += getattr(policy, "malformed", 0)
                continue
            verdict = judge_episode(task, episode, expected)
            wins += int(verdict.reward)
            rubric_passes += int(verdict.passed)
            ends[episode.end_reason] += 1
            turns += episode.turns
            specs = {s["function"]["name"]: s for s in tools}
            for m in episode.messages:
                for c in m.get("tool_calls") or []:
                    calls += 1
                    fn = c["function"]
                    well_formed += int(fn["name"] in specs and argument_error(specs[fn["name"]], fn["arguments"]) is None)
            malformed += getattr(policy, "malformed", 0)
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
        "mean_turns": turns / max(1, episodes - ends["context_limit"]),
        "end_reasons": dict(ends),
    }


def held_out_tasks(tasks_df: pd.DataFrame, max_tasks: int | None) -> list[Task]:
    """The held-out (split == "test") tasks of a tool_tasks table, at most `max_tasks`."""
    rows = tasks_df[tasks_df["split"] == "test"].to_dict("records")
    return [task_from_row(r) for r in rows[:max_tasks]]


def evaluate_tool_use(
    model: Any, tokenizer: Any, tasks_df: pd.DataFrame, max_turns: int, max_new_tokens: int, num_trials: int = 1,
    temperature: float = 0.0, p_transient: float = 0.0, p_edge: float = 0.0, max_tasks: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """pass^1 (and pass^k for k <= num_trials) of `model` as the agent on the test split of `tasks_df`.

    Greedy at temperature 0; trials then differ only through the seeded faults (p_transient, p_edge).
    """
    def make_policy(task: Task, env: ToolEnv, tools: list[dict]) -> Policy:
        return ModelPolicy(model, tokenizer, tools, max_new_tokens, temperature, seed)

    return run_tool_eval(held_out_tasks(tasks_df, max_tasks), make_policy, max_turns, num_trials, p_transient, p_edge, seed)
