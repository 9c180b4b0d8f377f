"""Thin Prefect tasks around k2core functions: retries, names, logging; no logic.

`k2_task` turns off Prefect's input-hash caching: stage inputs include trackers
and configs whose hashes mean nothing, and DVC already decides what is stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE


def k2_task(fn: Callable[..., Any] | None = None, **options: Any):
    """`@task` with the project's defaults (no result cache, no persisted results)."""
    options = {"cache_policy": NO_CACHE, "persist_result": False, **options}
    if fn is None:
        return lambda inner: task(inner, **options)
    return task(fn, **options)
