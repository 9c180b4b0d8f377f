"""Run tracking behind a small interface (MLflow in production, in-memory in tests)."""

from k2core.tracking.base import InMemoryTracker, Tracker

__all__ = ["InMemoryTracker", "Tracker"]
