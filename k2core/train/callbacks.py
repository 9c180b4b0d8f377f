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


TRAIN_PREFIX = "train"
EVAL_PREFIX = "eval"


class TrackerCallback(Callback):
    """Sends step metrics as `train/<key>` and eval metrics as `eval/<key>` to a `k2core.tracking.Tracker`.

    The keys do not name the stage (the run's `k2.stage` tag does), so MLflow's compare view lines up the
    pretrain and SFT runs metric by metric."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def _log(self, prefix: str, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics({f"{prefix}/{key}": value for key, value in metrics.items()}, step=step)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self._log(TRAIN_PREFIX, step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._log(EVAL_PREFIX, step, metrics)
