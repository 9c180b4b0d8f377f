"""Sampling-temperature decay over RL iterations (K2 §3.2: explore early, exploit later).

K2 gives no formula; the shape is a config choice. Every shape runs from `start` at step 0 to
`end` at the last step and never increases.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class TemperatureSchedule(BaseModel):
    """From `start` (exploration) down to `end` (exploitation) over the run."""

    model_config = ConfigDict(extra="forbid")

    start: float
    end: float
    shape: Literal["linear", "cosine", "exponential"]

    @model_validator(mode="after")
    def _decays(self) -> TemperatureSchedule:
        if not self.start >= self.end > 0:
            raise ValueError(
                f"temperature must decay: need start >= end > 0, got start={self.start}, end={self.end}"
            )
        return self


def temperature_at(schedule: TemperatureSchedule, step: int, total_steps: int) -> float:
    """The sampling temperature at iteration `step` of `total_steps` (0-based; the last step gives `end`)."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside 0..{total_steps - 1}")
    frac = step / (total_steps - 1) if total_steps > 1 else 0.0
    if schedule.shape == "linear":
        return schedule.start + (schedule.end - schedule.start) * frac
    if schedule.shape == "cosine":
        return schedule.end + (schedule.start - schedule.end) * 0.5 * (1 + math.cos(math.pi * frac))
    return schedule.start * (schedule.end / schedule.start) ** frac
