"""The lm_loss harness task: bits per byte through a k2 checkpoint's log-likelihoods equal the bench's own
evaluator on the same pieces; pieces fit the byte budget; file formats and bad input; the default offline text is
held out from every profile's pretraining corpus."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from k2core.data.corpus import _docstring_files, _file_docstrings, read_source
from k2core.errors import UserError
from k2core.eval.harness import TaskOptions, run_task
from k2core.eval.lm import evaluate_lm
from k2core.eval.lm_task import DEFAULT_CHARS, DEFAULT_SOURCE, PIECE_BYTES, default_texts, pieces, read_texts
from k2core.eval.registry import build_tasks
from k2core.llm import ChatResponse, K2LLMConfig, Usage, make_backend
from k2core.storage import write_parquet
from tests.tiny_k2 import tiny_checkpoint

LONG = "\n\n".join(f"Paragraph {i}: the weather in Paris is {i % 7} degrees, and the user asks about tools."
                   for i in range(30))  # ~2.6 kB: several pieces
TEXTS = ["Document 1: the weather in Paris is 3 degrees.", LONG, "Résumé: naïve café, ünïcödé… " * 5]


def test_bits_per_byte_on_a_k2_checkpoint_equals_the_bench_evaluator(tmp_path) -> None:
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    task = build_tasks(["lm_loss"], TaskOptions(texts=str(held_out)))[0]
    chunks = [p for t in TEXTS for p in pieces(t)]
    assert sorted(s.metadata["text"] for s in task.samples) == sorted(chunks) and len(chunks) >= 4
    backend = make_backend(K2LLMConfig(kind="k2", path=str(tiny_checkpoint(tmp_path))))
    result = run_task(task, backend, tmp_path, progress=False, resamples=200)
    direct = evaluate_lm(backend.loaded.model, backend.loaded.tokenizer, chunks, seq_len=1024, batch_size=4)
    assert result.metrics["bits_per_byte"].value == pytest.approx(direct["bits_per_byte"], rel=1e-4)
    est = result.metrics["bits_per_byte"]
    assert est.ci_low < est.value < est.ci_high
    lines = [json.loads(line) for line in (tmp_path / "lm_loss.samples.jsonl").read_text().splitlines()]
    assert sum(line["values"]["bytes"] for line in lines) == direct["bytes"]


def test_pieces_fit_the_byte_budget_and_keep_the_text() -> None:
    for text in [*TEXTS, "é" * 3000, "word " * 900]:
        cut = pieces(text)
        assert all(len(p.encode("utf-8")) <= PIECE_BYTES for p in cut)
        assert "".join(cut).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_text_files_and_bad_input(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one\n\ntwo\n\n\n\nthree", encoding="utf-8")
    assert read_texts(tmp_path / "a.txt") == ["one", "two", "three"]
    write_parquet(pd.DataFrame({"doc_id": ["1"], "text": ["held out"]}), tmp_path / "c.parquet")
    assert read_texts(tmp_path / "c.parquet") == ["held out"]
    write_parquet(pd.DataFrame({"body": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(UserError, match="needs a `text` column"):
        read_texts(tmp_path / "d.parquet")
    (tmp_path / "e.jsonl").write_text('{"text": "ok"}\n{"body": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="e.jsonl:2"):
        read_texts(tmp_path / "e.jsonl")
    (tmp_path / "f.csv").write_text("text\nx\n", encoding="utf-8")
    with pytest.raises(UserError, match="not .csv"):
        read_texts(tmp_path / "f.csv")
    with pytest.raises(UserError, match="no such file"):
        read_texts(tmp_path / "missing.txt")


class ChatOnly:
    backend_id = "chat-only"

    def complete(self, request):
        return ChatResponse(message={"role": "assistant", "content": ""}, usage=Usage(prompt_tokens=1,
                                                                                       completion_tokens=1))


def test_chat_only_backends_are_refused_and_the_default_text_is_held_out_from_every_profile(tmp_path) -> None:
    task = build_tasks(["lm_loss"], TaskOptions(limit=5))[0]
    assert len(task.samples) == 5
    with pytest.raises(UserError, match="needs log-likelihoods"):
        run_task(task, ChatOnly(), progress=False)
    training = "".join(read_source(DEFAULT_SOURCE, 1 << 40))  # what any profile's cap lets the corpus take
    heldout = "".join(default_texts())
    whole = "".join(t for t in (_file_docstrings(*f) for f in _docstring_files()) if t)
    assert len(heldout) == DEFAULT_CHARS and whole.endswith(heldout)
    assert whole.startswith(training) and len(whole) - DEFAULT_CHARS - 10 <= len(training) <= len(whole) - DEFAULT_CHARS
