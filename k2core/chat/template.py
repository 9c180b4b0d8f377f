"""The Jinja chat template saved with our tokenizers; it produces the same bytes as `k2core.chat.render`.

Written for transformers' `apply_chat_template` environment (its `tojson` takes `separators` and does
not escape non-ASCII). Assistant `content: None` renders as empty; dict `arguments` are JSON-encoded.
"""

from __future__ import annotations

from k2core.chat.tokens import DEFAULT_SYSTEM_PROMPT

_TEMPLATE = (
    "{%- if tools -%}"
    "<|im_system|>tool_declare<|im_middle|>{{ tools | tojson(separators=(',', ':')) }}<|im_end|>"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_system|>system<|im_middle|>__DEFAULT_SYSTEM__<|im_end|>"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "<|im_user|>user<|im_middle|>{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'system' -%}"
    "<|im_system|>system<|im_middle|>{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'tool' -%}"
    "<|im_system|>{{ message['name'] or message['role'] }}<|im_middle|>## Return of {{ message['tool_call_id'] }}{{ '\\n' }}"
    "{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|im_assistant|>assistant<|im_middle|>"
    "{%- if message['content'] -%}{{ message['content'] }}{%- endif -%}"
    "{%- if message['tool_calls'] -%}"
    "<|tool_calls_section_begin|>"
    "{%- for call in message['tool_calls'] -%}"
    "<|tool_call_begin|>{{ call['id'] }}<|tool_call_argument_begin|>"
    "{%- if call['function']['arguments'] is string -%}{{ call['function']['arguments'] }}"
    "{%- else -%}{{ call['function']['arguments'] | tojson }}{%- endif -%}"
    "<|tool_call_end|>"
    "{%- endfor -%}"
    "<|tool_calls_section_end|>"
    "{%- endif -%}"
    "<|im_end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
)

CHAT_TEMPLATE = _TEMPLATE.replace("__DEFAULT_SYSTEM__", DEFAULT_SYSTEM_PROMPT)
