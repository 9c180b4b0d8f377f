"""The polars engine of the tool JSON tables: its fast conditions never pass a value the rule rejects, it falls back
to pandas for frames polars cannot hold, and a missing column is reported on every row as by pandas."""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from k2core.validation import find_failures
from k2core.validation.schemas import RULES
from k2core.validation.tables_polars import _FAST_PASS, polars_schema
from tests.test_validation_hypothesis import _valid

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=8)
VALUES = st.one_of(
    st.text(max_size=12),  # anything, blank or not
    JSON.map(json.dumps),  # JSON of every shape, NaN and Infinity included
    JSON.map(lambda v: json.dumps(v, ensure_ascii=False, indent=1)),
    st.lists(st.text(max_size=4), max_size=4).map(json.dumps),  # lists of names, empty and repeated ones included
    st.lists(st.text(max_size=4), min_size=1, max_size=4).map(lambda v: " " + json.dumps(v)[:-1] + ",]"),  # not JSON
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_fast_conditions_are_stricter_than_their_rules(values):
    frame = pl.DataFrame({"v": values}, schema={"v": pl.Utf8})
    for name, fast in _FAST_PASS.items():
        vouched = frame.select(fast(pl.col("v")).fill_null(False))["v"].to_list()
        for value, ok in zip(values, vouched, strict=True):
            assert not ok or RULES[name].explain_values(value) is None, (name, value)


def test_fast_conditions_vouch_for_typical_values():
    values = ['{"db": {"orders": []}}', '["lookup", "cancel_order"]', "Cancel order #12"]
    frame = pl.DataFrame({"v": values})
    vouched = {name: frame.select(fast(pl.col("v")).fill_null(False))["v"].to_list() for name, fast in _FAST_PASS.items()}
    assert vouched["rubric_object"] == [True, False, False] and vouched["tool_name_list"] == [False, True, False]
    assert vouched["non_blank_instruction"] == [True, True, True]


def test_polars_schema_follows_the_pandas_one():
    schema = polars_schema("tool_specs")
    assert list(schema.columns) == ["name", "provenance", "category", "domain", "source", "description",
                                    "output_description", "spec"]
    assert [c.name for c in schema.columns["name"].checks] == ["str_matches"] and schema.strict


def test_same_report_for_mixed_types_and_wrong_columns():
    rows = [_valid("agents", i, "helpful") for i in range(3)]
    rows[1]["domain"] = 7  # polars cannot hold a column of str and int: checked by pandas
    wrong = pd.DataFrame(rows).drop(columns=["tools"]).assign(domain="web", extra=1)  # every row unusable
    for frame in (pd.DataFrame(rows), wrong):
        polars, pandas = (find_failures("agents", frame, "f", engine) for engine in ("polars", "pandas"))
        pd.testing.assert_frame_equal(polars, pandas)
    assert set(polars["row_index"]) == {0, 1, 2} and set(polars["field"]) == {"tools", "extra"}
