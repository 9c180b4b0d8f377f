"""The larger offline sources (Debian docs, GCIDE, stdlib code): documents of the configured size under their own
names, GCIDE without its markup, the lm_loss held-out modules left out, and a missing package named."""

from __future__ import annotations

import re

import pytest

from k2core.data import debian_text
from k2core.data.corpus import (
    CorpusConfig,
    _docstring_files,
    _stdlib_root,
    build_text_corpus,
    read_source,
    stdlib_heldout_modules,
)
from k2core.errors import UserError

NEW_SOURCES = ["linux_docs", "python_docs", "gcide", "stdlib_code"]
GCIDE_MARKUP = {
    "pronunciation key": r"\\",
    "link brace": r"[{}]",
    "provenance tag": r"\[(?:1913 Webster|PJC|WordNet|AS\])",
    "ASCII letter escape": r"\[(?:[-='`^~.\"*,][A-Za-z]{1,2}|[A-Za-z]{1,2}\^|ae|oe|imac|aum|root|eth|thorn)\]",
    "syllable mark": r"\w\*\w",
    "attribution dashes": r"--",
    "dictd header": r"00-database|GNU General Public License",
}


def test_new_sources_give_documents_of_the_configured_size() -> None:
    cfg = CorpusConfig(sources=NEW_SOURCES, max_chars_per_source=30_000, doc_chars=1_500, min_doc_chars=100)
    corpus, stats = build_text_corpus(cfg)
    assert set(corpus["source"]) == set(NEW_SOURCES)
    assert stats == {f"corpus_docs_{s}": int((corpus["source"] == s).sum()) for s in NEW_SOURCES}
    for source, group in corpus.groupby("source"):
        assert 20_000 <= group["text"].str.len().sum() <= cfg.max_chars_per_source, source
    assert corpus["text"].str.len().between(cfg.min_doc_chars, cfg.doc_chars).all()
    assert corpus["doc_id"].str.match(r"^[a-z_]+-[0-9a-f]{16}$").all()
    text = {source: " ".join(group["text"]) for source, group in corpus.groupby("source")}
    assert "kernel" in text["linux_docs"] and ":ref:`" not in text["linux_docs"]
    assert "Python" in text["python_docs"] and "# Lib/" in text["stdlib_code"] and "def " in text["stdlib_code"]


def test_gcide_reads_as_plain_dictionary_text() -> None:
    text = "\n\n".join(read_source("gcide", 300_000))
    for what, pattern in GCIDE_MARKUP.items():
        found = re.search(pattern, text)
        assert found is None, f"{what}: {text[max(found.start() - 60, 0):found.end() + 60]!r}"
    assert "Aard-wolf, n. [D, earth-wolf] (Zool.) A carnivorous, striped, quadruped mammal" in text
    raw = ('Ablation \\Ab*la"tion\\, n. [L. ablatio, fr. ablatus p. p. of\n   auferre; see {Tolerate}.]\n'
           '   1. A carrying away. --Jer. Taylor.\n      [1913 Webster]\n\n   2. (Med.) Extirpation [=a]nd\n'
           '      d[=o]ttir, [ae]on. [Obs.]\n      [PJC]\n')
    assert debian_text.gcide_entry(raw) == ("Ablation, n. [L. ablatio, fr. ablatus p. p. of auferre; see Tolerate.] "
                                            "1. A carrying away. — Jer. Taylor.\n\n"
                                            "2. (Med.) Extirpation \u0101nd d\u014dttir, æon. [Obs.]")


def test_stdlib_code_and_python_docs_leave_out_the_held_out_modules() -> None:
    heldout = stdlib_heldout_modules()
    assert {"typing", "zipfile"} <= heldout and "abc" not in heldout
    code = "\n".join(read_source("stdlib_code", 1 << 40))
    root = _stdlib_root()
    heads = set(re.findall(r"^# Lib/(\S+\.py)$", code, re.M))
    heldout_files = {str(path.relative_to(root)) for path, module in _docstring_files() if module in heldout}
    assert heads and not heads & heldout_files and {"abc.py", "test/test_typing.py"} <= heads
    pages = "\n".join(read_source("python_docs", 1 << 40))
    assert "--- Support for type hints" not in pages and "--- Abstract Base Classes" in pages


@pytest.mark.parametrize(("source", "attribute", "package"), [
    ("linux_docs", "LINUX_DOCS", "linux-doc-6.1"),
    ("python_docs", "PYTHON_DOCS", "python3.11-doc"),
    ("gcide", "GCIDE_DICT", "dict-gcide"),
])
def test_a_missing_package_is_named(source, attribute, package, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(debian_text, attribute, tmp_path / "absent")
    with pytest.raises(UserError, match=rf"corpus source '{source}'.*install the Debian package {re.escape(package)}"):
        read_source(source, 1_000)
