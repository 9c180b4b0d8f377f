"""Processes k2 starts die with it (SIGTERM, SIGKILL), and its servers listen on 127.0.0.1 only.

These run the real `k2` console script of this environment, by path, as a user would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.interpreter import scripts_dir
from tests.conftest import REPO
from tests.process_tree import descendants, listening_ips, wait_gone

pytestmark = pytest.mark.integration

K2 = str(scripts_dir() / "k2")


def _clean_env() -> dict[str, str]:
    """The environment of a user who called k2 by path: no venv on PATH, no Prefect API of ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_API_URL", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.base_prefix) / 'bin'}:/usr/bin:/bin"
    return env


def _start_ui(root: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([K2, "ui", "--root", str(root)], env=_clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 300
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C stops both" in line or time.monotonic() > deadline:
            break
    assert process.poll() is None, "".join(lines)
    return process, "".join(lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_k2_ui_servers_bind_loopback_and_die_with_it(tmp_path, sig):
    process, banner = _start_ui(tmp_path)
    try:
        children = descendants(process.pid)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("prefect server start" in c for c in commands) and any("mlflow server" in c for c in commands)
        assert listening_ips(children) == {"127.0.0.1"}, banner
        process.send_signal(sig)
        process.wait(60)
        left = wait_gone(children, timeout=40)
        assert not left, [" ".join(p.cmdline()) for p in left]
    finally:
        if process.poll() is None:
            process.kill()


def _kill_once_its_prefect_server_runs(process: subprocess.Popen) -> None:
    """SIGKILL `process` as soon as a Prefect server runs under it; assert everything under it dies too."""
    try:
        deadline = time.monotonic() + 120
        tree = []
        while time.monotonic() < deadline and not any("prefect server" in " ".join(p.cmdline()) for p in tree):
            time.sleep(0.5)
            tree = descendants(process.pid)
        assert any(" stage validate" in " ".join(p.cmdline()) for p in [psutil.Process(process.pid), *tree])
        assert any("prefect server" in " ".join(p.cmdline()) for p in tree), "the stage started no Prefect server"
        process.kill()
        process.wait(30)
        left = wait_gone(tree, timeout=40)
        assert not left, [" ".join(p.cmdline()) for p in left]
    finally:
        if process.poll() is None:
            process.kill()


def test_a_stage_killed_with_sigkill_leaves_no_prefect_server(tmp_path):
    """`k2 stage` outside `k2 run` (as `dvc repro` calls it) starts a Prefect server of its own; SIGKILL the
    stage while that server runs and the server goes too."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    stage = subprocess.Popen([K2, "stage", "validate"], cwd=tmp_path, env=_clean_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_once_its_prefect_server_runs(stage)


def test_a_stage_dies_with_the_process_that_started_it(tmp_path):
    """DVC starts `k2 stage NAME` through a shell from `k2 run`; SIGKILL that parent and the stage, with its
    Prefect server, goes too."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    starter = "import subprocess, sys, time; subprocess.Popen(['bash', '-c', sys.argv[1] + ' stage validate']); time.sleep(600)"
    _kill_once_its_prefect_server_runs(subprocess.Popen([sys.executable, "-c", starter, K2], cwd=tmp_path,
                                                        env=_clean_env()))


TERMINATED_FLOW = """
import signal, sys, time
from pathlib import Path
from flows.cli import _terminate
from flows.servers import prefect_server

signal.signal(signal.SIGTERM, _terminate)
with prefect_server(Path(sys.argv[1])):
    from prefect import flow, get_run_logger

    @flow
    def busy() -> None:
        for i in range(3000):
            get_run_logger().info("tick %d", i)
            if i == 3:
                print("STARTED", flush=True)
            time.sleep(0.1)

    busy()
"""


def test_sigterm_mid_flow_flushes_prefect_logs_before_the_server_stops(tmp_path):
    """A SIGTERMed `k2` (its handler, its server context, a real Prefect flow logging to the API) sends the flow's
    queued logs and its Crashed state while the server still runs, then stops the server: no log is retried
    against a stopped server (which kept a SIGTERMed `k2 run` alive long after its servers were gone)."""
    process = subprocess.Popen([sys.executable, "-c", TERMINATED_FLOW, str(tmp_path)], cwd=REPO, env=_clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "STARTED" in line:
                break
        tree = descendants(process.pid)
        assert any("prefect server" in " ".join(p.cmdline()) for p in tree), "".join(lines)
        process.send_signal(signal.SIGTERM)
        output = "".join(lines) + process.communicate(timeout=120)[0]
        assert process.returncode == 128 + signal.SIGTERM, output
        assert "Crashed('Execution was aborted by a termination signal.')" in output, output
        assert "Error logging to API" not in output, output
        assert not wait_gone(tree, timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
