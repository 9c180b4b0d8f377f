"""The data a stage run read, as MLflow inputs: each dataset with its DVC hash, and each checkpoint's LoggedModel.

A stage's datasets are its dvc.yaml dependencies that another stage writes (or that lie outside the repository, such
as the shared MCP server catalogue); the code it runs is not data. The digest is the md5 DVC records in dvc.lock
(`<md5>.dir` for a folder), the source where the bytes live: `<storage.root>/<path>` when a storage root is set (the
stage fetched and publishes there), else the local path. MLflow's lineage then leads from a checkpoint's LoggedModel
to its training run and from there to the exact bytes it read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flows.publishing import stage_outputs
from k2core.storage import read_json
from k2core.storage.root import storage_uri
from k2core.tracking.base import DatasetRef
from k2core.tracking.mlflow_tracker import RUN_RECORD, MlflowTracker

# How each stage uses what it reads (MLflow's dataset context); the others prepare or train the model.
CONTEXTS = {"synth": "synthesis", "bench": "evaluation"}


def input_context(stage: str) -> str:
    return CONTEXTS.get(stage, "training")


def data_deps(root: Path, stage: str) -> list[str]:
    """The dependencies of `stage` that are data: another stage's outputs, or files outside the repository."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    produced = [out for other in stages if other != stage for out in stage_outputs(other, root)]
    return [dep for dep in stages[stage].get("deps", [])
            if dep.startswith("../") or any(dep == out or dep.startswith(out + "/") for out in produced)]


def _dep_hashes(root: Path, stage: str, paths: list[str]) -> dict[str, dict[str, Any]]:
    """DVC's entry (md5, size, nfiles) for each of `paths`, computed with DVC's own code (its state db keeps the
    hashes, so the lock DVC writes after the command reuses them)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = [s for s in repo.index.stages if getattr(s, "name", None) == stage and s.dvcfile.relpath == "dvc.yaml"]
        if not found:
            return {}
        entries = {}
        for dep in found[0].deps:
            if dep.def_path in paths and dep.exists:
                dep.save()
                entries[dep.def_path] = dep.dumpd()
        return entries


def is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def stage_datasets(root: Path, stage: str, storage_root: str | None) -> list[DatasetRef]:
    """Every dataset `stage` reads, hashed as DVC hashes it; none outside a DVC project (no hashes to name them by)."""
    if not is_dvc_project(root):
        return []
    paths = data_deps(root, stage)
    hashes = _dep_hashes(root, stage, paths)
    refs = []
    for path in paths:
        entry = hashes.get(path)
        if entry is None:
            continue
        inside = storage_root and not path.startswith("../")
        source = storage_uri(storage_root, path) if inside else str((root / path).resolve())
        profile = {key: entry[key] for key in ("size", "nfiles") if key in entry}
        refs.append(DatasetRef(name=path, digest=str(entry.get("md5", "")), source=source, profile=profile))
    return refs


def checkpoint_record(folder: Path) -> dict[str, Any]:
    """The run record beside a published checkpoint (stage, MLflow run and LoggedModel ids); {} for a folder k2 did
    not publish."""
    record = folder / RUN_RECORD
    return read_json(record) if record.is_file() else {}


def checkpoint_model_id(folder: Path) -> str | None:
    """The MLflow LoggedModel id recorded beside a published checkpoint (None for a folder k2 did not publish)."""
    return checkpoint_record(folder).get("mlflow_model_id")


def input_model_ids(root: Path, stage: str) -> list[str]:
    """The LoggedModels of the checkpoints `stage` reads (SFT reads pretrain's, RL SFT's, bench all three)."""
    found = []
    for path in data_deps(root, stage):
        model_id = checkpoint_model_id(root / path)
        if model_id and model_id not in found:
            found.append(model_id)
    return found


def log_stage_inputs(run: MlflowTracker, root: Path, stage: str, storage_root: str | None) -> list[DatasetRef]:
    """Log what `stage` reads on its run: its datasets (context by stage) and the checkpoints' LoggedModels; nothing
    outside a DVC project."""
    if not is_dvc_project(root):
        return []
    datasets = stage_datasets(root, stage, storage_root)
    run.log_inputs(datasets, input_context(stage), input_model_ids(root, stage))
    return datasets
