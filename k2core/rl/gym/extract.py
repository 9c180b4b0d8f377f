"""Final-answer extraction from a model response, shared by the answer-checked domains.

Order: the reasoning (`<think>...</think>`, or everything before a lone `</think>`) is dropped first, so candidate
answers tried while thinking never count. Then the last `<answer>...</answer>` block, else the last `\\boxed{}`,
else the text after the last "Final answer:" marker. A response that gives two *different* final answers of the
same kind is ambiguous and yields None: hedging across several answer blocks earns no reward (the multiple-block
hack reported on open-r1). Without any marker the caller decides (`fallback_whole=True` returns the stripped body).
"""

from __future__ import annotations

import re

from k2core.rl.rewards import last_boxed

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_FINAL = re.compile(r"final answer\s*(?:is)?\s*[:：]\s*(.+)", re.IGNORECASE)


def strip_reasoning(response: str) -> str:
    """The response without its reasoning: closed think blocks removed, and anything before a lone `</think>`."""
    body = _THINK.sub("", response)
    end = body.lower().rfind("</think>")
    return body[end + len("</think>"):] if end >= 0 else body


def _all_boxed(text: str) -> list[str]:
    found: list[str] = []
    while (value := last_boxed(text)) is not None:
        found.append(value)
        text = text[: text.rfind("\\boxed{")]
    return found


def _single(values: list[str]) -> str | None:
    distinct = {v.strip() for v in values}
    return values[-1].strip() if len(distinct) == 1 else None


def extract_final_answer(response: str, *, fallback_whole: bool = False) -> str | None:
    """The response's one final answer (see the module docstring), or None when it has none or several."""
    body = strip_reasoning(response)
    for values in (_ANSWER.findall(body), _all_boxed(body)[::-1]):
        if values:
            return _single(values)
    finals = [m.strip().rstrip(".").strip("*").strip() for m in _FINAL.findall(body)]
    if finals:
        return _single(finals)
    stripped = body.strip()
    return stripped if fallback_whole and stripped else None
