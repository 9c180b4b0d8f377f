"""The synth stage: pretraining corpus, math problems with notes, tool-use tasks and SFT rows.

Writes the four datasets of docs/contracts.md into `out_dir` (local or s3://). Math notes of the train
split also enter the corpus (`kind="math_note"`); rl and test notes never do, so pretraining cannot
see evaluation answers.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from k2core.agentic import AgenticConfig, generate_tool_data
from k2core.data.corpus import CORPUS_COLUMNS, CorpusConfig, build_text_corpus, clean_text, content_key, deduplicate
from k2core.data.math_notes import MathConfig, build_math
from k2core.storage import write_parquet

SFT_COLUMNS = ["example_id", "source", "messages", "tools"]


class SynthConfig(BaseModel):
    """Everything the synth stage makes, under one seed."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    corpus: CorpusConfig
    math: MathConfig
    agentic: AgenticConfig


def join_uri(directory: str, name: str) -> str:
    """`directory/name` for local paths and s3:// prefixes alike."""
    return f"{str(directory).rstrip('/')}/{name}"


def math_sft_rows(math: pd.DataFrame) -> pd.DataFrame:
    """SFT rows for the train split: the question as the user turn, the learning note as the answer."""
    train = math[math["split"] == "train"]
    rows = [
        {
            "example_id": f"math-{row.problem_id}",
            "source": "math",
            "messages": json.dumps(
                [{"role": "user", "content": row.question}, {"role": "assistant", "content": row.note}],
                ensure_ascii=False,
            ),
            "tools": "[]",
        }
        for row in train.itertuples()
    ]
    return pd.DataFrame(rows, columns=SFT_COLUMNS)


def math_documents(math: pd.DataFrame) -> pd.DataFrame:
    """Train-split notes as corpus documents, one whole document per problem (question, then note)."""
    rows = [
        {"doc_id": f"math:{r.generator}-{content_key(text)[:16]}", "source": f"math:{r.generator}",
         "kind": "math_note", "text": text}
        for r in math[math["split"] == "train"].itertuples()
        for text in [clean_text(f"{r.question}\n\n{r.note}")]
    ]
    return pd.DataFrame(rows, columns=CORPUS_COLUMNS)


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}_{key}", inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


def run_synth(cfg: SynthConfig, out_dir: str) -> dict[str, float]:
    """Build and write corpus, math, tool_tasks and sft parquet files; returns flat counts for metrics."""
    stats: dict[str, float] = {}
    text, corpus_stats = build_text_corpus(cfg.corpus)
    math, math_stats = build_math(cfg.math, cfg.seed)
    corpus, duplicates = deduplicate(pd.concat([text, math_documents(math)], ignore_index=True))
    tool_tasks, tool_sft, tool_stats = generate_tool_data(cfg.agentic, cfg.seed)
    sft = pd.concat([math_sft_rows(math), tool_sft[SFT_COLUMNS]], ignore_index=True)

    write_parquet(corpus[CORPUS_COLUMNS], join_uri(out_dir, "corpus.parquet"))
    write_parquet(math, join_uri(out_dir, "math.parquet"))
    write_parquet(tool_tasks, join_uri(out_dir, "tool_tasks.parquet"))
    write_parquet(sft, join_uri(out_dir, "sft.parquet"))

    stats.update(corpus_stats)
    stats.update(math_stats)
    _flatten("agentic", tool_stats, stats)
    stats.update(
        corpus_docs=len(corpus),
        corpus_chars=int(corpus["text"].str.len().sum()),
        corpus_math_notes=int((corpus["kind"] == "math_note").sum()),
        corpus_duplicates_dropped=duplicates,
        math_rows=len(math),
        tool_tasks=len(tool_tasks),
        sft_rows=len(sft),
        sft_math=int((sft["source"] == "math").sum()),
        sft_tool=int((sft["source"] == "tool").sum()),
    )
    return stats
