"""fsspec-backed I/O with atomic writes, for local disk and S3 (s3fs)."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pandas as pd


def _storage_options(uri: str) -> dict[str, Any]:
    """S3 endpoint and credentials come from the environment (AWS_* and AWS_ENDPOINT_URL)."""
    if not uri.startswith("s3://"):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that serves `uri` and the path inside it."""
    text = str(uri)
    fs, path = fsspec.core.url_to_fs(text, **_storage_options(text))
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
    with open_uri(uri, "rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Copy folder `src` to `dst`, replacing `dst` only once the copy is complete (local disk)."""
    import shutil

    src, dst = Path(src), Path(dst)
    staging = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    shutil.copytree(src, staging)
    if dst.exists():
        shutil.rmtree(dst)
    staging.rename(dst)


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
