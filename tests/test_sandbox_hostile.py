"""Hostile programs against the sandbox: each one is contained, the grader returns a result, and the specific
containment holds (the secret is absent, the host file was not written, the host process is alive, the verdict
is fail, no process of the jail outlives the run). Runs as root on CI, so the fork bomb is a root's fork bomb."""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from k2core.eval.humaneval import load_humaneval, score_completion
from k2core.sandbox import SandboxConfig, SandboxResult, run_python

REPO = Path(__file__).resolve().parents[1]
CONFIG = SandboxConfig(
    wall_time_s=4, cpu_time_s=2, memory_mb=256, max_output_bytes=65536, max_processes=16, tmpfs_mb=8, max_file_mb=2
)
CANARY_NAME = "K2_SANDBOX_CANARY_SECRET"


@dataclass
class Host:
    """What the host side of a case can look at: the canary secret, a listening socket, a victim process."""

    canary: str
    token: str
    listener: socket.socket
    victim: subprocess.Popen
    tmp: Path

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A canary in the environment, a 127.0.0.1 listener, and a host process of the jail's own uid (when root)
    that signals must not reach."""
    canary = secrets.token_hex(16)
    old = os.environ.get(CANARY_NAME)
    os.environ[CANARY_NAME] = canary
    listener = socket.create_server(("127.0.0.1", 0))
    identity = {"user": CONFIG.uid, "group": CONFIG.gid, "extra_groups": []} if os.geteuid() == 0 else {}
    victim = subprocess.Popen(["sleep", "600"], cwd="/", **identity)
    try:
        yield Host(canary, secrets.token_hex(8), listener, victim, tmp_path_factory.mktemp("hostile"))
    finally:
        victim.kill()
        victim.wait()
        listener.close()
        if old is None:
            os.environ.pop(CANARY_NAME)
        else:
            os.environ[CANARY_NAME] = old


def jail_processes() -> list[str]:
    """Host pids whose command line is a jailed program or a marker sleep (what must not outlive a run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"/sandbox/main.py" in cmdline or b"sleep 7777" in cmdline:
                found.append(f"{entry.name}: {cmdline.decode(errors='replace')}")
    return found


Check = Callable[[SandboxResult, Host], None]


@dataclass(frozen=True)
class Case:
    source: str
    check: Check


def blocked(*markers: str) -> Check:
    """The program printed BLOCKED (it caught the expected failure) and none of the leak markers."""

    def check(result: SandboxResult, host: Host) -> None:
        assert "BLOCKED" in result.stdout, (result.stdout, result.stderr)
        assert "LEAK" not in result.stdout, result.stdout
        for marker in markers:
            assert marker not in result.stdout + result.stderr

    return check


def attempt(body: str, errors: str = "OSError") -> str:
    """A program that tries `body` and prints LEAK if it worked, BLOCKED if it raised one of `errors`."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        f"import os, sys, socket\ntry:\n{indented}\n    print('LEAK')\n"
        f"except ({errors},) as e:\n    print('BLOCKED', e)\n"
    )


def no_connection(result: SandboxResult, host: Host) -> None:
    blocked()(result, host)
    assert not select.select([host.listener], [], [], 0.2)[0], "the host listener got a connection from the jail"


def not_written(path_of: Callable[[Host], Path]) -> Check:
    def check(result: SandboxResult, host: Host) -> None:
        blocked()(result, host)
        assert not path_of(host).exists()

    return check


def canary_absent(result: SandboxResult, host: Host) -> None:
    assert result.exit_code == 0, result.stderr
    assert "PATH" in result.stdout  # the program did dump an environment
    assert host.canary not in result.stdout + result.stderr
    assert CANARY_NAME not in result.stdout + result.stderr


def limited_forks(result: SandboxResult, host: Host) -> None:
    forks = int(result.stdout.split("FORKS")[1].split()[0])
    assert forks < CONFIG.max_processes, result.stdout  # RLIMIT_NPROC binds although the test runs as root
    assert result.wall_s < CONFIG.wall_time_s + 6


def ended_by_limit(result: SandboxResult, host: Host) -> None:
    assert not result.ok
    assert result.timed_out or result.cpu_exceeded, result
    assert result.wall_s < CONFIG.wall_time_s + 6


def out_of_memory(result: SandboxResult, host: Host) -> None:
    assert result.memory_exceeded and result.exit_code != 0, result


def ended_or_killed(result: SandboxResult, host: Host) -> None:
    """A program that ignores SIGXCPU is killed at the hard CPU limit (SIGKILL) or by the wall deadline."""
    assert not result.ok and (result.timed_out or result.signal == signal.SIGKILL), result


def crashed(result: SandboxResult, host: Host) -> None:
    assert result.exit_code != 0 and not result.ok, result


def home_empty(result: SandboxResult, host: Host) -> None:
    blocked(".pyenv", ".cache")(result, host)
    assert "HOME /tmp []" in result.stdout, result.stdout


def output_capped(result: SandboxResult, host: Host) -> None:
    assert result.output_exceeded and not result.ok
    assert len(result.stdout) + len(result.stderr) <= CONFIG.max_output_bytes  # a kept byte decodes to <= 1 char


def victim_alive(result: SandboxResult, host: Host) -> None:
    assert host.victim.poll() is None, "a signal from the jail reached a host process"
    assert "SENT" in result.stdout or "BLOCKED" in result.stdout, result


def no_leftovers(result: SandboxResult, host: Host) -> None:
    assert result.timed_out or result.exit_code == 0, result


def tmpfs_bounded(result: SandboxResult, host: Host) -> None:
    written = int(result.stdout.split("WROTE")[1].split()[0])
    assert written <= CONFIG.tmpfs_mb * 2**20
    assert "ENOSPC" in result.stdout or "EFBIG" in result.stdout, result.stdout


def file_size_capped(result: SandboxResult, host: Host) -> None:
    assert "EFBIG" in result.stdout, (result.stdout, result.stderr)
    assert int(result.stdout.split("WROTE")[1].split()[0]) <= CONFIG.max_file_mb * 2**20


def nosuid_tmp(result: SandboxResult, host: Host) -> None:
    tmp_mount = [line for line in result.stdout.splitlines() if line.startswith("MOUNT")]
    assert tmp_mount and "nosuid" in tmp_mount[0], result.stdout
    assert "CHOWN-ROOT-OK" not in result.stdout


def ptrace_contained(result: SandboxResult, host: Host) -> None:
    """No host process is in reach (the victim's pid does not exist here); the jail's own PID-1 may be traced, but
    it holds no capability, so tracing it gains nothing, and a stopped PID-1 still ends at the wall deadline."""
    assert "PTRACE-HOST -1" in result.stdout, (result.stdout, result.stderr)
    assert result.stdout.count("CapEff:\t0000000000000000") == 2, result.stdout
    assert host.victim.poll() is None


def proc_private(result: SandboxResult, host: Host) -> None:
    pids = [int(word) for word in result.stdout.split("PIDS")[1].splitlines()[0].split()]
    assert len(pids) <= 3, pids  # bwrap's PID-1, the program, the ls it may have run
    assert "pytest" not in result.stdout and host.canary not in result.stdout


SHADOW_READ = attempt("open('/etc/shadow').read()")
HOME_LIST = "import os\nprint('HOME', os.path.expanduser('~'), os.listdir(os.path.expanduser('~')))\n" + attempt(
    "print(os.listdir('/root'))"
)

CASES: dict[str, Callable[[Host], Case]] = {
    "net-connect-localhost": lambda h: Case(
        attempt(f"socket.create_connection(('127.0.0.1', {h.port}), timeout=2)"), no_connection
    ),
    "net-connect-external": lambda h: Case(attempt("socket.create_connection(('1.1.1.1', 53), timeout=2)"), blocked()),
    "net-dns": lambda h: Case(attempt("socket.getaddrinfo('example.com', 80)"), blocked()),
    "net-raw-udp-broadcast": lambda h: Case(
        attempt("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('8.8.8.8', 53))"), blocked()
    ),
    "read-etc-shadow": lambda h: Case(SHADOW_READ, blocked("root:")),
    "list-home": lambda h: Case(HOME_LIST, home_empty),
    "read-repo": lambda h: Case(attempt(f"print(open('{REPO}/params.yaml').read())"), blocked("profile:")),
    "write-repo": lambda h: Case(
        attempt(f"open('{REPO}/HOSTILE-{h.token}', 'w').write('x')"),
        not_written(lambda host: REPO / f"HOSTILE-{host.token}"),
    ),
    "write-host-tmp": lambda h: Case(
        attempt(f"open('{h.tmp}/escape', 'w').write('x')"), not_written(lambda host: host.tmp / "escape")
    ),
    "write-root-and-usr": lambda h: Case(
        attempt("open('/escape', 'w').write('x')") + attempt("open('/usr/escape', 'w').write('x')")
        + attempt("open('/dev/shm/escape', 'w').write('x')"),
        not_written(lambda host: Path("/usr/escape")),
    ),
    "env-secret": lambda h: Case(
        "import os\nprint(dict(os.environ))\n"
        "for p in ('/proc/self/environ', '/proc/1/environ'):\n"
        "    try: print(open(p, 'rb').read())\n    except OSError as e: print(p, e)\n",
        canary_absent,
    ),
    "fork-bomb-counted": lambda h: Case(
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('FORKS', n, e)\n",
        limited_forks,
    ),
    "fork-bomb-unbounded": lambda h: Case(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", ended_by_limit
    ),
    "fork-bomb-shell": lambda h: Case(
        "import subprocess\nsubprocess.run(['/bin/bash', '-c', ':(){ :|:& };:'])\nimport time\ntime.sleep(60)\n",
        ended_by_limit,
    ),
    "thread-bomb": lambda h: Case(
        "import threading, time\nn = 0\ntry:\n    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\n"
        "except RuntimeError as e:\n    print('FORKS', n, e, flush=True)\nimport os\nos._exit(0)\n",
        limited_forks,
    ),
    "memory-bomb-one-block": lambda h: Case("x = bytearray(4 * 1024**3)\n", out_of_memory),
    "memory-bomb-growing": lambda h: Case("a = []\nwhile True:\n    a.append(bytearray(10**7))\n", out_of_memory),
    "infinite-loop": lambda h: Case("while True:\n    pass\n", ended_by_limit),
    "cpu-spin-threads": lambda h: Case(
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "for _ in range(4):\n    threading.Thread(target=spin).start()\n",
        ended_by_limit,
    ),
    "sigxcpu-ignored": lambda h: Case(
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n",
        ended_or_killed,
    ),
    "huge-stdout": lambda h: Case("while True:\n    print('x' * 10000)\n", output_capped),
    "huge-stderr-binary": lambda h: Case(
        "import os\nwhile True:\n    os.write(2, os.urandom(100000))\n", output_capped
    ),
    "kill-parent": lambda h: Case(
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('SENT')\n",
        victim_alive,
    ),
    "kill-minus-one": lambda h: Case(
        "import os, signal\nprint('SENT', flush=True)\nos.kill(-1, signal.SIGKILL)\n", victim_alive
    ),
    "kill-host-pid": lambda h: Case(
        attempt(f"os.kill({h.victim.pid}, 9)\nprint('SENT')", "ProcessLookupError, PermissionError"), victim_alive
    ),
    "killpg": lambda h: Case(
        "import os, signal\nprint('SENT', flush=True)\nfor g in (0, os.getpgid(os.getppid()), 1):\n"
        "    try: os.killpg(g, signal.SIGKILL)\n    except OSError: pass\n",
        victim_alive,
    ),
    "ptrace-parent": lambda h: Case(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print('PTRACE-HOST', libc.ptrace(16, {h.victim.pid}, 0, 0))\n"
        "for pid in ('self', '1'):\n    print([l for l in open(f'/proc/{pid}/status') if l.startswith('CapEff')][0])\n"
        "print('PTRACE-INIT', libc.ptrace(16, 1, 0, 0), flush=True)\n",
        ptrace_contained,
    ),
    "proc-snoop": lambda h: Case(
        "import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint('PIDS', *pids)\n"
        "for p in pids:\n    try:\n        print(open(f'/proc/{p}/cmdline', 'rb').read())\n"
        "        print(open(f'/proc/{p}/environ', 'rb').read())\n"
        "    except OSError as e: print(p, e)\n",
        proc_private,
    ),
    "setuid-file": lambda h: Case(
        "import os, shutil\nshutil.copy('/usr/bin/true', '/tmp/suid')\nos.chmod('/tmp/suid', 0o4755)\n"
        "for line in open('/proc/self/mountinfo'):\n    if ' /tmp ' in line:\n        print('MOUNT', line.strip())\n"
        "try:\n    os.chown('/tmp/suid', 0, 0)\n    print('CHOWN-ROOT-OK')\n"
        "except OSError as e:\n    print('chown', e)\n",
        nosuid_tmp,
    ),
    "fill-tmp": lambda h: Case(
        "import errno, os\nn = 0\ntry:\n    for i in range(10**6):\n        with open(f'/tmp/f{i}', 'wb') as f:\n"
        "            f.write(b'x' * 2**20)\n        n += 2**20\nexcept OSError as e:\n"
        "    print('WROTE', n, errno.errorcode[e.errno])\n",
        tmpfs_bounded,
    ),
    "one-huge-file": lambda h: Case(
        "import errno\nn = 0\nf = open('/tmp/big', 'wb', buffering=0)\ntry:\n    while True:\n"
        "        n += f.write(b'x' * 2**16)\nexcept OSError as e:\n    print('WROTE', n, errno.errorcode[e.errno])\n",
        file_size_capped,
    ),
    "nested-userns-and-mount": lambda h: Case(
        attempt("import subprocess\nsubprocess.run(['unshare', '-Ur', 'id'], check=True)",
                "OSError, subprocess.CalledProcessError")
        + attempt("import ctypes\nassert ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0",
                  "AssertionError"),
        blocked(),
    ),
    "orphans-past-wall": lambda h: Case(
        "import subprocess, time\nfor _ in range(3):\n"
        "    subprocess.Popen(['sleep', '7777'], start_new_session=True)\ntime.sleep(600)\n",
        no_leftovers,
    ),
    "daemon-left-behind": lambda h: Case(
        "import os, subprocess\nif os.fork() == 0:\n    os.setsid()\n    subprocess.Popen(['sleep', '7777'])\n"
        "    os._exit(0)\nprint('done')\n",
        no_leftovers,
    ),
    "deep-recursion-crash": lambda h: Case(
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)\n",
        crashed,
    ),
    "many-open-files": lambda h: Case(
        attempt("files = [open('/dev/null') for _ in range(100000)]"), blocked()
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_program_is_contained(name: str, host: Host) -> None:
    case = CASES[name](host)
    result = run_python(case.source, config=CONFIG)
    case.check(result, host)
    assert host.victim.poll() is None
    assert jail_processes() == [], "processes of the jail outlived the run"


# HumanEval-level tricks: a wrong completion for HumanEval/0 (has_close_elements) dressed up to look like a pass.
WRONG = "    return True\n"
TRICKS = {
    "os-exit-before-tests": WRONG + "import os\nos._exit(0)\n",
    "sys-exit-in-function": "    import sys\n    sys.exit(0)\n",
    "raise-systemexit-top": WRONG + "raise SystemExit(0)\n",
    "keyboard-interrupt": WRONG + "raise KeyboardInterrupt\n",
    "atexit-exit-zero": WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "fake-marker-print": WRONG + "print('K2-HUMANEVAL-PASS ' + '0' * 32)\nimport os\nos._exit(0)\n",
    "read-stdin-for-nonce": WRONG + "import os, sys\nprint('K2-HUMANEVAL-PASS', sys.stdin.read().strip())\n"
    "print('K2-HUMANEVAL-PASS', os.pread(0, 64, 0).decode().strip())\nos._exit(0)\n",
    "override-check": WRONG + "def check(candidate):\n    pass\n",
    "monkeypatch-builtins": WRONG + "import builtins\nbuiltins.abs = lambda x: 10.0\nbuiltins.AssertionError = None\n",
    "edit-harness-on-disk": WRONG + "for p in ('/sandbox/harness.py', '/sandbox/program.py'):\n"
    "    try: open(p, 'w').write('import os; os._exit(0)')\n    except OSError: pass\n",
    "kill-self": WRONG + "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "close-stdout-then-exit": WRONG + "import os\nos.close(1)\nos._exit(0)\n",
    "thread-exits-during-tests": "    import os, threading\n    threading.Timer(0, lambda: os._exit(0)).start()\n"
    "    import time\n    time.sleep(1)\n    return True\n",
}


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_exit_and_harness_tricks_fail(name: str) -> None:
    problem = load_humaneval()[0]
    passed, reason = score_completion(problem, TRICKS[name], CONFIG)
    assert not passed, reason
    assert reason != "passed"
    assert jail_processes() == []
