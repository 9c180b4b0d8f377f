"""Polars validation of the tables besides `sft` whose columns carry tool calls and tool specs as JSON: `tool_tasks`
(gold action sequences, rubrics of expected calls), `tool_specs` (one OpenAI tool spec a row) and `agents` (tool
lists). Same report as the pandas engine.

The column checks of the pandas schema (types, nulls, lengths, allowed values, patterns, uniqueness) run in
pandera's polars backend: its `Check` objects are backend-neutral, so the polars schema is derived from the pandas
one and cannot drift from it. Each row rule of `schemas.RULES` runs once per distinct value (or tuple of values) and
is joined back to the rows, so its reasons are the pandas engine's, word for word. Most rows never reach the Python
rule: vectorised conditions that are stricter than the rule (`_FAST_PASS`: a letter or digit makes text non-blank,
polars' strict JSON parser finds an object, a regex finds a list of distinct non-empty strings) pass them first. The
rules without one parse free-form JSON (gold action arguments, JSON Schemas through `jsonschema`), which has no fixed
polars type.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pandera.polars as pa
import polars as pl

from k2core.validation.chat_polars import _CHAR, _WS, duplicates, row_failures, schema_failures, to_report
from k2core.validation.schemas import RULES, SCHEMAS, Rule

TABLES = ("tool_tasks", "tool_specs", "agents")
_DTYPES = {"str": pl.Utf8, "string": pl.Utf8, "int64": pl.Int64, "float64": pl.Float64, "bool": pl.Boolean}


def polars_schema(name: str) -> pa.DataFrameSchema:
    """`SCHEMAS[name]` for the polars backend, without its rules and uniqueness (both checked here, by row)."""
    columns = {}
    for column, spec in SCHEMAS[name].columns.items():
        dtype = _DTYPES[str(spec.dtype).split("[")[0]]
        checks = [c for c in spec.checks if c.name not in RULES]
        columns[column] = pa.Column(dtype, checks=checks, nullable=spec.nullable)
    return pa.DataFrameSchema(columns, strict=True, name=name)


_STRING = rf'"{_CHAR}+"'  # a non-empty JSON string, strictly
_NAMES = rf"^{_WS}\[{_WS}{_STRING}(?:{_WS},{_WS}{_STRING})*{_WS}\]{_WS}$"


def _distinct_names(value: pl.Expr) -> pl.Expr:
    """A JSON list of distinct non-empty strings (decoded only where the strict regex holds: the decoder would turn
    numbers into strings)."""
    names = pl.when(value.str.contains(_NAMES)).then(value).str.json_decode(pl.List(pl.Utf8))
    return names.list.n_unique() == names.list.len()


_FAST_PASS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    # Vectorised conditions under which a one-column rule surely passes. Each is stricter than its rule, never
    # looser, so rows it does not vouch for (the invalid ones, and any the strict parsers here doubt) still go to
    # the rule itself, which alone words the reasons.
    "non_blank_instruction": lambda v: v.str.contains("[0-9A-Za-z]"),
    "non_blank_system_prompt": lambda v: v.str.contains("[0-9A-Za-z]"),
    "initial_state_object": lambda v: v.str.json_path_match("$").str.starts_with("{"),
    "rubric_object": lambda v: v.str.json_path_match("$").str.starts_with("{"),
    "tool_name_list": _distinct_names,
}


def _rule_failures(frame: pl.DataFrame, rule: Rule) -> pl.DataFrame:
    """`rule` once per distinct value (tuple) that no fast condition vouches for, joined back by value. A
    one-column rule skips nulls, as pandera does for column checks (the null is reported as such); a rule across
    columns sees them, as in the pandas engine."""
    keys = list(rule.columns)
    fast = _FAST_PASS.get(rule.name)
    if fast is not None:
        frame = frame.filter(~fast(pl.col(keys[0])).fill_null(False))
    values = frame.select(keys).unique(maintain_order=True)
    if len(keys) == 1:
        values = values.drop_nulls()
    reasons = pl.Series("reason", [rule.explain_values(*row) for row in values.iter_rows()], dtype=pl.Utf8)
    table = values.with_columns(reasons).filter(pl.col("reason").is_not_null())
    rows = frame.select("row", *keys).join(table, on=keys, how="inner", nulls_equal=True)
    return row_failures(rows, pl.lit(True), rule.field, rule.name, pl.col("reason"))


def find_table_failures(name: str, frame: pd.DataFrame | pl.DataFrame, file: str) -> pd.DataFrame:
    """The `validate.find_failures` report for one of `TABLES`, computed with polars."""
    raw = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    raw = raw.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    schema = SCHEMAS[name]
    parts = [schema_failures(raw, polars_schema(name))]
    if set(schema.columns) - set(raw.columns):
        return to_report(parts[0], file)  # a missing column: every row is reported, nothing else can be checked
    parts += [duplicates(raw, column) for column, spec in schema.columns.items() if spec.unique]
    rules = [RULES[c.name] for spec in schema.columns.values() for c in spec.checks if c.name in RULES]
    for rule in rules + [RULES[c.name] for c in schema.checks]:
        if not isinstance(rule, Rule):
            raise ValueError(f"{name}: {rule.name} compares rows with each other; validate this table with pandas")
        parts.append(_rule_failures(raw, rule))
    return to_report(pl.concat(parts, how="vertical_relaxed"), file)
