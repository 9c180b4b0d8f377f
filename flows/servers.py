"""Local Prefect and MLflow servers on 127.0.0.1, for `k2 run` and `k2 ui`.

A running Prefect API makes every stage process cheap to start (an ephemeral
server costs 15-30 s per process on 2 cores) and keeps the runs in one place,
`.prefect/` at the repository root, so `k2 ui` shows them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from flows.supervise import stop_group, supervised_popen
from k2core.tracking.mlflow_tracker import tracking_uri


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free loopback port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    """Poll `url` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode}; see its log")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def prefect_env(root: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS": "2",
    }


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a server under `flows.supervise`: it and its workers die with this process, even on SIGKILL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        return supervised_popen(cmd, {**os.environ, **env}, handle)


def _stop(process: subprocess.Popen) -> None:
    """Stop the supervisor's whole process group (the server and anything it started)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
    stop_group(process.pid, grace_s=5)
    process.wait()


@contextlib.contextmanager
def prefect_server(root: Path, port: int = 4200, ui: bool = False) -> Iterator[str]:
    """Yield a Prefect API URL: `PREFECT_API_URL` if set, else a local server started for the block."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    env = prefect_env(root)
    port = free_port(port)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    if not ui:
        cmd.append("--no-ui")
    process = _start(cmd, env, root / ".prefect" / "server.log")
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{api}/health", 240, process)
        os.environ.update({**env, "PREFECT_API_URL": api})
        yield api
    finally:
        flush_prefect_clients(timeout_s=15)
        os.environ.pop("PREFECT_API_URL", None)
        _stop(process)


def flush_prefect_clients(timeout_s: float) -> None:
    """Send Prefect's queued logs and events while its server still runs. Prefect would otherwise flush them at
    interpreter exit, against the server this process has just stopped, retrying with backoff (a SIGTERMed
    `k2 run` lingered for minutes after its servers were gone)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


@contextlib.contextmanager
def mlflow_server(root: Path, port: int = 5000) -> Iterator[str]:
    """An MLflow UI over the project's tracking store."""
    port = free_port(port)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri(root),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = _start(cmd, env, root / ".prefect" / "mlflow-ui.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 240, process)
        yield url
    finally:
        _stop(process)
