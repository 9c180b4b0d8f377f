"""Thin Prefect tasks around k2core functions: retries, names, logging; no logic.

`k2_task` turns off Prefect's input-hash caching: stage inputs include trackers
and configs whose hashes mean nothing, and DVC already decides what is stale.

Every task retries transient failures (S3 I/O, LLM backends, servers still
starting: `k2core.transient.is_transient`) with growing, jittered delays, and
fails at once on deterministic ones (bad params, validation thresholds), which
a retry would only repeat. A task may pass its own `retries` (0 turns it off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from k2core.transient import is_transient

TRANSIENT_RETRIES = 3
RETRY_DELAYS_S = [5.0, 20.0, 60.0]  # backoff: one delay per retry
RETRY_JITTER = 0.5  # each delay may grow by up to half, so retrying workers do not hit a service in step


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry only when the failure's exception is transient."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


RETRY_POLICY: dict[str, Any] = {
    "retries": TRANSIENT_RETRIES,
    "retry_delay_seconds": RETRY_DELAYS_S,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_if_transient,
}


def k2_task(fn: Callable[..., Any] | None = None, **options: Any):
    """`@task` with the project's defaults (no result cache, no persisted results, transient-only retries)."""
    options = {"cache_policy": NO_CACHE, "persist_result": False, **RETRY_POLICY, **options}
    if fn is None:
        return lambda inner: task(inner, **options)
    return task(fn, **options)
