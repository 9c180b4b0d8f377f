"""Scheduled runs, executed: `k2 deploy` and `k2 worker` against a real local Prefect server.

In a `ci` copy of the repository, `k2 deploy` (a real process) creates the work pool and prefect.yaml's deployments;
a run is triggered as the scheduler does (`run_deployment`) and a real `k2 worker --run-once` process executes it.
Read back through the API: the pipeline run's state, its stages as subflow runs (created by the stage processes DVC
starts) and their task runs; a broken input in the first stage fails the pipeline run, naming the stage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import layout
from flows.interpreter import scripts_dir
from flows.servers import free_port
from flows.workspace import clone_workspace
from tasks.dvc_stage import PARENT_TASK_RUN_ENV
from tests.conftest import REPO

pytestmark = pytest.mark.integration

K2 = str(scripts_dir() / "k2")
PIPELINE_TIMEOUT_S = 1800


def _env(api: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    for inherited in ("MLFLOW_TRACKING_URI", "MLFLOW_PARENT_RUN_ID", "K2_ROOT", PARENT_TASK_RUN_ENV):
        env.pop(inherited, None)
    return env


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, prefect_api):
    work = tmp_path_factory.mktemp("deploy") / "k2"
    work.mkdir()
    clone_workspace(REPO, work, profile="ci")
    env = _env(prefect_api)
    result = subprocess.run([K2, "deploy"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with _client(prefect_api) as client:
        nightly = client.read_deployment_by_name("pipeline/nightly")
        on_demand = client.read_deployment_by_name("pipeline/on-demand")
        pool = client.read_work_pool("k2-process")
        # Only the runs the tests trigger may reach the worker (a nightly run falls due at 02:00 UTC).
        client.pause_deployment(nightly.id)
    return work, env, {"nightly": nightly, "on-demand": on_demand, "pool": pool}


@contextlib.contextmanager
def _client(api: str) -> Iterator[SyncPrefectClient]:
    """A client of the session server (Prefect read its settings at import, before the server was up)."""
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def _trigger(api: str, **parameters: str) -> FlowRun:
    """Schedule an on-demand run now, as the scheduler or the UI's Run button does, without waiting for it."""
    with temporary_settings(updates={PREFECT_API_URL: api}):
        return run_deployment("pipeline/on-demand", parameters=parameters or None, timeout=0)


def _work_once(work: Path, env: dict[str, str]) -> float:
    """Run `k2 worker --run-once` until it has executed what is due; always stop its whole process group."""
    log = work.parent / f"worker-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        worker = subprocess.Popen([K2, "worker", "--run-once"], cwd=work, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = worker.wait(PIPELINE_TIMEOUT_S)
        finally:
            _stop_group(worker)
    assert code == 0, log.read_text()[-6000:]
    return time.monotonic() - started


def _stop_group(process: subprocess.Popen) -> None:
    """TERM, then KILL, the worker's process group (the worker ignores one SIGTERM), and every process under it: a
    flow run the worker started has a session of its own, with the stage processes in it."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(descendants, timeout=10)


def _stage_runs(client: SyncPrefectClient, pipeline_run: FlowRun) -> dict[str, FlowRun]:
    """The pipeline run's subflow runs by flow name, checked to hang off its own task runs."""
    own_tasks = {t.id for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [pipeline_run.id]}))}
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [pipeline_run.id]}))
    flows = {flow.id: flow.name for flow in client.read_flows()}
    for child in children:
        assert child.parent_task_run_id in own_tasks
        assert child.name.startswith(f"{pipeline_run.name}/")
    return {flows[child.flow_id]: child for child in children}


def test_deploy_creates_the_pool_and_both_deployments(deployed):
    work, _, read = deployed
    assert read["pool"].type == "process"
    nightly, on_demand = read["nightly"], read["on-demand"]
    for deployment in (nightly, on_demand):
        assert deployment.work_pool_name == "k2-process"
        assert deployment.entrypoint == "flows/pipeline.py:pipeline"
        step = deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
        assert step["directory"] == str(work)  # K2_ROOT, set by k2 deploy
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and nightly.schedules[0].active
    assert on_demand.schedules == []


def test_a_failing_first_stage_fails_the_pipeline_run_naming_it(deployed, prefect_api, tmp_path):
    work, env, _ = deployed
    # A truncated MCP server collection beside the copy (in place of ../shared): synth rejects it at run time.
    catalogue = tmp_path / "shared" / "data" / "mcp-servers" / "servers.jsonl"
    catalogue.parent.mkdir(parents=True)
    catalogue.write_text('{"name": "truncated", "tools": [\n')
    broken = tmp_path / "k2"
    broken.mkdir()
    clone_workspace(REPO, broken, profile="ci")

    triggered = _trigger(prefect_api, root=str(broken))
    _work_once(work, env)
    with _client(prefect_api) as client:
        run = client.read_flow_run(triggered.id)
        stages = _stage_runs(client, run)
    assert run.state.type == StateType.FAILED
    assert "'synth'" in run.state.message, run.state.message
    assert list(stages) == ["synth"] and stages["synth"].state.type == StateType.FAILED


def test_a_triggered_run_is_executed_by_a_worker_with_its_stages_as_subflows(deployed, prefect_api):
    work, env, _ = deployed
    triggered = _trigger(prefect_api)
    seconds = _work_once(work, env)
    print(f"\ntriggered ci pipeline run executed by the worker in {seconds:.0f} s")
    with _client(prefect_api) as client:
        run = client.read_flow_run(triggered.id)
        stages = _stage_runs(client, run)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [stage.id for stage in stages.values()]}))
    assert run.state.type == StateType.COMPLETED, run.state.message
    assert sorted(stages) == sorted(layout.STAGES)
    assert all(stage.state.type == StateType.COMPLETED for stage in stages.values())
    stage_of = {stage.id: name for name, stage in stages.items()}
    with_tasks = {stage_of[task.flow_run_id] for task in task_runs}
    assert with_tasks == set(layout.STAGES)
    assert all(task.state.type == StateType.COMPLETED for task in task_runs)
    assert (work / layout.metrics_path("bench")).exists()


@pytest.mark.parametrize("command", ["deploy", "worker"])
def test_without_a_reachable_prefect_api_the_commands_say_how_to_get_one(command, tmp_path):
    env = {key: value for key, value in _env("unused").items() if not key.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no profile that names an API either
    unset = subprocess.run([K2, command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert unset.returncode == 2
    assert "PREFECT_API_URL is not set" in unset.stderr and "k2 ui" in unset.stderr.splitlines()[-1]
    dead = f"http://127.0.0.1:{free_port(0)}/api"
    down = subprocess.run([K2, command], cwd=REPO, env={**env, "PREFECT_API_URL": dead}, capture_output=True,
                          text=True, timeout=120)
    assert down.returncode == 2 and f"no Prefect API answers at PREFECT_API_URL={dead}" in down.stderr
