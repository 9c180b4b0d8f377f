"""The README's commands, read out of README.md (never retyped in tests), and the environment a new user has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The commands of README.md's first bash block, comments and blank lines left out."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S)
    assert block, f"{readme} has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def new_user_env() -> dict[str, str]:
    """A login shell's environment with Python 3.11 installed and nothing of ours: no venv on PATH, no Prefect or
    MLflow settings, none of the test session's variables."""
    python_bin = Path(sys.base_prefix) / "bin"
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def venv_over_this_one(work: Path) -> Path:
    """A fresh `.venv` in `work` that sees this environment's installed packages (a .pth line), so the README's
    `bash scripts/setup.sh` finds every pinned requirement satisfied and installs only the project itself, editable,
    from `work`: the copy's `k2` then runs the copy's code, as in a fresh clone, without a 3 GB reinstall."""
    venv = work / ".venv"
    subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3.11"), "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.11/site-packages"))
    (site / "k2_test_base_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
