"""Run one program in a jail and report what happened: exit status, capped output, which limit it hit.

The supervisor reads stdout and stderr itself (never more than `max_output_bytes` in all), kills the jail on the
wall-time deadline or when the output cap is passed, and only returns once every process of the jail is gone:
it kills the jail's PID-1 (so the kernel kills the whole PID namespace) and reaps bwrap, whose exit waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from k2core.sandbox.config import SandboxConfig
from k2core.sandbox.jail import WORK_DIR, bwrap_argv, ensure_available, spawn_identity

SIGNAL_BASE = 128  # bwrap reports a command killed by signal N as exit status 128 + N, as shells do
DRAIN_AFTER_KILL_S = 5.0
TEARDOWN_S = 5.0
CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')


class SandboxError(RuntimeError):
    """The jail did not start (bwrap failed after the availability check passed): an infrastructure fault, never a
    verdict on the program."""


class SandboxResult(BaseModel):
    """What one jailed run did. `exit_code` is bwrap's: the program's status, or 128 + N after signal N."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    output_exceeded: bool
    cpu_exceeded: bool
    memory_exceeded: bool
    wall_s: float

    @property
    def killed(self) -> bool:
        """The supervisor killed the jail (wall time or output cap)."""
        return self.timed_out or self.output_exceeded

    @property
    def signal(self) -> int | None:
        """The signal that ended the program, when its status says one did."""
        return self.exit_code - SIGNAL_BASE if SIGNAL_BASE < self.exit_code <= SIGNAL_BASE + 64 else None

    @property
    def ok(self) -> bool:
        """Exited 0 without hitting any limit."""
        limits = self.timed_out or self.output_exceeded or self.cpu_exceeded or self.memory_exceeded
        return self.exit_code == 0 and not limits


def _sealed_fd(data: bytes) -> int:
    """A read-only, sealed memfd holding `data` (a jail cannot grow or change it, and no host path is involved)."""
    fd = os.memfd_create("k2-sandbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    _write_all(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


class _Jail:
    """One running jail: its bwrap process, output pipes and the pidfd of its PID-1."""

    def __init__(self, config: SandboxConfig, proc: subprocess.Popen, status_read: int) -> None:
        self.config = config
        self.proc = proc
        self.stdout_fd, self.stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.output = {self.stdout_fd: bytearray(), self.stderr_fd: bytearray()}
        self.status_read = status_read
        self.status = bytearray()
        self.init_pidfd: int | None = None
        self.started = False  # bwrap reported its PID-1: the jail exists (the command may already be over)
        self.kept = 0
        self.output_exceeded = False
        self.timed_out = False

    def _on_status(self, data: bytes) -> None:
        self.status += data
        match = CHILD_PID.search(self.status)
        if match and not self.started:
            self.started = True
            with contextlib.suppress(ProcessLookupError):  # PID-1 already gone: the jail is over
                self.init_pidfd = os.pidfd_open(int(match.group(1)))

    def _on_output(self, fd: int, data: bytes) -> None:
        room = self.config.max_output_bytes - self.kept
        self.output[fd] += data[:room]
        self.kept += min(room, len(data))
        if len(data) > room and not self.output_exceeded:
            self.output_exceeded = True
            self.kill()

    def kill(self) -> None:
        """SIGKILL the jail's PID-1 (the kernel then kills everything in its namespace); bwrap if it has none yet."""
        if self.init_pidfd is None:
            self.proc.kill()
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)

    def supervise(self) -> None:
        """Read output until every pipe closes, killing the jail at the deadline; a killed jail gets a bounded
        drain after which bwrap itself is killed."""
        deadline = time.monotonic() + self.config.wall_time_s
        selector = selectors.DefaultSelector()
        for fd in (*self.output, self.status_read):
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not self.killed:
                    self.timed_out = True
                    self.kill()
                    deadline = time.monotonic() + DRAIN_AFTER_KILL_S
                    continue
                self.proc.kill()  # bwrap did not wind down after its PID-1 died: end it too
                break
            for key, _ in selector.select(timeout=remaining):
                data = os.read(key.fd, 2**16)
                if not data:
                    selector.unregister(key.fd)
                elif key.fd == self.status_read:
                    self._on_status(data)
                else:
                    self._on_output(key.fd, data)
            if self.output_exceeded and deadline - time.monotonic() > DRAIN_AFTER_KILL_S:
                deadline = time.monotonic() + DRAIN_AFTER_KILL_S
        selector.close()

    @property
    def killed(self) -> bool:
        return self.timed_out or self.output_exceeded

    def reap(self) -> int:
        """Wait for bwrap, then for the jail's PID-1 (bwrap may exit as soon as the command does, and PID-1's exit
        waits until the kernel has killed and reaped everything else in its namespace); return the exit status."""
        code = self.proc.wait()
        if self.init_pidfd is not None and not select.select([self.init_pidfd], [], [], TEARDOWN_S)[0]:
            self.kill()
            select.select([self.init_pidfd], [], [], TEARDOWN_S)
        return code if code >= 0 else SIGNAL_BASE - code

    def text(self, fd: int) -> str:
        return bytes(self.output[fd]).decode(errors="replace")

    def close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        os.close(self.status_read)
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)


def run_in_sandbox(
    command: Sequence[str],
    *,
    config: SandboxConfig,
    files: Mapping[str, str | bytes] | None = None,
    readonly_files: Mapping[str, str | bytes] | None = None,
    stdin: str | bytes = b"",
) -> SandboxResult:
    """Run `command` in a fresh jail. `files` are placed in the writable work dir /tmp (relative names),
    `readonly_files` at absolute paths the program cannot change; `stdin` is the program's whole stdin.
    Raises SandboxUnavailableError when no jail can be made here (never runs the command without one)."""
    ensure_available(config)
    passed: list[int] = []  # fds bwrap reads (files, status pipe); closed here once it has them
    stdin_fd = _sealed_fd(_as_bytes(stdin))  # the jail's fd 0 only, never passed on as a second fd
    try:
        work = {name: _sealed_fd(_as_bytes(data)) for name, data in (files or {}).items()}
        passed += work.values()
        readonly = {path: _sealed_fd(_as_bytes(data)) for path, data in (readonly_files or {}).items()}
        passed += readonly.values()
        status_read, status_write = os.pipe()
        passed.append(status_write)
        argv = bwrap_argv(config, list(command), work_files=work, readonly_files=readonly, status_fd=status_write)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/",
            pass_fds=tuple(passed), start_new_session=True, **spawn_identity(config),
        )
    finally:
        for fd in (stdin_fd, *passed):
            os.close(fd)
    jail = _Jail(config, proc, status_read)
    try:
        jail.supervise()
        exit_code = jail.reap()
    finally:
        jail.close()
    wall_s = time.monotonic() - started
    if not jail.started and not jail.killed:
        raise SandboxError(f"the jail did not start: {jail.text(jail.stderr_fd)}")
    stderr = jail.text(jail.stderr_fd)
    return SandboxResult(
        exit_code=exit_code,
        stdout=jail.text(jail.stdout_fd),
        stderr=stderr,
        timed_out=jail.timed_out,
        output_exceeded=jail.output_exceeded,
        cpu_exceeded=exit_code == SIGNAL_BASE + signal.SIGXCPU,
        memory_exceeded="MemoryError" in stderr,
        wall_s=wall_s,
    )


def run_python(
    source: str,
    *,
    config: SandboxConfig,
    files: Mapping[str, str | bytes] | None = None,
    stdin: str | bytes = b"",
    args: Sequence[str] = (),
) -> SandboxResult:
    """Run a Python program (read-only at /sandbox/main.py) with the jail's isolated interpreter."""
    readonly = {"/sandbox/main.py": source}
    return run_in_sandbox(
        [config.python, "-I", "/sandbox/main.py", *args], config=config, files=files, readonly_files=readonly,
        stdin=stdin,
    )


__all__ = ["SandboxError", "SandboxResult", "WORK_DIR", "run_in_sandbox", "run_python"]
