"""Turn a model's generated assistant text into a message, tolerating malformed tool calls."""

from __future__ import annotations

import json
from typing import Any

from k2core.chat.format import TOOL_CALL_ID_RE
from k2core.chat.tokens import (
    EOS,
    IM_END,
    SPECIAL_TOKENS,
    TOOL_CALL_ARG_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
)


def _parse_call(chunk: str, n: int) -> tuple[dict[str, Any] | None, str | None]:
    """One call from the text after a `<|tool_call_begin|>`; (call, None) or (None, why it is malformed)."""
    if TOOL_CALL_ARG_BEGIN not in chunk:
        return None, f"tool call {n}: no {TOOL_CALL_ARG_BEGIN}"
    call_id, _, rest = chunk.partition(TOOL_CALL_ARG_BEGIN)
    call_id = call_id.strip()
    if TOOL_CALL_END not in rest:
        return None, f"tool call {n} ({call_id!r}): not closed by {TOOL_CALL_END}"
    arguments = rest.partition(TOOL_CALL_END)[0].strip()
    match = TOOL_CALL_ID_RE.fullmatch(call_id)
    if match is None:
        return None, f"tool call {n}: id {call_id!r} is not 'functions.NAME:IDX'"
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as error:
        return None, f"tool call {n} ({call_id}): arguments are not JSON ({error.msg})"
    if not isinstance(parsed, dict):
        return None, f"tool call {n} ({call_id}): arguments are not a JSON object"
    function = {"name": match["name"], "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}, None


def parse_assistant(text: str) -> dict[str, Any]:
    """The assistant message in generated `text` (cut at the first `<|im_end|>` or `[EOS]`).

    Returns `{"role": "assistant", "content", "tool_calls", "errors", "finished"}`: `tool_calls` holds the
    well-formed calls only, `errors` says what was wrong with the others (or with the section), and
    `finished` is whether the turn was closed. Pop `errors` and `finished` (and an empty `tool_calls`)
    before putting the message into a conversation.
    """
    cuts = [i for i in (text.find(IM_END), text.find(EOS)) if i >= 0]
    finished = bool(cuts)
    body = text[: min(cuts)] if cuts else text
    errors: list[str] = []
    if TOOL_CALLS_BEGIN in body:
        content, _, section = body.partition(TOOL_CALLS_BEGIN)
        if TOOL_CALLS_END in section:
            section, _, trailing = section.partition(TOOL_CALLS_END)
            if trailing.strip():
                errors.append(f"text after {TOOL_CALLS_END}: {trailing[:80]!r}")
        else:
            errors.append(f"tool-call section not closed by {TOOL_CALLS_END}")
    elif TOOL_CALL_BEGIN in body:
        content, _, section = body.partition(TOOL_CALL_BEGIN)
        section = TOOL_CALL_BEGIN + section
        errors.append(f"tool calls without {TOOL_CALLS_BEGIN}")
    else:
        content, section = body, ""
    calls: list[dict[str, Any]] = []
    chunks = section.split(TOOL_CALL_BEGIN)
    if chunks[0].strip():
        errors.append(f"text in the tool-call section outside a call: {chunks[0][:80]!r}")
    for n, chunk in enumerate(chunks[1:]):
        call, error = _parse_call(chunk, n)
        if call is not None:
            calls.append(call)
        else:
            errors.append(error or f"tool call {n}: malformed")
    stray = [t for t in SPECIAL_TOKENS if t in content]
    if stray:
        errors.append(f"special tokens in the content: {stray}")
    return {"role": "assistant", "content": content, "tool_calls": calls, "errors": errors, "finished": finished}
