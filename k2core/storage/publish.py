"""Publishing a stage's outputs to the storage root, and reading them back, with nothing partial ever visible.

A folder `P` (a dataset, the quarantine reports, a checkpoint) is published as

    <root>/P/v-<version>/...      immutable objects, uploaded first (each one PUT with retries)
    <root>/P/published.json        written last, in one PUT: the version, and each file's sha256 and size

so a reader that goes through the manifest (`resolve`, `fetch`) sees the previous complete version or the new
complete version, never a mix: an interrupted or failed publish leaves at most an unreferenced `v-*` folder,
which the next successful publish removes. The version is the content digest, so publishing the same bytes
again writes nothing and yields byte-identical objects and manifest. A single file `P` (a metrics JSON, a plot)
is one object written in one PUT, which S3 makes visible only when complete (locally: temporary file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from k2core.storage.fs import staging_dir, swap_in
from k2core.storage.manifest import file_entries, file_sha256
from k2core.storage.root import RetryConfig, StorageError, describe_failure, root_filesystem, storage_uri

PUBLISHED = "published.json"


def build_manifest(folder: Path, relative: str) -> dict[str, Any]:
    """The manifest of a local folder: every file's sha256 and size; the version is a digest over them."""
    files = file_entries(folder, leave_out=frozenset())  # a checkpoint's own manifest.json is published too
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return {"path": relative, "version": version, "files": files}


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def read_manifest(uri: str, retries: RetryConfig | None) -> dict[str, Any] | None:
    """The manifest of published folder `uri`, or None when nothing was ever published there."""
    fs, path = root_filesystem(uri, retries)
    try:
        return json.loads(fs.cat_file(f"{path}/{PUBLISHED}"))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - one clear line
        raise describe_failure(uri, "reading the manifest of", exc, retries) from exc


def _put_file_atomic(fs, local: Path, path: str) -> None:
    """One object from a local file: S3 shows a PUT only once complete; locally, temporary name + rename."""
    if isinstance(fs, LocalFileSystem):
        tmp = f"{fs._parent(path)}/.{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.tmp"
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.put_file(str(local), tmp)
        fs.mv(tmp, path)
    else:
        fs.put_file(str(local), path)


def _remove_stale_versions(fs, path: str, keep: str) -> None:
    """Drop version folders the manifest no longer names (old versions, leftovers of failed publishes)."""
    try:
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("v-") and name != f"v-{keep}":
                fs.rm(entry, recursive=True)
    except Exception:  # noqa: BLE001 - cleanup is best effort; the manifest already names the complete version
        pass


def publish_path(local_root: Path, relative: str, root: str, retries: RetryConfig | None) -> str:
    """Publish `local_root/relative` (file or folder) to `<root>/<relative>`; returns the URI readers use."""
    local, uri = Path(local_root) / relative, storage_uri(root, relative)
    fs, path = root_filesystem(uri, retries)
    try:
        if local.is_file():
            _put_file_atomic(fs, local, path)
            return uri
        manifest = build_manifest(local, relative)
        current = read_manifest(uri, retries)
        if current is None or current["version"] != manifest["version"]:
            prefix = f"{path}/v-{manifest['version']}"
            for name in manifest["files"]:
                _put_file_atomic(fs, local / name, f"{prefix}/{name}")
            with tempfile.TemporaryDirectory() as tmp:
                staged = Path(tmp) / PUBLISHED
                staged.write_bytes(_manifest_bytes(manifest))
                _put_file_atomic(fs, staged, f"{path}/{PUBLISHED}")
        _remove_stale_versions(fs, path, manifest["version"])
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line naming the URI
        raise describe_failure(uri, "publishing", exc, retries) from exc
    return uri


def resolve(uri: str, retries: RetryConfig | None) -> tuple[str, dict[str, Any]]:
    """The folder of the version the manifest of `uri` names, and that manifest."""
    manifest = read_manifest(uri, retries)
    if manifest is None:
        raise StorageError(f"{uri}: nothing published there (no {PUBLISHED}); run the stage that writes it with "
                           f"storage.root set, or check the path")
    return f"{uri.rstrip('/')}/v-{manifest['version']}", manifest


def fetch(uri: str, dest: Path, retries: RetryConfig | None = None) -> Path:
    """Download the published folder `uri` into `dest`, each file checked against the manifest; `dest` is then
    replaced in one step (k2core.storage.fs.swap_in)."""
    folder, manifest = resolve(uri, retries)
    fs, path = root_filesystem(folder, retries)
    staging = staging_dir(dest)
    try:
        for name, entry in manifest["files"].items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{path}/{name}", str(target))
            if file_sha256(target) != entry["sha256"]:
                raise StorageError(f"{folder}/{name}: sha256 differs from {uri}/{PUBLISHED}; the object was "
                                   f"changed outside k2: republish it (rerun the stage)")
    except StorageError:
        _rmtree(staging)
        raise
    except Exception as exc:  # noqa: BLE001
        _rmtree(staging)
        raise describe_failure(folder, "downloading", exc, retries) from exc
    swap_in(staging, dest)
    return Path(dest)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def fetched(uri: str, retries: RetryConfig | None = None) -> Iterator[Path]:
    """A published folder downloaded (and checked) into a temporary local folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="k2-fetch-") as tmp:
        yield fetch(uri, Path(tmp) / "folder", retries)
