"""Content hashes of model files, so a cache key changes when the weights do and not when a folder moves."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files that describe a run rather than the model (written next to published checkpoints), and the sha256 manifest,
# which lists the run record too and adds nothing the hashed files do not already say.
_NOT_MODEL = frozenset({"k2_run.json", "manifest.json"})
_CHUNK = 1 << 20


def model_fingerprint(path: str | Path) -> str:
    """A short hash over a model file, or over the top-level files of a model folder (names and bytes)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_MODEL)
    else:
        raise FileNotFoundError(f"no model at {path}")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]
