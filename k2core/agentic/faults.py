"""Seeded fault injection: K2's "controlled stochasticity" for executable tool environments.

Each tool call draws one outcome from `random.Random(seed)`, so a seed fixes the whole
sequence of faults and therefore the whole trajectory.
"""

from __future__ import annotations

import random
from typing import Literal

Outcome = Literal["ok", "transient", "edge"]

TRANSIENT_MESSAGE = "Error: service temporarily unavailable (503); nothing was changed, please retry"
EDGE_WRITE_MESSAGE = "Error: gateway timeout after commit; the change may have been applied, verify before retrying"
EDGE_READ_NOTICE = "results may be up to a minute stale"


class FaultInjector:
    """Draws success, transient error or edge case per call at fixed probabilities."""

    def __init__(self, p_transient: float, p_edge: float, seed: int) -> None:
        if p_transient < 0 or p_edge < 0 or p_transient + p_edge > 1:
            raise ValueError(f"fault probabilities must be >= 0 and sum to <= 1, got {p_transient}, {p_edge}")
        self.p_transient = p_transient
        self.p_edge = p_edge
        self._rng = random.Random(seed)

    def draw(self) -> Outcome:
        u = self._rng.random()
        if u < self.p_transient:
            return "transient"
        if u < self.p_transient + self.p_edge:
            return "edge"
        return "ok"


def no_faults() -> FaultInjector:
    """An injector that always succeeds (gold replay, judging)."""
    return FaultInjector(0.0, 0.0, 0)
