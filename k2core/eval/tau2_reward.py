"""The τ² reward of a finished conversation, computed here as τ²-bench computes it, and pass^k.

Rules followed (tau2 `evaluator/evaluator.py`, `evaluator_env.py`, `evaluator_communicate.py`,
`metrics/agent_metrics.py`, read for the facts):
- a conversation that did not end by a stop (the user's ###STOP###, ###TRANSFER### or ###OUT-OF-SCOPE###, or the
  agent's stop) scores 0: max steps, too many tool errors, an agent or user error;
- a task without evaluation criteria scores 1;
- DB: the agent's tool calls, in order, are replayed on a fresh environment and the gold actions on another (a gold
  action that fails is skipped); the component is 1 when both databases hash alike. A task listing no gold actions
  (None, not an empty list) gets 1 whatever happened;
- COMMUNICATE: every `communicate_info` string must occur, case-insensitively, in the text of one assistant message
  whose commas are removed;
- the reward is the product of the components in the task's reward basis; success means a reward within 1e-6 of 1;
- pass^k of a task with c successes out of n trials is C(c, k) / C(n, k), averaged over tasks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from k2core.eval.stats import Metric
from k2core.eval.tau2_data import Tau2Task
from k2core.eval.tau2_env import Tau2Env

USER_STOP, AGENT_STOP = "user_stop", "agent_stop"
MAX_STEPS, TOO_MANY_ERRORS, AGENT_ERROR, USER_ERROR = "max_steps", "too_many_errors", "agent_error", "user_error"
COMPLETED = frozenset({USER_STOP, AGENT_STOP})
SUCCESS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Tau2Reward:
    """A conversation's reward and its components (None: not evaluated, e.g. after a premature end)."""

    reward: float
    db: float | None = None
    communicate: float | None = None
    reason: str = ""

    @property
    def success(self) -> bool:
        return abs(self.reward - 1.0) <= SUCCESS_TOLERANCE


def agent_calls(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assistant's tool calls, in order, as `{"name", "arguments"}`."""
    functions = [c.get("function") or {} for m in messages if m.get("role") == "assistant"
                 for c in m.get("tool_calls") or []]
    return [{"name": fn.get("name", ""), "arguments": fn.get("arguments", {})} for fn in functions]


def replay_hash(domain: str, calls: Sequence[dict[str, Any]]) -> str:
    """The DB hash after executing `calls` on a fresh environment of `domain`."""
    if not calls:
        return _initial_hash(domain)
    env = Tau2Env(domain)
    for call in calls:
        env.step(call)
    return env.db_hash()


@cache
def _initial_hash(domain: str) -> str:
    return Tau2Env(domain).db_hash()


@cache
def _gold_hash(domain: str, actions_json: str) -> str:
    return replay_hash(domain, json.loads(actions_json))


def gold_hash(task: Tau2Task) -> str:
    """The DB hash after the task's gold actions (cached: the replay is deterministic)."""
    actions = [{"name": a.name, "arguments": a.arguments} for a in task.actions or ()]
    return _gold_hash(task.domain, json.dumps(actions, sort_keys=True))


def communicated(info: str, messages: Sequence[dict[str, Any]]) -> bool:
    """Whether `info` appears in the text of one assistant message (case-insensitive, the message's commas dropped)."""
    needle = info.lower()
    return any(needle in m["content"].lower().replace(",", "") for m in messages
               if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"].strip())


def score_conversation(task: Tau2Task, messages: Sequence[dict[str, Any]], end_reason: str) -> Tau2Reward:
    """The τ² reward of one conversation (OpenAI-style messages) that ended for `end_reason`."""
    if end_reason not in COMPLETED:
        return Tau2Reward(0.0, reason=f"ended prematurely: {end_reason}")
    if not task.evaluated:
        return Tau2Reward(1.0, reason="no evaluation criteria")
    if task.actions is None:
        db = 1.0
    else:
        db = float(replay_hash(task.domain, agent_calls(messages)) == gold_hash(task))
    missing = [info for info in task.communicate_info if not communicated(info, messages)]
    communicate = float(not missing)
    reward = 1.0
    if "DB" in task.reward_basis:
        reward *= db
    if "COMMUNICATE" in task.reward_basis:
        reward *= communicate
    notes = ["database matches the gold replay" if db else "database differs from the gold replay"]
    if missing:
        notes.append(f"not communicated: {missing}")
    return Tau2Reward(reward, db, communicate, "; ".join(notes))


def pass_hat_k(successes: np.ndarray, tasks: np.ndarray, k: int) -> float:
    """Mean over tasks of C(c, k) / C(n, k) (c successes of the task's n trials; `tasks` holds integer task codes);
    tasks with fewer than k trials do not count (they cannot be drawn k times), and none counting gives nan."""
    trials = np.bincount(tasks)
    wins = np.bincount(tasks, weights=successes)
    ratios = [math.comb(int(round(c)), k) / math.comb(int(n), k) for c, n in zip(wins, trials, strict=True) if n >= k]
    return float(np.mean(ratios)) if ratios else float("nan")


def pass_hat_metrics(trials: int) -> list[Metric]:
    """pass^1 .. pass^trials over per-trial successes grouped by task (MLflow keys allow no "^": `pass_hat_k`)."""
    return [Metric(f"pass_hat_{k}", lambda values, groups, k=k: pass_hat_k(values, groups, k))
            for k in range(1, trials + 1)]
