"""Tool use for chat templates that know nothing of tools (SmolLM2's ChatML template, many others).

Such a model is told about the tools in its system prompt and asked to answer a call as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; earlier calls and results in the conversation
are written the same way, so the model sees the pattern it is asked for. Calls are read back from any
JSON object (or list of objects) in the output that names a declared tool, with or without the tags or
a code fence around it.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LEFTOVERS = re.compile(r"</?tool_call>|```(?:json)?\s*```")


def tool_prompt(tools: list[dict[str, Any]]) -> str:
    """Instructions listing the tools, appended to the system prompt."""
    specs = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    return (
        "You can call these functions (JSON Schema of each):\n<tools>\n" + specs + "\n</tools>\n"
        'To call a function, reply with <tool_call>{"name": "FUNCTION", "arguments": {...}}</tool_call>, '
        "one block per call and nothing else. If no function is needed, answer normally."
    )


def _arguments_value(arguments: Any) -> Any:
    """A call's JSON-string arguments decoded; text that is no JSON stays as the model wrote it."""
    try:
        return json.loads(arguments)
    except (TypeError, json.JSONDecodeError):
        return arguments


def _call_block(call: dict[str, Any]) -> str:
    arguments = _arguments_value(call["function"]["arguments"])
    block = json.dumps({"name": call["function"]["name"], "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{block}</tool_call>"


def textual_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages rewritten with system, user and assistant roles only, tools described in text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            blocks = "\n".join(_call_block(c) for c in message["tool_calls"])
            out.append({"role": "assistant", "content": f"{content}\n{blocks}".strip()})
        elif role == "tool":
            name = message.get("name", "tool")
            out.append({"role": "user", "content": f'<tool_response name="{name}">\n{content}\n</tool_response>'})
        else:
            out.append({"role": role, "content": content})
    if tools:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{tool_prompt(tools)}"}
        else:
            out.insert(0, {"role": "system", "content": tool_prompt(tools)})
    return out


def native_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages for templates with tool support, which expect call arguments as objects."""
    out = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = [{**call, "function": {"name": call["function"]["name"],
                                           "arguments": _arguments_value(call["function"]["arguments"])}}
                     for call in message["tool_calls"]]
            message = {**message, "content": message.get("content") or "", "tool_calls": calls}
        out.append(message)
    return out


def _as_call(value: Any, names: set[str]) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return None
    function = value.get("function") if isinstance(value.get("function"), dict) else value
    name = function.get("name")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if name not in names or not isinstance(arguments, dict):
        return None
    return name, json.dumps(arguments, ensure_ascii=False)


def _calls_in(value: Any, names: set[str]) -> list[tuple[str, str]]:
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(item, names) for item in items]
    return [c for c in calls if c is not None] if items and all(calls) else []


def extract_tool_calls(text: str, names: set[str]) -> tuple[str, list[tuple[str, str]]]:
    """(text without the calls, [(name, JSON arguments)]) for every JSON call of a declared tool in `text`."""
    decoder = json.JSONDecoder()
    calls: list[tuple[str, str]] = []
    kept: list[str] = []
    position = start = 0
    while position < len(text):
        if text[position] not in "{[":
            position += 1
            continue
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position += 1
            continue
        found = _calls_in(value, names)  # JSON nested in a value that is no call is never a call
        if found:
            calls.extend(found)
            kept.append(text[start:position])
            start = end
        position = end
    kept.append(text[start:])
    content = "".join(kept)
    if calls:
        content = _LEFTOVERS.sub("", content).strip()
    return content, calls
