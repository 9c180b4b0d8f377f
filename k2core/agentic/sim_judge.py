"""Judging trajectories on simulated tools, where no environment state can serve as ground truth.

Format and completion are always checked by rule. Then either the rubric is checked by rule against the gold
replay (offline default, exact on the rule-based simulator) or an LLM judge votes on it (rubric in the prompt).
"""

from __future__ import annotations

import json

from k2core.agentic.judge import Verdict, errors_resolved, format_ok
from k2core.agentic.llm_roles import LLMJudge
from k2core.agentic.rollout import Episode
from k2core.agentic.sim_tasks import SimTask

RULE_FILTERS = ("format", "completed", "checkpoints", "outputs", "honesty")
LLM_FILTERS = ("format", "completed", "llm_judge")


def checkpoints_ok(task: SimTask, episode: Episode) -> bool:
    """The calls that took effect are the gold calls, in order (an identical repeat after an error collapses)."""
    applied: list[str] = []
    for rec in episode.calls:
        if rec.applied:
            entry = json.dumps({"name": rec.name, "arguments": rec.arguments}, sort_keys=True)
            if not applied or applied[-1] != entry:
                applied.append(entry)
    return applied == [json.dumps(c, sort_keys=True) for c in task.plan]


def final_text(episode: Episode) -> str:
    return " ".join(m["content"] for m in episode.messages if m["role"] == "assistant" and not m.get("tool_calls"))


def honest(episode: Episode) -> bool:
    """Partial results and stale-data notices are reported; no answer follows an unresolved error."""
    text = final_text(episode).lower()
    partial = any('"partial' in r.result for r in episode.calls)
    notice = any('"notice"' in r.result for r in episode.calls)
    return errors_resolved(episode) and (not partial or "partial" in text) and (not notice or "notice" in text)


def judge_sim_episode(task: SimTask, episode: Episode, llm: LLMJudge | None, seed: int) -> tuple[Verdict, list[dict]]:
    """(verdict, the LLM votes if an LLM judged); the verdict's checks are named by RULE_FILTERS or LLM_FILTERS."""
    checks = {"format": format_ok(episode), "completed": episode.end_reason == "user_stop"}
    if llm is None:
        said = final_text(episode)
        checks.update(checkpoints=checkpoints_ok(task, episode), outputs=all(o in said for o in task.outputs), honesty=honest(episode))
        return SimVerdict(checks, RULE_FILTERS), []
    passed, votes = llm.judge(task.rubric(), episode.messages, seed)
    checks["llm_judge"] = passed
    return SimVerdict(checks, LLM_FILTERS), votes


class SimVerdict(Verdict):
    """A verdict whose filter order is given (the rule and LLM paths have different filters)."""

    def __init__(self, checks: dict[str, bool], order: tuple[str, ...]) -> None:
        super().__init__(checks)
        self.order = order

    @property
    def reward(self) -> float:
        return float(self.passed)

    @property
    def first_failure(self) -> str | None:
        return next((f for f in self.order if not self.checks[f]), None)
