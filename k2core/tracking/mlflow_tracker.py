"""MLflow implementation of the tracking interface.

Runs are addressed by id through `MlflowClient`, never through MLflow's
thread-local active-run stack, so logging works from any thread (Prefect runs
tasks in worker threads). Stages nest under the pipeline's parent run when
`MLFLOW_PARENT_RUN_ID` is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT = "k2"
PARENT_ENV = "MLFLOW_PARENT_RUN_ID"


def tracking_uri(root: str | Path = ".") -> str:
    """`MLFLOW_TRACKING_URI` if set, else a sqlite store at the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def _client(root: str | Path = "."):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root))


def experiment_id(client, root: str | Path = ".", artifact_location: str | None = None) -> str:
    """The `k2` experiment, created on first use with its artifacts at `artifact_location` (e.g. `s3://...`; the
    clients upload there with boto3), else beside a sqlite store, else where the tracking server puts them."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        if artifact_location and experiment.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
            from k2core.config import ConfigError

            raise ConfigError(
                f"MLflow experiment {EXPERIMENT!r} at {tracking_uri(root)} keeps its artifacts at "
                f"{experiment.artifact_location}, not {artifact_location} (storage.root): an experiment's artifact "
                f"location cannot change; use a new tracking store (MLFLOW_TRACKING_URI) or set storage.root back")
        return experiment.experiment_id
    location = artifact_location
    if location is None and tracking_uri(root).startswith("sqlite:"):
        location = (Path(root).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location)


class MlflowTracker:
    """Logs to one MLflow run by id."""

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        with self._artifact_store():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        with self._artifact_store():
            self.client.log_dict(self.run_id, data, artifact_file)

    @contextlib.contextmanager
    def _artifact_store(self) -> Iterator[None]:
        """An artifact upload that failed (after boto3's retries, for S3) becomes one line naming the store."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001
            from k2core.storage.root import describe_failure

            uri = self.client.get_run(self.run_id).info.artifact_uri
            raise describe_failure(uri, "logging an MLflow artifact to", exc, None,
                                   remedy="the run is marked FAILED; rerun the stage once the store is healthy"
                                   ) from exc

    def register_checkpoint(self, artifact_path: str, name: str) -> str:
        """Register the logged checkpoint folder as a new version of model `name`."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException:
            pass  # already registered: add a version below
        version = self.client.create_model_version(
            name, source=f"runs:/{self.run_id}/{artifact_path}", run_id=self.run_id
        )
        return str(version.version)


@contextlib.contextmanager
def open_run(name: str, tags: dict[str, str], root: str | Path = ".",
             artifact_location: str | None = None) -> Iterator[MlflowTracker]:
    """Start a run (nested under `MLFLOW_PARENT_RUN_ID` if set), end it FINISHED or FAILED."""
    client = _client(root)
    run_tags = dict(tags)
    parent = os.environ.get(PARENT_ENV)
    if parent:
        run_tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id(client, root, artifact_location), run_name=name, tags=run_tags)
    tracker = MlflowTracker(client, run.info.run_id)
    try:
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
