"""Shared shape of the three training stages: resume state, train, publish."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows import layout
from flows.provenance import is_primary_rank
from k2core.storage import content_digest, read_json, write_json
from tasks.training import publish_checkpoint


def code_digest(package: Path = Path(__file__).resolve().parents[1] / "k2core") -> str:
    """sha256 over the library's Python sources: resume state is only valid for the code that wrote it."""
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def fingerprint(configs: dict[str, BaseModel], inputs: list[Path]) -> str:
    """Identifies a training run by its configs, the bytes of its inputs and the library code."""
    payload = {
        "configs": {name: cfg.model_dump(mode="json") for name, cfg in configs.items()},
        "inputs": {str(path): content_digest(path) for path in inputs},
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare_resume_dir(stage: str, run_fingerprint: str) -> Path:
    """The stage's DeepSpeed state folder, wiped when it belongs to other params or data."""
    folder = layout.resume_dir(stage)
    stamp = folder / "fingerprint.json"
    if folder.exists() and (not stamp.exists() or read_json(stamp).get("fingerprint") != run_fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json({"fingerprint": run_fingerprint}, stamp)
    return folder


def train_and_publish(
    stage: str,
    configs: dict[str, BaseModel],
    inputs: list[Path],
    tracker,
    train: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    """Run `train(work_dir)`, which leaves an HF folder in `work_dir/hf`, then publish it.

    Under a distributed launcher only rank 0 prepares (and may wipe) the resume folder, before any rank can
    read it: the others wait inside `train` at process-group initialisation, which needs rank 0 too.
    """
    if not is_primary_rank():
        return train(layout.resume_dir(stage))
    work_dir = prepare_resume_dir(stage, fingerprint(configs, inputs))
    metrics = train(work_dir)
    version = publish_checkpoint(stage, work_dir / "hf", layout.checkpoint_dir(stage), tracker, tracker.last_step())
    return {**metrics, "model_version": int(version)}
