"""Validation: each kind of malformed row is caught with the right field, counts are conserved."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from k2core.storage import read_parquet, write_parquet
from k2core.validation import (
    RejectThresholdError,
    ValidateConfig,
    find_failures,
    messages_error,
    tools_error,
    validate_all,
    validate_dataset,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find a record",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
    }
]
CALL = {"id": "functions.lookup:0", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "A1"}'}}
TOOL_CHAT = [
    {"role": "user", "content": "Find A1"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "functions.lookup:0", "name": "lookup", "content": "{\"ok\": true}"},
    {"role": "assistant", "content": "Found it."},
]


def _corpus(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {"doc_id": [f"d{i}" for i in range(n)], "source": "pydoc_topics", "kind": "text",
         "text": [f"Document number {i}." for i in range(n)]}
    )


def _math(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {"problem_id": [f"p{i}" for i in range(n)], "generator": "chain_sum",
         "question": [f"What is {i} + 1?" for i in range(n)], "answer": [str(i + 1) for i in range(n)],
         "note": [f"We add {i} and 1. The answer is \\boxed{{{i + 1}}}" for i in range(n)],
         "split": ["train", "rl", "test"] * (n // 3)}
    )


def _tasks(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {"task_id": [f"t{i}" for i in range(n)], "env": "retail", "instruction": "Return my order.",
         "gold_actions": json.dumps([{"name": "lookup", "arguments": {"id": "A1"}}]),
         "initial_state": json.dumps({"db": {}}), "rubric": json.dumps({"success_criteria": []}),
         "split": ["train", "test"] * (n // 2)}
    )


def _sft(n: int = 4) -> pd.DataFrame:
    math_chat = json.dumps([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}])
    return pd.DataFrame(
        {"example_id": [f"e{i}" for i in range(n)], "source": ["math", "tool"] * (n // 2),
         "messages": [math_chat, json.dumps(TOOL_CHAT)] * (n // 2), "tools": ["[]", json.dumps(TOOLS)] * (n // 2)}
    )


def _only(name: str, frame: pd.DataFrame) -> set[tuple[int, str]]:
    return {(r.row_index, r.field) for r in find_failures(name, frame, "mem").itertuples()}


def test_clean_data_passes() -> None:
    for name, frame in [("corpus", _corpus()), ("math", _math()), ("tool_tasks", _tasks()), ("sft", _sft())]:
        assert find_failures(name, frame, "mem").empty, name


def test_corpus_failures_name_their_field() -> None:
    frame = _corpus()
    frame.loc[1, "doc_id"] = "d0"
    frame.loc[2, "text"] = "   \n"
    frame.loc[3, "kind"] = "poem"
    frame.loc[4, "text"] = "leak <|im_end|> here"
    frame.loc[5, "source"] = None
    assert _only("corpus", frame) == {(1, "doc_id"), (2, "text"), (3, "kind"), (4, "text"), (5, "source")}
    reasons = find_failures("corpus", frame, "mem").set_index("row_index")["reason"]
    assert "duplicate value 'd0'" in reasons[1]
    assert "special tokens" in reasons[4]
    assert "missing (null)" in reasons[5]


def test_math_failures_name_their_field() -> None:
    frame = _math()
    frame.loc[1, "note"] = "The answer is \\boxed{7}"
    frame.loc[2, "split"] = "dev"
    frame.loc[3, "question"] = frame.loc[0, "question"]
    assert _only("math", frame) == {(1, "note"), (2, "split"), (3, "question")}
    report = find_failures("math", frame, "mem")
    assert report.loc[report.row_index == 1, "check"].item() == "note_boxes_answer"
    assert "\\boxed{2}" in report.loc[report.row_index == 1, "reason"].item()


def test_tool_task_failures_name_their_field() -> None:
    frame = _tasks()
    frame.loc[0, "gold_actions"] = json.dumps([{"name": "lookup"}])
    frame.loc[1, "initial_state"] = "{not json"
    frame.loc[2, "rubric"] = "[1, 2]"
    frame.loc[3, "split"] = "rl"
    assert _only("tool_tasks", frame) == {(0, "gold_actions"), (1, "initial_state"), (2, "rubric"), (3, "split")}


def _with(messages: list[dict]) -> str:
    return json.dumps(messages)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "robot", "content": "hi"}], "messages[0]"),
        ([{"role": "user", "content": "hi"}], "last message must be the assistant's"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
            {**CALL, "id": "call_1"}]}], "messages[1].tool_calls[0].id"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
            {**CALL, "function": {"name": "lookup", "arguments": "{bad"}}]}], "arguments are not JSON"),
        ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "functions.lookup:0", "name": "lookup",
                                             "content": "r"}, {"role": "assistant", "content": "ok"}],
         "answers no earlier tool call"),
        ([{"role": "user", "content": "x"}, {"role": "tool", "name": "lookup", "content": "r"},
          {"role": "assistant", "content": "ok"}], "tool_call_id"),
        ([{"role": "user", "content": "a <|im_user|> b"}, {"role": "assistant", "content": "ok"}], "K2's chat format"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}], "neither content nor tool_calls"),
    ],
)
def test_messages_errors(messages: list[dict], expected: str) -> None:
    error = messages_error(_with(messages))
    assert error is not None and expected in error


def test_tools_errors() -> None:
    assert tools_error(json.dumps(TOOLS)) is None
    bad_schema = [{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "nope"}}}]
    assert "not valid JSON Schema" in (tools_error(json.dumps(bad_schema)) or "")
    assert "tools[0].function" in (tools_error(json.dumps([{"type": "function", "function": {"name": "f"}}])) or "")
    assert "twice" in (tools_error(json.dumps(TOOLS * 2)) or "")
    assert "not valid JSON" in (tools_error("[{") or "")


def test_sft_failures_name_their_field() -> None:
    frame = _sft(6)
    frame.loc[0, "messages"] = "not json"
    frame.loc[1, "tools"] = "[]"  # a tool row without tools, its calls undeclared
    frame.loc[2, "source"] = "web"
    frame.loc[3, "tools"] = json.dumps([{"type": "function", "function": {"name": "f", "description": "",
                                                                           "parameters": {"type": 3}}}])
    report = find_failures("sft", frame, "mem")
    assert {(r.row_index, r.field) for r in report.itertuples()} == {
        (0, "messages"), (1, "messages"), (2, "source"), (3, "tools")}
    assert report.loc[report.row_index == 1, "check"].item() == "calls_declared_tools"


def test_missing_column_quarantines_every_row(tmp_path: Path) -> None:
    write_parquet(_corpus().drop(columns=["kind"]), tmp_path / "in.parquet")
    with pytest.raises(RejectThresholdError, match="6 of 6 rows"):
        validate_dataset("corpus", str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                         str(tmp_path / "q.parquet"), max_reject_fraction=0.5)
    assert not (tmp_path / "out.parquet").exists()
    report = read_parquet(tmp_path / "q.report.parquet")
    assert set(report["field"]) == {"kind"} and len(report) == 6


def _write_all(directory: Path, corrupt: bool) -> dict[str, int]:
    frames = {"corpus": _corpus(), "math": _math(), "tool_tasks": _tasks(), "sft": _sft()}
    bad = {"corpus": 0, "math": 0, "tool_tasks": 0, "sft": 0}
    if corrupt:
        frames["corpus"].loc[0, "kind"] = "poem"
        frames["math"].loc[[1, 2], "split"] = "dev"
        bad.update(corpus=1, math=2)
    for name, frame in frames.items():
        write_parquet(frame, directory / f"{name}.parquet")
    return bad


def test_validate_all_conserves_rows_and_writes_reports(tmp_path: Path) -> None:
    bad = _write_all(tmp_path, corrupt=True)
    cfg = ValidateConfig(max_reject_fraction=0.5)
    result = validate_all(str(tmp_path), str(tmp_path / "ok"), str(tmp_path / "q"), cfg)
    for name, report in result["reports"].items():
        original = read_parquet(tmp_path / f"{name}.parquet")
        valid = read_parquet(tmp_path / "ok" / f"{name}.parquet")
        quarantined = read_parquet(tmp_path / "q" / f"{name}.parquet")
        assert len(valid) + len(quarantined) == len(original) == report["n_input"]
        assert len(quarantined) == bad[name] == report["n_quarantined"]
        rebuilt = pd.concat([valid, quarantined.drop(columns=["_errors"]).set_index("_row_index")])
        assert sorted(rebuilt["text" if name == "corpus" else rebuilt.columns[0]]) == sorted(
            original["text" if name == "corpus" else original.columns[0]])
    quarantined = read_parquet(tmp_path / "q" / "math.parquet")
    assert quarantined["_row_index"].tolist() == [1, 2]
    assert json.loads(quarantined["_errors"][0])[0]["field"] == "split"
    markdown = (tmp_path / "q" / "math.report.md").read_text()
    assert "row 1, `split` (isin" in markdown
    assert result["metrics"]["math_quarantined"] == 2


def test_threshold_error_names_file_counts_and_report(tmp_path: Path) -> None:
    _write_all(tmp_path, corrupt=True)
    cfg = ValidateConfig(max_reject_fraction=0.5, per_dataset={"math": 0.1})
    with pytest.raises(RejectThresholdError) as info:
        validate_all(str(tmp_path), str(tmp_path / "ok"), str(tmp_path / "q"), cfg)
    message = str(info.value)
    assert "math: 2 of 6 rows" in message and str(tmp_path / "math.parquet") in message
    assert str(tmp_path / "q" / "math.report.md") in message and "corpus" not in message.split("\n")[0][:6]
    assert not (tmp_path / "ok" / "math.parquet").exists()
    assert (tmp_path / "ok" / "corpus.parquet").exists()
