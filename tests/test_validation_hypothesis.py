"""Property: for every dataset and both engines (polars where it applies: the chat and tool JSON tables), each
malformed row is quarantined with the right field, no valid row is, and valid + quarantined rows are exactly the
input (nothing lost, nothing invented); the engines name the same file, rows, fields and checks."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2core.chat import SPECIAL_TOKENS
from k2core.storage import read_parquet, write_parquet
from k2core.validation import find_failures, validate_dataset
from k2core.validation.tables_polars import TABLES
from k2core.validation.validate import POLARS_DATASETS

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Find a record", "parameters": {
    "type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}}]
CALL = {"id": "functions.lookup:0", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "A1"}'}}

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=24).filter(
    lambda s: s.strip() and not any(t in s for t in SPECIAL_TOKENS))


def _valid(name: str, i: int, text: str) -> dict:
    """A valid row of dataset `name`; `text` varies the free-text fields."""
    if name == "corpus":
        return {"doc_id": f"d{i}", "source": "pydoc_topics", "kind": "text", "text": text}
    if name == "math":
        return {"problem_id": f"p{i}", "generator": "chain_sum", "question": f"{text} #{i}", "answer": str(i),
                "note": f"{text}. The answer is \\boxed{{{i}}}", "split": "train"}
    if name == "tool_tasks":
        return {"task_id": f"t{i}", "env": "retail", "instruction": text,
                "gold_actions": json.dumps([{"name": "lookup", "arguments": {"id": text}}]),
                "initial_state": "{}", "rubric": json.dumps({"note": text}), "split": "train"}
    if name == "sft":
        call = {**CALL, "function": {"name": "lookup", "arguments": json.dumps({"id": text})}}
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": CALL["id"], "name": "lookup", "content": text},
                    {"role": "assistant", "content": text}]
        return {"example_id": f"e{i}", "source": "tool", "messages": json.dumps(messages), "tools": json.dumps(TOOLS)}
    if name == "rephrased_chunks":
        return {"doc_id": "d0", "chunk_index": i, "style": "textbook", "original": text, "rephrased": text,
                "similarity": 0.9, "judge": "none", "attempts": 1, "kept_original": False}
    if name == "tool_specs":
        spec = {"type": "function", "function": {"name": f"tool_{i}", "description": text,
                                                 "parameters": TOOLS[0]["function"]["parameters"]}}
        return {"name": f"tool_{i}", "provenance": "mcp", "category": "Search", "domain": "web", "source": "server",
                "description": text, "output_description": "", "spec": json.dumps(spec)}
    if name == "agents":
        return {"agent_id": f"a{i}", "category": "Search", "domain": "web", "system_prompt": text,
                "tools": json.dumps([f"tool_{i}", "lookup"])}
    return {"problem_id": f"p{i}", "backend": "local", "llm_note": f"\\boxed{{{text}}}", "boxed": text,
            "verified": True}


def _messages(update: Callable[[list], list]) -> Callable[[dict], None]:
    def mutate(row: dict) -> None:
        row["messages"] = json.dumps(update(json.loads(row["messages"])))
    return mutate


def _set(field: str, value: object) -> Callable[[dict], None]:
    return lambda row: row.__setitem__(field, value)


# dataset -> [(mutation, field the report must name)]; each mutation makes a valid row invalid
MUTATIONS: dict[str, list[tuple[Callable[[dict], None], str]]] = {
    "corpus": [(_set("doc_id", "d0"), "doc_id"), (_set("text", " \n"), "text"), (_set("kind", "poem"), "kind"),
               (_set("text", "a <|im_end|> b"), "text"), (_set("source", None), "source"),
               (lambda r: r.update(kind="rephrased", source="nowhere"), "source")],
    "math": [(_set("note", "The answer is \\boxed{-1}"), "note"), (_set("split", "dev"), "split"),
             (_set("question", "  "), "question"), (_set("answer", None), "answer")],
    "tool_tasks": [(_set("gold_actions", json.dumps([{"name": "lookup"}])), "gold_actions"),
                   (_set("initial_state", "[1]"), "initial_state"), (_set("rubric", "{oops"), "rubric"),
                   (_set("split", "rl"), "split"), (_set("task_id", "t0"), "task_id"),
                   (_set("instruction", " \t"), "instruction"), (_set("env", None), "env"),
                   (_set("gold_actions", "[]"), "gold_actions"),
                   (_set("gold_actions", json.dumps([{"name": "lookup", "arguments": [1]}])), "gold_actions")],
    "sft": [
        (_set("messages", "not json"), "messages"),
        (_messages(lambda m: [{**m[0], "role": "robot"}, *m[1:]]), "messages"),
        (_messages(lambda m: m[:1]), "messages"),
        (_messages(lambda m: [m[0], {**m[1], "tool_calls": [{**CALL, "id": "call_1"}]}, *m[2:]]), "messages"),
        (_messages(lambda m: [m[0], {**m[1], "tool_calls": [{**CALL, "function": {
            "name": "lookup", "arguments": "{bad"}}]}, *m[2:]]), "messages"),
        (_messages(lambda m: [m[0], *m[2:]]), "messages"),  # a tool result nobody asked for
        (_messages(lambda m: [*m[:2], {**m[2], "name": "other"}, m[3]]), "messages"),
        (_messages(lambda m: [{**m[0], "content": m[0]["content"] + "<|im_user|>"}, *m[1:]]), "messages"),
        (_messages(lambda m: [*m[:3], {"role": "assistant", "content": ""}]), "messages"),
        (_messages(lambda m: [{**m[0], "content": 7}, *m[1:]]), "messages"),
        (_messages(lambda m: [{**m[0], "mood": "happy"}, *m[1:]]), "messages"),
        (_set("tools", "[]"), "messages"),  # its call names an undeclared tool
        (_set("tools", json.dumps([{"type": "function", "function": {
            "name": "lookup", "description": "", "parameters": {"type": 3}}}])), "tools"),
        (_set("source", "web"), "source"),
        (_set("example_id", "e0"), "example_id"),
    ],
    "rephrased_chunks": [(_set("similarity", 1.5), "similarity"), (_set("attempts", 0), "attempts"),
                         (_set("judge", "maybe"), "judge"), (_set("rephrased", ""), "rephrased"),
                         (_set("style", "haiku"), "style"), (_set("chunk_index", 0), "chunk_index"),
                         (lambda r: r.update(judge="fail"), "rephrased")],
    "tool_specs": [(_set("name", "bad name!"), "name"), (_set("name", "tool_0"), "name"),
                   (_set("provenance", "rumour"), "provenance"), (_set("spec", "{}"), "spec"),
                   (lambda r: r.update(spec=r["spec"].replace('"type": "object"', '"type": "nope"')), "spec"),
                   (_set("description", ""), "description"), (_set("name", None), "name"),
                   (lambda r: r.update(spec=r["spec"].replace('"tool_', '"other_')), "spec")],
    "agents": [(_set("agent_id", "a0"), "agent_id"), (_set("system_prompt", " "), "system_prompt"),
               (_set("tools", "[]"), "tools"), (_set("tools", '["x", "x"]'), "tools"),
               (_set("tools", "not json"), "tools"), (_set("domain", None), "domain")],
    "math_note_attempts": [(_set("boxed", None), "boxed"), (_set("backend", ""), "backend"),
                           (_set("problem_id", "p0"), "problem_id")],
}


@st.composite
def tables(draw: st.DrawFn, name: str) -> tuple[pd.DataFrame, dict[int, str]]:
    """A table whose row 0 is valid and whose other rows are valid or carry one mutation; the bad rows' fields."""
    n = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.integers(0, len(MUTATIONS[name]) - 1), min_size=1, max_size=5))
    rows = [_valid(name, i, draw(TEXT)) for i in range(n + len(kinds))]
    order = [0, *draw(st.permutations(range(1, len(rows))))]
    bad: dict[int, str] = {}
    for position, kind in zip(order[1:][::-1], kinds, strict=False):
        mutate, field = MUTATIONS[name][kind]
        mutate(rows[position])
        bad[position] = field
    return pd.DataFrame(rows), bad


def _check(name: str, engine: str, frame: pd.DataFrame, bad: dict[int, str], tmp: Path) -> None:
    write_parquet(frame, tmp / "in.parquet")
    report = validate_dataset(name, str(tmp / "in.parquet"), str(tmp / "ok.parquet"), str(tmp / "q.parquet"),
                              engine=engine)
    valid, quarantined = read_parquet(tmp / "ok.parquet"), read_parquet(tmp / "q.parquet")
    failures = read_parquet(tmp / "q.report.parquet")
    assert set(quarantined["_row_index"]) == set(bad), failures.to_dict("records")
    for row, field in bad.items():
        assert field in set(failures.loc[failures["row_index"] == row, "field"]), (row, field, failures)
    assert len(valid) + len(quarantined) == len(frame) == report.n_input
    rebuilt = pd.concat([valid.set_index(pd.Index(sorted(set(range(len(frame))) - set(bad)))),
                         quarantined.drop(columns=["_errors"]).set_index("_row_index")]).sort_index()
    pd.testing.assert_frame_equal(rebuilt, read_parquet(tmp / "in.parquet"), check_names=False, check_dtype=False)


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _engines(name: str) -> tuple[str, ...]:
    return ("pandas", "polars") if name in POLARS_DATASETS else ("pandas",)


def _same_report(name: str, frame: pd.DataFrame) -> None:
    """Both engines report the same (file, row, field, check); for the tool tables the same reasons too."""
    keys = ["file", "row_index", "field", "check"] + (["reason"] if name in TABLES else [])
    reports = [find_failures(name, frame, "in.parquet", engine)[keys] for engine in _engines(name)]
    pd.testing.assert_frame_equal(reports[0], reports[-1])


@SETTINGS
@given(data=st.data())
def test_every_malformed_row_is_caught_and_none_lost(data: st.DataObject, tmp_path: Path) -> None:
    name = data.draw(st.sampled_from(sorted(n for n in MUTATIONS if n != "sft")))
    frame, bad = data.draw(tables(name))
    for engine in _engines(name):
        _check(name, engine, frame, bad, tmp_path)
    _same_report(name, frame)


@SETTINGS
@given(data=st.data())
def test_malformed_chat_rows_caught_by_both_engines(data: st.DataObject, tmp_path: Path) -> None:
    frame, bad = data.draw(tables("sft"))
    for engine in ("pandas", "polars"):
        _check("sft", engine, frame, bad, tmp_path)
    _same_report("sft", frame)


def test_every_mutation_kind_is_caught() -> None:
    """Deterministic coverage: one table per dataset with every mutation kind once."""
    for name, mutations in MUTATIONS.items():
        rows = [_valid(name, i, "plain text") for i in range(len(mutations) + 1)]
        for i, (mutate, _) in enumerate(mutations, start=1):
            mutate(rows[i])
        bad = {i: field for i, (_, field) in enumerate(mutations, start=1)}
        for engine in _engines(name):
            with tempfile.TemporaryDirectory() as tmp:
                _check(name, engine, pd.DataFrame(rows), bad, Path(tmp))
        _same_report(name, pd.DataFrame(rows))
