"""Every process k2 starts runs on the interpreter that started it.

DVC runs each stage's `cmd` (`k2 stage NAME`) through a shell, and servers and launchers are
started by name; a user who calls `.venv/bin/k2 run` by path has no `.venv/bin` on PATH, so
those lookups would miss (or find another install). Putting this interpreter's scripts folder
first on PATH makes `k2`, `dvc`, `prefect`, `mlflow` and `deepspeed` resolve to the same
environment in every child process.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path


def scripts_dir() -> Path:
    """The folder holding this environment's console scripts (`k2`, `dvc`, ...)."""
    return Path(sysconfig.get_path("scripts"))


def put_interpreter_on_path() -> None:
    """Prepend this environment's scripts folder to PATH (once); children inherit it."""
    scripts = str(scripts_dir())
    entries = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and entry != scripts]
    os.environ["PATH"] = os.pathsep.join([scripts, *entries])
