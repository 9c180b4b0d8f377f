"""Knowledge rephrasing (Kimi K2 §2.2): the same facts in other styles and perspectives, verified for fidelity.

A document is split into chunks on paragraph boundaries; each chunk is rewritten conditioned on the
already-rewritten previous chunk (chunk-wise autoregressive, so long documents stay coherent without a
long-context model), checked by `FidelityChecker`, retried up to `max_attempts` times and, if no attempt
passes, kept original. Chunks are joined back into one document that enters the corpus as
`kind="rephrased"` with the original's doc id as its `source`.

Two rephrasers: `LLMRephraser` (any `ChatBackend`, style prompts) and `RuleRephraser`, a deterministic
offline rewriter that restructures clauses, swaps connectives and phrasings for equivalents and re-lays
paragraphs (prose, study-note bullets, spoken register). It never touches code, lists or headings and
retries more conservatively (attempt 0: clauses + wording, 1: wording only, 2+: layout only).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from k2core.data.corpus import CORPUS_COLUMNS, chunk_text, clean_text, content_key
from k2core.data.fidelity import FidelityChecker
from k2core.llm import ChatBackend, ChatRequest

CHUNK_COLUMNS = ["doc_id", "chunk_index", "style", "original", "rephrased", "similarity", "judge", "attempts",
                 "kept_original"]
Layout = Literal["prose", "bullets", "spoken"]
StyleName = Literal["textbook", "encyclopedic", "study_notes", "conversational", "expert", "question_answer"]


@dataclass(frozen=True)
class Style:
    instruction: str  # completes "Rewrite the passage ..."
    layout: Layout  # what the offline rephraser does for this style


STYLES: dict[str, Style] = {
    "textbook": Style("as a clear, well-organised textbook passage for students", "prose"),
    "encyclopedic": Style("in the neutral, precise register of an encyclopedia article", "prose"),
    "study_notes": Style("as concise study notes, one bullet point per fact", "bullets"),
    "conversational": Style("as a friendly spoken explanation addressed to the reader as 'you'", "spoken"),
    "expert": Style("from the perspective of an expert briefing a colleague: dense and exact", "prose"),
    "question_answer": Style("as questions a curious reader would ask, each followed by its answer", "bullets"),
}


class RephraseConfig(BaseModel):
    """How much to rephrase and how strictly to check it (the backend is chosen by the caller)."""

    model_config = ConfigDict(extra="forbid")

    max_chunks: int = Field(ge=0)  # budget over all documents; whole documents only, 0 turns rephrasing off
    chunk_chars: int = Field(gt=0)  # chunk size; MiniLM reads ~256 word pieces, so keep this <= ~1000
    context_chars: int = Field(ge=0)  # tail of the previous rewritten chunk shown to the model
    styles: list[StyleName] = Field(min_length=1)
    min_similarity: float = Field(ge=-1, le=1)
    max_attempts: int = Field(ge=1)
    max_tokens: int = Field(ge=1)  # per rewrite (LLM backends)
    temperature: float = Field(ge=0)  # LLM backends; attempt k uses seed + k
    backend: str | None  # a name in `synth.llm`; None: the offline RuleRephraser
    judge: str | None  # a name in `synth.llm`; None: similarity alone decides


@dataclass(frozen=True)
class Rewrite:
    text: str
    completion_tokens: int  # as reported by the backend (RuleRephraser: word pieces of the output)


class Rephraser(Protocol):
    name: str

    def rephrase(self, chunk: str, style: str, previous: str, attempt: int, seed: int) -> Rewrite: ...


_WORD_PIECES = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: one backend-independent token count for throughput figures."""
    return len(_WORD_PIECES.findall(text))


# --- the LLM rephraser ------------------------------------------------------------------------------

_SYSTEM = (
    "You rewrite text for a training corpus. Keep every fact, name, number and code token of the passage; "
    "add no new facts; reply with the rewritten passage only."
)


def rephrase_prompt(chunk: str, style: str, previous: str, context_chars: int) -> list[dict[str, str]]:
    """Messages asking for `chunk` in `style`, continuing the rewritten text so far (`previous`)."""
    parts = [f"Rewrite the passage below {STYLES[style].instruction}."]
    if previous and context_chars:
        parts.append(
            "It continues a document whose rewritten version so far ends with:\n"
            f"<previous>\n{previous[-context_chars:]}\n</previous>\n"
            "Continue in the same voice; do not repeat that text."
        )
    parts.append(f"<passage>\n{chunk}\n</passage>")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_TAGS = re.compile(r"</?(passage|previous)>")


class LLMRephraser:
    """Style prompts through any chat backend."""

    def __init__(self, backend: ChatBackend, cfg: RephraseConfig) -> None:
        self.backend = backend
        self.cfg = cfg
        self.name = backend.backend_id

    def rephrase(self, chunk: str, style: str, previous: str, attempt: int, seed: int) -> Rewrite:
        request = ChatRequest(messages=rephrase_prompt(chunk, style, previous, self.cfg.context_chars),
                              temperature=self.cfg.temperature, seed=seed + attempt, max_tokens=self.cfg.max_tokens)
        response = self.backend.complete(request)
        text = _TAGS.sub("", response.message.get("content") or "").strip()
        return Rewrite(text, response.usage.completion_tokens)


# --- the offline rule-based rephraser ---------------------------------------------------------------

_PHRASES = [  # equivalent wordings, applied left to right, whole words, first letter's case kept
    ("e.g.", "for example"), ("i.e.", "that is"), ("in order to", "to"),
    ("is able to", "can"), ("are able to", "can"), ("a number of", "several"), ("make use of", "use"),
    ("makes use of", "uses"), ("the majority of", "most"), ("prior to", "before"), ("in the event that", "if"),
    ("however,", "that said,"), ("therefore,", "as a result,"), ("thus,", "hence,"), ("in addition,", "also,"),
    ("for example,", "for instance,"), ("note that", "notice that"), ("in other words,", "put differently,"),
    ("it is possible to", "one can"), ("whether or not", "whether"),
]
_FORMAL = [("don't", "do not"), ("doesn't", "does not"), ("can't", "cannot"), ("isn't", "is not"),
           ("aren't", "are not"), ("won't", "will not"), ("it's", "it is"), ("didn't", "did not")]
_CONNECTIVES = "if|when|although|while|because|unless|once|after|before"
_FRONTED = re.compile(rf"^({_CONNECTIVES}) ([^,;:]{{3,120}}), ([a-z].{{8,}})([.!?])$", re.IGNORECASE)
# Trailing clauses only after words that cannot be prepositions ("after the callback" is not a clause).
_TRAILING = re.compile(r"^([A-Z].{8,}?) (if|because|although|unless) ([^,;:]{3,120})([.!?])$")
# Sentence starts that are ordinary words, safe to lower-case when the sentence no longer begins with them.
_LOWERABLE = {"the", "this", "that", "these", "those", "it", "a", "an", "they", "we", "you", "each", "every",
              "such", "return", "returns", "raise", "raises", "call", "use", "set", "get", "create", "make"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_VERBATIM_LINE = re.compile(r"^(\s|>>>|[-*+] |\d+[.)] |[=\-*~^\"#+]{3,}$)|::$")


def _replace_words(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        pattern = re.compile(rf"(?<![\w.]){re.escape(old)}(?![\w])", re.IGNORECASE)
        text = pattern.sub(lambda m, new=new: new[0].upper() + new[1:] if m.group(0)[0].isupper() else new, text)
    return text


def restructure(sentence: str) -> str:
    """Move a subordinate clause to the other end of the sentence ("If A, B." <-> "B if A.")."""
    fronted = _FRONTED.match(sentence)
    if fronted:
        connective, clause, main, end = fronted.groups()
        return f"{main[0].upper()}{main[1:]} {connective.lower()} {clause}{end}"
    trailing = _TRAILING.match(sentence)
    if trailing and len(trailing.group(1).split()) >= 2 and trailing.group(1).split(" ", 1)[0].lower() in _LOWERABLE:
        main, connective, clause, end = trailing.groups()
        return f"{connective.capitalize()} {clause}, {main[0].lower()}{main[1:]}{end}"
    return sentence


def _is_prose(paragraph: str) -> bool:
    return not any(_VERBATIM_LINE.search(line) for line in paragraph.split("\n"))


class RuleRephraser:
    """Deterministic offline rewriting that keeps content: clause order, equivalent wording, layout."""

    name = "rules"

    def _sentences(self, paragraph: str, attempt: int, layout: Layout) -> list[str]:
        text = " ".join(paragraph.split())
        if attempt <= 1:
            text = _replace_words(text, _PHRASES + (_FORMAL if layout != "spoken" else []))
            if layout == "spoken":
                text = _replace_words(text, [(new, old) for old, new in _FORMAL if new != "cannot"])
        sentences = _SENTENCE_END.split(text)
        return [restructure(s) for s in sentences] if attempt == 0 else sentences

    def rephrase(self, chunk: str, style: str, previous: str, attempt: int, seed: int) -> Rewrite:
        layout = STYLES[style].layout
        paragraphs = []
        for paragraph in chunk.split("\n\n"):
            if not _is_prose(paragraph):
                paragraphs.append(paragraph)
                continue
            sentences = self._sentences(paragraph, attempt, layout)
            paragraphs.append("\n".join(f"- {s}" for s in sentences) if layout == "bullets" else " ".join(sentences))
        text = "\n\n".join(paragraphs)
        return Rewrite(text, count_tokens(text))


# --- documents and corpora ------------------------------------------------------------------------

@dataclass
class ChunkResult:
    original: str
    rephrased: str  # the accepted attempt, or the most similar one when all failed
    similarity: float
    judge: str
    attempts: int
    kept_original: bool
    completion_tokens: int  # over all attempts

    @property
    def text(self) -> str:
        """What goes into the rephrased document."""
        return self.original if self.kept_original else self.rephrased


def _rephrase_round(jobs: list[tuple[str, str, str, int]], rephraser: Rephraser, checker: FidelityChecker,
                    max_attempts: int) -> list[ChunkResult]:
    """Rewrite one chunk of each job (chunk, style, previous, seed), retrying the failures together so each
    attempt's similarities are one embedding batch; a chunk with no passing attempt keeps its original."""
    best: list[ChunkResult | None] = [None] * len(jobs)
    tokens = [0] * len(jobs)
    pending = list(range(len(jobs)))
    for attempt in range(max_attempts):
        rewrites = {i: rephraser.rephrase(jobs[i][0], jobs[i][1], jobs[i][2], attempt, jobs[i][3]) for i in pending}
        verdicts = checker.check_many([(jobs[i][0], rewrites[i].text) for i in pending],
                                      [jobs[i][3] + attempt for i in pending])
        still = []
        for i, verdict in zip(pending, verdicts, strict=True):
            tokens[i] += rewrites[i].completion_tokens
            candidate = ChunkResult(jobs[i][0], rewrites[i].text, verdict.similarity, verdict.judge, attempt + 1,
                                    not verdict.passed, tokens[i])
            current = best[i]
            if verdict.passed or current is None or verdict.similarity > current.similarity:
                best[i] = candidate
            if not verdict.passed:
                still.append(i)
        pending = still
        if not pending:
            break
    results = [r for r in best if r is not None]
    for i in pending:  # all attempts failed
        results[i].attempts, results[i].completion_tokens = max_attempts, tokens[i]
    return results


def rephrase_documents(plan: list[tuple[str, str]], rephraser: Rephraser, checker: FidelityChecker,
                       cfg: RephraseConfig, seed: int) -> list[list[ChunkResult]]:
    """Chunk-wise autoregressive rewrite of each (text, style): chunk k of a document is conditioned on
    its rewritten chunk k-1. Documents advance together, one chunk per round, to batch the checks."""
    chunks = [chunk_text(text, cfg.chunk_chars) for text, _ in plan]
    results: list[list[ChunkResult]] = [[] for _ in plan]
    for index in range(max((len(c) for c in chunks), default=0)):
        active = [d for d in range(len(plan)) if index < len(chunks[d])]
        jobs = [(chunks[d][index], plan[d][1], results[d][-1].text if index else "", seed + 7919 * d + 1000 * index)
                for d in active]
        for d, result in zip(active, _rephrase_round(jobs, rephraser, checker, cfg.max_attempts), strict=True):
            results[d].append(result)
    return results


def plan_documents(corpus: pd.DataFrame, cfg: RephraseConfig, seed: int) -> list[tuple[str, str, str]]:
    """(doc_id, text, style) of the `kind="text"` documents to rephrase: seeded order, whole documents,
    until `max_chunks` chunks are planned; styles rotate so every style is used."""
    texts = corpus[corpus["kind"] == "text"].sort_values("doc_id")
    order = random.Random(seed).sample(range(len(texts)), len(texts))
    styles = random.Random(seed + 1).sample(cfg.styles, len(cfg.styles))
    plan, budget = [], cfg.max_chunks
    for i in order:
        row = texts.iloc[i]
        n = len(chunk_text(row["text"], cfg.chunk_chars))
        if n > budget:
            continue
        plan.append((row["doc_id"], row["text"], styles[len(plan) % len(styles)]))
        budget -= n
        if budget == 0:
            break
    return plan


def rephrase_corpus(corpus: pd.DataFrame, cfg: RephraseConfig, rephraser: Rephraser, checker: FidelityChecker,
                    seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Rephrased documents (corpus rows), the `rephrased_chunks` table and throughput counts."""
    plan = plan_documents(corpus, cfg, seed)
    start = time.perf_counter()
    results = rephrase_documents([(text, style) for _, text, style in plan], rephraser, checker, cfg, seed)
    seconds = time.perf_counter() - start
    docs, chunks = [], []
    for (doc_id, _, style), doc_results in zip(plan, results, strict=True):
        joined = clean_text("\n\n".join(r.text for r in doc_results))
        docs.append({"doc_id": f"rephrased-{content_key(joined)[:16]}", "source": doc_id, "kind": "rephrased",
                     "text": joined})
        chunks.extend({"doc_id": doc_id, "chunk_index": index, "style": style, "original": r.original,
                       "rephrased": r.rephrased, "similarity": r.similarity, "judge": r.judge,
                       "attempts": r.attempts, "kept_original": r.kept_original}
                      for index, r in enumerate(doc_results))
    tokens = sum(r.completion_tokens for doc in results for r in doc)
    stats = {"rephrase_completion_tokens": tokens, "rephrase_seconds": seconds,
             "rephrase_tokens_per_s": tokens / seconds if seconds > 0 else 0.0}
    return pd.DataFrame(docs, columns=CORPUS_COLUMNS), chunk_table(chunks), stats


def chunk_table(rows: list[dict]) -> pd.DataFrame:
    """`rephrased_chunks` rows with the contract's dtypes (also when there are none)."""
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS).astype(
        {"doc_id": str, "chunk_index": "int64", "style": str, "original": str, "rephrased": str,
         "similarity": "float64", "judge": str, "attempts": "int64", "kept_original": "bool"})
