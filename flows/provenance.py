"""What produced a run: git commit, DVC stage and lock, params hash, Prefect flow run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def is_primary_rank() -> bool:
    """False on the non-zero ranks a distributed launcher (deepspeed, torchrun) starts; they train but do not
    record or publish, so one stage makes one MLflow run and one checkpoint however many ranks it has."""
    return int(os.environ.get("RANK", "0")) == 0


def git_commit(root: Path) -> str:
    """HEAD's commit, suffixed `-dirty` when tracked files differ from it."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def prefect_tags() -> dict[str, str]:
    """The enclosing Prefect flow run, if any (empty outside a flow)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return {}
    return {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.name)}
