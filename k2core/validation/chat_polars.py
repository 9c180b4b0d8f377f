"""Vectorised validation of chat datasets (`sft`) with polars: the same contract as the pydantic checks of
`records.py`, 10x the pandas engine's rows per second (docs/benchmarks.md; most of the time goes to decoding the JSON
text, and a decoded column is checked at hundreds of thousands of rows per second on one core).

Messages are stored as JSON text (docs/contracts.md), so each run decodes them once into `List(Struct)` (a
whole-column decode; only when it fails is the column split in halves to find the undecodable rows); a column that
is already `MESSAGES` is used as it is. pandera's polars backend checks the columns (dtype of the nested messages,
uniqueness, allowed values). Every conversation rule is a polars expression over the exploded messages and tool
calls (one row per message or call, with its row number and position), so nothing runs per row in Python. The two
rules that need the JSON text (unknown keys, non-string values: the decoder drops the first and turns numbers into
strings) first scan the text with one regex that flags every row they could reject (`_SUSPECT_TEXT`), and word
their reasons for those rows only. Tool lists repeat across rows (one per environment), so `tools_error` (JSON
Schema) runs once per distinct value. What decoding erases (a missing key and an explicit null read alike, a key at
the wrong level is dropped) is recovered from the text by counting its unescaped quotes against what the decoded
fields account for (`_presence_suspects`); the few rows that differ are judged by the pandas engine's own check. The
result is the same per-row report as `validate.find_failures`.
"""

from __future__ import annotations

import json

import pandas as pd
import pandera.polars as pa
import polars as pl

from k2core.chat import SPECIAL_TOKENS
from k2core.validation.records import messages_error, tools_error

REPORT_COLUMNS = ["file", "row_index", "field", "check", "reason"]
_NAME = r"^[A-Za-z0-9_\-.]{1,64}$"
_CALL_ID = r"^functions\.([A-Za-z0-9_\-.]{1,64}):\d+$"
_CALL = pl.Struct({"id": pl.Utf8, "type": pl.Utf8, "function": pl.Struct({"name": pl.Utf8, "arguments": pl.Utf8})})
MESSAGE = pl.Struct({"role": pl.Utf8, "content": pl.Utf8, "tool_calls": pl.List(_CALL), "tool_call_id": pl.Utf8,
                     "name": pl.Utf8})
MESSAGES = pl.List(MESSAGE)
_KEYS = ["role", "content", "tool_calls", "tool_call_id", "name", "id", "type", "function", "arguments"]
_STRING_KEYS = "role|content|tool_call_id|name|id|type|arguments"
# An unescaped key (escaped ones are inside strings, e.g. tool results), and one whose value is not a string. A key
# name has no quote, backslash, comma or colon: in valid JSON a comma or colon separates any two strings, so a match
# cannot run from the end of one string to the start of the next (`"content": ": x"`).
_NAME_CHAR = r'[^"\\,:]'
_KEY = rf'(?:^|[^\\])"({_NAME_CHAR}*)"\s*:'
_NON_STRING_VALUE = rf'(?:^|[^\\])"({_STRING_KEYS})"\s*:\s*[^"\sn]'
_ROLE_FIELDS = {"system": [], "user": [], "assistant": ["tool_calls"], "tool": ["tool_call_id", "name"]}
# JSON's grammar, strictly, for regexes that vouch for a value before any parser runs: whitespace (regex \s would
# allow more), one character of a string (no raw control character, valid escapes, no surrogate escape), and an
# object whose values are strings, numbers, booleans or null (most tool-call arguments).
_WS = r"[ \t\n\r]*"
_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:[0-9A-Ca-cEFef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2}))'
_SCALAR = rf'(?:"{_CHAR}*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)'
_MEMBER = rf'"{_CHAR}*"{_WS}:{_WS}{_SCALAR}'
_FLAT_OBJECT = rf"^{_WS}\{{{_WS}(?:{_MEMBER}(?:{_WS},{_WS}{_MEMBER})*{_WS})?\}}{_WS}$"


def _name_not_in(words: list[str]) -> str:
    """A regex for a key name (`_NAME_CHAR*`) that is none of `words` (the regex engine has no lookahead): the name
    leaves the words' prefix tree at some prefix with a character no word continues with, or ends at a prefix that
    is no word."""
    prefixes = sorted({w[:i] for w in words for i in range(len(w) + 1)})
    alternatives = []
    for prefix in prefixes:
        following = "".join(sorted({w[len(prefix)] for w in words if w.startswith(prefix) and len(w) > len(prefix)}))
        alternatives.append(prefix + (rf'[^"\\,:{following}]{_NAME_CHAR}*' if following else f"{_NAME_CHAR}+"))
        if prefix not in words:
            alternatives.append(prefix)
    return "(?:" + "|".join(alternatives) + ")"


# One scan of the JSON text for every row `_raw_checks` could reject: an unescaped key the format does not know, or
# a string field whose value is not a string. On text the decoder accepts it flags at least the rows those checks
# do (tests/test_validation_chat_polars.py); text it rejects is reported as undecodable anyway.
_SUSPECT_TEXT = rf'(?:^|[^\\])"(?:{_name_not_in(_KEYS)}"\s*:|(?:{_STRING_KEYS})"\s*:\s*[^"\sn])'

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


def _decode_and_scan(raw: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """The decoded messages, and which rows `_SUSPECT_TEXT` flags: one query, so polars runs both at once."""
    text = pl.col("messages")
    scan = text.str.contains(_SUSPECT_TEXT).fill_null(False).alias("suspect")
    try:
        both = raw.lazy().select(text.str.json_decode(MESSAGES), scan).collect()
        return both["messages"], both["suspect"]
    except pl.exceptions.PolarsError:  # some row is undecodable: find it
        return _decode(raw["messages"]), raw.select(scan)["suspect"]


def row_failures(frame: pl.DataFrame, bad: pl.Expr, field: str, check: str, reason: pl.Expr) -> pl.DataFrame:
    """(row, field, check, reason) for the rows of `frame` where `bad` holds; first reason per row."""
    return (frame.filter(bad).group_by("row", maintain_order=True).agg(reason.first().alias("reason"))
            .select("row", pl.lit(field).alias("field"), pl.lit(check).alias("check"), "reason"))


RowRule = tuple[pl.Expr, str, pl.Expr]  # (the row is bad, check, reason)


def rule_failures(frame: pl.DataFrame, rules: list[RowRule], field: str = "messages") -> list[pl.DataFrame]:
    """`row_failures` of each rule; one combined pass picks the rows any rule flags (usually none), and only those
    are grouped and worded rule by rule."""
    flagged = frame.filter(pl.any_horizontal([bad for bad, _, _ in rules]))
    return [row_failures(flagged, bad, field, check, reason) for bad, check, reason in rules]


def duplicates(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Uniqueness as in the pandas schemas: the first occurrence is kept, later repeats are reported."""
    return row_failures(frame, pl.col(column).is_not_null() & ~pl.col(column).is_first_distinct(), column,
                        "field_uniqueness", pl.format("duplicate value '{}': an earlier row already has it",
                                                      pl.col(column)))


def _at(prefix: str = "messages") -> pl.Expr:
    return pl.format(prefix + "[{}]", pl.col("pos"))


def _raw_checks(raw: pl.DataFrame) -> list[pl.DataFrame]:
    """Checks on the JSON text: keys the format does not know, non-string values of string fields. Called with the
    rows `_SUSPECT_TEXT` flags and the undecodable ones only."""
    known = r'"(?:' + "|".join(_KEYS) + r')"\s*:'
    unknown = pl.col("messages").str.replace_all(known, "").str.extract(_KEY)  # first key left over, if any
    return [
        row_failures(raw.with_columns(unknown.alias("key")), pl.col("key").is_not_null(), "messages", "valid_messages",
                  pl.format("messages: unknown key '{}'", pl.col("key"))),
        row_failures(raw, pl.col("messages").str.contains(_NON_STRING_VALUE), "messages", "valid_messages",
                  pl.format("messages: field '{}' must be a string",
                            pl.col("messages").str.extract(_NON_STRING_VALUE))),
    ]


# Quotes each non-null decoded field accounts for in the text: a key (2) and, for string fields, its value (2).
_MESSAGE_QUOTES = {"role": 4, "content": 4, "tool_call_id": 4, "name": 4, "tool_calls": 2}
_CALL_QUOTES = {"id": 4, "type": 4, "function": 2, "fname": 4, "arguments": 4}


def _quotes(frame: pl.DataFrame, weights: dict[str, int]) -> pl.DataFrame:
    total = pl.sum_horizontal([pl.col(f).is_not_null().cast(pl.Int64) * w for f, w in weights.items()])
    return frame.group_by("row").agg(total.sum().alias("quotes"))


def _presence_suspects(raw: pl.DataFrame, messages: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """Decoded rows whose text may hold what decoding erased: the decoder reads a missing key, an explicit null and a
    key at the wrong level alike, and pydantic does not (`"name": null` on a user message, a call's `type` inside a
    message, an assistant message without a `content` key). A row is suspect when its text has more unescaped quotes
    than its non-null decoded keys and string values account for, or an assistant message has null content."""
    text = raw.filter(pl.col("messages").is_not_null()).select(
        "row", "messages", pl.col("messages").str.replace_all(r"\\.", "").str.count_matches('"', literal=True)
        .alias("text_quotes"))
    decoded = pl.concat([_quotes(messages, _MESSAGE_QUOTES), _quotes(calls, _CALL_QUOTES)]).group_by("row").agg(
        pl.col("quotes").sum())
    null_content = messages.filter((pl.col("role") == "assistant") & pl.col("content").is_null()).select("row")
    counted = text.join(decoded, on="row", how="left").with_columns(pl.col("quotes").fill_null(0))
    return counted.filter((pl.col("text_quotes") != pl.col("quotes")) | pl.col("row").is_in(null_content["row"]))


def _presence_failures(suspects: pl.DataFrame) -> pl.DataFrame:
    """The pandas engine's own `messages_error` (pydantic) on the suspect rows only, with its exact reasons."""
    reasons = [messages_error(text) for text in suspects["messages"].to_list()]
    found = suspects.select("row").with_columns(pl.Series("reason", reasons, dtype=pl.Utf8))
    return row_failures(found, pl.col("reason").is_not_null(), "messages", "valid_messages", pl.col("reason"))


def _explode(frame: pl.DataFrame, column: str, position: str, keep: tuple[str, ...]) -> pl.DataFrame:
    """One row per element of the list `column` (its fields unnested), with the element's index in `position`;
    empty and null lists give no row."""
    return (frame.filter(pl.col(column).list.len() > 0)
            .select(*keep, column, pl.int_ranges(pl.col(column).list.len(), dtype=pl.Int64).alias(position))
            .explode(column, position).unnest(column))


def _message_checks(decoded: pl.DataFrame, messages: pl.DataFrame, calls: pl.DataFrame) -> list[pl.DataFrame]:
    """Per-message and per-conversation rules over the exploded messages (and calls) of the decoded rows."""
    has = {f: pl.col(f).is_not_null() for f in ("tool_calls", "tool_call_id", "name")}
    extra = pl.lit(False)
    for role, allowed in _ROLE_FIELDS.items():
        extra = extra | ((pl.col("role") == role) & pl.any_horizontal([has[f] for f in has if f not in allowed]))
    special = pl.col("content").str.contains_any(list(SPECIAL_TOKENS)).fill_null(False)
    rules: list[RowRule] = [
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
    last = decoded.select("row", pl.col("messages").list.last().struct.field("role").alias("role"),
                          pl.col("messages").list.len().alias("n"))
    conversation: list[RowRule] = [
        (pl.col("n") == 0, "valid_messages", pl.lit("messages must be a non-empty JSON list")),
        ((pl.col("n") > 0) & (pl.col("role").fill_null("") != "assistant"), "valid_messages",
         pl.format("the last message must be the assistant's, got role '{}'", pl.col("role"))),
    ]
    out = rule_failures(messages, rules) + rule_failures(last, conversation)
    out.extend(_call_checks(messages, calls))
    return out


def json_objects(text: pl.Series) -> pl.Series:
    """Whether each value is a JSON object: `_FLAT_OBJECT` vouches for flat ones, polars' parser decides the rest."""
    flat = text.str.contains(_FLAT_OBJECT).fill_null(False)
    doubted = (~flat).arg_true()
    parsed = text.gather(doubted).str.json_path_match("$").str.starts_with("{").fill_null(False)
    return flat.scatter(doubted, parsed)


def _calls(messages: pl.DataFrame) -> pl.DataFrame:
    """One row per tool call: (row, pos, k, id, type, function, fname, arguments, object: arguments are an object)."""
    calls = (_explode(messages, "tool_calls", "k", ("row", "pos"))
             .with_columns(pl.col("function").struct.field("name").alias("fname"),
                           pl.col("function").struct.field("arguments").alias("arguments")))
    return calls.with_columns(json_objects(calls["arguments"]).alias("object"))


def _call_checks(messages: pl.DataFrame, calls: pl.DataFrame) -> list[pl.DataFrame]:
    """Tool calls: shape, ids naming their function, JSON-object arguments; tool results answer earlier calls."""
    at = pl.format("messages[{}].tool_calls[{}]", pl.col("pos"), pl.col("k"))
    check = "valid_messages"
    rules: list[RowRule] = [
        (pl.col("type").fill_null("") != "function", check, pl.format("{}.type: must be 'function'", at)),
        (~pl.col("fname").fill_null("").str.contains(_NAME), check,
         pl.format("{}.function.name: not a valid name", at)),
        (pl.col("id").str.extract(_CALL_ID).fill_null("\0") != pl.col("fname").fill_null(""), check,
         pl.format("{}.id: '{}' does not name the function", at, pl.col("id"))),
        (~pl.col("object"), check,
         pl.format("{}.function.arguments: must be a JSON object", at)),
        (pl.col("arguments").str.contains_any(list(SPECIAL_TOKENS)).fill_null(False), check,
         pl.format("{}: not renderable in K2's chat format: contains a special token", at)),
    ]
    out = rule_failures(calls, rules)
    results = messages.filter(pl.col("role") == "tool").select("row", "pos", "tool_call_id", "name")
    answered = results.join(calls.select("row", pl.col("pos").alias("call_pos"), pl.col("id").alias("tool_call_id"),
                                         "fname"), on=["row", "tool_call_id"], how="left")
    answered = answered.filter(pl.col("call_pos").is_null() | (pl.col("call_pos") < pl.col("pos")))
    answered = answered.group_by("row", "pos").agg(pl.col("fname").drop_nulls().first(), pl.col("name").first(),
                                                  pl.col("tool_call_id").first())
    return out + rule_failures(answered, [
        (pl.col("fname").is_null(), check, pl.format("messages[{}].tool_call_id '{}' answers no earlier tool call",
                                                     pl.col("pos"), pl.col("tool_call_id"))),
        (pl.col("fname").is_not_null() & (pl.col("fname") != pl.col("name")), check,
         pl.format("messages[{}].name '{}' differs from the called tool '{}'", pl.col("pos"), pl.col("name"),
                   pl.col("fname"))),
    ])


def _tool_checks(frame: pl.DataFrame, calls: pl.DataFrame) -> list[pl.DataFrame]:
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
    called = (calls.filter(pl.col("fname").is_not_null()).select("row", pl.col("fname").alias("called"))
              .join(usable.select("row", "declared"), on="row"))
    out.append(row_failures(called, ~pl.col("declared").list.contains(pl.col("called")), "messages",
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
    parts: list[pl.DataFrame] = [duplicates(raw, "example_id")]
    parts.append(row_failures(raw, pl.col("messages").is_null(), "messages", "not_nullable",
                              pl.lit("value is missing (null)")))
    if raw.schema["messages"] == MESSAGES:  # already decoded: no text to check
        decoded = raw
    else:
        messages, suspect = _decode_and_scan(raw)
        decoded = raw.with_columns(messages)
        not_decoded = messages.is_null() & raw["messages"].is_not_null()
        parts.append(row_failures(raw.filter(not_decoded), pl.lit(True), "messages", "valid_messages", pl.lit(
            "messages is not a JSON list of message objects (invalid JSON or wrong types)")))
        parts.extend(_raw_checks(raw.filter(suspect | not_decoded)))
    parts.insert(0, schema_failures(decoded))
    exploded = _explode(decoded, "messages", "pos", ("row",))
    calls = _calls(exploded)
    if raw.schema["messages"] != MESSAGES:  # key presence, which only the text still shows
        parts.insert(0, _presence_failures(_presence_suspects(raw.filter(messages.is_not_null()), exploded, calls)))
    parts.extend(_message_checks(decoded.filter(pl.col("messages").is_not_null()), exploded, calls))
    parts.extend(_tool_checks(decoded, calls))
    failures = pl.concat(parts, how="vertical_relaxed")
    # As in the pandas engine, a row whose messages are invalid is not also judged on the tools its calls name.
    invalid = failures.filter(pl.col("check") == "valid_messages")["row"]
    return to_report(failures.filter(~((pl.col("check") == "calls_declared_tools") & pl.col("row").is_in(invalid))),
                     file)


def to_report(failures: pl.DataFrame, file: str) -> pd.DataFrame:
    """(row, field, check, reason) failures as the sorted per-row report, first reason per (row, field, check)."""
    report = (failures.unique(["row", "field", "check"], keep="first", maintain_order=True)
              .sort(["row", "field", "check"], maintain_order=True)
              .select(pl.lit(file).alias("file"), pl.col("row").alias("row_index"), "field", "check", "reason"))
    return report.to_pandas().astype({"row_index": "int64"})[REPORT_COLUMNS]
