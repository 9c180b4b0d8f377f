"""Offline English text from Debian documentation packages: the Linux kernel's docs (`linux-doc-6.1`), Python's
reST documentation sources (`python3.11-doc`) and the GCIDE dictionary (`dict-gcide`, 1913 Webster + CIDE).

`scripts/setup.sh` installs the packages (apt, as root, only when missing); a source whose files are absent raises
a UserError naming the package to install. Readers yield raw texts in a fixed (sorted) order; the corpus builder
cleans, caps and chunks them.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from collections.abc import Collection, Iterator
from pathlib import Path

from k2core.errors import UserError

LINUX_DOCS = Path("/usr/share/doc/linux-doc-6.1/Documentation")
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")
BATCH_CHARS = 1 << 16  # short entries are joined into texts of about this size, so chunking packs them

_ROLE = re.compile(r":[a-z][a-z0-9:+-]*:`([^`<]*?)\s*(?:<[^>`]*>)?`")  # :func:`name`, :ref:`text <label>`
_SPDX = re.compile(r"^\.\. SPDX-License-Identifier:.*$", re.M)


def require(path: Path, source: str, package: str) -> Path:
    """`path`, or a UserError saying which Debian package provides it."""
    if not path.exists():
        raise UserError(
            f"corpus source '{source}' reads {path}, which is missing: install the Debian package {package} "
            f"(`sudo apt-get install {package}`, or run scripts/setup.sh as root)")
    return path


def rst_text(text: str) -> str:
    """reST with its inline roles reduced to their text (`:func:`len`` -> `len`) and licence comment lines dropped."""
    return _SPDX.sub("", _ROLE.sub(r"\1", text))


def linux_docs() -> Iterator[str]:
    """The kernel's English .rst/.txt documentation (translations and YAML bindings left out)."""
    root = require(LINUX_DOCS, "linux_docs", "linux-doc-6.1")
    for path in sorted(root.rglob("*.gz")):
        name = path.name.removesuffix(".gz")
        english = path.relative_to(root).parts[0] != "translations"
        if not english or not (name.endswith((".rst", ".txt")) or "." not in name):
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            yield rst_text(handle.read())


def python_docs(skip_pages: Collection[str] = ()) -> Iterator[str]:
    """Python 3.11's documentation sources; `skip_pages` are page names (e.g. "typing") left out."""
    root = require(PYTHON_DOCS, "python_docs", "python3.11-doc")
    skip = {page.lower() for page in skip_pages}
    for path in sorted(root.rglob("*.rst.txt")):
        if path.name.removesuffix(".rst.txt").lower() in skip:
            continue
        yield rst_text(path.read_text(encoding="utf-8", errors="replace"))


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
# \Ab*jure"\, and a respelling after it: (ăb*jūr")
_PRONUNCIATION = re.compile(r'[ \t]*\\[^\\\n]*\\(?:[ \t]*\((?=[^()\n]*(?:\*|`|(?<!\[)"))[^()\n]*\))?')
_RESPELLING = re.compile(r'[ \t]*\((?=[^()\s]*[*"`])[^()\s]*\)')  # a respelling elsewhere: (ăb*jūr")
_SYLLABLE = re.compile(r'(?<=\w)[*"`](?=\w)')  # A*ba"sic: headword syllables and stress
# provenance tags: [1913 Webster], [PJC], [WordNet 1.5 +PJC], [AS]
_SOURCE_TAG = re.compile(r"[ \t]*\[(?:AS|[^\]\n]*(?:Webster|WordNet|PJC|RDH|RHUD|Century Dict)[^\]\n]*)\]")
_XREF = re.compile(r"[{}]")  # {Renounce}: a link to another entry
_ATTRIBUTION = re.compile(r"\s*--\s*(?=\S)")  # "Magic I here abjure." --Shak.
_ACCENTED = re.compile(r"\[([-='`^~.\"*,]?)([A-Za-z]{1,2})(\^?)\]")  # marked letters in ASCII: [=o], ['e], [a^]
_NAMED = re.compile(r"\[([A-Za-z]+)\]")
_MARKS = {"=": "\u0304", "-": "\u0304", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", ".": "\u0323",
          '"': "\u0308", "*": "\u030a", ",": "\u0327"}  # combining marks (NFC composes them)
_SYMBOLS = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "imac": "ī", "aum": "ä", "add": "ä", "udd": "ü", "asl": "a",
            "eth": "ð", "thorn": "þ", "yogh": "ȝ", "ng": "ŋ", "th": "þ", "root": "√", "deg": "°", "sect": "§",
            "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "bar": "|", "pounds": "£", "dsdot": "ḍ",
            "prime": "′", "bprime": "″", "frac12": "½", "frac14": "¼", "frac34": "¾", "cre": "˘",
            "hand": "☞"}


def _b64(number: str) -> int:
    value = 0
    for char in number:
        value = value * 64 + _B64[char]
    return value


def _accented(match: re.Match[str]) -> str:
    before, letters, after = match.groups()
    if bool(before) == bool(after):  # no mark, or two: a word in brackets such as [R.] or [Obs.]
        return _SYMBOLS.get(letters, match.group(0))
    return letters[0] + (_MARKS[before] if before else "\u0306") + letters[1:]  # a trailing ^ is a breve: [a^]


def gcide_entry(raw: str) -> str:
    """One dictd GCIDE entry as plain paragraphs: no pronunciation keys, provenance tags or link braces, letters
    with diacritics and symbols as Unicode, each paragraph's wrapped lines joined, attributions as "— Author"."""
    text = _SOURCE_TAG.sub("", _PRONUNCIATION.sub("", raw))
    text = _NAMED.sub(lambda m: _SYMBOLS.get(m.group(1), m.group(0)), _ACCENTED.sub(_accented, text))
    text = unicodedata.normalize("NFC", text)  # marked letters count as word characters below
    text = _SYLLABLE.sub("", _RESPELLING.sub("", text)).replace("\\", "")  # and pronunciations split over lines
    text = _ATTRIBUTION.sub(" — ", _XREF.sub("", text))
    paragraphs = (" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def gcide() -> Iterator[str]:
    """The dictionary's entries in file order (headwords sharing an entry read once), joined into batches."""
    data = require(GCIDE_DICT, "gcide", "dict-gcide")
    spans = set()
    for line in require(GCIDE_INDEX, "gcide", "dict-gcide").read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")[:3]
        if not word.startswith("00"):  # 00-database-info etc.: the licence and metadata
            spans.add((_b64(offset), _b64(length)))
    batch: list[str] = []
    size = 0
    with gzip.open(data, "rb") as handle:
        for offset, length in sorted(spans):
            handle.seek(offset)  # forward only: the spans are sorted
            entry = gcide_entry(handle.read(length).decode("utf-8", errors="replace"))
            batch.append(entry)
            size += len(entry)
            if size >= BATCH_CHARS:
                yield "\n\n".join(batch)
                batch, size = [], 0
    if batch:
        yield "\n\n".join(batch)
