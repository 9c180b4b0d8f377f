"""A user's own pretraining text as a corpus source: parquet, jsonl or text shards, local or on S3, streamed.

Files are read one at a time in sorted order, parquet one row group (text column only) at a time, jsonl and text
line by line, so the corpus builder's `max_chars_per_source` stops reading early: a 1 TB bucket costs what is taken.
Parquet rows and jsonl lines are documents; a text file is one running text cut on blank lines.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field

from k2core.errors import UserError
from k2core.storage.fs import filesystem

Format = Literal["parquet", "jsonl", "text"]
SUFFIXES: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet",),
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson"),
    "text": (".txt", ".txt.gz", ".md", ".text"),
}
TEXT_PIECE_CHARS = 1 << 16  # a text file is yielded in pieces of about this size, cut at blank lines


class UserCorpus(BaseModel):
    """`synth.<profile>.corpus.sources` entry for text the user brings (the other entries name offline sources)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # the `source` of its corpus rows and its stats key
    path: str = Field(min_length=1)  # a file, a folder (read recursively) or a glob; local or s3://bucket/...
    format: Format | None = None  # default: from the files' suffixes (.parquet, .jsonl[.gz], .txt[.gz], .md)
    text_column: str = "text"  # the parquet column or jsonl key holding the text


def _format_of(path: str) -> Format | None:
    for fmt, suffixes in SUFFIXES.items():
        if path.endswith(suffixes):
            return fmt  # type: ignore[return-value]
    return None


def _where(source: UserCorpus) -> str:
    return f"corpus source '{source.name}' ({source.path})"


def shard_files(source: UserCorpus) -> tuple[list[str], Format, str]:
    """The source's files in sorted order, their format and the URI scheme prefix to name them with."""
    try:
        fs, path = filesystem(source.path)
        if any(char in path for char in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.find(path)
        else:
            found = [path] if fs.exists(path) else []
    except (OSError, ValueError) as exc:
        raise UserError(f"{_where(source)}: cannot list it ({exc}); check the path and, for s3://, the AWS_* "
                        "credentials and endpoint") from exc
    files = sorted(f for f in found if not f.rsplit("/", 1)[-1].startswith((".", "_")))
    if source.format is not None and fs.isdir(path):
        files = [f for f in files if f.endswith(SUFFIXES[source.format])]
    if not files:
        raise UserError(f"{_where(source)}: no files there; give a file, a folder or a glob of "
                        f"{source.format or 'parquet, jsonl or text'} shards")
    formats = {f: source.format or _format_of(f) for f in files}
    if len(set(formats.values())) > 1 or None in formats.values():
        odd = next((f for f, fmt in formats.items() if fmt is None), files[-1])
        raise UserError(f"{_where(source)}: cannot tell one format for all files (e.g. {odd}); name the files "
                        f"*.parquet, *.jsonl[.gz] or *.txt[.gz], or set `format` to one of {list(SUFFIXES)}")
    prefix = source.path.split("://", 1)[0] + "://" if "://" in source.path else ""
    return files, formats[files[0]], prefix  # type: ignore[return-value]


def _parquet_texts(handle: IO[bytes], name: str, source: UserCorpus) -> Iterator[str]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        shard = pq.ParquetFile(handle)
    except pyarrow.ArrowException as exc:
        raise UserError(f"{_where(source)}: {name} is not a readable parquet file ({exc})") from exc
    field = shard.schema_arrow.field(source.text_column) if source.text_column in shard.schema_arrow.names else None
    if field is None or not (pyarrow.types.is_string(field.type) or pyarrow.types.is_large_string(field.type)):
        raise UserError(f"{_where(source)}: {name} has no string column `{source.text_column}` (columns: "
                        f"{shard.schema_arrow.names}); set `text_column`")
    for group in range(shard.num_row_groups):
        for text in shard.read_row_group(group, columns=[source.text_column]).column(0).to_pylist():
            if text:
                yield text


def _jsonl_texts(handle: IO[bytes], name: str, source: UserCorpus) -> Iterator[str]:
    for number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{_where(source)}: {name}:{number} is not JSON ({exc})") from exc
        text = row.get(source.text_column) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise UserError(f"{_where(source)}: {name}:{number} has no string `{source.text_column}`; "
                            "each line must be a JSON object with it (or set `text_column`)")
        yield text


def _plain_texts(handle: IO[bytes], name: str, source: UserCorpus) -> Iterator[str]:
    piece: list[str] = []
    size = 0
    for line in io.TextIOWrapper(handle, encoding="utf-8"):
        piece.append(line)
        size += len(line)
        if size >= TEXT_PIECE_CHARS and not line.strip():
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


_READERS = {"parquet": _parquet_texts, "jsonl": _jsonl_texts, "text": _plain_texts}


def user_texts(source: UserCorpus) -> Iterator[str]:
    """The source's texts, lazily: the next file is opened only when the previous one is used up."""
    files, fmt, prefix = shard_files(source)
    fs, _ = filesystem(source.path)
    for file in files:
        name = prefix + file
        try:
            with fs.open(file, "rb", compression="infer") as handle:
                yield from _READERS[fmt](handle, name, source)
        except UnicodeDecodeError as exc:
            raise UserError(f"{_where(source)}: {name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:  # also gzip.BadGzipFile
            raise UserError(f"{_where(source)}: cannot read {name} ({exc})") from exc
