"""Tool calls for chat templates without tool support: prompting and reading JSON calls back."""

import json

from k2core.llm.toolcalls import extract_tool_calls, native_messages, textual_messages

NAMES = {"get_weather", "add"}
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def test_reads_calls_in_every_usual_wrapping():
    cases = {
        'Sure.\n<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>': "Sure.",
        '{"name": "add", "arguments": {"a": 2, "b": 3}}': "",
        '```json\n{"name": "add", "parameters": {"a": 2, "b": 3}}\n```': "",
        '<tool_call>[{"function": {"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}}]': "",
    }
    for text, content in cases.items():
        assert extract_tool_calls(text, NAMES) == (content, [("add", '{"a": 2, "b": 3}')]), text


def test_ignores_json_that_is_not_a_call_of_a_declared_tool():
    for text in ('{"name": "rm_rf", "arguments": {}}', '{"name": "add", "arguments": [1]}',
                 'The set {"a", "b"} has {"name": "add"', '[{"name": "add", "arguments": {}}, {"x": 1}]'):
        assert extract_tool_calls(text, NAMES) == (text, [])
    two = '<tool_call>{"name": "add", "arguments": {}}</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert extract_tool_calls(two, NAMES)[1] == [("add", "{}"), ("get_weather", '{"city": "Oslo"}')]


def test_textual_conversation_shows_the_pattern_it_asks_for():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.add:0", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "functions.add:0", "name": "add", "content": "5"},
    ]
    out = textual_messages(messages, TOOLS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n") and '"name": "add"' in out[0]["content"]
    assert extract_tool_calls(out[2]["content"], NAMES) == ("", [("add", '{"a": 2, "b": 3}')])
    assert out[3]["content"] == '<tool_response name="add">\n5\n</tool_response>'
    assert textual_messages(messages[1:2], TOOLS)[0]["role"] == "system"
    assert native_messages(messages)[2]["tool_calls"][0]["function"]["arguments"] == json.loads('{"a": 2, "b": 3}')
