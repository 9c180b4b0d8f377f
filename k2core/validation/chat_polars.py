"""Vectorised validation of chat datasets (`sft`) with polars: the same contract as the pydantic checks of
`records.py`, at millions of rows per second instead of tens of thousands.

Messages are decoded once into `List(Struct)` (a whole-column decode; only when it fails is the column split
in halves to find the undecodable rows), and pandera's polars backend checks the columns (dtype of the nested
messages, uniqueness, allowed values). Every conversation rule is a polars expression over the exploded
messages and tool calls (one row per message or call, joined back by row number), so nothing runs per row
in Python. Tool lists repeat across rows (one per environment), so `tools_error` (JSON Schema) runs once per
distinct value. The result is the same per-row report as `validate.find_failures`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pandera.polars as pa
import polars as pl

from k2core.chat import SPECIAL_TOKENS
from k2core.validation.records import tools_error

REPORT_COLUMNS = ["file", "row_index", "field", "check", "reason"]
_NAME = r"^[A-Za-z0-9_\-.]{1,64}$"
_CALL_ID = r"^functions\.([A-Za-z0-9_\-.]{1,64}):\d+$"
_CALL = pl.Struct({"id": pl.Utf8, "type": pl.Utf8, "function": pl.Struct({"name": pl.Utf8, "arguments": pl.Utf8})})
MESSAGE = pl.Struct({"role": pl.Utf8, "content": pl.Utf8, "tool_calls": pl.List(_CALL), "tool_call_id": pl.Utf8,
                     "name": pl.Utf8})
MESSAGES = pl.List(MESSAGE)
_KEYS = ["role", "content", "tool_calls", "tool_call_id", "name", "id", "type", "function", "arguments"]
_STRING_KEYS = "role|content|tool_call_id|name|id|type|arguments"
# An unescaped key (escaped ones are inside strings, e.g. tool results), and one whose value is not a string.
_KEY = r'(?:^|[^\\])"([A-Za-z_]\w*)"\s*:'
_NON_STRING_VALUE = rf'(?:^|[^\\])"({_STRING_KEYS})"\s*:\s*[^"\sn]'
_ROLE_FIELDS = {"system": [], "user": [], "assistant": ["tool_calls"], "tool": ["tool_call_id", "name"]}

SFT_SCHEMA = pa.DataFrameSchema(
    {
        "example_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1), nullable=False),
        "source": pa.Column(pl.Utf8, pa.Check.isin(["math", "tool"]), nullable=False),
        "messages": pa.Column(MESSAGES, nullable=True),  # null: undecodable, reported by the decode step
        "tools": pa.Column(pl.Utf8, nullable=False),
    },
    strict=True,
    name="sft",
)


def _decode(column: pl.Series) -> pl.Series:
    """`column` decoded to MESSAGES, null where a row is not decodable (found by halving failing ranges)."""
    try:
        return column.str.json_decode(MESSAGES)
    except pl.exceptions.PolarsError:
        if len(column) == 1:
            return pl.Series(column.name, [None], dtype=MESSAGES)
        half = len(column) // 2
        return pl.concat([_decode(column[:half]), _decode(column[half:])])


def row_failures(frame: pl.DataFrame, bad: pl.Expr, field: str, check: str, reason: pl.Expr) -> pl.DataFrame:
    """(row, field, check, reason) for the rows of `frame` where `bad` holds; first reason per row."""
    return (frame.filter(bad).group_by("row", maintain_order=True).agg(reason.first().alias("reason"))
            .select("row", pl.lit(field).alias("field"), pl.lit(check).alias("check"), "reason"))


def duplicates(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Uniqueness as in the pandas schemas: the first occurrence is kept, later repeats are reported."""
    return row_failures(frame, pl.col(column).is_not_null() & ~pl.col(column).is_first_distinct(), column,
                        "field_uniqueness", pl.format("duplicate value '{}': an earlier row already has it",
                                                      pl.col(column)))


def _at(prefix: str = "messages") -> pl.Expr:
    return pl.format(prefix + "[{}]", pl.col("pos"))


def _raw_checks(raw: pl.DataFrame) -> list[pl.DataFrame]:
    """Checks on the JSON text: keys the format does not know, non-string values of string fields."""
    known = r'"(?:' + "|".join(_KEYS) + r')"\s*:'
    unknown = pl.col("messages").str.replace_all(known, "").str.extract(_KEY)  # first key left over, if any
    return [
        row_failures(raw.with_columns(unknown.alias("key")), pl.col("key").is_not_null(), "messages", "valid_messages",
                  pl.format("messages: unknown key '{}'", pl.col("key"))),
        row_failures(raw, pl.col("messages").str.contains(_NON_STRING_VALUE), "messages", "valid_messages",
                  pl.format("messages: field '{}' must be a string",
                            pl.col("messages").str.extract(_NON_STRING_VALUE))),
    ]


def _message_checks(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Per-message and per-conversation rules over the exploded messages."""
    decoded = frame.filter(pl.col("messages").is_not_null())
    messages = (decoded.select("row", "messages").explode("messages")
                .with_columns(pos=pl.int_range(pl.len()).over("row")).unnest("messages"))
    has = {f: pl.col(f).is_not_null() for f in ("tool_calls", "tool_call_id", "name")}
    extra = pl.lit(False)
    for role, allowed in _ROLE_FIELDS.items():
        extra = extra | ((pl.col("role") == role) & pl.any_horizontal([has[f] for f in has if f not in allowed]))
    special = pl.col("content").str.contains_any(list(SPECIAL_TOKENS)).fill_null(False)
    rules: list[tuple[pl.Expr, str, pl.Expr]] = [
        (pl.col("role").is_null() | ~pl.col("role").is_in(list(_ROLE_FIELDS)), "valid_messages",
         pl.format("{}.role: must be one of system, user, assistant, tool; got '{}'", _at(), pl.col("role"))),
        (extra, "valid_messages", pl.format("{}: fields not allowed for role '{}'", _at(), pl.col("role"))),
        ((pl.col("role") == "user") & (pl.col("content").fill_null("") == ""), "valid_messages",
         pl.format("{}.content: a user message needs non-empty content", _at())),
        (pl.col("role").is_in(["system", "tool"]) & pl.col("content").is_null(), "valid_messages",
         pl.format("{}.content: must be a string", _at())),
        ((pl.col("role") == "assistant") & (pl.col("content").fill_null("") == "")
         & (pl.col("tool_calls").list.len().fill_null(0) == 0), "valid_messages",
         pl.format("{}: assistant message has neither content nor tool_calls", _at())),
        ((pl.col("role") == "tool") & ~pl.col("tool_call_id").fill_null("").str.contains(_CALL_ID), "valid_messages",
         pl.format("{}.tool_call_id: must look like 'functions.NAME:IDX'", _at())),
        ((pl.col("role") == "tool") & ~pl.col("name").fill_null("").str.contains(_NAME), "valid_messages",
         pl.format("{}.name: not a valid tool name", _at())),
        (special, "valid_messages", pl.format("{}: not renderable in K2's chat format: contains a special token",
                                              _at())),
    ]
    out = [row_failures(messages, bad, "messages", check, reason) for bad, check, reason in rules]
    last = decoded.select("row", pl.col("messages").list.last().struct.field("role").alias("role"),
                          pl.col("messages").list.len().alias("n"))
    out.append(row_failures(last, pl.col("n") == 0, "messages", "valid_messages",
                         pl.lit("messages must be a non-empty JSON list")))
    out.append(row_failures(last, (pl.col("n") > 0) & (pl.col("role").fill_null("") != "assistant"), "messages",
                         "valid_messages", pl.format("the last message must be the assistant's, got role '{}'",
                                                     pl.col("role"))))
    out.extend(_call_checks(messages))
    return out


def _call_checks(messages: pl.DataFrame) -> list[pl.DataFrame]:
    """Tool calls: shape, ids naming their function, JSON-object arguments; tool results answer earlier calls."""
    calls = (messages.filter(pl.col("tool_calls").list.len() > 0).select("row", "pos", "tool_calls")
             .explode("tool_calls").with_columns(k=pl.int_range(pl.len()).over("row", "pos")).unnest("tool_calls")
             .with_columns(pl.col("function").struct.field("name").alias("fname"),
                           pl.col("function").struct.field("arguments").alias("arguments")))
    at = pl.format("messages[{}].tool_calls[{}]", pl.col("pos"), pl.col("k"))
    parsed = pl.col("arguments").str.json_path_match("$")
    rules = [
        (pl.col("type").fill_null("") != "function", pl.format("{}.type: must be 'function'", at)),
        (~pl.col("fname").fill_null("").str.contains(_NAME), pl.format("{}.function.name: not a valid name", at)),
        (pl.col("id").str.extract(_CALL_ID).fill_null("\0") != pl.col("fname").fill_null(""),
         pl.format("{}.id: '{}' does not name the function", at, pl.col("id"))),
        (parsed.is_null() | ~parsed.str.starts_with("{"),
         pl.format("{}.function.arguments: must be a JSON object", at)),
        (pl.col("arguments").str.contains_any(list(SPECIAL_TOKENS)).fill_null(False),
         pl.format("{}: not renderable in K2's chat format: contains a special token", at)),
    ]
    out = [row_failures(calls, bad, "messages", "valid_messages", reason) for bad, reason in rules]
    results = messages.filter(pl.col("role") == "tool").select("row", "pos", "tool_call_id", "name")
    answered = results.join(calls.select("row", pl.col("pos").alias("call_pos"), pl.col("id").alias("tool_call_id"),
                                         "fname"), on=["row", "tool_call_id"], how="left")
    answered = answered.filter(pl.col("call_pos").is_null() | (pl.col("call_pos") < pl.col("pos")))
    answered = answered.group_by("row", "pos").agg(pl.col("fname").drop_nulls().first(), pl.col("name").first(),
                                                  pl.col("tool_call_id").first())
    out.append(row_failures(answered, pl.col("fname").is_null(), "messages", "valid_messages",
                         pl.format("messages[{}].tool_call_id '{}' answers no earlier tool call", pl.col("pos"),
                                   pl.col("tool_call_id"))))
    out.append(row_failures(answered, pl.col("fname").is_not_null() & (pl.col("fname") != pl.col("name")), "messages",
                         "valid_messages", pl.format("messages[{}].name '{}' differs from the called tool '{}'",
                                                     pl.col("pos"), pl.col("name"), pl.col("fname"))))
    return out


def _tool_checks(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """`tools_error` once per distinct tools value; calls must name declared tools; tool rows declare tools."""
    distinct = frame.select(pl.col("tools").unique())["tools"].to_list()
    errors = {value: tools_error(value) for value in distinct}
    declared = {value: [t["function"]["name"] for t in json.loads(value)] for value, e in errors.items() if e is None}
    table = pl.DataFrame({"tools": list(errors), "tools_reason": list(errors.values()),
                          "declared": [declared.get(v) for v in errors]},
                         schema={"tools": pl.Utf8, "tools_reason": pl.Utf8, "declared": pl.List(pl.Utf8)})
    rows = frame.select("row", "source", "tools", "messages").join(table, on="tools", how="left")
    out = [row_failures(rows, pl.col("tools_reason").is_not_null(), "tools", "valid_tools", pl.col("tools_reason"))]
    usable = rows.filter(pl.col("declared").is_not_null() & pl.col("messages").is_not_null())
    out.append(row_failures(usable, (pl.col("source") == "tool") & (pl.col("declared").list.len() == 0), "messages",
                         "calls_declared_tools", pl.lit("a source='tool' row must declare its tools")))
    calls = (usable.select("row", "declared", "messages").explode("messages")
             .select("row", "declared", pl.col("messages").struct.field("tool_calls")).explode("tool_calls")
             .select("row", "declared", pl.col("tool_calls").struct.field("function").struct.field("name")
                     .alias("called")).filter(pl.col("called").is_not_null()))
    out.append(row_failures(calls, ~pl.col("declared").list.contains(pl.col("called")), "messages",
                         "calls_declared_tools", pl.format("calls '{}', which tools does not declare",
                                                           pl.col("called"))))
    return out


def schema_failures(frame: pl.DataFrame, schema: pa.DataFrameSchema = SFT_SCHEMA) -> pl.DataFrame:
    """pandera (polars backend) column checks, as (row, field, check, reason)."""
    try:
        schema.validate(frame.drop("row"), lazy=True)
        return pl.DataFrame(schema={"row": pl.Int64, "field": pl.Utf8, "check": pl.Utf8, "reason": pl.Utf8})
    except pa.errors.SchemaErrors as errors:
        cases = pl.from_pandas(errors.failure_cases) if isinstance(errors.failure_cases, pd.DataFrame) \
            else errors.failure_cases
    cases = cases.with_columns(pl.col("index").cast(pl.Int64))
    whole = cases.filter(pl.col("index").is_null())  # a missing or extra column: every row is unusable
    every = whole.join(frame.select("row"), how="cross").with_columns(pl.col("row").alias("index"))
    cases = pl.concat([cases.filter(pl.col("index").is_not_null()), every.select(cases.columns)])
    check, case = pl.col("check").cast(pl.Utf8), pl.col("failure_case").cast(pl.Utf8)
    file_level = check.is_in(["column_in_dataframe", "column_in_schema"])  # the case names the column
    return cases.select(  # fields and reasons in the pandas engine's words
        pl.col("index").cast(pl.Int64).alias("row"),
        pl.when(file_level).then(case).otherwise(pl.coalesce(pl.col("column"), case)).alias("field"),
        check.alias("check"),
        pl.when(check == "not_nullable").then(pl.lit("value is missing (null)"))
        .when(check == "column_in_dataframe")
        .then(pl.format("column '{}' required by the {} contract is missing from the file", case, pl.lit(schema.name)))
        .when(check == "column_in_schema")
        .then(pl.format("column '{}' is not part of the {} contract", case, pl.lit(schema.name)))
        .otherwise(pl.format("{} failed for value '{}'", check, case)).alias("reason"),
    )


def find_chat_failures(frame: pd.DataFrame | pl.DataFrame, file: str) -> pd.DataFrame:
    """The `validate.find_failures` report for an sft table, computed with polars expressions."""
    raw = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    raw = raw.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    missing = {"example_id", "source", "messages", "tools"} - set(raw.columns)
    if missing:
        return to_report(schema_failures(raw), file)
    decoded = raw.with_columns(_decode(raw["messages"]).alias("messages"))
    parts: list[pl.DataFrame] = [schema_failures(decoded)]
    parts.append(duplicates(raw, "example_id"))
    parts.append(row_failures(raw, pl.col("messages").is_null(), "messages", "not_nullable",
                           pl.lit("value is missing (null)")))
    not_decoded = decoded["messages"].is_null() & raw["messages"].is_not_null()
    parts.append(row_failures(raw.filter(not_decoded), pl.lit(True), "messages", "valid_messages",
                           pl.lit("messages is not a JSON list of message objects (invalid JSON or wrong types)")))
    strings = raw.filter(raw["messages"].is_not_null())
    checks: list[Callable[[pl.DataFrame], list[pl.DataFrame]]] = [_message_checks, _tool_checks]
    parts.extend(_raw_checks(strings))
    for check in checks:
        parts.extend(check(decoded))
    return to_report(pl.concat(parts, how="vertical_relaxed"), file)


def to_report(failures: pl.DataFrame, file: str) -> pd.DataFrame:
    """(row, field, check, reason) failures as the sorted per-row report, first reason per (row, field, check)."""
    report = (failures.unique(["row", "field", "check"], keep="first", maintain_order=True)
              .sort(["row", "field", "check"], maintain_order=True)
              .select(pl.lit(file).alias("file"), pl.col("row").alias("row_index"), "field", "check", "reason"))
    return report.to_pandas().astype({"row_index": "int64"})[REPORT_COLUMNS]
