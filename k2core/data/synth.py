"""The synth stage: pretraining corpus, math problems with notes, tool-use tasks and SFT rows.

Writes the datasets of docs/contracts.md into `out_dir` (local or s3://). Math notes of the train
split also enter the corpus (`kind="math_note"`); rl and test notes never do, so pretraining cannot
see evaluation answers. Rephrased text documents (`kind="rephrased"`) join the corpus after fidelity
checks; their per-chunk scores go to `rephrased_chunks.parquet` and a histogram to
`reports/rephrase_similarity.png`. LLM roles name backends of the `llm` mapping; none means offline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from k2core.agentic import AgenticConfig
from k2core.agentic.generate import ShardMapper, generate_tool_datasets
from k2core.agentic.workers import ALL_ROLES, PLANNING_ROLES, SHARD_ROLES, backend, role_configs
from k2core.data.corpus import CORPUS_COLUMNS, CorpusConfig, build_text_corpus, clean_text, content_key, deduplicate
from k2core.data.fidelity import FidelityChecker, plot_similarity, summarize
from k2core.data.math_notes import LLMNotesConfig, MathConfig, attempt_table, build_math, llm_notes
from k2core.data.rephrase import LLMRephraser, Rephraser, RephraseConfig, RuleRephraser, chunk_table, rephrase_corpus
from k2core.llm import ChatBackend, LLMConfig
from k2core.storage import open_uri, write_parquet

SFT_COLUMNS = ["example_id", "source", "messages", "tools"]


class SynthConfig(BaseModel):
    """Everything the synth stage makes, under one seed."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    corpus: CorpusConfig
    math: MathConfig
    agentic: AgenticConfig
    rephrase: RephraseConfig | None = None  # None: no rephrased documents
    llm_notes: LLMNotesConfig | None = None  # None: worked (deterministic) notes only
    llm: dict[str, LLMConfig] = Field(default_factory=dict)  # named backends that roles refer to

    @model_validator(mode="after")
    def _known_backends(self) -> SynthConfig:
        roles = self.agentic.roles
        named = stage_backend_names(self) | ({getattr(roles, r) for r in ALL_ROLES} - {None} if roles else set())
        unknown = sorted(named - set(self.llm))
        if unknown:
            raise ValueError(f"backends {unknown} are not defined in synth.llm (defined: {sorted(self.llm)})")
        return self


def stage_backend_names(cfg: SynthConfig) -> set[str]:
    """The backends this stage's own roles name: rephraser, rephrase judge and math notes."""
    rc, nc = cfg.rephrase, cfg.llm_notes
    return {n for n in (rc and rc.backend, rc and rc.judge, nc and nc.backend) if n}


def build_backends(cfg: SynthConfig, shards_here: bool = True) -> dict[str, ChatBackend]:
    """The backends of `synth.llm` that roles running in this process use: the stage's own, the planning role's
    (tool_generator) and, when the trajectory shards run here too (`shards_here`), the shard roles'. Shards mapped
    elsewhere build theirs in their workers (`k2core.agentic.workers`); a backend is built once per process and
    config, so worker threads of this process share it."""
    roles = PLANNING_ROLES + (SHARD_ROLES if shards_here else ())
    names = stage_backend_names(cfg) | set(role_configs(cfg.agentic, cfg.llm, roles))
    return {name: backend(cfg.llm[name]) for name in sorted(names)}


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


def rephrase_step(cfg: SynthConfig, text: pd.DataFrame, backends: dict[str, ChatBackend]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Rephrased documents, the per-chunk table and fidelity metrics (empty when rephrasing is off)."""
    rc = cfg.rephrase
    if rc is None or rc.max_chunks == 0:
        return pd.DataFrame(columns=CORPUS_COLUMNS), chunk_table([]), {}
    from k2core.data.embeddings import minilm  # loads sentence-transformers only when rephrasing

    rephraser: Rephraser = LLMRephraser(backends[rc.backend], rc) if rc.backend else RuleRephraser()
    checker = FidelityChecker(minilm(), rc.min_similarity, backends[rc.judge] if rc.judge else None)
    docs, chunks, timing = rephrase_corpus(text, rc, rephraser, checker, cfg.seed)
    return docs, chunks, {**summarize(chunks), **timing}


def write_similarity_plot(chunks: pd.DataFrame, threshold: float, out_dir: str) -> None:
    """`reports/rephrase_similarity.png` under `out_dir`, for the synth stage's MLflow run to log."""
    if chunks.empty:
        return
    with open_uri(join_uri(out_dir, "reports/rephrase_similarity.png"), "wb") as handle:
        handle.write(plot_similarity(chunks, threshold))


def run_synth(
    cfg: SynthConfig,
    out_dir: str,
    backends: dict[str, ChatBackend] | None = None,
    mapper_factory: Callable[[AgenticConfig, dict[str, ChatBackend]], ShardMapper] | None = None,
) -> dict[str, float]:
    """Build and write corpus, math, tool_tasks, sft, rephrased_chunks, math_note_attempts, tool_specs and agents
    parquet files (plus the fidelity histogram); returns flat counts for metrics. `backends` overrides
    `build_backends`; `mapper_factory` decides where trajectory shards run (the synth flow maps them as Prefect
    tasks, whose workers build their own backends; default: one after another in this process, with this process's
    backends)."""
    stats: dict[str, float] = {}
    backends = build_backends(cfg, shards_here=mapper_factory is None) if backends is None else backends
    text, corpus_stats = build_text_corpus(cfg.corpus)
    math, math_stats = build_math(cfg.math, cfg.seed)
    attempts = attempt_table([])
    if cfg.llm_notes is not None:
        math, attempts, note_stats = llm_notes(math, backends[cfg.llm_notes.backend], cfg.llm_notes, cfg.seed)
        math_stats.update(note_stats)
    rephrased, chunks, rephrase_stats = rephrase_step(cfg, text, backends)
    corpus, duplicates = deduplicate(pd.concat([text, math_documents(math), rephrased], ignore_index=True))
    mapper = mapper_factory(cfg.agentic, backends) if mapper_factory else None
    tool = generate_tool_datasets(cfg.agentic, cfg.seed, backends=backends, mapper=mapper)
    tool_tasks, tool_stats = tool.tasks, tool.stats
    sft = pd.concat([math_sft_rows(math), tool.sft[SFT_COLUMNS]], ignore_index=True)

    write_parquet(corpus[CORPUS_COLUMNS], join_uri(out_dir, "corpus.parquet"))
    write_parquet(math, join_uri(out_dir, "math.parquet"))
    write_parquet(tool_tasks, join_uri(out_dir, "tool_tasks.parquet"))
    write_parquet(sft, join_uri(out_dir, "sft.parquet"))
    write_parquet(chunks, join_uri(out_dir, "rephrased_chunks.parquet"))
    write_parquet(attempts, join_uri(out_dir, "math_note_attempts.parquet"))
    write_parquet(tool.tools, join_uri(out_dir, "tool_specs.parquet"))
    write_parquet(tool.agents, join_uri(out_dir, "agents.parquet"))
    if cfg.rephrase is not None:
        write_similarity_plot(chunks, cfg.rephrase.min_similarity, out_dir)

    stats.update(corpus_stats)
    stats.update(math_stats)
    stats.update(rephrase_stats)
    _flatten("agentic", tool_stats, stats)
    stats.update(
        corpus_docs=len(corpus),
        corpus_chars=int(corpus["text"].str.len().sum()),
        corpus_math_notes=int((corpus["kind"] == "math_note").sum()),
        corpus_rephrased=int((corpus["kind"] == "rephrased").sum()),
        corpus_duplicates_dropped=duplicates,
        math_rows=len(math),
        tool_tasks=len(tool_tasks),
        sft_rows=len(sft),
        sft_math=int((sft["source"] == "math").sum()),
        sft_tool=int((sft["source"] == "tool").sum()),
    )
    return stats
