"""Knowledge rephrasing: offline rules keep content, chunks are rewritten autoregressively, retried, kept original."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from k2core.data.corpus import chunk_text
from k2core.data.fidelity import FidelityChecker
from k2core.data.rephrase import (
    CHUNK_COLUMNS,
    LLMRephraser,
    RephraseConfig,
    RuleRephraser,
    plan_documents,
    rephrase_corpus,
    rephrase_documents,
    restructure,
)
from k2core.llm import ChatRequest, ChatResponse, Usage

CFG = RephraseConfig(max_chunks=6, chunk_chars=120, context_chars=40, styles=["textbook", "study_notes"],
                     min_similarity=0.5, max_attempts=3, max_tokens=64, temperature=0.7, backend=None, judge=None)
PASSAGE = re.compile(r"<passage>\n(.*)\n</passage>", re.DOTALL)


class WordEmbedder:
    """Hashed bag of lower-cased words: texts sharing words are similar, fast and deterministic."""

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 512))
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, zlib.crc32(word.encode()) % 512] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class ScriptedBackend:
    """A chat backend answering with `reply(request)`; records every request."""

    def __init__(self, reply: Callable[[ChatRequest], str], backend_id: str = "scripted") -> None:
        self.reply = reply
        self.backend_id = backend_id
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        text = self.reply(request)
        return ChatResponse(message={"role": "assistant", "content": text},
                            usage=Usage(prompt_tokens=1, completion_tokens=len(text.split())))


def passage(request: ChatRequest) -> str:
    return PASSAGE.search(request.messages[-1]["content"]).group(1)


def test_restructure_moves_clauses_both_ways() -> None:
    assert restructure("If the file is missing, the call raises OSError.") == \
        "The call raises OSError if the file is missing."
    assert restructure("Return True if the barrier is broken.") == "If the barrier is broken, return True."
    # "after" may be a preposition: trailing "after ..." is never moved.
    kept = "Any positional arguments after the callback will be passed to it."
    assert restructure(kept) == kept


def test_rules_keep_code_and_change_prose() -> None:
    chunk = ("However, it's possible to use e.g. a list. The call fails if the list is empty.\n\n"
             "    x = [1, 2]\n    f(x)")
    prose = RuleRephraser().rephrase(chunk, "textbook", "", 0, 0).text
    assert prose.startswith("That said, it is possible to use for example a list.")
    assert "If the list is empty, the call fails." in prose
    assert prose.endswith("    x = [1, 2]\n    f(x)")
    notes = RuleRephraser().rephrase(chunk, "study_notes", "", 0, 0).text
    assert notes.split("\n\n")[0].count("\n- ") == 1 and notes.startswith("- ")
    spoken = RuleRephraser().rephrase("It is not hard. Do not worry.", "conversational", "", 0, 0).text
    assert spoken == "It isn't hard. Don't worry."
    # Retries get more conservative: attempt 2 only re-lays the text out.
    assert RuleRephraser().rephrase(chunk, "textbook", "", 2, 0).text == chunk.replace("  The", " The")


def test_chunks_are_conditioned_on_the_rewritten_previous_chunk() -> None:
    backend = ScriptedBackend(lambda r: passage(r).upper())
    text = "\n\n".join(f"Paragraph {i} talks about apples and pears number {i}." for i in range(5))
    checker = FidelityChecker(WordEmbedder(), min_similarity=0.5)
    [results] = rephrase_documents([(text, "textbook")], LLMRephraser(backend, CFG), checker, CFG, seed=3)
    chunks = chunk_text(text, CFG.chunk_chars)
    assert len(results) == len(chunks) > 1 and [r.text for r in results] == [c.upper() for c in chunks]
    first, second = backend.requests[0].messages[-1]["content"], backend.requests[1].messages[-1]["content"]
    assert "<previous>" not in first
    assert f"<previous>\n{chunks[0].upper()[-CFG.context_chars:]}\n</previous>" in second
    assert "textbook" in first and backend.requests[0].temperature == CFG.temperature


def test_failing_chunks_are_retried_then_kept_original() -> None:
    # Good text only from the third attempt (seed offset 2) on chunk 0; never for chunks mentioning "pears".
    def reply(request: ChatRequest) -> str:
        good = (request.seed - 3) % 1000 == 2 and "pears" not in passage(request).lower()
        return passage(request) if good else "zebra quartz xylophone"

    text = "Apples grow on trees in the orchard.\n\nPears ripen after they are picked from the tree."
    checker = FidelityChecker(WordEmbedder(), min_similarity=0.5)
    cfg = CFG.model_copy(update={"chunk_chars": 60})
    [results] = rephrase_documents([(text, "textbook")], LLMRephraser(ScriptedBackend(reply), cfg), checker, cfg, 3)
    assert [(r.attempts, r.kept_original) for r in results] == [(3, False), (3, True)]
    assert results[1].text == results[1].original and results[1].rephrased == "zebra quartz xylophone"
    assert results[1].similarity < 0.5 and results[1].completion_tokens == 9


def test_judge_can_veto_similar_rewrites() -> None:
    judge = ScriptedBackend(lambda r: "NO, a number changed." if "7" in r.messages[-1]["content"] else "Yes.")
    checker = FidelityChecker(WordEmbedder(), min_similarity=0.3, judge=judge)
    verdicts = checker.check_many([("It has 6 legs.", "It has 7 legs."), ("It has 6 legs.", "It has six legs, 6.")],
                                  [0, 1])
    assert [(v.judge, v.passed) for v in verdicts] == [("fail", False), ("pass", True)]
    assert checker.check("cats", "quantum flux").judge == "none"  # below threshold: judge not asked
    assert len(judge.requests) == 2


def _corpus() -> pd.DataFrame:
    texts = [f"Topic {i}. If water boils, steam rises from pot {i}. The lid rattles because steam pushes it."
             for i in range(8)]
    return pd.DataFrame({"doc_id": [f"d{i}" for i in range(8)] + ["m0"], "source": "s",
                         "kind": ["text"] * 8 + ["math_note"], "text": texts + ["1 + 1 = 2"]})


def test_rephrase_corpus_rows_and_chunk_table() -> None:
    corpus = _corpus()
    checker = FidelityChecker(WordEmbedder(), min_similarity=0.5)
    docs, chunks, stats = rephrase_corpus(corpus, CFG, RuleRephraser(), checker, seed=0)
    assert list(chunks.columns) == CHUNK_COLUMNS and len(chunks) <= CFG.max_chunks
    assert set(docs["kind"]) == {"rephrased"} and set(docs["source"]) <= set(corpus["doc_id"][:8])
    assert set(chunks["style"]) == set(CFG.styles) and set(chunks["doc_id"]) == set(docs["source"])
    assert not chunks["kept_original"].any() and (chunks["similarity"] >= 0.5).all()
    assert stats["rephrase_completion_tokens"] > 0
    again = rephrase_corpus(corpus, CFG, RuleRephraser(), checker, seed=0)
    pd.testing.assert_frame_equal(docs, again[0])
    assert plan_documents(corpus, CFG.model_copy(update={"max_chunks": 0}), 0) == []
