"""Summary metrics over per-sample scores, with seeded percentile-bootstrap 95% confidence intervals.

A metric is a function of the per-sample values (and their groups, e.g. MMLU subjects). Its interval resamples the
samples with replacement (`resamples` times, from one seeded generator) and takes the 2.5th and 97.5th percentiles of
the metric over the resamples, so any metric (a mean, a macro average over groups) gets one the same way and the same
seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]  # (values, group codes) -> metric


@dataclass(frozen=True)
class Metric:
    """A named summary of a task's scores."""

    name: str
    fn: MetricFn


def mean(values: np.ndarray, groups: np.ndarray) -> float:
    """The micro average: every sample counts once."""
    return float(values.mean())


def group_mean(values: np.ndarray, groups: np.ndarray) -> float:
    """The macro average: the mean over groups of each group's mean (groups absent from a resample do not count)."""
    counts = np.bincount(groups)
    present = counts > 0
    return float((np.bincount(groups, weights=values)[present] / counts[present]).mean())


ACCURACY = Metric("accuracy", mean)
MACRO_ACCURACY = Metric("macro_accuracy", group_mean)


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the samples and its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


def bootstrap(fn: MetricFn, values: np.ndarray, groups: np.ndarray, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> Estimate:
    """`fn` on the samples, and its percentile-bootstrap interval at `level`."""
    if len(values) == 0:
        raise ValueError("no scores to summarise")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    n = len(values)
    stats = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        stats[r] = fn(values[idx], groups[idx])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Estimate(fn(values, groups), float(low), float(high))


def summarise(metrics: list[Metric], values: list[float], groups: list[str | None], resamples: int = 1000,
              seed: int = 0) -> dict[str, Estimate]:
    """Every metric of one task's scores, each with its interval (the same seed for each, so they resample alike)."""
    array = np.asarray(values, dtype=float)
    _, codes = np.unique(np.asarray([g or "" for g in groups]), return_inverse=True)
    return {m.name: bootstrap(m.fn, array, codes, resamples, seed) for m in metrics}
