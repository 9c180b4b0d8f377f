"""Entry point for the synth stage: tasks, judged trajectories and filter statistics for tool-use SFT."""

from __future__ import annotations

import json
import random
from collections import Counter

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from k2core.agentic.agents import ScriptedAgent, sample_agent
from k2core.agentic.domains import ENVIRONMENTS, make_env
from k2core.agentic.faults import FaultInjector
from k2core.agentic.judge import FILTERS, gold_hash, judge_episode
from k2core.agentic.rollout import Episode, run_episode
from k2core.agentic.tasks import Task, generate_tasks, task_to_row
from k2core.agentic.users import PERSONAS, ScriptedUser

TASK_COLUMNS = ["task_id", "env", "instruction", "gold_actions", "initial_state", "rubric", "split"]
SFT_COLUMNS = ["example_id", "source", "messages", "tools"]


class AgenticConfig(BaseModel):
    """How much tool-use data to make and how hard the simulated world is."""

    model_config = ConfigDict(extra="forbid")
    envs: list[str] = Field(min_length=1)
    num_tasks: int = Field(ge=1)
    trajectories_per_task: int = Field(ge=1)
    min_goals: int = Field(ge=1)
    max_goals: int = Field(ge=1)
    personas: list[str] = Field(min_length=1)
    p_transient: float = Field(ge=0, le=1)
    p_edge: float = Field(ge=0, le=1)
    agent_wrong_arg_prob: float = Field(ge=0, le=1)
    agent_extra_write_prob: float = Field(ge=0, le=1)
    agent_missing_tool_prob: float = Field(ge=0, le=1)
    max_turns: int = Field(ge=2)
    test_fraction: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> AgenticConfig:
        unknown = set(self.envs) - set(ENVIRONMENTS)
        if unknown:
            raise ValueError(f"unknown envs {sorted(unknown)}; choose from {sorted(ENVIRONMENTS)}")
        bad = set(self.personas) - set(PERSONAS)
        if bad:
            raise ValueError(f"unknown personas {sorted(bad)}; choose from {list(PERSONAS)}")
        if self.min_goals > self.max_goals:
            raise ValueError(f"min_goals ({self.min_goals}) must be <= max_goals ({self.max_goals})")
        if self.p_transient + self.p_edge > 1:
            raise ValueError("p_transient + p_edge must be <= 1")
        return self


def rollout_scripted(task: Task, cfg: AgenticConfig, seed: str, persona: str) -> tuple[Episode, str]:
    """One trajectory of a freshly sampled scripted agent on `task`; returns the episode and the agent name."""
    rng = random.Random(seed)
    env = make_env(task.env)
    env.reset(task.seed, db=task.initial_db)
    profile = sample_agent(env, rng, cfg.agent_wrong_arg_prob, cfg.agent_extra_write_prob, cfg.agent_missing_tool_prob)
    agent = ScriptedAgent(profile, task, env, rng)
    user = ScriptedUser(task, persona, env.slot_descriptions)
    env.reset(task.seed, db=task.initial_db, faults=FaultInjector(cfg.p_transient, cfg.p_edge, rng.randrange(2**31)))
    return run_episode(env, agent, user, profile.system_prompt, profile.tools, cfg.max_turns), profile.name


def generate_tool_data(cfg: AgenticConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Tasks for all splits, judged SFT trajectories for the train split, and per-filter pass statistics."""
    tasks = generate_tasks(cfg.envs, cfg.num_tasks, cfg.min_goals, cfg.max_goals, cfg.personas, cfg.test_fraction, seed)
    tasks_df = pd.DataFrame([task_to_row(t) for t in tasks], columns=TASK_COLUMNS)
    train = [t for t in tasks if t.split == "train"]
    first_fail: Counter[str] = Counter()
    passed_each: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    rewards = 0.0
    rows = []
    jobs = [(i, t, j) for i, t in enumerate(train) for j in range(cfg.trajectories_per_task)]
    hashes = {t.task_id: gold_hash(t) for t in train}
    for i, task, j in tqdm(jobs, desc="tool trajectories", unit="traj"):
        persona = cfg.personas[(i + j) % len(cfg.personas)]
        episode, agent_name = rollout_scripted(task, cfg, f"{seed}:{task.task_id}:{j}", persona)
        verdict = judge_episode(task, episode, hashes[task.task_id])
        faults.update(r.outcome for r in episode.calls)
        rewards += verdict.reward
        passed_each.update(f for f, ok in verdict.checks.items() if ok)
        first_fail[verdict.first_failure or "kept"] += 1
        if verdict.passed:
            rows.append({
                "example_id": f"tool-{task.task_id}-{j}",
                "source": "tool",
                "messages": json.dumps(episode.messages),
                "tools": json.dumps(episode.tools),
            })
    generated = len(jobs)
    survivors, cascade = generated, {}
    for f in FILTERS:
        survivors -= first_fail[f]
        cascade[f] = survivors / generated if generated else 0.0
    stats = {
        "tasks": len(tasks),
        "train_tasks": len(train),
        "test_tasks": len(tasks) - len(train),
        "generated": generated,
        "kept": len(rows),
        "keep_rate": len(rows) / generated if generated else 0.0,
        "mean_reward": rewards / generated if generated else 0.0,
        "pass_rate": {f: passed_each[f] / generated if generated else 0.0 for f in FILTERS},
        "cumulative_pass_rate": cascade,
        "first_failure": {f: first_fail[f] for f in FILTERS},
        "tool_call_outcomes": {o: faults[o] for o in ("ok", "transient", "edge", "invalid")},
    }
    return tasks_df, pd.DataFrame(rows, columns=SFT_COLUMNS), stats
