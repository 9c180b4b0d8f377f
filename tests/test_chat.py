"""K2 chat format: byte-exact rendering, exact round trip, SFT masks, tolerant parsing of generations."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2core.chat import (
    CHAT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    SPECIAL_TOKENS,
    ChatFormatError,
    generation_prompt,
    normalize_messages,
    parse,
    parse_assistant,
    render,
    render_segments,
    tool_call_id,
)

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather – by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
WEATHER_CHAT = [
    {"role": "user", "content": "Weather in Beijing?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "functions.get_weather:0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Beijing"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": "Sunny\n25C"},
    {"role": "assistant", "content": "Sunny, 25C."},
]
WEATHER_TEXT = (
    '<|im_system|>tool_declare<|im_middle|>[{"type":"function","function":{"name":"get_weather",'
    '"description":"Current weather – by city","parameters":{"type":"object","properties":{"city":'
    '{"type":"string"}},"required":["city"]}}}]<|im_end|>'
    "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
    "<|im_user|>user<|im_middle|>Weather in Beijing?<|im_end|>"
    "<|im_assistant|>assistant<|im_middle|><|tool_calls_section_begin|><|tool_call_begin|>"
    'functions.get_weather:0<|tool_call_argument_begin|>{"city": "Beijing"}<|tool_call_end|>'
    "<|tool_calls_section_end|><|im_end|>"
    "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\nSunny\n25C<|im_end|>"
    "<|im_assistant|>assistant<|im_middle|>Sunny, 25C.<|im_end|>"
)


def test_known_example_is_byte_exact() -> None:
    assert render(WEATHER_CHAT, WEATHER_TOOLS) == WEATHER_TEXT
    messages, tools = parse(WEATHER_TEXT)
    assert tools == WEATHER_TOOLS
    assert messages == normalize_messages(WEATHER_CHAT)
    assert messages[1]["content"] == ""


def test_plain_chat_with_own_system_prompt() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = render(chat, add_generation_prompt=True)
    assert text == (
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
        "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    )
    assert text.endswith(generation_prompt())


def test_default_system_prompt_is_canonicalised_away() -> None:
    explicit = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "x"}]
    implicit = explicit[1:]
    assert render(explicit) == render(implicit)
    assert parse(render(explicit)) == (implicit, [])
    later = [{"role": "user", "content": "x"}, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    assert parse(render(later))[0] == later


def test_segments_mark_only_assistant_output() -> None:
    segments = render_segments(WEATHER_CHAT, WEATHER_TOOLS, add_generation_prompt=True)
    assert "".join(t for t, _ in segments) == render(WEATHER_CHAT, WEATHER_TOOLS, add_generation_prompt=True)
    trained = [t for t, m in segments if m]
    assert trained == [
        '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>'
        '{"city": "Beijing"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>',
        "Sunny, 25C.<|im_end|>",
    ]
    assert all("assistant<|im_middle|>" not in t for t in trained)


@pytest.mark.parametrize(
    "bad",
    [
        [{"role": "user", "content": "a<|im_end|>b"}],
        [{"role": "robot", "content": "x"}],
        [{"role": "user", "content": "x", "name": "bob"}],
        [{"role": "tool", "tool_call_id": "functions.f:0", "name": "system", "content": "x"}],
        [{"role": "tool", "tool_call_id": "call_123", "name": "f", "content": "x"}],
        [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.g:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    ],
)
def test_render_rejects_what_the_format_cannot_carry(bad: list[dict]) -> None:
    with pytest.raises(ChatFormatError):
        render(bad)


@pytest.mark.parametrize(
    "text",
    [
        "<|im_user|>user<|im_middle|>hi",
        "junk<|im_user|>user<|im_middle|>hi<|im_end|>",
        "<|im_system|>f<|im_middle|>no return header<|im_end|>",
        "<|im_assistant|>assistant<|im_middle|><|tool_calls_section_begin|>x<|tool_calls_section_end|><|im_end|>",
    ],
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ChatFormatError):
        parse(text)


def test_tool_result_without_name_is_named_like_k2s_template() -> None:
    """K2's template writes `message.get('name') or message['role']`: a nameless result is a `tool` turn, and it
    parses back nameless; a result named "tool" is the same bytes, so its canonical form is the nameless one."""
    nameless = normalize_messages(WEATHER_CHAT[:2]) + [
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "Sunny"}]
    text = render(nameless, WEATHER_TOOLS)
    assert text.endswith("<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\nSunny<|im_end|>")
    assert parse(text) == (nameless, WEATHER_TOOLS)
    named_tool = nameless[:2] + [{**nameless[2], "name": "tool"}]
    assert render(named_tool, WEATHER_TOOLS) == text and normalize_messages(named_tool) == nameless
    assert render([*nameless[:2], {**nameless[2], "name": None}], WEATHER_TOOLS) == text


# --- property-based round trip ------------------------------------------------------------------

# Fragments near the format's own markers, so that sloppy parsing would show.
_FRAGMENTS = list("ab <|>_:#\n{}\"é中.") + ["<|im_end", "|>", "## Return of ", "functions.f:0", "\n\n", "system"]
_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join).filter(
    lambda s: not any(t in s for t in SPECIAL_TOKENS)
)
# "tool" is left out: a result named "tool" renders like a nameless one, whose canonical form has no name
_name = st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True).filter(
    lambda n: n not in {"system", "tool_declare", "tool"}
)
_args = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3).map(
    lambda d: json.dumps(d, ensure_ascii=False)
).filter(lambda s: not any(t in s for t in SPECIAL_TOKENS))


@st.composite
def _assistant(draw: st.DrawFn) -> dict:
    message = {"role": "assistant", "content": draw(_text)}
    names = draw(st.lists(_name, max_size=3))
    if names:
        message["tool_calls"] = [
            {"id": tool_call_id(n, i), "type": "function", "function": {"name": n, "arguments": draw(_args)}}
            for i, n in enumerate(names)
        ]
    return message


@st.composite
def _tool(draw: st.DrawFn) -> dict:
    name = draw(_name)
    call = tool_call_id(name, draw(st.integers(0, 99)))
    message = {"role": "tool", "tool_call_id": call, "name": name, "content": draw(_text)}
    if draw(st.booleans()):  # OpenAI clients send tool results without a name
        del message["name"]
    return message


_message = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, _text),
    st.builds(lambda c: {"role": "system", "content": c}, _text.filter(lambda c: c != DEFAULT_SYSTEM_PROMPT)),
    _assistant(),
    _tool(),
)
_tools = st.lists(
    st.builds(
        lambda n, d: {"type": "function", "function": {"name": n, "description": d, "parameters": {"type": "object"}}},
        _name,
        _text,
    ),
    max_size=2,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message, max_size=6), _tools)
def test_round_trip_is_exact(messages: list[dict], tools: list[dict]) -> None:
    text = render(messages, tools)
    assert parse(text) == (messages, tools)
    segments = render_segments(messages, tools)
    assert "".join(t for t, _ in segments) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(_message, max_size=5), _tools)
def test_jinja_template_matches_render(messages: list[dict], tools: list[dict]) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    for gen in (False, True):
        rendered, _ = render_jinja_template(
            conversations=[messages], tools=tools or None, chat_template=CHAT_TEMPLATE, add_generation_prompt=gen
        )
        assert rendered[0] == render(messages, tools, add_generation_prompt=gen)


# --- generated assistant turns ------------------------------------------------------------------


def test_parse_assistant_round_trips_rendered_turn() -> None:
    body = render_segments(WEATHER_CHAT[1:2])[-1][0]
    parsed = parse_assistant(body + "trailing junk")
    assert parsed["errors"] == [] and parsed["finished"]
    assert parsed["tool_calls"] == WEATHER_CHAT[1]["tool_calls"]
    assert parsed["content"] == ""


def test_parse_assistant_reports_malformed_calls() -> None:
    text = (
        "Let me check.<|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>{city: Rome}<|tool_call_end|>"
        '<|tool_call_begin|>get_weather<|tool_call_argument_begin|>{"city": "Oslo"}<|tool_call_end|>'
        '<|tool_call_begin|>functions.f:3<|tool_call_argument_begin|>{"a": 1'
    )
    parsed = parse_assistant(text)
    assert parsed["content"] == "Let me check."
    assert [c["id"] for c in parsed["tool_calls"]] == ["functions.get_weather:0"]
    assert not parsed["finished"]
    joined = "\n".join(parsed["errors"])
    assert "not closed by <|tool_calls_section_end|>" in joined
    assert "functions.get_weather:1" in joined and "not JSON" in joined
    assert "'get_weather' is not 'functions.NAME:IDX'" in joined
    assert "not closed by <|tool_call_end|>" in joined


def test_parse_assistant_plain_text_stops_at_end_tokens() -> None:
    assert parse_assistant("The answer is 4.<|im_end|><|im_user|>")["content"] == "The answer is 4."
    parsed = parse_assistant("Four.[EOS]")
    assert parsed["content"] == "Four." and parsed["finished"] and parsed["errors"] == []
