"""Render and parse Kimi K2's chat / tool-call wire format, as documented for the released template.

Layout of a rendered conversation::

    [<|im_system|>tool_declare<|im_middle|>{tools, compact JSON}<|im_end|>]     only when tools are given
    [<|im_system|>system<|im_middle|>{DEFAULT_SYSTEM_PROMPT}<|im_end|>]        only when messages[0] is not system
    <|im_system|>system<|im_middle|>{content}<|im_end|>
    <|im_user|>user<|im_middle|>{content}<|im_end|>
    <|im_assistant|>assistant<|im_middle|>{content}[<|tool_calls_section_begin|>
        <|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{arguments}<|tool_call_end|>...
        <|tool_calls_section_end|>]<|im_end|>
    <|im_system|>{tool name}<|im_middle|>## Return of functions.NAME:IDX\n{content}<|im_end|>

Round trip: `parse(render(m, t)) == (normalize_messages(m), t or [])`. Canonical messages have string
`content` (an assistant's `None` becomes `""`) and carry `tool_calls` only when non-empty. The default
system prompt is injected by `render` when the first message is not a system message; `parse` drops a
*first* system turn whose content is exactly `DEFAULT_SYSTEM_PROMPT`. So an explicit first system
message equal to the default prompt parses back as absent: both render to the same bytes, and the
canonical form is the one without it. Any other system message (other text, or not first) is kept.
`<|im_system|>` turns are told apart by their header: `tool_declare` (first turn only) is the tool
list, `system` is a system message, anything else is a tool result named after the tool, which is why
tool names `system` and `tool_declare` are rejected. A tool result may come without `name` (OpenAI clients
send none): like K2's template, `render` then names the turn `tool`, and `parse` reads a `tool` turn back
without `name`. So a result explicitly named `tool` has the nameless canonical form (same bytes).
"""

from __future__ import annotations

import json
import re
from typing import Any

from k2core.chat.tokens import (
    DEFAULT_SYSTEM_PROMPT,
    IM_ASSISTANT,
    IM_END,
    IM_MIDDLE,
    IM_SYSTEM,
    IM_USER,
    SPECIAL_TOKENS,
    TOOL_CALL_ARG_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALL_ID_PREFIX,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_DECLARE_NAME,
    TOOL_RESULT_PREFIX,
)

Message = dict[str, Any]
Segment = tuple[str, bool]

TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
TOOL_CALL_ID_RE = re.compile(r"functions\.(?P<name>[A-Za-z0-9_\-.]{1,64}):(?P<index>\d+)")
RESERVED_TOOL_NAMES = frozenset({"system", TOOL_DECLARE_NAME})
# K2's template names a tool result turn `message.get('name') or message['role']`: a result without a name is "tool".
UNNAMED_TOOL_HEADER = "tool"
_ALLOWED_KEYS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
_TURN_RE = re.compile(
    "(?P<start>" + "|".join(re.escape(t) for t in (IM_USER, IM_ASSISTANT, IM_SYSTEM)) + ")"
    "(?P<header>.*?)" + re.escape(IM_MIDDLE) + "(?P<body>.*?)" + re.escape(IM_END),
    re.DOTALL,
)
_CALL_RE = re.compile(
    re.escape(TOOL_CALL_BEGIN) + "(?P<id>.*?)" + re.escape(TOOL_CALL_ARG_BEGIN)
    + "(?P<args>.*?)" + re.escape(TOOL_CALL_END),
    re.DOTALL,
)


class ChatFormatError(ValueError):
    """A message list that K2's format cannot carry, or text that is not in K2's format."""


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ChatFormatError(f"{where} must be a string, got {type(value).__name__}")
    for token in SPECIAL_TOKENS:
        if token in value:
            raise ChatFormatError(f"{where} contains the special token {token!r}; remove it from the data")
    return value


def tool_call_id(name: str, index: int) -> str:
    """The K2 id of the `index`-th call (counted within one assistant turn) of tool `name`."""
    return f"{TOOL_CALL_ID_PREFIX}{name}:{index}"


def _check_call_id(call_id: Any, where: str) -> re.Match[str]:
    match = TOOL_CALL_ID_RE.fullmatch(call_id) if isinstance(call_id, str) else None
    if match is None:
        raise ChatFormatError(f"{where} must look like 'functions.NAME:IDX', got {call_id!r}")
    return match


def _normalize_call(call: Any, where: str) -> Message:
    if not isinstance(call, dict) or set(call) - {"id", "type", "function"}:
        raise ChatFormatError(f"{where} must be a dict with keys id, type, function; got {call!r}")
    if call.get("type", "function") != "function":
        raise ChatFormatError(f"{where}.type must be 'function'")
    function = call.get("function")
    if not isinstance(function, dict) or set(function) != {"name", "arguments"}:
        raise ChatFormatError(f"{where}.function must have exactly the keys name and arguments")
    name = _check_text(function["name"], f"{where}.function.name")
    arguments = _check_text(function["arguments"], f"{where}.function.arguments")
    match = _check_call_id(call.get("id"), f"{where}.id")
    if match["name"] != name:
        raise ChatFormatError(f"{where}.id {call['id']!r} does not name the function {name!r}")
    return {"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}}


def _normalize_message(message: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(message, dict) or message.get("role") not in _ALLOWED_KEYS:
        raise ChatFormatError(f"{where} must be a dict with role in {sorted(_ALLOWED_KEYS)}")
    role = message["role"]
    extra = set(message) - _ALLOWED_KEYS[role]
    if extra:
        raise ChatFormatError(f"{where} ({role}) has keys K2's format cannot carry: {sorted(extra)}")
    content = message.get("content")
    if role == "assistant" and content is None:
        content = ""
    out: Message = {"role": role, "content": _check_text(content, f"{where}.content")}
    if role == "assistant" and message.get("tool_calls"):
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise ChatFormatError(f"{where}.tool_calls must be a list")
        out["tool_calls"] = [_normalize_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
    if role == "tool":
        name = message.get("name")
        if name is not None and (
            not isinstance(name, str) or not TOOL_NAME_RE.fullmatch(name) or name in RESERVED_TOOL_NAMES
        ):
            raise ChatFormatError(
                f"{where}.name must be the tool's name ([A-Za-z0-9_.-], not 'system'/'tool_declare'), got {name!r}"
            )
        _check_call_id(message.get("tool_call_id"), f"{where}.tool_call_id")
        out["tool_call_id"] = message["tool_call_id"]
        if name is not None and name != UNNAMED_TOOL_HEADER:
            out["name"] = name
    return out


def normalize_messages(messages: list[Message]) -> list[Message]:
    """Check that K2's format can carry `messages` and return their canonical form (see module doc)."""
    if not isinstance(messages, list):
        raise ChatFormatError("messages must be a list of dicts")
    return [_normalize_message(m, i) for i, m in enumerate(messages)]


def _tools_json(tools: list[Message]) -> str:
    if not isinstance(tools, list):
        raise ChatFormatError("tools must be a list of OpenAI tool specs")
    # Same bytes as the template's `tools | tojson(separators=(',', ':'))` (no ASCII escaping).
    return _check_text(json.dumps(tools, separators=(",", ":"), ensure_ascii=False), "tools")


def _turn(start: str, header: str, body: str) -> str:
    return f"{start}{header}{IM_MIDDLE}{body}{IM_END}"


def generation_prompt() -> str:
    """The text after which the model generates an assistant turn."""
    return f"{IM_ASSISTANT}assistant{IM_MIDDLE}"


def _assistant_body(message: Message) -> str:
    calls = message.get("tool_calls")
    if not calls:
        return message["content"]
    section = "".join(
        f"{TOOL_CALL_BEGIN}{c['id']}{TOOL_CALL_ARG_BEGIN}{c['function']['arguments']}{TOOL_CALL_END}"
        for c in calls
    )
    return f"{message['content']}{TOOL_CALLS_BEGIN}{section}{TOOL_CALLS_END}"


def render_segments(
    messages: list[Message], tools: list[Message] | None = None, add_generation_prompt: bool = False
) -> list[Segment]:
    """The rendered conversation as (text, trained_on) pieces for SFT loss masking.

    Trained on: each assistant turn's content, its tool-call section and its closing `<|im_end|>`;
    everything else (headers, system/user/tool turns, the generation prompt) is context.
    """
    canonical = normalize_messages(messages)
    segments: list[Segment] = []
    if tools:
        segments.append((_turn(IM_SYSTEM, TOOL_DECLARE_NAME, _tools_json(tools)), False))
    if canonical and canonical[0]["role"] != "system":
        segments.append((_turn(IM_SYSTEM, "system", DEFAULT_SYSTEM_PROMPT), False))
    for message in canonical:
        role = message["role"]
        if role == "assistant":
            segments.append((generation_prompt(), False))
            segments.append((_assistant_body(message) + IM_END, True))
        elif role == "user":
            segments.append((_turn(IM_USER, "user", message["content"]), False))
        elif role == "system":
            segments.append((_turn(IM_SYSTEM, "system", message["content"]), False))
        else:
            body = f"{TOOL_RESULT_PREFIX}{message['tool_call_id']}\n{message['content']}"
            segments.append((_turn(IM_SYSTEM, message.get("name") or UNNAMED_TOOL_HEADER, body), False))
    if add_generation_prompt:
        segments.append((generation_prompt(), False))
    return segments


def render(messages: list[Message], tools: list[Message] | None = None, add_generation_prompt: bool = False) -> str:
    """The conversation in K2's wire format (layout in the module docstring)."""
    return "".join(text for text, _ in render_segments(messages, tools, add_generation_prompt))


def _parse_tool_calls(section: str, where: str) -> list[Message]:
    calls: list[Message] = []
    position = 0
    for match in _CALL_RE.finditer(section):
        if match.start() != position:
            stray = section[position : match.start()]
            raise ChatFormatError(f"{where}: unexpected text {stray!r} in the tool-call section")
        id_match = _check_call_id(match["id"], f"{where} tool call id")
        function = {"name": id_match["name"], "arguments": match["args"]}
        calls.append({"id": match["id"], "type": "function", "function": function})
        position = match.end()
    if position != len(section) or not calls:
        raise ChatFormatError(f"{where}: malformed tool-call section {section[position:]!r}")
    return calls


def _parse_assistant_body(body: str, where: str) -> Message:
    if TOOL_CALLS_BEGIN not in body:
        return {"role": "assistant", "content": body}
    content, _, rest = body.partition(TOOL_CALLS_BEGIN)
    if not rest.endswith(TOOL_CALLS_END):
        raise ChatFormatError(f"{where}: tool-call section is not closed by {TOOL_CALLS_END}")
    calls = _parse_tool_calls(rest[: -len(TOOL_CALLS_END)], where)
    return {"role": "assistant", "content": content, "tool_calls": calls}


def _parse_system_turn(header: str, body: str, where: str) -> Message:
    if header == "system":
        return {"role": "system", "content": body}
    if not body.startswith(TOOL_RESULT_PREFIX) or "\n" not in body:
        raise ChatFormatError(f"{where}: tool result turn {header!r} must start with '{TOOL_RESULT_PREFIX}ID\\n'")
    call_id, _, content = body[len(TOOL_RESULT_PREFIX):].partition("\n")
    message = {"role": "tool", "tool_call_id": call_id, "content": content}
    if header != UNNAMED_TOOL_HEADER:
        message["name"] = header
    return message


def parse(text: str) -> tuple[list[Message], list[Message]]:
    """Messages and tools (`[]` when none were declared) from a rendered conversation; inverse of `render`."""
    messages: list[Message] = []
    tools: list[Message] = []
    position = 0
    for n, match in enumerate(_TURN_RE.finditer(text)):
        where = f"turn {n} (char {match.start()})"
        if match.start() != position:
            raise ChatFormatError(f"{where}: text outside any turn: {text[position:match.start()]!r}")
        position = match.end()
        start, header, body = match["start"], match["header"], match["body"]
        if start == IM_SYSTEM and header == TOOL_DECLARE_NAME:
            if n != 0:
                raise ChatFormatError(f"{where}: the tool_declare turn must come first")
            tools = json.loads(body)
            continue
        if start == IM_USER and header == "user":
            messages.append({"role": "user", "content": body})
        elif start == IM_ASSISTANT and header == "assistant":
            messages.append(_parse_assistant_body(body, where))
        elif start == IM_SYSTEM:
            messages.append(_parse_system_turn(header, body, where))
        else:
            raise ChatFormatError(f"{where}: unknown turn header {header!r} after {start}")
    if position != len(text):
        raise ChatFormatError(f"trailing text is not a complete turn: {text[position:]!r}")
    if messages and messages[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}:
        messages = messages[1:]
    return messages, tools
