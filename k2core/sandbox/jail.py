"""The bubblewrap command line of a jail, and the check that such a jail can be made on this machine.

The jail: new user, PID, IPC, UTS, cgroup and network namespaces (no network at all); a read-only /usr (and the
/bin, /lib* links or dirs next to it) and nothing else of the host: no /etc, /root, /home or repository; a fresh
/proc and a minimal /dev; a size-capped tmpfs at /tmp as work dir and HOME; the rest of the tree read-only; no
nested user namespaces; an empty environment but for PATH, HOME and LANG; a new session; and the jail dies with
its parent. When k2 runs as root, bwrap itself is started as the unprivileged `uid` (the kernel exempts uid 0
from RLIMIT_NPROC, and would map the jail's user onto it), so the rlimits bind. The rlimits are set inside the
jail by util-linux `prlimit`, after the namespaces exist, so they count only the jail's own processes.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from k2core.errors import UserError
from k2core.sandbox.config import SandboxConfig

WORK_DIR = "/tmp"
PRLIMIT = "/usr/bin/prlimit"
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": WORK_DIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
INSTALL_HINT = "install it with `apt-get install bubblewrap` (scripts/setup.sh does)"


class SandboxUnavailableError(UserError):
    """No jail can be made here; k2 refuses to run untrusted code without one."""


def bwrap_path(config: SandboxConfig) -> str:
    """The bubblewrap executable, or a SandboxUnavailableError saying how to install it."""
    found = shutil.which(config.bwrap)
    if found is None:
        raise SandboxUnavailableError(
            f"sandbox: bubblewrap ({config.bwrap!r}) is not installed or not on PATH; {INSTALL_HINT}. "
            "k2 never runs untrusted code unsandboxed."
        )
    return found


def _host_root_links() -> list[str]:
    """/bin, /sbin, /lib, /lib64...: the same symlink into /usr (merged /usr) or a read-only bind of the dir."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def rlimit_args(config: SandboxConfig) -> list[str]:
    """prlimit options: soft and hard limits of the jail's processes (CPU hard one second above soft, so SIGXCPU
    comes first and SIGKILL follows if the program ignores it)."""
    return [
        f"--cpu={config.cpu_time_s}:{config.cpu_time_s + 1}",
        f"--as={config.memory_mb * 2**20}",
        f"--nproc={config.max_processes}",
        f"--fsize={config.max_file_mb * 2**20}",
        f"--nofile={config.max_open_files}",
        "--core=0",
    ]


def bwrap_argv(
    config: SandboxConfig,
    command: list[str],
    *,
    work_files: dict[str, int],
    readonly_files: dict[str, int],
    status_fd: int,
) -> list[str]:
    """The full bwrap command: jail options, the files to place (path -> readable fd of their bytes), then
    prlimit and the command. Work files land in /tmp (writable); read-only files at their absolute paths."""
    argv = [bwrap_path(config), "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += ["--uid", str(config.uid), "--gid", str(config.gid), "--hostname", "sandbox"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--json-status-fd", str(status_fd)]
    for name, value in ENVIRONMENT.items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", "/usr", "/usr", *_host_root_links(), "--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(config.tmpfs_mb * 2**20), "--perms", "1777", "--tmpfs", WORK_DIR]
    for path, fd in work_files.items():
        argv += ["--perms", "0644", "--file", str(fd), f"{WORK_DIR}/{path}"]
    for path, fd in readonly_files.items():
        argv += ["--perms", "0444", "--ro-bind-data", str(fd), path]
    argv += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", WORK_DIR, "--"]
    return argv + [PRLIMIT, *rlimit_args(config), "--", *command]


def spawn_identity(config: SandboxConfig) -> dict[str, object]:
    """Popen keyword arguments that start bwrap as the unprivileged uid when k2 runs as root (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": config.uid, "group": config.gid, "extra_groups": []}


@functools.lru_cache(maxsize=8)
def _probe(config: SandboxConfig) -> None:
    bwrap = bwrap_path(config)
    if not Path(config.python).is_file() or not Path(config.python).resolve().is_relative_to("/usr"):
        raise SandboxUnavailableError(
            f"sandbox: the jail's python {config.python!r} is missing or not under /usr (the only host tree the "
            "jail sees); install Debian's python3 (`apt-get install python3`) or set sandbox python"
        )
    if not Path(PRLIMIT).is_file():
        raise SandboxUnavailableError(
            f"sandbox: {PRLIMIT} is missing; install util-linux (`apt-get install util-linux`)"
        )
    read, write = os.pipe()
    try:
        argv = bwrap_argv(config, [config.python, "-I", "-c", "pass"], work_files={}, readonly_files={},
                          status_fd=write)
        done = subprocess.run(argv, capture_output=True, env={}, cwd="/", pass_fds=(write,), timeout=60,
                              **spawn_identity(config))
    finally:
        os.close(read)
        os.close(write)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise SandboxUnavailableError(
            f"sandbox: bubblewrap ({bwrap}) cannot create its jail here: {message}. It needs unprivileged user "
            "namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1 where it exists; "
            "in a container, a seccomp/AppArmor profile that allows them); if bwrap is missing, "
            f"{INSTALL_HINT}. k2 never runs untrusted code unsandboxed."
        )


def ensure_available(config: SandboxConfig) -> None:
    """Raise SandboxUnavailableError unless a jail with this config starts (checked once per config)."""
    _probe(config)
