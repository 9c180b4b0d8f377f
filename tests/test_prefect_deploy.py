"""prefect.yaml is accepted by `prefect deploy --all` against a real local Prefect server."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_deploy_all_creates_the_nightly_pipeline_deployment(prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "K2_ROOT": str(REPO)}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "k2-process", "--type", "process", "--overwrite"],
                   env=env, check=True, capture_output=True)
    deployed = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                              capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("pipeline/nightly")
    assert deployment.work_pool_name == "k2-process"
    assert deployment.entrypoint == "flows/pipeline.py:pipeline"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.schedules[0].active
    assert deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
