"""Per-sample cache of model outputs, so a crashed or interrupted evaluation resumes where it stopped.

One sqlite file (WAL journal): safe for the harness's threads and for two processes at once. The key covers the
task, the sample (id and everything a solver reads from it), the backend (`backend_id`: model, weights, dtype) and
the solver's settings, so changing any of them generates again while a rerun of the same evaluation calls the
model only for samples it has not answered yet. Outputs are stored, not scores: a fixed scorer rescores cached
outputs for free.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

CACHE_FILE = "eval_cache.sqlite"


def sample_key(task: str, sample: dict[str, Any], backend_id: str, settings: dict[str, Any]) -> str:
    """The cache key of one sample's output (`sample` is the sample's JSON form without its target)."""
    payload = json.dumps({"task": task, "sample": sample, "backend": backend_id, "settings": settings},
                         sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class SampleCache:
    """Key -> output JSON in `<cache_dir>/eval_cache.sqlite`."""

    def __init__(self, cache_dir: str | Path) -> None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / CACHE_FILE
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, task TEXT NOT NULL, "
                       "sample_id TEXT NOT NULL, backend_id TEXT NOT NULL, output TEXT NOT NULL, created REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60.0)  # one connection per call: safe across threads

    def get(self, key: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT output FROM outputs WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, task: str, sample_id: str, backend_id: str, output: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?)",
                       (key, task, sample_id, backend_id, output, time.time()))

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])
