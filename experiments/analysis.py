"""Numbers read off the runs: best lr of a sweep, and the tokens one run needs to reach another's final loss."""

from __future__ import annotations

import math
from collections.abc import Sequence

from experiments.runner import RunResult


def final_val_loss(run: RunResult) -> float:
    """Validation loss after the last step (inf for a run that diverged)."""
    return math.inf if run.diverged else run.val_loss[-1]


def best_run(runs: Sequence[RunResult]) -> RunResult:
    """The run of a sweep with the lowest final validation loss."""
    if not runs:
        raise ValueError("empty sweep")
    return min(runs, key=final_val_loss)


def tokens_to_reach(tokens: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """First token count at which the validation curve reaches `target`, linearly interpolated between evaluations.

    None when the curve never gets there.
    """
    if len(tokens) != len(losses) or not tokens:
        raise ValueError("tokens and losses must be non-empty and of equal length")
    if losses[0] <= target:
        return float(tokens[0])
    for (t0, l0), (t1, l1) in zip(zip(tokens, losses), zip(tokens[1:], losses[1:])):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def token_ratio(candidate: RunResult, baseline: RunResult) -> float | None:
    """Tokens `candidate` needs to reach `baseline`'s final validation loss, over the tokens `baseline` trained on.

    Below 1 means the candidate is more token-efficient; None when it never reaches that loss.
    """
    needed = tokens_to_reach(candidate.eval_tokens, candidate.val_loss, final_val_loss(baseline))
    return None if needed is None else needed / baseline.eval_tokens[-1]
