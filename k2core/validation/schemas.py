"""Pandera schemas of the four datasets in docs/contracts.md.

Custom checks are `Rule`s: a function of one or more column values that returns why a row is invalid
(or None). Pandera runs them (vectorised over rows) and the validator asks the same rule for the
reason when it writes the per-row report, so a check and its explanation can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

from k2core.chat import SPECIAL_TOKENS
from k2core.data.math_notes import boxed
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

    def passes(self, frame: pd.DataFrame) -> pd.Series:
        values = zip(*(frame[c] for c in self.columns), strict=True)
        return pd.Series([self.explain(*v) is None for v in values], index=frame.index, dtype=bool)

    def check(self) -> pa.Check:
        if len(self.columns) == 1:
            return pa.Check(lambda s: s.map(lambda v: self.explain(v) is None).astype(bool), name=self.name)
        return pa.Check(self.passes, name=self.name)


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


RULES: dict[str, Rule] = {
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
    ]
}


def _col(*rules: str, unique: bool = False, isin: list[str] | None = None) -> pa.Column:
    checks = [pa.Check.str_length(min_value=1)] + [RULES[r].check() for r in rules]
    if isin is not None:
        checks.append(pa.Check.isin(isin))
    return pa.Column(str, checks=checks, nullable=False, unique=unique, report_duplicates="exclude_first")


def _schema(name: str, columns: dict[str, pa.Column], frame_rules: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(columns, checks=[RULES[r].check() for r in frame_rules], strict=True, name=name)


SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "corpus": _schema(
        "corpus",
        {
            "doc_id": _col(unique=True),
            "source": _col(),
            "kind": _col(isin=["text", "math_note"]),
            "text": _col("non_blank_text", "no_special_tokens"),
        },
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
}
