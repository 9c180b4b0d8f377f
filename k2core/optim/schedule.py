"""Warmup-Stable-Decay learning-rate multiplier (K2 §2.5: warm-up, constant lr, then cosine decay).

Used as `torch.optim.lr_scheduler.LambdaLR(optimizer, wsd_lambda(...))`; the multiplier is applied
to every group's base lr, so the Muon and AdamW groups follow the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

DecayShape = Literal["cosine", "linear"]


def wsd_lambda(
    total_steps: int,
    warmup_steps: int,
    decay_steps: int,
    final_fraction: float,
    decay_shape: DecayShape = "cosine",
) -> Callable[[int], float]:
    """Multiplier for step `s` (0-based): linear warm-up to 1, hold at 1, decay to `final_fraction`.

    Warm-up ends at `warmup_steps` (multiplier (s+1)/warmup_steps so step 0 already trains); decay
    covers the last `decay_steps` steps and reaches `final_fraction` on the last step.
    """
    if total_steps < 1 or warmup_steps < 0 or decay_steps < 0:
        raise ValueError(
            f"need total_steps >= 1 and non-negative phases, got {total_steps}, {warmup_steps}, {decay_steps}"
        )
    if warmup_steps + decay_steps > total_steps:
        raise ValueError(
            f"warmup ({warmup_steps}) + decay ({decay_steps}) exceed total steps ({total_steps}); "
            "lower the warm-up/decay fractions or train longer"
        )
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must lie in [0, 1], got {final_fraction}")
    decay_start = total_steps - decay_steps

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step < decay_start or decay_steps == 0:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        if decay_shape == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif decay_shape == "linear":
            shape = 1.0 - progress
        else:
            raise ValueError(f"decay_shape must be 'cosine' or 'linear', got {decay_shape!r}")
        return final_fraction + (1.0 - final_fraction) * shape

    return multiplier


def wsd_from_fractions(
    total_steps: int,
    warmup_fraction: float,
    decay_fraction: float,
    final_fraction: float,
    decay_shape: DecayShape = "cosine",
) -> Callable[[int], float]:
    """`wsd_lambda` with phases given as fractions of the run (how training configs state them)."""
    warmup = round(warmup_fraction * total_steps)
    decay = round(decay_fraction * total_steps)
    return wsd_lambda(total_steps, warmup, decay, final_fraction, decay_shape)
