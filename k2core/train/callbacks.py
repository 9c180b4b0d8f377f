"""Hooks into the training loop (OLMo-core style) so logging and tests stay out of the loop body."""

from __future__ import annotations

from pathlib import Path

from k2core.tracking import Tracker


class Callback:
    """Override any hook; the loop calls every hook of every callback in order."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """After optimizer step `step` (1-based) and QK-Clip; `metrics` holds that step's values."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """After an evaluation pass at step `step`."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After a DeepSpeed checkpoint for step `step` was written under `path`."""


class TrackerCallback(Callback):
    """Sends step and eval metrics to a `k2core.tracking.Tracker` under a stage prefix."""

    def __init__(self, tracker: Tracker, prefix: str) -> None:
        self.tracker = tracker
        self.prefix = prefix

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics({f"{self.prefix}/{key}": value for key, value in metrics.items()}, step=step)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)
