"""The tracking interface every training loop and stage logs through.

Training code depends on this small protocol, never on MLflow, so that `k2core`
stays importable and testable without a tracking server (the OLMo-core callback
pattern). `k2core.tracking.mlflow_tracker` implements it for real runs and
`InMemoryTracker` records everything for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class DatasetRef:
    """A dataset a run read, as lineage records it: its repository path, content hash (DVC's md5, `.dir` for a
    folder), where it lives (a local path or an `s3://` URI) and a few facts about it (size, file count)."""

    name: str
    digest: str
    source: str
    profile: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tracker(Protocol):
    """What a stage may record about itself."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...


class InMemoryTracker:
    """Keeps every logged value in plain Python containers; for tests and dry runs."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.dicts: dict[str, dict[str, Any]] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(path), artifact_path))

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.dicts[artifact_file] = data

    def last(self, key: str) -> float:
        """The most recent value logged under `key`."""
        return self.metrics[key][-1][1]


class RecordingTracker:
    """Forwards to another tracker and keeps the stepped metric history, for plots files."""

    def __init__(self, inner: Tracker) -> None:
        self.inner = inner
        self.history: dict[str, list[tuple[int, float]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.inner.log_metrics(metrics, step)
        if step is not None:
            for key, value in metrics.items():
                self.history.setdefault(key, []).append((step, float(value)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.inner.set_tags(tags)

    def last_step(self) -> int:
        """The highest step any metric was logged at (0 if none): the step a stage's final model belongs to."""
        return max((step for series in self.history.values() for step, _ in series), default=0)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.inner.log_artifact(path, artifact_path)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.inner.log_dict(data, artifact_file)
