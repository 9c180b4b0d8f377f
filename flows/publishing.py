"""Each stage's outputs in the storage root (`storage.root`), beside the DVC working copy.

DVC 3 cannot track `s3://` outputs in dvc.yaml, so the repository's outputs stay DVC's working copy (and its
cache goes to a DVC remote, `dvc push`); after a stage runs, its outputs from dvc.yaml (datasets, quarantine
reports, checkpoints, metrics, plots; not the persistent resume state) are published to
`<storage.root>/<path>` through k2core.storage.publish (versions first, manifest last). A stage whose input is
missing locally, e.g. `k2 stage sft` on a machine that only has the storage root, fetches it from there first.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from k2core.config import Params
from k2core.storage.publish import fetch, publish_path
from k2core.storage.root import StorageConfig, check_root, storage_uri


def _names(entries: list) -> list[tuple[str, dict]]:
    return [next(iter(e.items())) if isinstance(e, dict) else (e, {}) for e in entries]


def stage_outputs(stage: str, root: Path) -> list[str]:
    """What a stage publishes: its dvc.yaml outs (persistent resume state excluded), metrics and plots."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    outs = [name for name, options in _names(spec.get("outs", [])) if not (options or {}).get("persist")]
    return outs + [name for key in ("metrics", "plots") for name, _ in _names(spec.get(key, []))]


def stage_inputs(stage: str, root: Path) -> list[str]:
    """The upstream outputs a stage reads: each dependency that lies in another stage's published folder."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    produced = {name for other in stages if other != stage for name in stage_outputs(other, root)}
    inputs = []
    for dep in stages[stage].get("deps", []):
        owner = next((out for out in produced if dep == out or dep.startswith(out + "/")), None)
        if owner and owner not in inputs:
            inputs.append(owner)
    return inputs


def storage_config(params: Params) -> StorageConfig:
    return params.section("storage")  # type: ignore[return-value]


def mlflow_artifact_root(storage: StorageConfig) -> str | None:
    """MLflow artifacts live in the storage root too (`<root>/mlartifacts`) when one is set."""
    return storage_uri(storage.root, "mlartifacts") if storage.root else None


def prepare_inputs(stage: str, root: Path, storage: StorageConfig) -> list[str]:
    """Fail fast on an unusable root; fetch the inputs that are missing locally. Returns what was fetched."""
    if not storage.root:
        return []
    check_root(storage.root, storage.retries)
    fetched = []
    for name in stage_inputs(stage, root):
        if not (root / name).exists():
            fetch(storage_uri(storage.root, name), root / name, storage.retries)
            fetched.append(name)
    return fetched


def publish_stage(stage: str, root: Path, storage: StorageConfig) -> list[str]:
    """Publish every output of `stage` that exists locally; returns their storage URIs."""
    if not storage.root:
        return []
    return [publish_path(root, name, storage.root, storage.retries)
            for name in stage_outputs(stage, root) if (root / name).exists()]
