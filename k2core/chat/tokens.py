"""Kimi K2's special tokens (names as in the released tokenizer) and fixed prompt pieces.

The ids of the released 163,840-token vocabulary are kept for reference only: our
tokenizers are trained from scratch and give these tokens their own (small) ids.
"""

from __future__ import annotations

BOS = "[BOS]"
EOS = "[EOS]"
PAD = "[PAD]"
IM_END = "<|im_end|>"
IM_USER = "<|im_user|>"
IM_ASSISTANT = "<|im_assistant|>"
IM_SYSTEM = "<|im_system|>"
IM_MIDDLE = "<|im_middle|>"
TOOL_CALLS_BEGIN = "<|tool_calls_section_begin|>"
TOOL_CALLS_END = "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN = "<|tool_call_begin|>"
TOOL_CALL_ARG_BEGIN = "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"

# Ids in the released Kimi-K2 vocabulary (reference only, see module docstring).
K2_TOKEN_IDS: dict[str, int] = {
    BOS: 163584,
    EOS: 163585,
    IM_END: 163586,
    IM_USER: 163587,
    IM_ASSISTANT: 163588,
    IM_SYSTEM: 163594,
    TOOL_CALLS_BEGIN: 163595,
    TOOL_CALLS_END: 163596,
    TOOL_CALL_BEGIN: 163597,
    TOOL_CALL_ARG_BEGIN: 163598,
    TOOL_CALL_END: 163599,
    IM_MIDDLE: 163601,
}

# Every special token, in the order our tokenizers assign ids (0, 1, 2, ...).
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    EOS,
    PAD,
    IM_END,
    IM_USER,
    IM_ASSISTANT,
    IM_SYSTEM,
    IM_MIDDLE,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_ARG_BEGIN,
    TOOL_CALL_END,
)

DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
TOOL_DECLARE_NAME = "tool_declare"
TOOL_RESULT_PREFIX = "## Return of "
TOOL_CALL_ID_PREFIX = "functions."
