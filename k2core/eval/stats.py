"""Summary metrics over per-sample scores, with seeded percentile-bootstrap 95% confidence intervals.

A task's scores form a table: one row per sample, the column `value` (a Score's value) and one column per named
value a Score carries (`Score.values`, e.g. instructions followed and instructions given), plus each sample's group
(e.g. MMLU subjects, BFCL categories). A `Metric` is a function of one column and the groups, or with `per` the
ratio of that function over two columns (a micro average over what `per` counts: instructions, bytes); a
`TableMetric` is any function of the whole table (e.g. BFCL's leaderboard groups over per-category accuracies).

Every metric's interval resamples the rows (samples: prompts, problems, documents) with replacement (`resamples`
times, from one seeded generator) and takes the 2.5th and 97.5th percentiles of the metric over the resamples
(those where it is defined: a resample may draw no sample of a category a metric reads). A
ratio metric therefore resamples whole prompts with all their instructions (a cluster bootstrap), which is what
its uncertainty is over; and the same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]  # (values, group codes) -> metric
VALUE = "value"  # the column holding each Score's `value`


@dataclass(frozen=True)
class Table:
    """Per-sample columns of one task's scores; `groups` are integer codes into `labels` (sorted group names, ""
    for samples without a group)."""

    columns: Mapping[str, np.ndarray]
    groups: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.groups)

    def take(self, idx: np.ndarray) -> Table:
        return Table({k: v[idx] for k, v in self.columns.items()}, self.groups[idx], self.labels)


def mean(values: np.ndarray, groups: np.ndarray) -> float:
    """The micro average: every sample counts once."""
    return float(values.mean())


def group_mean(values: np.ndarray, groups: np.ndarray) -> float:
    """The macro average: the mean over groups of each group's mean (groups absent from a resample do not count)."""
    counts = np.bincount(groups)
    present = counts > 0
    return float((np.bincount(groups, weights=values)[present] / counts[present]).mean())


@dataclass(frozen=True)
class Metric:
    """A named summary of one column of a task's scores: `fn(column)`, or with `per` `fn(column) / fn(per)`
    (with `fn` = mean: sum(column) / sum(per), e.g. instructions followed per instruction, bits per byte)."""

    name: str
    fn: MetricFn = mean
    value: str = VALUE
    per: str | None = None
    proportion: bool = True  # a share in [0, 1] (shown in percent); False: a quantity such as bits per byte

    def __call__(self, table: Table) -> float:
        result = self.fn(table.columns[self.value], table.groups)
        if self.per is None:
            return result
        denominator = self.fn(table.columns[self.per], table.groups)
        return result / denominator if denominator else float("nan")

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.value,) if self.per is None else (self.value, self.per)


@dataclass(frozen=True)
class TableMetric:
    """A named summary computed from the whole table (several columns, group names); `reads` are the named
    values it needs."""

    name: str
    fn: Callable[[Table], float]
    reads: tuple[str, ...] = (VALUE,)
    proportion: bool = True

    def __call__(self, table: Table) -> float:
        return self.fn(table)


AnyMetric = Metric | TableMetric
ACCURACY = Metric("accuracy", mean)
MACRO_ACCURACY = Metric("macro_accuracy", group_mean)


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the samples and its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


def _bootstrap(statistic: Callable[[np.ndarray | slice], float], n: int, resamples: int, seed: int,
               level: float) -> Estimate:
    """`statistic(all rows)` and its percentile interval over `resamples` seeded row resamples of size n."""
    if n == 0:
        raise ValueError("no scores to summarise")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        stats[r] = statistic(rng.integers(0, n, n))
    tail = (1 - level) / 2 * 100
    defined = stats[~np.isnan(stats)]  # a resample can leave a metric undefined (no sample of its category)
    low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (np.nan, np.nan)
    return Estimate(statistic(slice(None)), float(low), float(high))


def bootstrap(fn: MetricFn, values: np.ndarray, groups: np.ndarray, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> Estimate:
    """`fn` on the samples, and its percentile-bootstrap interval at `level`."""
    return _bootstrap(lambda idx: fn(values[idx], groups[idx]), len(values), resamples, seed, level)


def table(values: Sequence[float], groups: Sequence[str | None],
          named: Sequence[Mapping[str, float]] | None = None) -> Table:
    """The score table: `value`, one column per name in `named` (a sample without that name gets nan), groups."""
    rows = list(named) if named is not None else [{} for _ in values]
    if len(rows) != len(values) or len(groups) != len(values):
        raise ValueError(f"{len(values)} values, {len(groups)} groups and {len(rows)} named-value rows differ")
    columns = {VALUE: np.asarray(values, dtype=float)}
    for name in sorted({k for row in rows for k in row}):
        if name == VALUE:
            raise ValueError(f"a named value may not be called {VALUE!r}: that is the Score's own value")
        columns[name] = np.asarray([row.get(name, np.nan) for row in rows], dtype=float)
    labels, codes = np.unique(np.asarray([g or "" for g in groups]), return_inverse=True)
    return Table(columns, codes.reshape(-1), tuple(str(label) for label in labels))


def summarise(metrics: Sequence[AnyMetric], values: Sequence[float], groups: Sequence[str | None],
              resamples: int = 1000, seed: int = 0, named: Sequence[Mapping[str, float]] | None = None,
              level: float = 0.95) -> dict[str, Estimate]:
    """Every metric of one task's scores, each with its interval (the same seed for each, so they resample alike);
    `named` holds each sample's named values."""
    scores = table(values, groups, named)
    missing = sorted({c for m in metrics for c in m.reads} - set(scores.columns))
    if missing:
        raise ValueError(f"metrics read named values {missing} that no score has (columns: {sorted(scores.columns)})")
    return {m.name: _bootstrap(lambda idx, m=m: m(scores.take(idx)), len(scores), resamples, seed, level)
            for m in metrics}
