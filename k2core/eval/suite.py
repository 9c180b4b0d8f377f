"""A configured set of harness tasks (`k2core.eval.registry`), run on one backend: what the bench stage runs on every
checkpoint and external model, sized per profile in params.yaml (`bench.<profile>.harness`).

Each task has its own subset size and generation budget; `limit: null` scores the whole benchmark. Answers are
cached per sample (`SampleCache`), so a bench that crashed half-way through a checkpoint asks the model only for
what it had not answered, and the per-sample logs land in one folder per model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from k2core.eval.harness import TaskOptions, TaskResult, evaluate
from k2core.eval.registry import TASKS, build_tasks
from k2core.eval.sample_cache import SampleCache
from k2core.llm.base import ChatBackend
from k2core.llm.loglik import LoglikelihoodBackend


class SuiteTask(BaseModel):
    """One harness task's size and budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int | None = Field(default=None, gt=0, description="seeded subset size; null: the whole benchmark")
    max_tokens: int = Field(default=256, gt=0, description="generation budget per reply (per turn for agents)")
    trials: int = Field(default=1, gt=0, description="τ² pass^k trials, or humaneval replies per problem")
    temperature: float = Field(default=0.0, ge=0, description="sampling temperature where trials > 1 (humaneval)")


class SuiteConfig(BaseModel):
    """`bench.<profile>.harness`: which public benchmarks each model is scored on, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    bootstrap_resamples: int = Field(default=1000, gt=0)
    concurrency: int = Field(default=8, gt=0, description="requests in flight against an endpoint backend")
    tasks: dict[str, SuiteTask] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _known(cls, tasks: dict[str, SuiteTask]) -> dict[str, SuiteTask]:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown harness task(s) {unknown}; known: {', '.join(TASKS)}")
        return tasks


def run_suite(suite: SuiteConfig, backend: ChatBackend, out_dir: str | Path, cache: SampleCache | None,
              endpoint: bool = False, progress: bool = True) -> dict[str, TaskResult]:
    """Every task of `suite` on `backend`; `<out_dir>/<task>.samples.jsonl` and `<out_dir>/summary.json` as
    `k2 eval` writes them. `endpoint`: the backend is a remote server, queried `suite.concurrency` at a time."""
    base = TaskOptions(seed=suite.seed, loglikelihood=isinstance(backend, LoglikelihoodBackend))
    tasks = [task for name, spec in suite.tasks.items()
             for task in build_tasks([name], replace(base, limit=spec.limit, max_tokens=spec.max_tokens,
                                                     trials=spec.trials, temperature=spec.temperature))]
    concurrency = suite.concurrency if endpoint else 1
    settings: dict[str, Any] = {"suite": suite.model_dump()}
    return evaluate(tasks, backend, out_dir, cache, concurrency, suite.bootstrap_resamples, suite.seed, progress,
                    extra=settings)
