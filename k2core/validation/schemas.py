"""Pandera schemas of the datasets in docs/contracts.md.

Custom checks are `Rule`s: a function of one or more column values that returns why a row is invalid
(or None). Pandera runs them (vectorised over rows) and the validator asks the same rule for the
reason when it writes the per-row report, so a check and its explanation can never disagree.
`FrameRule`s do the same for checks that need other rows (a rephrased document's source must exist).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

from k2core.chat import SPECIAL_TOKENS
from k2core.data.math_notes import boxed
from k2core.data.rephrase import STYLES
from k2core.validation.records import (
    declared_calls_error,
    gold_actions_error,
    json_object_error,
    messages_error,
    tools_error,
)


@dataclass(frozen=True)
class Rule:
    """A named row check: `explain(*values of columns)` returns the reason a row fails, or None."""

    name: str
    field: str
    columns: tuple[str, ...]
    explain: Callable[..., str | None]

    def explain_values(self, *values: Any) -> str | None:
        """`explain` with every missing value (None, NaN, pd.NA: pandas' spellings of null) as None, so each engine
        hands a rule the same values."""
        return self.explain(*(None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                              for v in values))

    def passes(self, frame: pd.DataFrame) -> pd.Series:
        values = zip(*(frame[c] for c in self.columns), strict=True)
        return pd.Series([self.explain_values(*v) is None for v in values], index=frame.index, dtype=bool)

    def check(self) -> pa.Check:
        if len(self.columns) == 1:
            return pa.Check(lambda s: s.map(lambda v: self.explain_values(v) is None).astype(bool), name=self.name)
        return pa.Check(self.passes, name=self.name)

    def reason(self, frame: pd.DataFrame, row: int) -> str | None:
        return self.explain_values(*(frame.at[row, c] for c in self.columns))


@dataclass(frozen=True)
class FrameRule:
    """A check of each row against the whole table: `explain_all(frame)` gives a reason (or None) per row."""

    name: str
    field: str
    columns: tuple[str, ...]
    explain_all: Callable[[pd.DataFrame], pd.Series]

    def passes(self, frame: pd.DataFrame) -> pd.Series:
        if not set(self.columns) <= set(frame.columns):
            return pd.Series(True, index=frame.index)  # a missing column is reported by the schema itself
        return self.explain_all(frame).isna()

    def check(self) -> pa.Check:
        return pa.Check(self.passes, name=self.name)

    def reason(self, frame: pd.DataFrame, row: int) -> str | None:
        return self.explain_all(frame).at[row]


def _non_blank(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-blank string"


def _no_special_tokens(value: Any) -> str | None:
    found = [t for t in SPECIAL_TOKENS if isinstance(value, str) and t in value]
    return f"contains K2 special tokens {found}; they would be tokenized as control tokens" if found else None


def _note_boxes_answer(note: Any, answer: Any) -> str | None:
    if not isinstance(note, str) or not isinstance(answer, str):
        return None  # reported by the dtype checks
    if not note.rstrip().endswith(boxed(answer)):
        return f"note must end with {boxed(answer)} (the gold answer), ends with {note.rstrip()[-40:]!r}"
    return None


def _rephrased_sources_exist(frame: pd.DataFrame) -> pd.Series:
    missing = (frame["kind"] == "rephrased") & ~frame["source"].isin(frame.loc[frame["kind"] == "text", "doc_id"])
    reasons = "source " + frame["source"].astype(str) + " is not the doc_id of a kind='text' document"
    return reasons.where(missing, None)


def _chunk_keys_unique(frame: pd.DataFrame) -> pd.Series:
    repeated = frame.duplicated(["doc_id", "chunk_index"], keep="first")
    reasons = "chunk " + frame["chunk_index"].astype(str) + " of " + frame["doc_id"].astype(str) + " appears twice"
    return reasons.where(repeated, None)


def _kept_rewrite_is_text(rephrased: Any, kept_original: Any, judge: Any) -> str | None:
    if kept_original is False and not (isinstance(rephrased, str) and rephrased.strip()):
        return "a chunk whose rewrite was kept must have a non-blank rephrased text"
    if kept_original is False and judge == "fail":
        return "the judge failed this rewrite, so the original must have been kept"
    return None


def _spec_error(spec: Any, name: Any) -> str | None:
    """A repository row's spec is one valid OpenAI tool spec, named like the row."""
    if not isinstance(spec, str):
        return "spec must be a JSON string"
    error = tools_error(f"[{spec}]")
    if error:
        return error.replace("tools[0]", "spec", 1)
    named = json.loads(spec)["function"]["name"]
    return None if named == name else f"spec names the function {named!r}, the row {name!r}"


def _tool_names_error(value: Any) -> str | None:
    """An agent's tools: a non-empty JSON list of distinct tool names."""
    if not isinstance(value, str):
        return "tools must be a JSON string"
    try:
        names = json.loads(value)
    except json.JSONDecodeError as error:
        return f"tools is not valid JSON: {error.msg}"
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return "tools must be a non-empty JSON list of tool names"
    return None if len(set(names)) == len(names) else "tools names a tool twice"


def _verified_has_box(boxed_value: Any, verified: Any) -> str | None:
    if verified is True and not (isinstance(boxed_value, str) and boxed_value.strip()):
        return "a verified note must have a boxed answer"
    return None


RULES: dict[str, Rule | FrameRule] = {
    r.name: r
    for r in [
        Rule("non_blank_text", "text", ("text",), _non_blank),
        Rule("no_special_tokens", "text", ("text",), _no_special_tokens),
        Rule("non_blank_question", "question", ("question",), _non_blank),
        Rule("non_blank_answer", "answer", ("answer",), _non_blank),
        Rule("note_boxes_answer", "note", ("note", "answer"), _note_boxes_answer),
        Rule("non_blank_instruction", "instruction", ("instruction",), _non_blank),
        Rule("valid_gold_actions", "gold_actions", ("gold_actions",), gold_actions_error),
        Rule("initial_state_object", "initial_state", ("initial_state",),
             lambda v: json_object_error(v, "initial_state")),
        Rule("rubric_object", "rubric", ("rubric",), lambda v: json_object_error(v, "rubric")),
        Rule("valid_messages", "messages", ("messages",), messages_error),
        Rule("valid_tools", "tools", ("tools",), tools_error),
        Rule("calls_declared_tools", "messages", ("messages", "tools", "source"), declared_calls_error),
        Rule("non_blank_original", "original", ("original",), _non_blank),
        Rule("kept_rewrite_is_text", "rephrased", ("rephrased", "kept_original", "judge"), _kept_rewrite_is_text),
        Rule("verified_has_box", "boxed", ("boxed", "verified"), _verified_has_box),
        Rule("valid_spec", "spec", ("spec", "name"), _spec_error),
        Rule("tool_name_list", "tools", ("tools",), _tool_names_error),
        Rule("non_blank_system_prompt", "system_prompt", ("system_prompt",), _non_blank),
        FrameRule("rephrased_source_exists", "source", ("doc_id", "source", "kind"), _rephrased_sources_exist),
        FrameRule("chunk_key_unique", "chunk_index", ("doc_id", "chunk_index"), _chunk_keys_unique),
    ]
}


def _col(*rules: str, unique: bool = False, isin: list[str] | None = None) -> pa.Column:
    checks = [pa.Check.str_length(min_value=1)] + [RULES[r].check() for r in rules]
    if isin is not None:
        checks.append(pa.Check.isin(isin))
    return pa.Column(str, checks=checks, nullable=False, unique=unique, report_duplicates="exclude_first")


def _num(dtype: type, **bounds: float) -> pa.Column:
    checks = [pa.Check.in_range(bounds["min"], bounds["max"])] if "max" in bounds else (
        [pa.Check.ge(bounds["min"])] if bounds else [])
    return pa.Column(dtype, checks=checks, nullable=False)


def _schema(name: str, columns: dict[str, pa.Column], frame_rules: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(columns, checks=[RULES[r].check() for r in frame_rules], strict=True, name=name)


SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "corpus": _schema(
        "corpus",
        {
            "doc_id": _col(unique=True),
            "source": _col(),
            "kind": _col(isin=["text", "math_note", "rephrased"]),
            "text": _col("non_blank_text", "no_special_tokens"),
        },
        ("rephrased_source_exists",),
    ),
    "math": _schema(
        "math",
        {
            "problem_id": _col(unique=True),
            "generator": _col(),
            "question": _col("non_blank_question", unique=True),
            "answer": _col("non_blank_answer"),
            "note": _col(),
            "split": _col(isin=["train", "rl", "test"]),
        },
        ("note_boxes_answer",),
    ),
    "tool_tasks": _schema(
        "tool_tasks",
        {
            "task_id": _col(unique=True),
            "env": _col(),
            "instruction": _col("non_blank_instruction"),
            "gold_actions": _col("valid_gold_actions"),
            "initial_state": _col("initial_state_object"),
            "rubric": _col("rubric_object"),
            "split": _col(isin=["train", "test"]),
        },
    ),
    "sft": _schema(
        "sft",
        {
            "example_id": _col(unique=True),
            "source": _col(isin=["math", "tool"]),
            "messages": _col("valid_messages"),
            "tools": _col("valid_tools"),
        },
        ("calls_declared_tools",),
    ),
    "rephrased_chunks": _schema(
        "rephrased_chunks",
        {
            "doc_id": _col(),
            "chunk_index": _num(int, min=0),
            "style": _col(isin=list(STYLES)),
            "original": _col("non_blank_original"),
            "rephrased": pa.Column(str, nullable=False),
            "similarity": _num(float, min=-1.0, max=1.0),
            "judge": _col(isin=["pass", "fail", "none"]),
            "attempts": _num(int, min=1),
            "kept_original": pa.Column(bool, nullable=False),
        },
        ("kept_rewrite_is_text", "chunk_key_unique"),
    ),
    "math_note_attempts": _schema(
        "math_note_attempts",
        {
            "problem_id": _col(unique=True),
            "backend": _col(),
            "llm_note": pa.Column(str, nullable=False),
            "boxed": pa.Column(str, nullable=True),
            "verified": pa.Column(bool, nullable=False),
        },
        ("verified_has_box",),
    ),
    "tool_specs": _schema(
        "tool_specs",
        {
            "name": pa.Column(str, pa.Check.str_matches(r"^[A-Za-z0-9_\-]{1,64}$"), nullable=False, unique=True,
                              report_duplicates="exclude_first"),
            "provenance": _col(isin=["mcp", "mcp_live", "synthetic", "env"]),
            "category": pa.Column(str, nullable=False),
            "domain": pa.Column(str, nullable=False),
            "source": _col(),
            "description": _col(),
            "output_description": pa.Column(str, nullable=False),
            "spec": pa.Column(str, nullable=False),
        },
        ("valid_spec",),
    ),
    "agents": _schema(
        "agents",
        {
            "agent_id": _col(unique=True),
            "category": pa.Column(str, nullable=False),
            "domain": pa.Column(str, nullable=False),
            "system_prompt": _col("non_blank_system_prompt"),
            "tools": _col("tool_name_list"),
        },
    ),
}
