"""What produced a run: git commit, DVC stage and lock, params hash, Prefect flow run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Protocol

DVC_STAGE_ARTIFACT = "provenance/dvc_stage.json"


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


def dvc_stage_lock(root: Path, stage: str) -> dict[str, Any] | None:
    """The stage's dvc.lock entry as DVC writes it once this stage command exits (cmd, deps, params, outs, with DVC's
    md5s and `.dir` folder hashes), computed now with DVC's own code: the committed dvc.lock still holds the previous
    run's. Nothing is committed to the cache; the hashes land in DVC's state db, so DVC's own pass after the command
    reuses them instead of reading the files again. None outside a DVC project or for a stage dvc.yaml lacks."""
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return None
    from dvc.repo import Repo
    from dvc.stage.serialize import to_single_stage_lockfile

    with Repo(str(root)) as repo:
        found = [s for s in repo.index.stages if getattr(s, "name", None) == stage and s.dvcfile.relpath == "dvc.yaml"]
        if not found:
            return None
        found[0].save(run_cache=False)
        return json.loads(json.dumps(to_single_stage_lockfile(found[0])))


class _TagsAndDicts(Protocol):
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...


def _digest(entries: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:12]


def log_dvc_stage(run: _TagsAndDicts, root: Path, stage: str) -> dict[str, Any] | None:
    """Record in the run the stage's dependency and output hashes as this run leaves them: the lock entry as an
    artifact (DVC_STAGE_ARTIFACT), one `dvc.out.PATH` tag per output and short digests of all deps and outs."""
    lock = dvc_stage_lock(root, stage)
    if lock is None:
        return None
    run.log_dict(lock, DVC_STAGE_ARTIFACT)
    outs, deps = lock.get("outs", []), lock.get("deps", [])
    run.set_tags({"dvc.deps_digest": _digest(deps), "dvc.outs_digest": _digest(outs),
                  **{f"dvc.out.{out['path']}": out.get("md5", "") for out in outs}})
    return lock
