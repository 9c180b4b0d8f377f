"""Kimi K2's chat and tool-call wire format: render, parse, SFT loss masks, generated-turn parsing."""

from k2core.chat.assistant import parse_assistant
from k2core.chat.format import (
    ChatFormatError,
    generation_prompt,
    normalize_messages,
    parse,
    render,
    render_segments,
    tool_call_id,
)
from k2core.chat.template import CHAT_TEMPLATE
from k2core.chat.tokens import (
    BOS,
    DEFAULT_SYSTEM_PROMPT,
    EOS,
    IM_ASSISTANT,
    IM_END,
    IM_MIDDLE,
    IM_SYSTEM,
    IM_USER,
    K2_TOKEN_IDS,
    PAD,
    SPECIAL_TOKENS,
    TOOL_CALL_ARG_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
)

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "EOS",
    "IM_ASSISTANT",
    "IM_END",
    "IM_MIDDLE",
    "IM_SYSTEM",
    "IM_USER",
    "K2_TOKEN_IDS",
    "PAD",
    "SPECIAL_TOKENS",
    "TOOL_CALLS_BEGIN",
    "TOOL_CALLS_END",
    "TOOL_CALL_ARG_BEGIN",
    "TOOL_CALL_BEGIN",
    "TOOL_CALL_END",
    "ChatFormatError",
    "generation_prompt",
    "normalize_messages",
    "parse",
    "parse_assistant",
    "render",
    "render_segments",
    "tool_call_id",
]
