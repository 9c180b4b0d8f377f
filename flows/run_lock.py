"""One `k2 run` per repository at a time.

Two pipelines in one workspace would interleave DVC outputs, resume folders and MLflow runs. The lock is an
exclusive `flock` on `.k2/run.lock`: the kernel releases it when the holder exits, however it exits, so a lock
left by a dead process is simply taken over. The file also says who holds it (pid, start time, command), so a
second run can name the holder in its error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from k2core.errors import UserError

LOCK_FILE = Path(".k2") / "run.lock"


class PipelineBusyError(UserError):
    """Another live `k2 run` holds this repository's lock."""


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return "an unknown process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} (started {started}: {info.get('command', '?')})"


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the repository's pipeline lock for the block, or fail at once naming the holder."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineBusyError(
                f"{path}: another `k2 run` is running in this repository, {_holder(handle)}; "
                "wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
