"""A second `k2 run` in the same repository fails at once, naming the holder; a dead holder's lock is taken over.

Two real processes: a holder that takes the lock and waits, and the real `k2` console script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from flows.interpreter import scripts_dir
from flows.run_lock import LOCK_FILE

HOLD = (
    "import sys, time; from pathlib import Path; from flows.run_lock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n"
    "    print('held', flush=True); time.sleep(600)\n"
)


def _holder(root: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_run_fails_at_once_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        started = time.monotonic()
        second = subprocess.run([str(scripts_dir() / "k2"), "run", "--root", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"pid {holder.pid}" in second.stderr and "another `k2 run`" in second.stderr
        assert "Traceback" not in second.stderr
        assert elapsed < 60, "the second run must fail before starting any server or stage"
        assert not (tmp_path / ".prefect").exists(), "the refused run started a Prefect server"
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # the dead holder's record is left
    successor = _holder(tmp_path)  # flock died with its holder: the lock is free again
    try:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == successor.pid
    finally:
        successor.kill()
        successor.wait()
