"""Concurrent requests into one forward pass: a queue that gathers what arrives within a few milliseconds.

`k2 serve` answers each connection in its own thread; with a batching backend those threads hand their
prepared requests to one `Batcher`, whose worker thread takes the first waiting request, gathers whatever
else arrives within `window_s` (or is already queued, e.g. while the previous batch ran), up to `max_batch`,
and answers them with one `complete_prepared` call. A failure of that call fails every request of the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from k2core.llm.base import BatchingBackend, ChatResponse


class Batcher:
    """One worker thread in front of a batching backend; `submit` returns a future of the response."""

    def __init__(self, backend: BatchingBackend, max_batch: int, window_s: float) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0, got {max_batch}, {window_s}")
        self.backend, self.max_batch, self.window_s = backend, max_batch, window_s
        self.batch_sizes: list[int] = []  # one entry per forward pass, for tests and benchmarks
        self._queue: queue.Queue[tuple[Any, Future[ChatResponse]] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="k2-serve-batcher", daemon=True)
        self._worker.start()

    def submit(self, prepared: Any) -> Future[ChatResponse]:
        future: Future[ChatResponse] = Future()
        self._queue.put((prepared, future))
        return future

    def _gather(self, first: tuple[Any, Future[ChatResponse]]) -> tuple[list[tuple[Any, Future[ChatResponse]]], bool]:
        """The batch starting with `first`, and whether `close` was called meanwhile."""
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                break
            batch, closing = self._gather(first)
            self.batch_sizes.append(len(batch))
            try:
                responses = self.backend.complete_prepared([prepared for prepared, _ in batch])
            except BaseException as error:  # every waiting client learns what broke; the worker keeps going
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), response in zip(batch, responses):
                future.set_result(response)

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        self._queue.put(None)
        self._worker.join()
