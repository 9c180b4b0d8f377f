"""Task names `k2 eval --tasks` and the bench accept, each a factory of a `Task` from `TaskOptions`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from k2core.errors import UserError
from k2core.eval.bfcl_task import bfcl_multi_turn_task, bfcl_task
from k2core.eval.harness import Task, TaskOptions
from k2core.eval.ifeval_task import ifbench_task
from k2core.eval.math_task import math_task
from k2core.eval.mmlu import mmlu_task
from k2core.eval.tau2_task import tau2_task

TaskFactory = Callable[[TaskOptions], Task]

TASKS: dict[str, TaskFactory] = {
    "mmlu": partial(mmlu_task, "mmlu", shots=0),
    "mmlu_5shot": partial(mmlu_task, "mmlu_5shot", shots=5),
    "mmlu_cloze": partial(mmlu_task, "mmlu_cloze", shots=0, mode="cloze"),
    "gsm_symbolic": math_task,
    "ifbench": ifbench_task,
    "bfcl": bfcl_task,
    "bfcl_multi_turn": bfcl_multi_turn_task,
    "tau2_airline": partial(tau2_task, "airline"),
    "tau2_retail": partial(tau2_task, "retail"),
}


def build_tasks(names: list[str], options: TaskOptions) -> list[Task]:
    """The named tasks, in the order given; an unknown name fails naming the known ones."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if not names:
        raise UserError(f"no tasks given; known: {', '.join(TASKS)}")
    return [TASKS[n](options) for n in names]
