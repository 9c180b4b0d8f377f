"""What every stage does once: config, tracking run, tags, metrics file.

Each stage flow hands `run_stage` a body that receives its validated configs and
a tracker and returns its metrics; nothing here is repeated per stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.layout import PLOTS_DIR, STAGE_SECTIONS, metrics_path
from flows.lineage import log_stage_inputs
from flows.provenance import git_commit, is_primary_rank, log_dvc_stage, prefect_tags
from flows.publishing import mlflow_artifact_root, prepare_inputs, publish_stage, storage_config
from k2core.config import load_params
from k2core.storage import write_json
from k2core.tracking import InMemoryTracker, Tracker
from k2core.tracking.base import RecordingTracker
from k2core.tracking.plots import write_history
from k2core.tracking.mlflow_tracker import open_run

StageBody = Callable[[dict[str, BaseModel], Tracker], dict[str, Any]]


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dict -> keys joined by `sep` (dotted for MLflow params, as params.yaml names them)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}{sep}", sep))
        else:
            flat[name] = value
    return flat


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among metrics, nested keys joined by "/" as every other metric key is; MLflow takes only
    numbers."""
    out = {}
    for key, value in flatten(metrics, sep="/").items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


def run_stage(stage: str, body: StageBody, root: Path | None = None, log_summary: bool = True) -> dict[str, Any]:
    """Run one stage body inside a tagged MLflow run and write `metrics/<stage>.json` (rank 0 only); with
    `storage.root` set, missing inputs are fetched from it first and the stage's outputs published to it last.

    The run lists the datasets and checkpoints the stage reads as MLflow inputs. Its numbers are logged as the run's
    metrics too unless `log_summary` is False (bench logs each model's scores on a child run of its own)."""
    root = root or Path.cwd()
    params = load_params(root / "params.yaml")
    sections = STAGE_SECTIONS[stage]
    configs = {name: params.section(name) for name in sections}
    if not is_primary_rank():
        return body(configs, InMemoryTracker())
    storage = storage_config(params)
    prepare_inputs(stage, root, storage)
    tags = {
        "k2.stage": stage,
        "dvc.stage": stage,
        "k2.profile": params.profile,
        "git.commit": git_commit(root),
        "k2.params_hash": "-".join(params.section_hash(name) for name in sections),
        **prefect_tags(),
        **({"k2.storage.root": storage.root} if storage.root else {}),
    }
    with open_run(stage, tags, root, mlflow_artifact_root(storage)) as run:
        tracker = RecordingTracker(run)
        tracker.log_params(flatten({name: params.section_dict(name) for name in sections}))
        log_stage_inputs(run, root, stage, storage.root)
        metrics = body(configs, tracker)
        metrics = {**metrics, "mlflow_run_id": run.run_id}
        write_json(metrics, root / metrics_path(stage))
        if log_summary:
            run.log_metrics(numeric_metrics(metrics))
        run.log_artifact(root / metrics_path(stage), "metrics")
        for path in write_history(tracker.history, root / PLOTS_DIR / stage, f"k2 {stage}"):
            run.log_artifact(path, "plots")
        log_dvc_stage(run, root, stage)  # last: every output this run writes is in place
        publish_stage(stage, root, storage)
    return metrics
