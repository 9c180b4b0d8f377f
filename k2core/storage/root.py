"""The storage root (`storage.root` in params.yaml): where every stage's outputs are published.

`null` keeps everything in the repository's DVC working copy. `s3://bucket/prefix` (or another fsspec URL, or an
absolute local path) also receives each stage's datasets, reports, metrics and checkpoints under
`<root>/<relative path>` (k2core.storage.publish). S3 endpoint and credentials come only from the environment
(AWS_ENDPOINT_URL[_S3], AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or any other botocore source); the root URL may
not carry them.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from k2core.errors import UserError
from k2core.storage.fs import filesystem


class StorageError(UserError, RuntimeError):
    """A storage root that cannot be reached or written, worded as one line naming the URL and what to do
    (`k2` prints it as that one line)."""


class RetryConfig(BaseModel):
    """How hard one S3 request is retried before the stage fails (botocore's standard mode)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1, le=20)  # per request, first try included; exponential backoff with jitter
    connect_timeout_s: float = Field(gt=0)
    read_timeout_s: float = Field(gt=0)


class StorageConfig(BaseModel):
    """`storage.<profile>` in params.yaml."""

    model_config = ConfigDict(extra="forbid")

    root: str | None
    retries: RetryConfig

    @field_validator("root")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.username or parts.password or parts.query:
            raise ValueError("the storage root may not carry credentials or options; "
                             "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_ENDPOINT_URL in the environment")
        if "://" not in value and not os.path.isabs(value):
            raise ValueError("use s3://bucket/prefix or an absolute path (null: the repository only)")
        return value.rstrip("/")


def storage_uri(root: str, relative: str) -> str:
    """`<root>/<relative>`: the one mapping from a stage's repository path to its place in the storage root."""
    relative = str(relative).strip("/")
    if not relative or relative.startswith("..") or "/../" in f"/{relative}/":
        raise ValueError(f"{relative!r} is not a path inside the repository")
    return f"{root.rstrip('/')}/{relative}"


def s3_options(retries: RetryConfig) -> dict[str, Any]:
    """botocore options: botocore retries every request (500, 503, SlowDown, resets) with exponential backoff."""
    return {
        "config_kwargs": {
            "retries": {"max_attempts": retries.max_attempts, "mode": "standard"},
            "connect_timeout": retries.connect_timeout_s,
            "read_timeout": retries.read_timeout_s,
        },
    }


def root_filesystem(uri: str, retries: RetryConfig | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving `uri` with the configured retries (S3 only; None: s3fs's and botocore's defaults) and
    the path inside it.

    s3fs's own retry loop is turned off (its instances are cached per options, so this one is ours): one request
    is then tried at most `max_attempts` times in all, not max_attempts times s3fs's 5."""
    if not uri.startswith("s3://") or retries is None:
        return filesystem(uri)
    fs, path = filesystem(uri, **s3_options(retries))
    fs.retries = 1
    return fs, path


def endpoint() -> str:
    """The S3 endpoint requests go to, as the user would look for it."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (default endpoint)"


REPUBLISH = "the previous published version is unchanged; rerun the stage once S3 is healthy"


def describe_failure(uri: str, action: str, exc: BaseException, retries: RetryConfig | None,
                     remedy: str = REPUBLISH) -> StorageError:
    """One line for the user: what failed, where, after how many tries, and what to do about it."""
    tries = f"{retries.max_attempts} attempts" if retries else "retries"
    if not uri.startswith("s3://"):
        return StorageError(f"{action} {uri} failed: {exc}; check that the path is writable")
    bucket = urlsplit(uri).netloc
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if isinstance(exc, FileNotFoundError) and ("bucket" in text.lower() or action == CHECK):
        return StorageError(f"{action} {uri} failed: bucket {bucket!r} does not exist at {endpoint()}; create it "
                            f"(aws s3 mb s3://{bucket}) or fix storage.root in params.yaml")
    if isinstance(exc, PermissionError):
        return StorageError(f"{action} {uri} failed: access denied ({text}); check AWS_ACCESS_KEY_ID/"
                            f"AWS_SECRET_ACCESS_KEY and the bucket policy")
    if "connect" in text.lower() or isinstance(exc, (ConnectionError, TimeoutError)):
        return StorageError(f"{action} {uri} failed: cannot reach the S3 endpoint {endpoint()} after "
                            f"{tries} ({text}); check AWS_ENDPOINT_URL(_S3) and the network")
    return StorageError(f"{action} {uri} failed after {tries} per request ({text}); {remedy}")


CHECK = "checking the storage root"


def check_root(root: str, retries: RetryConfig) -> None:
    """Fail fast, before a stage does any work, when the root's bucket is missing or its endpoint unreachable."""
    fs, path = root_filesystem(root, retries)
    try:
        if root.startswith("s3://"):
            fs.call_s3("head_bucket", Bucket=path.split("/", 1)[0])
        else:
            fs.makedirs(path, exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        raise describe_failure(root, CHECK, exc, retries) from exc
