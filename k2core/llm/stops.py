"""Stop strings (OpenAI's `stop`): a generated reply ends before the first of them, and why a turn ended."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from k2core.llm.base import FinishReason


def _first_stop(text: str, stop: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else -1


def cut_at_stop(ids: list[int], decode: Callable[[list[int]], str], stop: Sequence[str]
                ) -> tuple[list[int], str, bool]:
    """(tokens the model generated up to the one completing the first stop string, the text before that stop
    string, whether one was found). Without a stop string: (ids, decode(ids), False)."""
    text = decode(ids)
    cut = _first_stop(text, stop)
    if cut < 0:
        return ids, text, False
    low, high = 1, len(ids)  # the shortest prefix whose text holds a stop string (binary search: few decodes)
    while low < high:
        middle = (low + high) // 2
        if _first_stop(decode(ids[:middle]), stop) >= 0:
            high = middle
        else:
            low = middle + 1
    return ids[:low], text[:cut], True


def finish_reason(ended_turn: bool, stopped: bool, has_calls: bool) -> FinishReason:
    """OpenAI's finish_reason: `length` when the budget ran out first, `tool_calls` when a finished turn calls
    tools, else `stop` (end of turn or a stop string)."""
    if not (ended_turn or stopped):
        return "length"
    return "tool_calls" if has_calls else "stop"
