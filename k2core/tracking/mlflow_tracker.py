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

from k2core.tracking.base import DatasetRef

EXPERIMENT = "k2"
PARENT_ENV = "MLFLOW_PARENT_RUN_ID"
CONTEXT_TAG = "mlflow.data.context"  # MLflow's own tag for how a run used a dataset input
RUN_RECORD = "k2_run.json"  # beside a published checkpoint: the MLflow run and LoggedModel that made it


def registered_model_name(stage: str) -> str:
    """The registry entry of a training stage's checkpoints (`k2-pretrain`, `k2-sft`, `k2-rl`)."""
    return f"k2-{stage}"


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

    def log_metrics_for_model(self, metrics: dict[str, float], model_id: str | None, step: int = 0) -> None:
        """Log `metrics` on this run and, when `model_id` is given, against that LoggedModel too (MLflow 3 links a
        metric to a model through its `model_id`): the models view then compares checkpoints by these keys."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step, model_id=model_id, run_id=self.run_id) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_inputs(self, datasets: list[DatasetRef], context: str, model_ids: list[str] | None = None) -> None:
        """Record the datasets this run read (MLflow dataset inputs tagged with `context`: training, evaluation or
        synthesis) and the LoggedModels it read (e.g. the checkpoint an evaluation scored)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

        inputs = [DatasetInput(Dataset(name=d.name, digest=d.digest,
                                       source_type="s3" if d.source.startswith("s3://") else "local",
                                       source=json.dumps({"uri": d.source}), profile=json.dumps(d.profile)),
                               tags=[InputTag(CONTEXT_TAG, context)]) for d in datasets]
        models = [LoggedModelInput(m) for m in model_ids or [] if self.has_model(m)]
        if inputs or models:
            self.client.log_inputs(self.run_id, datasets=inputs or None, models=models or None)

    def log_checkpoint_model(self, folder: str | Path, stage: str, model_id: str, step: int) -> str:
        """Log the HF checkpoint `folder` as the pending LoggedModel `model_id` (made by `new_model`) with the
        transformers flavor and register it as a new version of `k2-<stage>`; returns the version.

        transformers' DeepseekV3ForCausalLM reads a k2 checkpoint with our logits, so a user loads it back with
        `mlflow.transformers.load_model("models:/k2-<stage>/<version>")` and no k2 code. The requirements are
        pinned here, not inferred (inference runs a subprocess that imports the model: seconds per checkpoint)."""
        import mlflow
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = str(Path(folder).resolve())  # an absolute name is no Hub repo id: the flavor looks nothing up online
        model = AutoModelForCausalLM.from_pretrained(local)
        tokenizer = AutoTokenizer.from_pretrained(local)
        mlflow.set_tracking_uri(self.client.tracking_uri)  # the flavor logs through MLflow's default client
        with self._artifact_store():
            info = mlflow.transformers.log_model(
                {"model": model, "tokenizer": tokenizer}, name=f"k2-{stage}", task="text-generation",
                model_id=model_id, run_id=self.run_id, registered_model_name=registered_model_name(stage),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                  f"transformers=={transformers.__version__}"],
                step=step, await_registration_for=0)
        return str(info.registered_model_version)

    def has_model(self, model_id: str) -> bool:
        """Whether this tracking store holds LoggedModel `model_id` (a checkpoint may come from another store)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_logged_model(model_id)
        except MlflowException:
            return False
        return True

    def new_model(self, stage: str) -> str:
        """A pending LoggedModel for this run's checkpoint, so its id can be written into the checkpoint before the
        weights are logged (`log_checkpoint_model` finishes it)."""
        experiment = self.client.get_run(self.run_id).info.experiment_id
        model = self.client.create_logged_model(experiment, name=f"k2-{stage}", source_run_id=self.run_id,
                                                tags={"k2.stage": stage})
        return model.model_id


@contextlib.contextmanager
def open_run(name: str, tags: dict[str, str], root: str | Path = ".",
             artifact_location: str | None = None, parent: str | None = None) -> Iterator[MlflowTracker]:
    """Start a run nested under run `parent` (default: `MLFLOW_PARENT_RUN_ID` if set), end it FINISHED or FAILED."""
    client = _client(root)
    run_tags = dict(tags)
    parent = parent or os.environ.get(PARENT_ENV)
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
