"""Synth stage end to end (ci-sized): contract columns, counts, no eval leakage, validates clean."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from k2core.agentic import AgenticConfig
from k2core.chat import normalize_messages, parse, render
from k2core.data.corpus import CorpusConfig
from k2core.agentic.generate import plan_tool_data, run_shard
from k2core.data.math_notes import LLMNotesConfig, MathConfig, MathGeneratorConfig
from k2core.data.rephrase import RephraseConfig
from k2core.data.synth import SynthConfig, build_backends, run_synth
from k2core.llm import OpenAILLMConfig
from k2core.storage import read_parquet
from k2core.validation import ValidateConfig, validate_all
from tests.test_agentic_llm_agent import ROLES as AGENT_ROLES
from tests.test_agentic_llm_agent import PlayerModel, env_opening

CFG = SynthConfig(
    seed=1,
    corpus=CorpusConfig(sources=["pydoc_topics", "gutenberg"], max_chars_per_source=20_000, doc_chars=1500,
                        min_doc_chars=100),
    math=MathConfig(
        generators=[MathGeneratorConfig(name="chain_sum", count=20, options={"max_terms": 3}),
                    MathGeneratorConfig(name="gsm_symbolic", count=10)],
        rl_fraction=0.2,
        test_fraction=0.2,
    ),
    agentic=AgenticConfig(envs=["retail"], num_tasks=4, trajectories_per_task=1, min_goals=1, max_goals=1,
                          personas=["terse"], p_transient=0.0, p_edge=0.0, agent_wrong_arg_prob=0.0,
                          agent_extra_write_prob=0.0, agent_missing_tool_prob=0.0, max_turns=12, test_fraction=0.25),
)
COLUMNS = {
    "corpus": ["doc_id", "source", "kind", "text"],
    "math": ["problem_id", "generator", "question", "answer", "note", "split"],
    "tool_tasks": ["task_id", "env", "instruction", "gold_actions", "initial_state", "rubric", "split"],
    "sft": ["example_id", "source", "messages", "tools"],
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, run_synth(CFG, str(out))


def test_writes_contract_datasets_with_counts(synth_dir: tuple[Path, dict]) -> None:
    out, stats = synth_dir
    frames = {name: read_parquet(out / f"{name}.parquet") for name in COLUMNS}
    for name, columns in COLUMNS.items():
        assert list(frames[name].columns) == columns, name
    assert stats["corpus_docs"] == len(frames["corpus"]) and stats["math_rows"] == len(frames["math"])
    assert stats["sft_rows"] == len(frames["sft"]) == stats["sft_math"] + stats["sft_tool"]
    assert stats["sft_math"] == stats["math_train"] == stats["corpus_math_notes"]
    assert stats["tool_tasks"] == len(frames["tool_tasks"]) == 4 and stats["sft_tool"] > 0
    assert all(isinstance(v, (int, float)) for v in stats.values())


def test_eval_questions_stay_out_of_corpus_and_sft(synth_dir: tuple[Path, dict]) -> None:
    out, _ = synth_dir
    math, corpus, sft = (read_parquet(out / f"{n}.parquet") for n in ("math", "corpus", "sft"))
    held_out = math.loc[math["split"] != "train", "question"]
    text = "\n".join(corpus["text"]) + "\n".join(sft["messages"])
    assert len(held_out) > 0 and not any(q in text for q in held_out)


def test_sft_rows_render_and_round_trip(synth_dir: tuple[Path, dict]) -> None:
    out, _ = synth_dir
    for row in read_parquet(out / "sft.parquet").itertuples():
        messages, tools = json.loads(row.messages), json.loads(row.tools)
        assert parse(render(messages, tools)) == (normalize_messages(messages), tools)


def test_synth_output_validates_clean(synth_dir: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = synth_dir
    result = validate_all(str(out), str(tmp_path / "valid"), str(tmp_path / "q"), ValidateConfig(max_reject_fraction=0.0))
    assert all(r["n_quarantined"] == 0 for r in result["reports"].values())


def test_synth_is_deterministic(synth_dir: tuple[Path, dict], tmp_path: Path) -> None:
    out, stats = synth_dir
    again = run_synth(CFG, str(tmp_path))
    assert again == stats
    for name in COLUMNS:
        assert read_parquet(tmp_path / f"{name}.parquet").equals(read_parquet(out / f"{name}.parquet")), name


def llm_config(names: list[str]) -> dict:
    return {n: OpenAILLMConfig(kind="openai", model=n) for n in names}


class Builds:
    """Stands in for `build_backends`' backend factory: records the names built and returns `stand_ins[name]()`
    (the name itself when absent)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.stand_ins: dict[str, Callable] = {}

    def __call__(self, llm: OpenAILLMConfig):
        self.names.append(llm.model)
        return self.stand_ins.get(llm.model, lambda: llm.model)()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Builds:
    builds = Builds()
    monkeypatch.setattr("k2core.data.synth.backend", builds)
    return builds


def test_build_backends_builds_only_what_runs_in_this_process(built: Builds) -> None:
    rephrase = RephraseConfig(max_chunks=0, chunk_chars=500, context_chars=100, styles=["textbook"], min_similarity=0.8,
                              max_attempts=1, max_tokens=64, temperature=0.0, backend="rephraser", judge="fidelity")
    notes = LLMNotesConfig(backend="notes", max_problems=1, max_tokens=64, temperature=0.0, verify_timeout_s=1.0)
    roles = {**AGENT_ROLES, "tool_generator": "planner", "user": "user", "judge": "judge", "agent": "agent"}
    cfg = SynthConfig.model_validate({**CFG.model_dump(), "rephrase": rephrase, "llm_notes": notes,
                                      "agentic": {**CFG.agentic.model_dump(), "roles": roles},
                                      "llm": llm_config(["rephraser", "fidelity", "notes", "planner", "user", "judge",
                                                         "agent", "spare"])})
    main = {"rephraser", "fidelity", "notes", "planner"}
    assert set(build_backends(cfg, shards_here=False)) == set(built.names) == main
    built.names.clear()
    assert set(build_backends(cfg)) == set(built.names) == main | {"user", "judge", "agent"}


def test_mapped_shards_leave_their_backends_to_the_workers(built: Builds, tmp_path: Path) -> None:
    """With a mapper, this process builds no shard backend; the data equal the in-process run's."""
    cfg = SynthConfig.model_validate({**CFG.model_dump(), "agentic": {**CFG.agentic.model_dump(), "roles": AGENT_ROLES},
                                      "llm": llm_config(["agent-model", "spare"])})
    plan = plan_tool_data(cfg.agentic, cfg.seed)

    def player() -> PlayerModel:
        return PlayerModel([(env_opening(j.task, j.persona), ("env", j.task)) for s in plan.shards for j in s.env_jobs])

    here = run_synth(cfg, str(tmp_path / "here"), backends={"agent-model": player()})
    built.stand_ins["agent-model"] = player
    assert run_synth(cfg, str(tmp_path / "built")) == here and built.names == ["agent-model"]  # in process: built here
    built.names.clear()
    handed: list[dict] = []

    def mapper_factory(agentic: AgenticConfig, backends: dict) -> Callable:
        handed.append(backends)
        return lambda shards: [run_shard(agentic, s, {"agent-model": player()}) for s in shards]

    mapped = run_synth(cfg, str(tmp_path / "mapped"), mapper_factory=mapper_factory)
    assert built.names == [] and handed == [{}] and mapped == here and here["agentic_llm_agent_turns"] > 0
    for name in COLUMNS:
        assert read_parquet(tmp_path / "mapped" / f"{name}.parquet").equals(read_parquet(tmp_path / "here" / f"{name}.parquet"))
