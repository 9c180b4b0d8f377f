"""`k2 deploy` and `k2 worker`: the pipeline run on a schedule or on demand by a Prefect process worker.

A schedule needs a Prefect server that stays up, so both commands use a running one (never an ephemeral server):
the one `PREFECT_API_URL` (or the active Prefect profile) names. On one machine `k2 ui` runs it:

    .venv/bin/k2 ui                                    # terminal 1: Prefect UI + API on http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api   # terminal 2 (use the port `k2 ui` printed)
    .venv/bin/k2 deploy                                # work pool + prefect.yaml's deployments
    .venv/bin/k2 worker                                # runs scheduled and triggered runs until Ctrl-C

`k2 deploy` creates the work pools prefect.yaml names (a `process` pool, `k2-process`) when missing, then runs
`prefect deploy --all` with `K2_ROOT` set to the repository root: the deployments' pull step makes the worker run
every flow run from there. `k2 worker` replaces itself with `prefect worker start --pool k2-process` on this
interpreter, so the flow runs it starts, and the stage processes DVC starts in them, use this environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import NoReturn

import yaml

from k2core.config import ConfigError

PREFECT_FILE = "prefect.yaml"
NO_API = (
    "needs a running Prefect server, and PREFECT_API_URL is not set. Start one with `.venv/bin/k2 ui` (it prints "
    "'Prefect UI: http://127.0.0.1:4200'), then `export PREFECT_API_URL=http://127.0.0.1:4200/api` in this shell; "
    "or point PREFECT_API_URL at your Prefect server (docs/operations.md, Scheduling)"
)


def prefect_api(command: str) -> str:
    """The Prefect API URL from the environment or profile, checked to answer; else one clear error saying how."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(f"{command} {NO_API}")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10):
            pass
    except OSError as error:
        raise ConfigError(f"{command}: no Prefect API answers at PREFECT_API_URL={url} ({error}); start the server "
                          "(`.venv/bin/k2 ui`) or fix the URL") from None
    return url


def work_pools(root: Path) -> list[str]:
    """The work pools prefect.yaml's deployments run on, in order of first use."""
    path = root / PREFECT_FILE
    if not path.exists():
        raise ConfigError(f"{path}: no prefect.yaml here; run from the repository root or pass --root")
    pools: list[str] = []
    for deployment in yaml.safe_load(path.read_text()).get("deployments") or []:
        name = (deployment.get("work_pool") or {}).get("name")
        if not name:
            raise ConfigError(f"{path}: deployment {deployment.get('name')!r} has no work_pool.name")
        if name not in pools:
            pools.append(name)
    return pools


def ensure_process_pools(names: list[str]) -> list[str]:
    """Create each missing work pool as a `process` pool; returns the names created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                created.append(name)
    return created


def deploy_command(args: argparse.Namespace) -> int:
    """`k2 deploy`: work pools, then every deployment in prefect.yaml, run from this repository."""
    root = Path(args.root).resolve()
    api = prefect_api("deploy")
    for name in ensure_process_pools(work_pools(root)):
        print(f"created process work pool {name!r}")
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
           str(root / PREFECT_FILE)]
    deployed = subprocess.run(cmd, cwd=root, env={**os.environ, "K2_ROOT": str(root), "PREFECT_API_URL": api})
    if deployed.returncode != 0:
        print(f"k2 deploy: `prefect deploy --all` failed (exit {deployed.returncode}); see its output above",
              file=sys.stderr)
        return deployed.returncode
    print(f"Deployed to {api} (runs execute in {root}). Start a worker: .venv/bin/k2 worker; "
          "trigger a run now: .venv/bin/python -m prefect deployment run pipeline/on-demand")
    return 0


def worker_command(args: argparse.Namespace) -> NoReturn:
    """`k2 worker`: become `prefect worker start --pool POOL [--run-once] [--limit N] [extra options]`."""
    root = Path(args.root).resolve()
    prefect_api("worker")
    pool = args.pool or work_pools(root)[0]
    ensure_process_pools([pool])
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    if args.run_once:
        cmd.append("--run-once")
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    extra = args.prefect_args[1:] if args.prefect_args[:1] == ["--"] else args.prefect_args
    sys.stdout.flush()
    os.execv(sys.executable, [*cmd, *extra])  # signals (Ctrl-C, TERM) reach the worker itself; no wrapper left


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """The `deploy` and `worker` subcommands."""
    deploy = sub.add_parser("deploy", help="create the work pool and deploy prefect.yaml (needs PREFECT_API_URL)")
    deploy.add_argument("--root", default=".", help="repository root the worker runs flows from (K2_ROOT)")
    deploy.set_defaults(handler=deploy_command)
    worker = sub.add_parser("worker", help="run a Prefect process worker for the deployments (needs PREFECT_API_URL)",
                            description="Runs `prefect worker start --pool k2-process`; options after `--` go to it.")
    worker.add_argument("--root", default=".", help="repository root whose prefect.yaml names the pool")
    worker.add_argument("--pool", help="work pool (default: the one prefect.yaml's deployments use)")
    worker.add_argument("--run-once", action="store_true", help="poll once, run what is due, exit when it is done")
    worker.add_argument("--limit", type=int, help="most flow runs at a time")
    worker.add_argument("prefect_args", nargs=argparse.REMAINDER, help="more `prefect worker start` options")
    worker.set_defaults(handler=worker_command)
