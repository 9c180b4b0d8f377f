"""Task names `k2 eval --tasks` and the bench accept, each a factory of a `Task` from `TaskOptions`.

Each name maps to a `LazyTask`: the task's module is imported only when the task is built, so `k2 eval --tasks mmlu`
does not pay for the IFEval checkers', BFCL's or τ²'s imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from k2core.errors import UserError
from k2core.eval.harness import Task, TaskOptions

TaskFactory = Callable[[TaskOptions], Task]


@dataclass(frozen=True)
class LazyTask:
    """`module.factory(*args, options, **kwargs)`, the module imported at the first call."""

    module: str
    factory: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, options: TaskOptions) -> Task:
        factory = getattr(importlib.import_module(self.module), self.factory)
        return factory(*self.args, options, **self.kwargs)  # type: ignore[no-any-return]


TASKS: dict[str, TaskFactory] = {
    "mmlu": LazyTask("k2core.eval.mmlu", "mmlu_task", ("mmlu",), {"shots": 0}),
    "mmlu_5shot": LazyTask("k2core.eval.mmlu", "mmlu_task", ("mmlu_5shot",), {"shots": 5}),
    "mmlu_cloze": LazyTask("k2core.eval.mmlu", "mmlu_task", ("mmlu_cloze",), {"shots": 0, "mode": "cloze"}),
    "gsm_symbolic": LazyTask("k2core.eval.math_task", "math_task"),
    "ifbench": LazyTask("k2core.eval.ifeval_task", "ifbench_task"),
    "humaneval": LazyTask("k2core.eval.humaneval_task", "humaneval_task"),
    "lm_loss": LazyTask("k2core.eval.lm_task", "lm_task"),
    "bfcl": LazyTask("k2core.eval.bfcl_task", "bfcl_task"),
    "bfcl_multi_turn": LazyTask("k2core.eval.bfcl_task", "bfcl_multi_turn_task"),
    "tau2_airline": LazyTask("k2core.eval.tau2_task", "tau2_task", ("airline",)),
    "tau2_retail": LazyTask("k2core.eval.tau2_task", "tau2_task", ("retail",)),
}


def build_tasks(names: list[str], options: TaskOptions) -> list[Task]:
    """The named tasks, in the order given; an unknown name fails naming the known ones."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if not names:
        raise UserError(f"no tasks given; known: {', '.join(TASKS)}")
    return [TASKS[n](options) for n in names]
