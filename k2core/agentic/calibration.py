"""How far the LLM judge can be trusted: its verdicts on executable-environment trajectories, where the state-based
verdict (`judge.judge_episode`: final database, outputs, rubric checkpoints) is ground truth.

The LLM judge filters trajectories on simulated tools, where no state can verify them; scoring environment
trajectories with both judges measures its agreement, precision and recall (a passing trajectory is the positive
class) before its verdicts are relied on. The synth stage scores `roles.judge_calibration` of its own environment
trajectories; `mistake_cases` gives a balanced set from scripted agents with and without injected mistakes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from k2core.agentic.agents import ScriptedAgent, oracle_agent
from k2core.agentic.domains import make_env
from k2core.agentic.judge import gold_hash, judge_episode
from k2core.agentic.llm_roles import LLMJudge
from k2core.agentic.rollout import Episode, run_episode
from k2core.agentic.tasks import Task
from k2core.agentic.users import ScriptedUser


class Confusion(BaseModel):
    """Counts of (state verdict, LLM verdict) pairs; positive = passed. Sums across shards with `+`."""

    model_config = ConfigDict(extra="forbid")
    tp: int = Field(default=0, ge=0)
    fp: int = Field(default=0, ge=0)
    fn: int = Field(default=0, ge=0)
    tn: int = Field(default=0, ge=0)

    def add(self, state_passed: bool, judge_passed: bool) -> None:
        field = ("tp" if judge_passed else "fn") if state_passed else ("fp" if judge_passed else "tn")
        setattr(self, field, getattr(self, field) + 1)

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(tp=self.tp + other.tp, fp=self.fp + other.fp, fn=self.fn + other.fn, tn=self.tn + other.tn)

    def metrics(self) -> dict[str, Any]:
        """`scored`, `agreement`, `precision`, `recall`, `state_pass_rate`, `judge_pass_rate` and the `confusion`
        counts; a rate whose denominator is 0 is reported as 0.0."""
        n = self.tp + self.fp + self.fn + self.tn
        ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
        return {
            "scored": n,
            "agreement": ratio(self.tp + self.tn, n),
            "precision": ratio(self.tp, self.tp + self.fp),
            "recall": ratio(self.tp, self.tp + self.fn),
            "state_pass_rate": ratio(self.tp + self.fn, n),
            "judge_pass_rate": ratio(self.tp + self.fp, n),
            "confusion": self.model_dump(),
        }


@dataclass(frozen=True)
class CalibrationCase:
    """One environment trajectory with its ground-truth (state) verdict and the seed its LLM judging uses."""

    task: Task
    episode: Episode
    state_passed: bool
    seed: int


def judge_env_episode(judge: LLMJudge, task: Task, episode: Episode, seed: int) -> bool:
    """The LLM judge's majority verdict on an environment trajectory, from the task's rubric and the transcript
    (the same prompt it gets for simulated tools)."""
    return judge.judge(task.rubric(), episode.messages, seed)[0]


def calibrate_judge(judge: LLMJudge, cases: Iterable[CalibrationCase]) -> Confusion:
    """The LLM judge's verdict on every case against its state verdict."""
    confusion = Confusion()
    for case in cases:
        confusion.add(case.state_passed, judge_env_episode(judge, case.task, case.episode, case.seed))
    return confusion


def mistake_cases(tasks: Sequence[Task], max_turns: int, seed: int) -> list[CalibrationCase]:
    """Fault-free trajectories from scripted agents with every tool, each with its state verdict: per task a careful
    one, then one that puts a plausible wrong value in an argument of every call it can (an injected mistake), unless
    no argument of the task could be changed (then it would repeat the careful one)."""
    cases: list[CalibrationCase] = []
    for task in tasks:
        expected = gold_hash(task)
        for slips in (0, 1):
            env = make_env(task.env)
            env.reset(task.seed, db=task.initial_db)
            profile = oracle_agent(env).model_copy(update={"p_wrong_arg": float(slips)})
            agent = ScriptedAgent(profile, task, env, random.Random(f"{seed}:{task.task_id}:{slips}"))
            user = ScriptedUser(task, task.persona, env.slot_descriptions)
            episode = run_episode(env, agent, user, profile.system_prompt, profile.tools, max_turns)
            if slips and episode.calls == cases[-1].episode.calls:
                continue
            cases.append(CalibrationCase(task, episode, judge_episode(task, episode, expected).passed, task.seed + slips))
    return cases
