"""A disk cache of chat responses, so re-running a synthesis stage gives the same data without model calls.

One sqlite file (WAL journal) per cache folder; sqlite's locking makes it safe for several threads and
processes at once. A response is stored once under `ChatRequest.key(backend_id)`: when two workers
compute the same request, the first write wins and both return the stored answer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from k2core.llm.base import ChatBackend, ChatRequest, ChatResponse

CACHE_FILE = "llm_cache.sqlite"


class ResponseCache:
    """Key -> `ChatResponse` in `<cache_dir>/llm_cache.sqlite`."""

    def __init__(self, cache_dir: str | Path) -> None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / CACHE_FILE
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, backend_id TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: cheap, and safe across threads and forked workers.
        return sqlite3.connect(self.path, timeout=60.0)

    def get(self, key: str) -> ChatResponse | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else ChatResponse.model_validate_json(row[0])

    def put(self, key: str, backend_id: str, response: ChatResponse) -> ChatResponse:
        """Store `response` unless the key is already there; returns what the cache holds."""
        stored = response.model_copy(update={"cached": False})
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO responses (key, backend_id, response, created) VALUES (?, ?, ?, ?)",
                (key, backend_id, stored.model_dump_json(), time.time()),
            )
            row = db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return ChatResponse.model_validate_json(row[0])

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


class CachedBackend:
    """Answers from the cache when it can (`cached=True`), else asks `inner` and stores the answer."""

    def __init__(self, inner: ChatBackend, cache_dir: str | Path) -> None:
        self.inner = inner
        self.backend_id = inner.backend_id
        self.cache = ResponseCache(cache_dir)
        self.hits = 0
        self.misses = 0
        self._count = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatResponse:
        key = request.key(self.backend_id)
        hit = self.cache.get(key)
        with self._count:
            if hit is not None:
                self.hits += 1
            else:
                self.misses += 1
        if hit is not None:
            return hit.model_copy(update={"cached": True})
        return self.cache.put(key, self.backend_id, self.inner.complete(request))

    def reload_weights(self, path: str | Path) -> str:
        """The inner backend serves `path` from now on (`k2core.llm.reload`); answers are keyed by its new id."""
        from k2core.llm.reload import reload_backend

        self.backend_id = reload_backend(self.inner, path)
        return self.backend_id
