"""The sandbox's own contract: it refuses to run without a jail, places files and stdin, reports exit status and
limits, runs as the unprivileged uid, and jails running side by side do not share their process budget."""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from k2core.errors import UserError
from k2core.sandbox import SandboxConfig, SandboxUnavailableError, ensure_available, run_in_sandbox, run_python

CONFIG = SandboxConfig(wall_time_s=5, cpu_time_s=3, max_processes=16)


def test_missing_bwrap_is_a_user_error_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = CONFIG.model_copy(update={"bwrap": str(tmp_path / "no-such-bwrap")})
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap") as caught:
        run_python(f"open({str(marker)!r}, 'w').write('x')", config=config)
    assert isinstance(caught.value, UserError)
    assert "never runs untrusted code unsandboxed" in str(caught.value)
    assert not marker.exists()


def test_bwrap_that_cannot_make_namespaces_is_a_user_error() -> None:
    """A bwrap that fails the way it does without user namespaces (a real executable, in a dir the jail uid can
    read) makes the availability check fail with bwrap's own words and the fixes."""
    folder = Path(tempfile.mkdtemp(prefix="k2-fake-bwrap-"))
    try:
        folder.chmod(0o755)
        fake = folder / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IROTH)
        config = CONFIG.model_copy(update={"bwrap": str(fake)})
        with pytest.raises(SandboxUnavailableError, match="No permissions to create new namespace.*user namespaces"):
            ensure_available(config)
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_jail_python_outside_usr_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailableError, match="not under /usr"):
        ensure_available(CONFIG.model_copy(update={"python": str(Path(os.__file__))}))


def test_config_is_typed() -> None:
    with pytest.raises(ValidationError, match="wall_time_s"):
        SandboxConfig(wall_time_s=0)
    with pytest.raises(ValidationError, match="extra"):
        SandboxConfig(memory=512)


def test_files_stdin_exit_status_and_identity() -> None:
    source = (
        "import os, sys\n"
        "print(open('data.txt').read(), sys.stdin.read(), os.getcwd(), os.getuid(), os.getgid())\n"
        "open('/tmp/out.txt', 'w').write('ok')\n"
        "sys.exit(3)\n"
    )
    result = run_python(source, config=CONFIG, files={"data.txt": "file-bytes"}, stdin="stdin-bytes")
    assert result.exit_code == 3 and not result.ok and result.signal is None
    assert result.stdout == "file-bytes stdin-bytes /tmp 65534 65534\n"


def host_processes(token: str) -> dict[int, list[str]]:
    """Host pids whose command line holds `token` (bwrap's and the jailed program's), with their Uid fields."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                status = (entry / "status").read_text().splitlines()
                found[int(entry.name)] = next(line.split()[1:] for line in status if line.startswith("Uid:"))
        except OSError:
            continue
    return found


def wait_for(condition, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    return condition()


def test_jailed_processes_run_as_the_unprivileged_host_uid() -> None:
    """Seen from the host, the jailed program's real uid is the configured one when k2 is root (the kernel exempts
    uid 0 from RLIMIT_NPROC), and the caller's own uid otherwise: never root."""
    token = secrets.token_hex(8)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_python, "import time\ntime.sleep(3)\n", config=CONFIG, args=[token])
        uids = wait_for(lambda: host_processes(token))
        assert running.result().ok
    expected = str(CONFIG.uid if os.geteuid() == 0 else os.geteuid())
    assert uids and all(uid == [expected] * 4 for uid in uids.values()), uids


def test_signal_death_and_clean_exit() -> None:
    killed = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", config=CONFIG)
    assert killed.signal == 15 and not killed.ok
    clean = run_in_sandbox(["/bin/sh", "-c", "echo hello; echo oops >&2"], config=CONFIG)
    assert clean.ok and clean.stdout == "hello\n" and clean.stderr == "oops\n"
    assert not (clean.timed_out or clean.output_exceeded or clean.cpu_exceeded or clean.memory_exceeded)


def test_wall_time_kills_the_jail() -> None:
    result = run_python("import time\ntime.sleep(60)\n", config=CONFIG.model_copy(update={"wall_time_s": 1}))
    assert result.timed_out and result.killed and not result.ok
    assert 1 <= result.wall_s < 4


def test_readonly_files_cannot_be_changed() -> None:
    result = run_in_sandbox(
        ["/bin/sh", "-c", "cat /sandbox/in.txt; echo changed > /sandbox/in.txt || echo refused"],
        config=CONFIG,
        readonly_files={"/sandbox/in.txt": b"original\n"},
    )
    assert result.stdout.splitlines()[0] == "original"
    assert "refused" in result.stdout and "Read-only file system" in result.stderr


def test_side_by_side_jails_have_their_own_process_budget() -> None:
    """A fork bomb that has used up its jail's RLIMIT_NPROC does not starve another jail of the same uid running at
    the same time: the second one starts only once the host sees the first at its limit."""
    token = secrets.token_hex(8)
    bomb = "import os, time\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n" \
           "            os._exit(0)\nexcept OSError:\n    time.sleep(4)\n"
    with ThreadPoolExecutor(1) as pool:
        bombed = pool.submit(run_python, bomb, config=CONFIG, args=[token])
        saturated = wait_for(lambda: len(host_processes(token)) >= CONFIG.max_processes, timeout_s=10)
        assert saturated, "the fork bomb never reached its process limit"
        other = run_in_sandbox(["/bin/sh", "-c", "/bin/echo forked"], config=CONFIG)
        assert other.ok and other.stdout == "forked\n", other
        assert bombed.result().exit_code == 0
