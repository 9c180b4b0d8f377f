"""A stage flow that DVC runs in its own process appears under the pipeline run that asked for it.

Prefect links a subflow run to its parent through the run's `parent_task_run_id`, and sets it only when the subflow
is called inside the parent's process. The stages run in other processes (`dvc repro` -> `k2 stage NAME`), so the
pipeline's `dvc-repro` task hands its task run id down in `K2_PREFECT_PARENT_TASK_RUN_ID` (tasks/dvc_stage.py). The
stage process creates its flow run with that parent (named `<pipeline run>/<stage>`, with the pipeline run's tags)
and runs the flow in it with `run_flow(flow, flow_run=...)`, which is how a worker runs a deployment's flow run. The
Prefect UI then shows one pipeline run with each stage as a subflow run under its `dvc-repro` task.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from prefect import Flow

from tasks.dvc_stage import PARENT_TASK_RUN_ENV


def run_stage_flow(stage_flow: Flow[[], Any]) -> Any:
    """Run `stage_flow` as a subflow of the pipeline task named in the environment, or on its own without one."""
    parent = os.environ.get(PARENT_TASK_RUN_ENV)
    if not parent:
        return stage_flow()
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        parent_task_run = client.read_task_run(UUID(parent))
        pipeline_run = client.read_flow_run(parent_task_run.flow_run_id)
        flow_run = client.create_flow_run(stage_flow, name=f"{pipeline_run.name}/{stage_flow.name}",
                                          parent_task_run_id=parent_task_run.id, tags=pipeline_run.tags)
    return run_flow(stage_flow, flow_run=flow_run)
