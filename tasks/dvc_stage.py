"""Ask DVC to reproduce one stage; DVC decides whether it is stale."""

from __future__ import annotations

from pathlib import Path

from tasks import k2_task


@k2_task(name="dvc-repro", tags=["dvc"])
def reproduce(stage: str, root: Path, force: bool = False) -> list[str]:
    """Reproduce `stage` alone (the pipeline flow orders the stages); returns what ran."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        ran = repo.reproduce(stage, single_item=True, force=force)
    return [item.addressing for item in ran]
