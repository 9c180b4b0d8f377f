"""The bench's comparison report, filled from MLflow: each checkpoint's training run gives its curves, params,
datasets and commit, its LoggedModel and registry entry the ids a user loads it by."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from k2core.eval.report import CURVE_KEYS, ModelReport, render_report
from k2core.storage import write_text
from k2core.tracking.mlflow_tracker import MlflowTracker, registered_model_name

LINEAGE_TAGS = {"git.commit": "commit", "k2.params_hash": "params hash", "dvc.deps_digest": "deps digest",
                "dvc.outs_digest": "outs digest", "k2.profile": "profile"}


def _registered_version(client: Any, stage: str, model_id: str) -> str | None:
    versions = client.search_model_versions(f"name='{registered_model_name(stage)}'")
    return next((f"{v.name}/{v.version}" for v in versions if v.source == f"models:/{model_id}"), None)


def _from_training_run(report: ModelReport, client: Any, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        report.lineage["training run"] = f"{run_id} (not in this tracking store)"
        return
    report.lineage["training run"] = run_id
    report.lineage.update({label: run.data.tags[tag] for tag, label in LINEAGE_TAGS.items() if tag in run.data.tags})
    report.params = dict(run.data.params)
    report.datasets = [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs]
    report.curves = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
                     for key in CURVE_KEYS if key in run.data.metrics}


def model_reports(results: dict[str, Any], tracker: MlflowTracker | None) -> list[ModelReport]:
    """One report entry per model in a bench result (`k2core.eval.bench.run_bench`)."""
    reports = []
    for name, entry in results["models"].items():
        report = ModelReport(name, entry["kind"], entry["tasks"])
        if entry.get("path"):
            report.lineage["checkpoint"] = entry["path"]
        if entry.get("backend"):
            report.lineage["backend"] = entry["backend"]
        if tracker is not None:
            if entry.get("model_id"):
                report.lineage["LoggedModel"] = f"models:/{entry['model_id']}"
                version = _registered_version(tracker.client, entry.get("stage") or name, entry["model_id"])
                if version:
                    report.lineage["registered"] = f"models:/{version}"
            if entry.get("mlflow_run_id"):
                report.lineage["evaluation run"] = entry["mlflow_run_id"]
            if entry.get("training_run_id"):
                _from_training_run(report, tracker.client, entry["training_run_id"])
        reports.append(report)
    return reports


def write_report(results: dict[str, Any], path: Path, tracker: MlflowTracker | None) -> Path:
    """Render the comparison of every model in `results` to `path` (HTML, self-contained)."""
    meta = {"generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if tracker is not None:
        tags = tracker.client.get_run(tracker.run_id).data.tags
        meta.update({"bench run": tracker.run_id, **{label: tags[tag] for tag, label in LINEAGE_TAGS.items()
                                                     if tag in tags and tag.startswith(("git.", "k2."))}})
    write_text(render_report(model_reports(results, tracker), "k2 checkpoint comparison", meta), path)
    return path
