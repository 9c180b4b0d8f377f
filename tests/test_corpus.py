"""Corpus from offline text: cleaning, chunking, dedup, stable ids, size limits."""

from __future__ import annotations

import pandas as pd

from k2core.data.corpus import (
    CorpusConfig,
    build_text_corpus,
    chunk_text,
    clean_text,
    deduplicate,
    make_documents,
    read_source,
)


def test_clean_text_normalises() -> None:
    raw = "Cafe\u0301  \r\nline<|im_end|>two\x00\n\n\n\n\tend   "
    assert clean_text(raw) == "Café\nlinetwo\n\n\tend"


def test_chunks_respect_size_and_keep_text() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * (i * 7) for i in range(30)) + "\n\n" + "x" * 950
    docs = chunk_text(text, 300)
    assert all(len(d) <= 300 for d in docs)
    assert "".join(docs).replace("\n", "") == text.replace("\n", "")


def test_dedup_ignores_case_and_whitespace() -> None:
    frame = make_documents(["Hello   world, long enough.", "hello world,\nlong enough.", "Other text here."],
                           "s", "text", doc_chars=100, min_doc_chars=5)
    unique, dropped = deduplicate(frame)
    assert dropped == 1 and list(unique["text"]) == ["Hello   world, long enough.", "Other text here."]


def test_sources_are_real_limited_and_stable() -> None:
    cfg = CorpusConfig(sources=["pydoc_topics", "stdlib_docstrings", "gutenberg"], max_chars_per_source=20_000,
                       doc_chars=1_500, min_doc_chars=100)
    first, stats = build_text_corpus(cfg)
    second, _ = build_text_corpus(cfg)
    pd.testing.assert_frame_equal(first, second)
    assert set(first["source"]) == {"pydoc_topics", "stdlib_docstrings", "gutenberg"}
    assert stats == {f"corpus_docs_{s}": int((first["source"] == s).sum()) for s in cfg.sources}
    for source, group in first.groupby("source"):
        assert group["text"].str.len().sum() <= cfg.max_chars_per_source, source
    assert first["text"].str.len().between(cfg.min_doc_chars, cfg.doc_chars).all()
    assert first["doc_id"].str.match(r"^[a-z_]+-[0-9a-f]{16}$").all()
    gutenberg = " ".join(first.loc[first["source"] == "gutenberg", "text"])
    assert "twenty-ninth century" in gutenberg and "Project Gutenberg License" not in gutenberg
    assert any("assert" in t for t in read_source("pydoc_topics", 5_000))
