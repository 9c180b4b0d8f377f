"""The fast paths of the polars chat engine lose nothing and invent nothing: the one-regex text scan flags every row
the text checks reject, the flat-object regex vouches only for JSON objects, rules grouped per pass report what each
rule alone reports, an already decoded messages column gets the report of its JSON text, and JSON punctuation inside
texts is never taken for a key."""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
from hypothesis import event, given, settings
from hypothesis import strategies as st

from k2core.validation import find_failures
from k2core.validation.chat_polars import (
    _KEYS,
    _SUSPECT_TEXT,
    MESSAGES,
    _FLAT_OBJECT,
    _decode,
    _name_not_in,
    _raw_checks,
    find_chat_failures,
    json_objects,
    row_failures,
    rule_failures,
)
from tests.test_validation_hypothesis import MUTATIONS, _valid

NAMES = (st.sampled_from(_KEYS) | st.text(st.characters(codec="utf-8"), max_size=6)
         | st.sampled_from([k + "x" for k in _KEYS] + [k[:-1] for k in _KEYS]))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    st.sampled_from('ab :"\\{}[],\n') | st.characters(codec="utf-8"), max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                      max_leaves=6)
MESSAGE_LISTS = st.lists(st.dictionaries(NAMES, VALUES, max_size=5), max_size=3)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """JSON message lists with any keys and values in any layout, and broken variants of them."""
    value = draw(MESSAGE_LISTS)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.none() | st.integers(0, 2)),
                      separators=draw(st.sampled_from([None, (",", ":"), (" ,", " : ")])))
    if draw(st.booleans()):
        return text
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.sampled_from(['"', "\\", '":', '"x":1', ""])) + text[cut:]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(texts(), min_size=1, max_size=6))
def test_text_scan_flags_every_row_the_text_checks_reject(values):
    raw = pl.DataFrame({"row": range(len(values)), "messages": values}, schema={"row": pl.Int64, "messages": pl.Utf8})
    rejected = set(pl.concat(_raw_checks(raw))["row"])
    suspect = raw["messages"].str.contains(_SUSPECT_TEXT) | _decode(raw["messages"]).is_null()
    assert rejected <= set(raw.filter(suspect)["row"]), values
    event(f"text checks reject a row: {bool(rejected)}")


ARGUMENTS = (st.builds(json.dumps, VALUES) | st.builds(json.dumps, st.dictionaries(NAMES, SCALARS), indent=st.just(1))
             | st.text(st.sampled_from('{}[]":, 1e-.\\\nantrulf'), max_size=12))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ARGUMENTS, min_size=1, max_size=8))
def test_flat_object_regex_vouches_only_for_json_objects(values):
    flat = pl.Series(values, dtype=pl.Utf8).str.contains(_FLAT_OBJECT).to_list()
    parsed = pl.Series(values, dtype=pl.Utf8).str.json_path_match("$").str.starts_with("{").fill_null(False).to_list()
    for value, vouched, is_object in zip(values, flat, parsed, strict=True):
        if vouched:
            assert is_object and isinstance(json.loads(value), dict), value
    assert json_objects(pl.Series(values, dtype=pl.Utf8)).to_list() == parsed
    event(f"vouched for an object: {any(flat)}")


def test_name_regex_matches_exactly_the_other_names():
    pattern = f"^{_name_not_in(_KEYS)}$"
    names = [*_KEYS, "", "x", "roles", "rol", "tool_callz", "tool_call", "toolcalls", "my-key", "名前", "id2", "i"]
    got = pl.Series(names).str.contains(pattern).to_list()
    assert got == [n not in _KEYS for n in names]


def test_grouped_rules_report_what_each_rule_reports():
    frame = pl.DataFrame({"row": [0, 0, 1, 2], "pos": [0, 1, 0, 0], "v": [1, -1, 5, None]})
    rules = [(pl.col("v") < 0, "negative", pl.format("[{}] below zero", pl.col("pos"))),
             (pl.col("v") > 3, "large", pl.lit("above three")),
             (pl.col("v").is_null() | (pl.col("v") == -1), "odd", pl.format("v={}", pl.col("v")))]
    alone = [row_failures(frame, bad, "messages", check, reason) for bad, check, reason in rules]
    for grouped, single in zip(rule_failures(frame, rules), alone, strict=True):
        assert grouped.to_dicts() == single.to_dicts()
    assert [len(f) for f in alone] == [1, 1, 2]


def _table() -> pd.DataFrame:
    """Every sft mutation whose row JSON `MESSAGES` can hold (text-only faults need the text)."""
    rows = [_valid("sft", i, "plain text") for i in range(len(MUTATIONS["sft"]) + 1)]
    for i, (mutate, _) in enumerate(MUTATIONS["sft"], start=1):
        mutate(rows[i])
    frame = pd.DataFrame(rows)
    decodable = pl.Series(frame["messages"]).str.contains('"mood"|"content": 7|not json').not_()
    return frame[decodable.to_list()].reset_index(drop=True)


def test_decoded_messages_get_the_report_of_their_text():
    frame = _table()
    text = pl.from_pandas(frame)
    decoded = text.with_columns(pl.col("messages").str.json_decode(MESSAGES))
    from_text, from_decoded = find_chat_failures(text, "f"), find_chat_failures(decoded, "f")
    pd.testing.assert_frame_equal(from_text, from_decoded)
    assert len(set(from_text["row_index"])) == len(frame) - 1  # every mutated row, the valid row 0 not


def test_unknown_key_of_any_name_is_caught_by_both_engines():
    rows = [_valid("sft", i, "plain text") for i in range(3)]
    rows[1]["messages"] = rows[1]["messages"].replace('"role": "user"', '"role": "user", "my-key": "x"', 1)
    rows[2]["messages"] = rows[2]["messages"].replace('"role": "user"', '"role": "user", "": "x"', 1)
    for engine in ("pandas", "polars"):
        report = find_failures("sft", pd.DataFrame(rows), "f", engine)
        assert list(report["row_index"]) == [1, 2] and set(report["check"]) == {"valid_messages"}, report


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(st.sampled_from('":,\\{}[] ax\n'), min_size=1, max_size=10).filter(str.strip),
                      min_size=1, max_size=4))
def test_json_punctuation_in_text_is_no_key(texts):
    """Contents and arguments full of quotes, colons and commas leave valid rows valid in both engines."""
    frame = pd.DataFrame([_valid("sft", i, text) for i, text in enumerate(texts)])
    for engine in ("pandas", "polars"):
        assert find_failures("sft", frame, "f", engine).empty, (engine, texts)


# Edits the decoder cannot see: a key with a null value, a key at another level, a required key removed, a number
# where a string belongs. Each is applied to one message (level "message") or one tool call ("call", "function").
PRESENCE_KEYS = st.sampled_from([*_KEYS, "mood"])
PRESENCE_VALUES = st.none() | st.just("x") | st.just("") | st.integers(0, 3) | st.just([])


@st.composite
def presence_edits(draw: st.DrawFn) -> tuple[str, int, str, object, bool]:
    return (draw(st.sampled_from(["message", "call", "function"])), draw(st.integers(0, 3)), draw(PRESENCE_KEYS),
            draw(PRESENCE_VALUES), draw(st.booleans()))


def _apply(messages: list[dict], edit: tuple[str, int, str, object, bool]) -> list[dict]:
    level, index, key, value, remove = edit
    target = messages[index]
    if level != "message":
        calls = target.get("tool_calls")
        if not (isinstance(calls, list) and calls and isinstance(calls[0], dict)):
            return messages
        target = calls[0] if level == "call" else calls[0].get("function")
        if not isinstance(target, dict):
            return messages
    if remove:
        target.pop(key, None)
    else:
        target[key] = value
    return messages


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.lists(presence_edits(), min_size=1, max_size=2), min_size=1, max_size=5))
def test_polars_engine_rejects_exactly_the_rows_pandas_rejects_after_key_edits(edits):
    """What the decoder erases (missing vs null keys, keys at the wrong level, numbers for strings) still decides:
    both engines reject the same rows for the same (field, check), and for the rows only the text can judge, with
    the same reason."""
    rows = [_valid("sft", 0, "plain text")]
    for i, row_edits in enumerate(edits, start=1):
        row = _valid("sft", i, "plain text")
        messages = json.loads(row["messages"])
        for edit in row_edits:
            messages = _apply(messages, edit)
        row["messages"] = json.dumps(messages)
        rows.append(row)
    frame = pd.DataFrame(rows)
    pandas, polars_ = (find_failures("sft", frame, "f", engine) for engine in ("pandas", "polars"))
    keys = ["row_index", "field", "check"]
    assert pandas[keys].values.tolist() == polars_[keys].values.tolist(), (pandas, polars_)
    event(f"rows rejected: {pandas['row_index'].nunique()} of {len(frame)}")


def test_edits_the_decoder_erases_are_reported_with_pandas_reasons():
    rows = [_valid("sft", i, "plain text") for i in range(4)]
    edits = {1: ('"role": "user"', '"role": "user", "name": null'),  # a key with null, not allowed for the role
             2: ('"role": "assistant", "content": "plain text"', '"role": "assistant"'),  # required key missing
             3: ('"role": "user"', '"role": "user", "type": "function"')}  # a call's key inside a message
    for i, (old, new) in edits.items():
        assert old in rows[i]["messages"]
        rows[i]["messages"] = rows[i]["messages"].replace(old, new, 1)
    frame = pd.DataFrame(rows)
    pandas, polars_ = (find_failures("sft", frame, "f", engine) for engine in ("pandas", "polars"))
    assert list(pandas["row_index"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(pandas, polars_)


def test_a_row_with_invalid_messages_is_not_also_judged_on_declared_tools():
    """Found by the key-edit test in CI: a null role plus a call to an undeclared tool is one `valid_messages`
    failure in both engines (pandas' cross-field check skips rows whose messages are invalid)."""
    rows = [_valid("sft", i, "plain text") for i in range(2)]
    messages = json.loads(rows[1]["messages"])
    messages[0]["role"] = None
    messages[1]["tool_calls"][0]["function"]["name"] = "x"
    rows[1]["messages"] = json.dumps(messages)
    frame = pd.DataFrame(rows)
    for engine in ("pandas", "polars"):
        report = find_failures("sft", frame, "f", engine)
        assert report[["row_index", "check"]].values.tolist() == [[1, "valid_messages"]], (engine, report)
