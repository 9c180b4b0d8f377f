"""A user's corpus as a source: parquet, jsonl and text shards, local and on S3 (moto), read in order, streamed
(reading stops in the first file / row group once the cap is reached), and bad input named in the error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import fsspec
import pyarrow
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from k2core.data.corpus import CorpusConfig, build_text_corpus, read_source
from k2core.data.user_corpus import UserCorpus
from k2core.errors import UserError
from k2core.storage.fs import filesystem
from tests.s3_testing import moto_with_bucket

BUCKET = "user-corpus"
FILES, ROWS, ROW_GROUP = 3, 10, 5
SUFFIX = {"parquet": "parquet", "jsonl": "jsonl", "text": "txt"}


def _text(file: int, row: int) -> str:
    return f"Shard {file} row {row}: " + " ".join(f"word{file}{row}{k}" for k in range(30))


def write_shards(folder: Path, fmt: str) -> list[str]:
    """FILES shards of ROWS texts each (parquet: row groups of ROW_GROUP rows); returns every text in order."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in range(FILES):
        texts = [_text(file, row) for row in range(ROWS)]
        target = folder / f"part-{file:03d}.{SUFFIX[fmt]}"
        if fmt == "parquet":
            pq.write_table(pyarrow.table({"id": list(range(ROWS)), "text": texts}), target, row_group_size=ROW_GROUP)
        elif fmt == "jsonl":
            target.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
        else:
            target.write_text("\n\n".join(texts) + "\n")
    (folder / "_SUCCESS").write_text("")  # writers' markers are not shards
    return [_text(file, row) for file in range(FILES) for row in range(ROWS)]


@pytest.fixture(scope="module")
def s3_bucket():
    with moto_with_bucket(BUCKET):
        yield f"s3://{BUCKET}"


@pytest.fixture
def opened(monkeypatch) -> dict[str, list]:
    """Records the files fsspec opens and the parquet row groups read, local and S3 alike."""
    seen: dict[str, list] = {"files": [], "row_groups": []}
    open_file, read_group = fsspec.AbstractFileSystem.open, pq.ParquetFile.read_row_group

    def counting_open(self, path, *args, **kwargs):
        seen["files"].append(path)
        return open_file(self, path, *args, **kwargs)

    def counting_read(self, group, *args, **kwargs):
        seen["row_groups"].append(group)
        return read_group(self, group, *args, **kwargs)

    monkeypatch.setattr(fsspec.AbstractFileSystem, "open", counting_open)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting_read)
    return seen


def _shards_at(where: str, fmt: str, tmp_path: Path, s3_root: str | None) -> tuple[str, list[str]]:
    local = tmp_path / fmt
    texts = write_shards(local, fmt)
    if where == "local":
        return str(local), texts
    fs, _ = filesystem(s3_root)
    fs.put(str(local), f"{BUCKET}/{tmp_path.name}/", recursive=True)
    return f"{s3_root}/{tmp_path.name}/{fmt}", texts


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "text"])
def test_user_shards_stream_in_order_and_stop_at_the_cap(fmt, where, tmp_path, request, opened) -> None:
    s3_root = request.getfixturevalue("s3_bucket") if where == "s3" else None
    path, texts = _shards_at(where, fmt, tmp_path, s3_root)
    source = UserCorpus(name="mine", path=path)
    everything = "\n\n".join(read_source(source, 1 << 30))
    assert everything.replace("\n\n", "\n") == "\n".join(texts)  # all shards, sorted, rows in order
    assert len(set(opened["files"])) == FILES and (fmt != "parquet" or len(opened["row_groups"]) == FILES * 2)

    opened["files"].clear()
    opened["row_groups"].clear()
    first = read_source(source, len(texts[0]) + 10)  # the cap falls in the first file's first row group
    assert "".join(first).startswith(texts[0]) and sum(map(len, first)) == len(texts[0]) + 10
    assert len(set(opened["files"])) == 1 and opened["files"][0].endswith(f"part-000.{SUFFIX[fmt]}")
    assert opened["row_groups"] == ([0] if fmt == "parquet" else [])

    cfg = CorpusConfig(sources=["pydoc_topics", source], max_chars_per_source=3_000, doc_chars=500, min_doc_chars=50)
    corpus, stats = build_text_corpus(cfg)
    mine = corpus[corpus["source"] == "mine"]
    assert stats["corpus_docs_mine"] == len(mine) > 0 and mine["doc_id"].str.startswith("mine-").all()
    assert mine["text"].str.len().sum() <= 3_000 and mine["text"].str.len().le(500).all()


def test_globs_gzip_and_columns(tmp_path) -> None:
    folder = tmp_path / "mixed"
    texts = write_shards(folder, "jsonl")
    (folder / "zipped").mkdir()
    with gzip.open(folder / "zipped" / "extra.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"body": "zipped " * 20}) + "\n")
    (folder / "notes.md").write_text("not a jsonl shard")
    only_plain = read_source(UserCorpus(name="g", path=str(folder / "part-*.jsonl")), 1 << 20)
    assert only_plain == texts
    zipped = read_source(UserCorpus(name="z", path=str(folder / "*" / "*.gz"), text_column="body"), 1 << 20)
    assert zipped == [("zipped " * 20).strip()]
    in_folder = read_source(UserCorpus(name="f", path=str(folder), format="jsonl", text_column="text"), 100)
    assert in_folder and in_folder[0] == texts[0][:100]


def _error(source: UserCorpus) -> str:
    with pytest.raises(UserError) as caught:
        read_source(source, 1_000)
    message = str(caught.value)
    assert f"corpus source '{source.name}'" in message
    return message


def test_bad_user_corpora_name_the_source_and_the_fix(tmp_path) -> None:
    assert "no files there" in _error(UserCorpus(name="gone", path=str(tmp_path / "missing")))
    folder = tmp_path / "pq"
    write_shards(folder, "parquet")
    assert "`body`" in _error(UserCorpus(name="col", path=str(folder), text_column="body"))
    (folder / "part-000.parquet").write_bytes(b"not parquet at all")
    assert "not a readable parquet file" in _error(UserCorpus(name="junk", path=str(folder)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{oops\n')
    assert f"{bad}:2 is not JSON" in _error(UserCorpus(name="badjson", path=str(bad)))
    bad.write_text('{"content": "no text key"}\n')
    assert ":1 has no string `text`" in _error(UserCorpus(name="nokey", path=str(bad)))
    mixed = tmp_path / "mixed"
    write_shards(mixed, "text")
    (mixed / "data.csv").write_text("a,b\n")
    assert "set `format`" in _error(UserCorpus(name="mixed", path=str(mixed)))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    assert "not UTF-8" in _error(UserCorpus(name="latin", path=str(latin)))


def test_bad_s3_paths_name_the_source(s3_bucket) -> None:
    assert "no files there" in _error(UserCorpus(name="s3gone", path=f"{s3_bucket}/no/such/prefix"))
    assert "corpus source 'nobucket'" in _error(UserCorpus(name="nobucket", path="s3://no-such-bucket-k2/x.jsonl"))


def test_user_corpus_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="name"):
        UserCorpus(name="Has Spaces", path="x.txt")
    with pytest.raises(ValidationError, match="format"):
        UserCorpus(name="ok", path="x.txt", format="csv")
    with pytest.raises(ValidationError, match="more than once"):
        CorpusConfig(sources=["gutenberg", {"name": "gutenberg", "path": "x.txt"}], max_chars_per_source=10,
                     doc_chars=10, min_doc_chars=1)
    cfg = CorpusConfig(sources=["gutenberg", {"name": "mine", "path": "s3://b/p/*.parquet"}], max_chars_per_source=10,
                       doc_chars=10, min_doc_chars=1)
    assert isinstance(cfg.sources[1], UserCorpus) and cfg.sources[1].text_column == "text"
