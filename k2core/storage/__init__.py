"""Every path in k2 may be local or `s3://...`; reads and writes go through here.

Writes are atomic (a temporary object then a rename/copy) so a crashed stage never
leaves a half-written dataset that a later stage could mistake for a good one.
"""

from k2core.storage.fs import (
    content_digest,
    exists,
    filesystem,
    open_uri,
    read_json,
    read_parquet,
    replace_dir,
    staging_dir,
    swap_in,
    write_json,
    write_parquet,
    write_text,
)
from k2core.storage.manifest import MANIFEST, CheckpointIntegrityError, verify_manifest, write_manifest

__all__ = [
    "MANIFEST",
    "CheckpointIntegrityError",
    "content_digest",
    "exists",
    "filesystem",
    "open_uri",
    "read_json",
    "read_parquet",
    "replace_dir",
    "staging_dir",
    "swap_in",
    "verify_manifest",
    "write_json",
    "write_manifest",
    "write_parquet",
    "write_text",
]
