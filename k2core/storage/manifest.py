"""sha256 manifests of checkpoint folders: written last by every k2 writer, verified by every k2 loader.

A folder k2 wrote carries `manifest.json` ({"format", "stage", "files": {relative path: {"sha256", "size"}}}). It
is written after every other file, so a folder without it was either not written by k2 (a plain HF folder from
elsewhere, which loads unverified) or left behind by a writer that died before finishing (whose files the atomic
folder swap never published). Verification reads each listed file once; files not listed are ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from k2core.errors import CorruptFileError
from k2core.storage.fs import filesystem, read_json, write_json

MANIFEST = "manifest.json"
FORMAT = "k2-manifest/1"
_CHUNK = 1 << 20


class CheckpointIntegrityError(CorruptFileError):
    """A k2 checkpoint file is missing, truncated or corrupted; the message is one line naming it and the fix."""


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(uri: str | Path) -> str:
    """sha256 of one local or remote file, read in 1 MiB chunks."""
    return _sha256(*filesystem(uri))


def file_entries(folder: str | Path, known: Mapping[str, Mapping[str, object]] | None = None,
                 leave_out: frozenset[str] = frozenset({MANIFEST})) -> dict[str, dict[str, object]]:
    """{relative path ('/'-separated): {"sha256", "size"}} for every file under `folder` but `leave_out`.

    `known` holds entries already verified against these very bytes (a folder just copied from a verified one), so
    they are not hashed again.
    """
    fs, root = filesystem(folder)
    root = root.rstrip("/")
    entries: dict[str, dict[str, object]] = {}
    for name in sorted(path[len(root) + 1:] for path in fs.find(root)):
        if name in leave_out:
            continue
        path = f"{root}/{name}"
        size = int(fs.size(path))
        previous = (known or {}).get(name)
        if previous is not None and previous.get("size") == size:
            entries[name] = dict(previous)
        else:
            entries[name] = {"sha256": _sha256(fs, path), "size": size}
    return entries


def write_manifest(folder: str | Path, stage: str | None = None,
                   known: Mapping[str, Mapping[str, object]] | None = None) -> dict[str, dict[str, object]]:
    """Hash every file of `folder` (reusing `known` entries, see `file_entries`) and write its manifest last;
    returns the file entries. `stage` names the k2 stage that rebuilds the folder (for the error message)."""
    entries = file_entries(folder, known)
    write_json({"format": FORMAT, "stage": stage, "files": entries}, f"{str(folder).rstrip('/')}/{MANIFEST}")
    return entries


def _remedy(stage: str | None) -> str:
    if stage:
        return f"re-run `k2 stage {stage}` or `dvc pull`"
    return "re-create the folder from its source"


def verify_manifest(folder: str | Path) -> dict[str, dict[str, object]] | None:
    """Check every file listed in `folder`'s manifest (size, then sha256); returns the entries, or None when the folder
    has no manifest (not written by k2). Raises CheckpointIntegrityError naming each bad file and what to do."""
    fs, root = filesystem(folder)
    manifest_path = f"{root.rstrip('/')}/{MANIFEST}"
    if not fs.exists(manifest_path):
        return None
    shown = str(folder).rstrip("/")
    try:
        manifest = read_json(f"{shown}/{MANIFEST}")
        entries, stage = manifest["files"], manifest.get("stage")
        if manifest.get("format") != FORMAT or not isinstance(entries, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointIntegrityError(f"{shown}/{MANIFEST}: unreadable manifest ({error}); "
                                       f"{_remedy(None)} or delete the manifest to load the folder unverified"
                                       ) from None
    problems = []
    for name, entry in sorted(entries.items()):
        path = f"{root.rstrip('/')}/{name}"
        if not fs.exists(path):
            problems.append(f"{shown}/{name}: missing")
            continue
        size = int(fs.size(path))
        if size != entry["size"]:
            problems.append(f"{shown}/{name}: {size} bytes, the manifest says {entry['size']} (truncated or "
                            "corrupted)")
        elif _sha256(fs, path) != entry["sha256"]:
            problems.append(f"{shown}/{name}: sha256 mismatch (corrupted)")
    if problems:
        raise CheckpointIntegrityError(f"{'; '.join(problems)}; {_remedy(stage)}")
    return entries
