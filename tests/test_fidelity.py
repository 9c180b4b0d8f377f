"""Fidelity with the real all-MiniLM-L6-v2, verified LLM math notes, and the synth stage with both turned on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from k2core.data.embeddings import minilm, paired_similarity
from k2core.data.fidelity import FidelityChecker, parse_judgement, plot_similarity, summarize
from k2core.data.math_notes import LLMNotesConfig, boxed_answer, llm_notes
from k2core.data.rephrase import RephraseConfig, RuleRephraser, chunk_table
from k2core.data.synth import run_synth
from k2core.storage import read_parquet
from k2core.validation import ValidateConfig, validate_all
from tests.test_rephrase import ScriptedBackend
from tests.test_synth import CFG as SYNTH_CFG

REPHRASE = RephraseConfig(max_chunks=4, chunk_chars=600, context_chars=200, styles=["textbook", "study_notes"],
                          min_similarity=0.85, max_attempts=2, max_tokens=256, temperature=0.7, backend=None,
                          judge=None)
NOTES = LLMNotesConfig(backend="teacher", max_problems=6, max_tokens=128, temperature=0.0, verify_timeout_s=20.0)


def test_minilm_separates_paraphrases_from_unrelated_text() -> None:
    scores = paired_similarity(minilm(), ["A man is eating food.", "A man is eating food."],
                               ["A man eats a meal.", "The stock market fell sharply today."])
    assert scores[0] > 0.7 > 0.3 > scores[1]
    assert minilm() is minilm()  # loaded once per process


def test_rule_rephrasings_of_real_text_pass_fidelity() -> None:
    from pydoc_data.topics import topics

    text = topics["while"][:1200]
    checker = FidelityChecker(minilm(), REPHRASE.min_similarity)
    for style in REPHRASE.styles:
        rewrite = RuleRephraser().rephrase(text, style, "", 0, 0).text
        verdict = checker.check(text, rewrite)
        assert rewrite != text and verdict.passed and verdict.judge == "none", (style, verdict)


def test_summary_and_histogram() -> None:
    rows = [{"doc_id": "d", "chunk_index": i, "style": "textbook", "original": "o", "rephrased": "r",
             "similarity": s, "judge": "none", "attempts": a, "kept_original": s < 0.8}
            for i, (s, a) in enumerate([(0.95, 1), (0.9, 1), (0.5, 3), (0.85, 2)])]
    stats = summarize(chunk_table(rows))
    assert stats["rephrase_chunks"] == 4 and stats["rephrase_kept_original"] == 1
    assert stats["rephrase_retried_chunks"] == 2 and stats["rephrase_attempts"] == 7
    assert stats["rephrase_similarity_mean"] == pytest.approx(0.8) and stats["rephrase_accept_rate"] == 0.75
    assert plot_similarity(chunk_table(rows), 0.8).startswith(b"\x89PNG")
    assert parse_judgement("Yes, same facts.") == "pass" and parse_judgement("Unsure") == "fail"


def _math() -> pd.DataFrame:
    answers = ["1/2", "7", "12", "3", "-4", "9"]
    return pd.DataFrame({"problem_id": [f"p{i}" for i in range(6)], "generator": "chain_sum",
                         "question": [f"Question {i}?" for i in range(6)], "answer": answers,
                         "note": [f"Worked. The answer is \\boxed{{{a}}}" for a in answers],
                         "split": ["train"] * 5 + ["test"]})


def test_llm_notes_are_used_only_when_their_answer_verifies() -> None:
    replies = {"Question 0?": "Restate: halve one. Steps: 1/2 = 0.5. So \\boxed{0.5} done.",  # verifies
               "Question 1?": "We add things. \\boxed{8}",  # wrong answer
               "Question 2?": "The answer is twelve.",  # no box
               "Question 3?": "Three it is: \\boxed{3}",
               "Question 4?": "Leak <|im_end|> \\boxed{-4}"}  # special token
    backend = ScriptedBackend(lambda r: replies[r.messages[-1]["content"]], backend_id="teacher-model")
    math, attempts, stats = llm_notes(_math(), backend, NOTES, seed=0)
    assert list(attempts["verified"]) == [True, False, False, True, False]
    assert stats == {"math_llm_notes_asked": 5, "math_llm_notes_verified": 2, "math_llm_notes_rejected": 3,
                     "math_llm_notes_no_box": 1}
    assert math.at[0, "note"] == "Restate: halve one. Steps: 1/2 = 0.5. So \\boxed{1/2}"
    assert math.at[1, "note"] == _math().at[1, "note"] and math.at[5, "note"] == _math().at[5, "note"]
    assert all(boxed_answer(n) == a for n, a in zip(math["note"], math["answer"], strict=True))
    assert set(attempts["backend"]) == {"teacher-model"} and "restate" in backend.requests[0].messages[0]["content"]


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cfg = SYNTH_CFG.model_copy(update={"rephrase": REPHRASE, "llm_notes": NOTES})
    teacher = ScriptedBackend(lambda r: "Let me restate it. It has no boxed answer.")
    out = tmp_path_factory.mktemp("synth-rephrase")
    return out, run_synth(cfg, str(out), backends={"teacher": teacher})


def test_synth_adds_rephrased_documents_and_fidelity_outputs(synth_out: tuple[Path, dict]) -> None:
    out, stats = synth_out
    corpus, chunks = read_parquet(out / "corpus.parquet"), read_parquet(out / "rephrased_chunks.parquet")
    rephrased = corpus[corpus["kind"] == "rephrased"]
    assert len(rephrased) == stats["corpus_rephrased"] > 0
    assert set(rephrased["source"]) <= set(corpus.loc[corpus["kind"] == "text", "doc_id"])
    assert 0 < len(chunks) == stats["rephrase_chunks"] <= REPHRASE.max_chunks
    assert stats["rephrase_similarity_p50"] >= REPHRASE.min_similarity
    assert (out / "reports" / "rephrase_similarity.png").read_bytes().startswith(b"\x89PNG")
    attempts = read_parquet(out / "math_note_attempts.parquet")
    assert len(attempts) == stats["math_llm_notes_asked"] > 0 and stats["math_llm_notes_verified"] == 0


def test_synth_with_rephrasing_validates_clean(synth_out: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = synth_out
    result = validate_all(str(out), str(tmp_path / "ok"), str(tmp_path / "q"),
                          ValidateConfig(max_reject_fraction=0.0, chat_engine="polars"))
    assert {"rephrased_chunks", "math_note_attempts"} <= set(result["reports"])
    assert all(r["n_quarantined"] == 0 for r in result["reports"].values()), result["metrics"]
