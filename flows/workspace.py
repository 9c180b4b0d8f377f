"""A fresh, committed copy of the project's working tree, for isolated pipeline runs
(the integration test and the pipeline benchmark run the pipeline in one)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def clone_workspace(source: Path, dest: Path, profile: str | None = None) -> Path:
    """Copy tracked and untracked-but-not-ignored files of `source` to `dest`, commit them, set `profile`.

    The project reads shared data beside the repository (`../shared`, e.g. the MCP server catalogue); the copy
    gets a link to the same folder so relative paths in params.yaml resolve the same way.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=source, capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in listed:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    if profile:
        params = dest / "params.yaml"
        lines = [f"profile: {profile}" if line.startswith("profile:") else line for line in params.read_text().splitlines()]
        params.write_text("\n".join(lines) + "\n")
    shared, linked = source.resolve().parent / "shared", dest.resolve().parent / "shared"
    if shared.is_dir() and not linked.exists():
        linked.symlink_to(shared, target_is_directory=True)
    git = ["git", "-c", "user.name=k2", "-c", "user.email=k2@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], cwd=dest, check=True)
    return dest
