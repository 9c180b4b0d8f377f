"""A pretraining corpus from real text available offline (no downloads), plus the user's own.

Offline sources: the language reference topics in `pydoc_data.topics`, the docstrings of the CPython standard
library (read with `ast`, never imported), the stdlib's source code (`stdlib_code`), the Project Gutenberg text
bundled with reasoning-gym, and Debian's documentation packages (`linux_docs`, `python_docs`, `gcide`: see
`k2core.data.debian_text`). A `UserCorpus` entry streams parquet/jsonl/text shards (`k2core.data.user_corpus`).
Text is cleaned, packed into documents of about `doc_chars` characters on paragraph boundaries and
deduplicated; a document's id is derived from its content, so ids are stable across runs and machines.

The last `STDLIB_HELDOUT_CHARS` characters of the stdlib docstrings are the `lm_loss` eval's default text: no
source yields them (`stdlib_docstrings` stops before them; `stdlib_code` and `python_docs` leave out the modules
and pages they come from), whatever the caps.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import sysconfig
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from k2core.chat.tokens import SPECIAL_TOKENS
from k2core.data import debian_text
from k2core.data.user_corpus import UserCorpus, user_texts

CORPUS_COLUMNS = ["doc_id", "source", "kind", "text"]
OfflineSource = Literal["pydoc_topics", "stdlib_docstrings", "stdlib_code", "gutenberg", "linux_docs", "python_docs",
                        "gcide"]
Source = OfflineSource | UserCorpus
STDLIB_HELDOUT_CHARS = 200_000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANKS = re.compile(r"\n{3,}")


class CorpusConfig(BaseModel):
    """Which offline sources to read and how much of each."""

    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(min_length=1)
    max_chars_per_source: int = Field(gt=0)  # cap on the cleaned text taken from each source
    doc_chars: int = Field(gt=0)  # documents are packed up to this many characters
    min_doc_chars: int = Field(ge=1)  # shorter leftovers are dropped (the stats count what is kept)

    @model_validator(mode="after")
    def _sizes(self) -> CorpusConfig:
        if self.min_doc_chars > self.doc_chars:
            raise ValueError(f"min_doc_chars ({self.min_doc_chars}) must be <= doc_chars ({self.doc_chars})")
        names = [source_name(s) for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"corpus sources named more than once: {repeated} (give each user corpus its own name, "
                             "different from the offline sources)")
        return self


def source_name(source: Source) -> str:
    """The `source` column value (and stats key) of a source's documents."""
    return source.name if isinstance(source, UserCorpus) else source


def clean_text(text: str) -> str:
    """NFC, Unix newlines, no control characters or K2 special tokens, no trailing spaces, <= 1 blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def _split_long(paragraph: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at line ends where possible."""
    pieces: list[str] = []
    current = ""
    for line in paragraph.split("\n"):
        while len(line) > limit:
            pieces.extend([current] if current else [])
            current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if current and len(current) + 1 + len(line) > limit:
            pieces.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    return pieces + ([current] if current else [])


def chunk_text(text: str, doc_chars: int) -> list[str]:
    """Greedy packing of paragraphs into documents of at most `doc_chars` characters."""
    docs: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        for piece in _split_long(paragraph, doc_chars):
            if current and len(current) + 2 + len(piece) > doc_chars:
                docs.append(current)
                current = piece
            else:
                current = f"{current}\n\n{piece}" if current else piece
    return docs + ([current] if current else [])


def content_key(text: str) -> str:
    """Hash of the text up to case and whitespace: equal keys are duplicates."""
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _docstring_text(module: str, tree: ast.Module) -> str:
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"Module {module}\n\n{doc}")
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            doc = ast.get_docstring(node)
            if doc:
                parts.append(f"{module}.{node.name}\n\n{doc}")
            if isinstance(node, ast.ClassDef):
                for child in node.body:
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not child.name.startswith("_"):
                        child_doc = ast.get_docstring(child)
                        if child_doc:
                            parts.append(f"{module}.{node.name}.{child.name}\n\n{child_doc}")
    return "\n\n".join(parts)


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@cache
def _docstring_files() -> tuple[tuple[Path, str], ...]:
    """(file, module) of the public stdlib modules whose docstrings are read, in sorted order."""
    root = _stdlib_root()
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
    files = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if skip & set(relative.parts) or any(p.startswith("_") and p != "__init__.py" for p in relative.parts):
            continue  # tests, tools and private modules
        files.append((path, ".".join(relative.with_suffix("").parts).removesuffix(".__init__")))
    return tuple(files)


def _file_docstrings(path: Path, module: str) -> str:
    """The cleaned docstring text of one module ("" for none or an unparsable file)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""  # a few stdlib files are test fixtures on purpose
    return clean_text(_docstring_text(module, tree))


@cache
def _heldout_split() -> tuple[int, int]:
    """Where the held-out tail starts: (index into `_docstring_files()`, characters of that file's text before it).

    Read from the end, so only the last few dozen modules are parsed."""
    files = _docstring_files()
    total = 0
    for index in range(len(files) - 1, -1, -1):
        total += len(_file_docstrings(*files[index]))
        if total >= STDLIB_HELDOUT_CHARS:
            return index, total - STDLIB_HELDOUT_CHARS
    raise RuntimeError(f"the stdlib's docstrings are under {STDLIB_HELDOUT_CHARS} characters: not a full CPython?")


def stdlib_heldout_modules() -> frozenset[str]:
    """Modules whose docstrings are (partly) in the held-out tail: no corpus source reads them."""
    return frozenset(module for _, module in _docstring_files()[_heldout_split()[0]:])


def stdlib_docstring_texts(heldout: bool) -> Iterator[str]:
    """The stdlib's docstring texts before the held-out tail, or (`heldout=True`) the tail itself."""
    start, keep = _heldout_split()
    files = _docstring_files()
    for index in range(start, len(files)) if heldout else range(start + 1):
        text = _file_docstrings(*files[index])
        if index == start:
            text = text[keep:] if heldout else text[:keep]
        if text:
            yield text


def _stdlib_docstrings() -> Iterator[str]:
    return stdlib_docstring_texts(heldout=False)


def _stdlib_code() -> Iterator[str]:
    """Every .py file of the stdlib (tests included) but those of the held-out modules, each headed by its path."""
    root = _stdlib_root()
    heldout = {path for path, _ in _docstring_files()[_heldout_split()[0]:]}
    for path in sorted(root.rglob("*.py")):
        if path in heldout or {"site-packages", "__pycache__"} & set(path.relative_to(root).parts):
            continue
        try:
            yield f"# Lib/{path.relative_to(root)}\n\n{path.read_text(encoding='utf-8')}"
        except UnicodeDecodeError:
            continue  # a few test fixtures are in other encodings on purpose


def _python_docs() -> Iterator[str]:
    return debian_text.python_docs(skip_pages=stdlib_heldout_modules())


def _unwrap(paragraphs: str) -> str:
    """Join hard-wrapped lines of prose paragraphs (Gutenberg texts wrap at ~70 characters)."""
    return "\n\n".join(" ".join(p.split("\n")) for p in paragraphs.split("\n\n"))


def _gutenberg() -> Iterator[str]:
    spec = importlib.util.find_spec("reasoning_gym")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("corpus source 'gutenberg' needs reasoning-gym installed (pip install reasoning-gym)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "in_the_year_2889.txt"
    raw = clean_text(path.read_text(encoding="utf-8"))
    body = re.split(r"\*\*\* START OF .*?\*\*\*", raw, maxsplit=1)[-1]
    body = re.split(r"\*\*\* END OF ", body, maxsplit=1)[0]
    yield _unwrap(clean_text(body))


_READERS = {"pydoc_topics": _pydoc_topics, "stdlib_docstrings": _stdlib_docstrings, "stdlib_code": _stdlib_code,
            "gutenberg": _gutenberg, "linux_docs": debian_text.linux_docs, "python_docs": _python_docs,
            "gcide": debian_text.gcide}


def make_documents(texts: list[str], source: str, kind: str, doc_chars: int, min_doc_chars: int) -> pd.DataFrame:
    """Clean and chunk `texts` into corpus rows (columns of `corpus.parquet`)."""
    rows = []
    for text in texts:
        for doc in chunk_text(clean_text(text), doc_chars):
            if len(doc) >= min_doc_chars:
                doc_id = f"{source}-{content_key(doc)[:16]}"
                rows.append({"doc_id": doc_id, "source": source, "kind": kind, "text": doc})
    return pd.DataFrame(rows, columns=CORPUS_COLUMNS)


def deduplicate(corpus: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop documents whose text repeats an earlier one (up to case and whitespace); returns the count."""
    keys = corpus["text"].map(content_key)
    keep = ~keys.duplicated()
    return corpus[keep].reset_index(drop=True), int((~keep).sum())


def read_source(source: Source, max_chars: int) -> list[str]:
    """Cleaned texts of one source, in a fixed order, until `max_chars` characters are collected (and nothing more is
    read)."""
    texts: list[str] = []
    total = 0
    for text in user_texts(source) if isinstance(source, UserCorpus) else _READERS[source]():
        text = clean_text(text)
        if not text:
            continue
        texts.append(text[: max_chars - total])
        total += len(texts[-1])
        if total >= max_chars:
            break
    return texts


def build_text_corpus(cfg: CorpusConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """All configured sources as `kind="text"` documents (not yet deduplicated) and per-source counts."""
    frames = []
    stats: dict[str, int] = {}
    for source in cfg.sources:
        texts = read_source(source, cfg.max_chars_per_source)
        frame = make_documents(texts, source_name(source), "text", cfg.doc_chars, cfg.min_doc_chars)
        stats[f"corpus_docs_{source_name(source)}"] = len(frame)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CORPUS_COLUMNS), stats
