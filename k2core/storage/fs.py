"""fsspec-backed I/O with atomic writes, for local disk and S3 (s3fs)."""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pandas as pd

from k2core.errors import CorruptFileError


def _storage_options(uri: str) -> dict[str, Any]:
    """S3 endpoint and credentials come from the environment (AWS_* and AWS_ENDPOINT_URL)."""
    if not uri.startswith("s3://"):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str | Path, **options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that serves `uri` and the path inside it; `options` add to the environment's (e.g. retries)."""
    text = str(uri)
    fs, path = fsspec.core.url_to_fs(text, **_storage_options(text), **options)
    return fs, path


def exists(uri: str | Path) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def open_uri(uri: str | Path, mode: str = "rb") -> IO[Any]:
    """Open a local or remote file; parent folders are created for writes."""
    fs, path = filesystem(uri)
    if "w" in mode or "a" in mode:
        fs.makedirs(fs._parent(path), exist_ok=True)
    return fs.open(path, mode)


def _write_bytes_atomic(uri: str | Path, payload: bytes) -> None:
    """Local: temporary file + rename. Object stores: one PUT, which S3 makes visible only when complete."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, target)
    else:
        fs.pipe_file(path, payload)
        fs.invalidate_cache(path)


def write_text(text: str, uri: str | Path) -> None:
    _write_bytes_atomic(uri, text.encode("utf-8"))


def write_json(obj: Any, uri: str | Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", uri)


def read_json(uri: str | Path) -> Any:
    with open_uri(uri, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def write_parquet(df: pd.DataFrame, uri: str | Path) -> None:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    _write_bytes_atomic(uri, buffer.getvalue())


def read_parquet(uri: str | Path) -> pd.DataFrame:
    """A parquet file as a frame; a file that is not valid parquet raises CorruptFileError naming it."""
    import pyarrow

    with open_uri(uri, "rb") as handle:
        data = handle.read()
    try:
        return pd.read_parquet(io.BytesIO(data))
    except pyarrow.ArrowException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(
            f"{uri}: not a readable parquet file ({reason}); restore it (`dvc checkout {uri}` for a pipeline "
            "output) or rerun the stage that writes it (`dvc repro --force STAGE`)") from exc


_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically (renameat2, Linux >= 3.15 on ext4, xfs, btrfs, tmpfs)
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap the folders at `a` and `b` (both must exist): every lookup of either path finds one of them."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(f"cannot swap {a} and {b} atomically: this C library has no renameat2 (Linux only)")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot swap {a} and {b} atomically (renameat2 RENAME_EXCHANGE): {os.strerror(errno)}")


def staging_dir(dst: str | Path) -> Path:
    """An empty sibling folder of `dst` to build its next version in; a leftover one (a killed writer's) is removed.

    One writer per `dst` at a time (the pipeline lock guarantees it), so the name can be fixed.
    """
    dst = Path(dst)
    staging = dst.with_name(f".{dst.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, dst: str | Path) -> None:
    """Make the complete folder `staging` appear at `dst` in one step, then delete the old `dst`.

    There is no moment at which `dst` is missing or partial: a first publish is one rename, a replacement one atomic
    exchange (the old folder is deleted from the staging path afterwards, so a kill leaves only a leftover there).
    """
    dst = Path(dst)
    if not dst.exists():
        staging.rename(dst)
        return
    _exchange(staging, dst)
    shutil.rmtree(staging)


def replace_dir(src: str | Path, dst: str | Path, prepare: Callable[[Path], None] | None = None) -> None:
    """Copy folder `src` to `dst` atomically (local disk): readers of `dst` see the old folder or the complete new one.

    `prepare(staging)` may add files to the copy before it is swapped in (e.g. a manifest written last).
    """
    staging = staging_dir(dst)
    shutil.copytree(src, staging, dirs_exist_ok=True)
    if prepare is not None:
        prepare(staging)
    swap_in(staging, dst)


def content_digest(path: str | Path) -> str:
    """sha256 over a local file's bytes, or over every file (name and bytes) in a folder."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
