"""Run a server so that it, and every process it starts, dies with the k2 process that wanted it.

    python -m flows.supervise COMMAND [ARGS...]

The caller starts this in a new session with a parent-death signal (`supervised_popen`), so the kernel sends
SIGTERM here when the caller dies, even by SIGKILL. This process runs COMMAND in its own process group and, on
SIGTERM or SIGINT, stops the whole group: the server and its workers (MLflow's uvicorn, Prefect's services),
which a parent-death signal on the server alone would leave behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
GRACE_S = 10.0


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent thread exits (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def supervised_popen(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    """Start `cmd` under a supervisor in a new session; the supervisor dies with the calling thread."""
    def child_setup() -> None:
        die_with_parent()
        if os.getppid() == 1:  # the caller died before prctl took effect
            os._exit(1)

    return subprocess.Popen([sys.executable, "-m", "flows.supervise", *cmd], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_setup)


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` other than this one (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM every other process of the group, then SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        members = group_members(pgid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while members and time.monotonic() < deadline:
            time.sleep(0.1)
            members = group_members(pgid)
        if not members:
            return


def main(argv: list[str]) -> int:
    child = subprocess.Popen(argv)  # same process group as this supervisor (the session leader)
    stopping = False

    def stop(signum: int, _frame) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        child.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(GRACE_S)
        stop_group(os.getpgrp())  # the server itself if it ignored SIGTERM, and any worker it left behind

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
