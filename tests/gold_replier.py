"""A chat backend that answers each question of a task from its gold data (for oracle / near-miss harness tests)."""

from __future__ import annotations

from collections.abc import Callable

from k2core.llm.base import ChatResponse, Usage


class GoldReplier:
    """Replies to each question with `answer(gold)`, the gold target looked up from the task's samples."""

    backend_id = "gold-replier"

    def __init__(self, task, answer: Callable[[str], str]) -> None:
        self.gold = {s.input[-1]["content"]: s.target for s in task.samples}
        self.answer = answer

    def complete(self, request):
        text = self.answer(self.gold[request.messages[-1]["content"]])
        return ChatResponse(message={"role": "assistant", "content": text},
                            usage=Usage(prompt_tokens=1, completion_tokens=1))
