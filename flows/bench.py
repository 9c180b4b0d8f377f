"""Stage `bench`: every checkpoint (and each configured external model) on held-out text, math and tool tasks.

Each evaluated model gets a child MLflow run of its own, nested under the bench run and tagged with the model, so
MLflow's compare view lines the checkpoints up key by key (`bench/<task>/<metric>`); a checkpoint's scores are
logged against its LoggedModel too, for the models view. The whole is `metrics/bench.json` (for DVC) and a
self-contained HTML comparison report in `reports/`, logged to the bench run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows import layout
from flows.lineage import checkpoint_record, stage_datasets
from flows.publishing import mlflow_artifact_root, storage_config
from flows.report import write_report
from flows.stage_runner import run_stage
from k2core.config import load_params
from k2core.eval.bench import Entry, bench_metrics
from k2core.tracking.base import DatasetRef
from k2core.tracking.mlflow_tracker import MlflowTracker, open_run
from tasks.evaluation import benchmark

# Tags a model's evaluation run shares with the bench run that made it (what produced it, not what it is).
SHARED_TAGS = ("dvc.stage", "k2.profile", "git.commit", "k2.params_hash", "k2.storage.root", "prefect.flow_run_id",
               "prefect.flow_run_name")


RESULT_ARTIFACT = "bench/result.json"  # one name on every evaluation run, so the compare view lines them up too


class EvaluationRuns:
    """Logs each model's result, as the bench finishes it, to a child run of the bench run."""

    def __init__(self, parent: MlflowTracker, root: Path, datasets: list[DatasetRef], checkpoints: list[str],
                 artifact_location: str | None) -> None:
        self.parent, self.root, self.datasets = parent, root, datasets
        self.checkpoints, self.artifact_location = checkpoints, artifact_location
        tags = parent.client.get_run(parent.run_id).data.tags
        self.tags = {key: tags[key] for key in SHARED_TAGS if key in tags}

    def _inputs(self, entry: Entry) -> list[DatasetRef]:
        """The bench's datasets, less the checkpoints of the other models."""
        return [d for d in self.datasets if d.name not in self.checkpoints or d.name == entry.get("path")]

    def __call__(self, name: str, entry: Entry) -> dict[str, Any]:
        record = checkpoint_record(self.root / entry["path"]) if entry["kind"] == "checkpoint" else {}
        model_id = record.get("mlflow_model_id")
        model_id = model_id if model_id and self.parent.has_model(model_id) else None
        tags = {**self.tags, "k2.stage": "bench", "k2.bench.model": name, "k2.bench.kind": entry["kind"],
                **({"k2.checkpoint": record.get("stage", name)} if entry["kind"] == "checkpoint" else {}),
                **({"k2.model_id": model_id} if model_id else {})}
        with open_run(f"bench-{name}", tags, self.root, self.artifact_location, parent=self.parent.run_id) as run:
            run.log_inputs(self._inputs(entry), "evaluation", [model_id] if model_id else [])
            run.log_metrics_for_model(bench_metrics(entry["tasks"]), model_id)
            run.log_dict(entry, RESULT_ARTIFACT)
            samples = Path(entry.get("samples_dir", ""))
            if samples.is_dir():
                run.log_artifact(self.root / samples, "bench/samples")
        return {"mlflow_run_id": run.run_id, "model_id": model_id, "training_run_id": record.get("mlflow_run_id"),
                "stage": record.get("stage")}


@flow(name="bench")
def bench_flow() -> dict:
    def body(cfg, tracker):
        root = Path.cwd()
        storage = storage_config(load_params(root / "params.yaml"))
        checkpoints = {stage: layout.checkpoint_dir(stage) for stage in layout.CHECKPOINT_STAGES}
        parent = getattr(tracker, "inner", tracker)
        runs = None
        if isinstance(parent, MlflowTracker):
            runs = EvaluationRuns(parent, root, stage_datasets(root, "bench", storage.root),
                                  [str(path) for path in checkpoints.values()], mlflow_artifact_root(storage))
        results = benchmark(checkpoints, layout.TOKENIZER_DIR, layout.VALIDATED_DIR, cfg["bench"], on_result=runs,
                            samples_dir=layout.BENCH_SAMPLES_DIR, cache_dir=layout.BENCH_CACHE_DIR)
        report = write_report(results, root / layout.REPORT_PATH, parent if runs else None)
        if runs:
            parent.log_artifact(report, "reports")
        return results

    return run_stage("bench", body, log_summary=False)
