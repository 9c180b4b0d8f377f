"""Ask DVC to reproduce one stage; DVC decides whether it is stale."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tasks import k2_task

# The stage process DVC starts reads this to run its flow as a subflow of this task's flow run (flows/subflows.py).
PARENT_TASK_RUN_ENV = "K2_PREFECT_PARENT_TASK_RUN_ID"


@k2_task(name="dvc-repro", tags=["dvc"])
def reproduce(stage: str, root: Path, force: bool = False) -> list[str]:
    """Reproduce `stage` alone (the pipeline flow orders the stages); returns what ran.

    A failed stage raises DVC's `ReproductionError` ("failed to reproduce 'NAME'"), which fails the pipeline run
    with a message naming the stage; it is deterministic, so not retried here (the stage's tasks retry their own
    transient faults)."""
    from dvc.repo import Repo
    from prefect.runtime import task_run

    os.environ[PARENT_TASK_RUN_ENV] = task_run.id
    try:  # DVC resolves stage paths against the working directory: run it from `root` (a worker may start elsewhere)
        with contextlib.chdir(root), Repo(str(root)) as repo:
            ran = repo.reproduce(stage, single_item=True, force=force)
    finally:
        os.environ.pop(PARENT_TASK_RUN_ENV, None)
    return [item.addressing for item in ran]
