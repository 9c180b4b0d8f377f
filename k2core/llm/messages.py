"""The assistant message every backend returns: K2's canonical form, so it renders into K2's chat format as is.

`content` is a string and `tool_calls` is present only when non-empty; each call's id is K2's
`functions.NAME:IDX` (IDX counts the calls of this turn) and its arguments are a JSON string. Ids from a
remote server (`call_abc...`) are replaced, so trajectories from any backend make valid SFT data.
"""

from __future__ import annotations

from typing import Any

from k2core.chat import SPECIAL_TOKENS, tool_call_id


def assistant_message(content: str, calls: list[tuple[str, str]]) -> dict[str, Any]:
    """`calls` are (tool name, JSON arguments) pairs in the order the model made them."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": tool_call_id(name, index), "type": "function", "function": {"name": name, "arguments": arguments}}
            for index, (name, arguments) in enumerate(calls)
        ]
    return message


def strip_special_tokens(text: str) -> str:
    """Text without K2's special tokens (a message carrying one could not be rendered again)."""
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    return text
